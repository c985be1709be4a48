"""Helpers of the workflow tests: Snakemake on this checkout, its job stats, the test-scale demo run."""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def venv_env(**extra: str) -> dict[str, str]:
    """This environment with the running interpreter's bin/ first on PATH (rankclip, papermill, ...)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """Snakemake on this checkout's workflow, in ``workdir`` (its config/config.yaml)."""
    return [*[sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile")],
            "--directory", str(workdir), *args]  # fmt: skip


def job_stats(output: str) -> dict[str, int]:
    """Jobs per rule from the first "Job stats:" table in Snakemake's output (``total`` included)."""
    assert "Job stats:" in output, f"no job stats in Snakemake's output:\n{output[-3000:]}"
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def workdir_with(config: Path, workdir: Path) -> Path:
    """``workdir`` holding a copy of the config folder ``config`` and of the repository's profiles."""
    shutil.copytree(config, workdir / "config")
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    return workdir


def drop_training_state(workdir: Path) -> None:
    """Delete every run's ``checkpoints/`` (its optimizer state, ~100 MB a run, not of record and read by no
    test that shares the run): the suite's disk stays small on CI's machine."""
    for folder in workdir.glob("results/*/runs/*/checkpoints"):
        shutil.rmtree(folder)


@dataclass(frozen=True)
class DemoRun:
    """A finished run of the test-scale demo DAG: its working dir, command, environment and output."""

    workdir: Path
    command: list[str]
    env: dict[str, str]
    output: str
