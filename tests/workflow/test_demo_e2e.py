"""The demo DAG end to end on the CPU at test scale (.test/config: every rule and job of the demo, on 512
rendered pairs for one epoch): data -> training -> evaluation -> tables -> notebooks -> report."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rankclip.eval.results import read_results

REPO = Path(__file__).resolve().parents[2]


def snakemake(workdir: Path, *args: str) -> list[str]:
    return [*[sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")],
            "--directory", str(workdir), *args]  # fmt: skip


def job_counts(workdir: Path) -> dict[str, int]:
    """Jobs per rule of a dry-run in ``workdir`` (its config/config.yaml)."""
    result = subprocess.run(
        snakemake(workdir, "-n", "--quiet", "rules"), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    table = result.stdout.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def workdir_with(config: Path, workdir: Path) -> Path:
    shutil.copytree(config, workdir / "config")
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    return workdir


def test_test_config_has_the_demos_dag(tmp_path: Path):
    """.test/config runs every rule of the demo as often as the demo does: only the sizes are smaller."""
    demo = job_counts(workdir_with(REPO / "config", tmp_path / "demo"))
    small = job_counts(workdir_with(REPO / ".test" / "config", tmp_path / "test"))
    assert small == demo and demo["total"] == 96


@pytest.mark.slow
def test_demo_workflow_runs_end_to_end(tmp_path: Path):
    workdir = workdir_with(REPO / ".test" / "config", tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = snakemake(workdir, "--cores", "2")
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-5000:]

    tables = workdir / "results" / "demo" / "tables"
    frame = pd.read_csv(tables / "results.csv")
    results = read_results(sorted((workdir / "results" / "demo" / "eval").rglob("*.json")))
    assert len(results) == len(frame) == 12 * 3 + 6 * 5 + 2 * 2  # every run, main runs, RN runs
    assert set(frame["method"]) == {"clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"}
    assert {"zeroshot_classification", "zeroshot_retrieval", "linear_probe", "representation"} <= set(
        frame["task"]
    )
    assert all(0 <= value <= 1 for value in frame["top1"].dropna())
    table1 = (tables / "table1.md").read_text()
    for row in ("clip (ours)", "clip (paper)", "rankclip (ours)", "rankclip_in (ours)"):
        assert row in table1

    report = (workdir / "results" / "demo" / "report.html").read_text()
    assert report.count("<table") >= 4 and "data:image/png;base64," in report
    assert 'id="protocol"' in report and "Fig. 7" in report

    again = subprocess.run(
        [*command, "-n"], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
