"""The demo DAG end to end on the CPU at test scale (.test/config: every rule and job of the demo, on 512
rendered pairs for one epoch): data -> training -> evaluation -> tables -> notebooks -> report. The run
itself is conftest.py's session fixture ``demo_run``, shared with test_cache.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd
import pytest
from tiny_dag import REPO, job_stats, snakemake_command, workdir_with

from rankclip.eval.results import read_results


def job_counts(workdir: Path) -> dict[str, int]:
    """Jobs per rule of a dry-run in ``workdir`` (its config/config.yaml)."""
    result = subprocess.run(
        snakemake_command(workdir, "-n", "--quiet", "rules"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return job_stats(result.stdout)


def test_test_config_has_the_demos_dag(tmp_path: Path):
    """.test/config runs every rule of the demo as often as the demo does: only the sizes are smaller."""
    demo = job_counts(workdir_with(REPO / "config", tmp_path / "demo"))
    small = job_counts(workdir_with(REPO / ".test" / "config", tmp_path / "test"))
    assert small == demo and demo["total"] == 62


@pytest.mark.slow
def test_demo_workflow_runs_end_to_end(demo_run):
    workdir = demo_run.workdir
    assert job_stats(demo_run.output)["total"] == 62
    tables = workdir / "results" / "demo" / "tables"
    frame = pd.read_csv(tables / "results.csv")
    results = read_results(sorted((workdir / "results" / "demo" / "eval").rglob("*.json")))
    # every run (24: 6 methods x 3 seeds and 6 more), the 18 main runs, the 2 ViT runs
    assert len(results) == len(frame) == 24 * 3 + 18 * 5 + 2 * 2
    assert set(frame["seed"]) == {0, 1, 2}
    assert set(frame["method"]) == {"clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"}
    assert {"zeroshot", "retrieval", "linear_probe", "gap"} <= set(frame["task"])
    assert all(0 <= value <= 1 for value in frame["top1"].dropna())
    table1 = (tables / "table1.md").read_text()
    for row in ("clip (ours)", "clip (paper)", "rankclip (ours)", "rankclip_in (ours)"):
        assert row in table1

    report = (workdir / "results" / "demo" / "report.html").read_text()
    assert report.count("<table") >= 4 and "data:image/png;base64," in report
    assert 'id="protocol"' in report and "Fig. 7" in report

    again = subprocess.run(
        [*demo_run.command, "-n"], cwd=workdir, env=demo_run.env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
