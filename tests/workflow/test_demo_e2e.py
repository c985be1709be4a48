"""The demo DAG end to end on the CPU (15-40 minutes on 2 cores): data -> training -> evaluation -> tables."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rankclip.eval.results import read_results

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_workflow_runs_end_to_end(tmp_path: Path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(tmp_path),
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-5000:]

    tables = tmp_path / "results" / "demo" / "tables"
    frame = pd.read_csv(tables / "results.csv")
    results = read_results(sorted((tmp_path / "results" / "demo" / "eval").rglob("*.json")))
    assert len(results) == len(frame) == 12 * 3 + 6 * 5 + 2 * 2  # every run, main runs, RN runs
    assert set(frame["method"]) == {"clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"}
    assert {"zeroshot_classification", "zeroshot_retrieval", "linear_probe", "representation"} <= set(
        frame["task"]
    )
    table1 = (tables / "table1.md").read_text()
    for row in ("clip (ours)", "clip (paper)", "rankclip (ours)", "rankclip_in (ours)"):
        assert row in table1
    # the main runs (4096 pairs) beat chance on the 64-class zero-shot set (1/64 = 1.6%) by far
    zeroshot = frame[
        (frame["task"] == "zeroshot_classification")
        & (frame["dataset"] == "shapes")
        & (frame["data_size"] == 4096)
    ]
    assert len(zeroshot) == 6 + 2 + 2
    for method in ("clip", "rankclip"):
        assert zeroshot[zeroshot["method"] == method]["top1"].min() > 4 / 64, method

    report = (tmp_path / "results" / "demo" / "report.html").read_text()
    assert report.count("<table") >= 4 and "data:image/png;base64," in report

    again = subprocess.run(
        [*command, "-n"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
