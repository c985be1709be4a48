"""Shared fixtures of the workflow tests: the test-scale demo DAG (.test/config), run once per session."""

from __future__ import annotations

import subprocess

import pytest
from tiny_dag import REPO, DemoRun, drop_training_state, snakemake_command, venv_env, workdir_with


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    """The .test DAG (the demo's 62 jobs at test scale, ~4 minutes on 2 cores), run once for every test
    that reads its outputs (test_demo_e2e.py, test_cache.py); tests copy it rather than change it."""
    workdir = workdir_with(REPO / ".test" / "config", tmp_path_factory.mktemp("demo-run"))
    env = venv_env()
    command = snakemake_command(workdir, "--cores", "2")
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stderr[-5000:]
    drop_training_state(workdir)
    return DemoRun(workdir, command, env, result.stdout + result.stderr)
