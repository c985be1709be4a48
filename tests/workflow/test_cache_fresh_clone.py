"""A new machine rebuilds the report from the cache (README, "Rebuild the report without training"): the
test-scale demo run (conftest.py's ``demo_run``) is pushed with ``rankclip cache push`` from a copy of
this checkout to a folder remote; a fresh ``git clone`` runs ``rankclip cache pull`` and ``snakemake``, and
only the tables, notebook and report jobs run, writing the same tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_env import dvc, dvc_env, git
from tiny_dag import REPO, job_stats

POINTERS = [
    "results/demo/runs.dvc",
    "results/demo/eval.dvc",
    "results/demo/embeddings.dvc",
    "resources/demo/subsets.dvc",
    "resources/demo/demo/eval/retrieval.dvc",
]
IGNORED = [".venv", "venv", "results", "resources", "logs", "runs", ".snakemake", "__pycache__", "*.egg-info"]
IGNORED += [".pytest_cache", ".ruff_cache"]
TABLES = ["results/demo/tables/results.csv", "results/demo/tables/table1.md"]


def copy_checkout(target: Path, env: dict[str, str]) -> None:
    """This checkout's working tree as git sees it (tracked and untracked files, nothing ignored), with
    .test's config as config/config.yaml, committed in a new repository at ``target``."""
    if (REPO / ".git").exists():
        listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO, env=env)
        for name in filter(None, listed.split("\0")):
            if (REPO / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, target / name)
    else:  # an exported tree, no git: the same without what .gitignore names
        shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(*IGNORED))
    shutil.copy2(REPO / ".test" / "config" / "config.yaml", target / "config" / "config.yaml")
    git("init", "--quiet", "--initial-branch=main", cwd=target, env=env)  # .dvc/ is part of the checkout
    (target / ".dvc" / "config.local").write_text("[core]\n    check_update = false\n")  # git-ignored
    git("add", "-A", cwd=target, env=env)
    git("commit", "--quiet", "-m", "checkout", cwd=target, env=env)


def rankclip(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rankclip.cli", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def check_fresh_clone(source: Path, tmp_path: Path) -> None:
    """Push ``source``'s outputs of record from a copy of the checkout, pull them into a fresh clone and
    run the workflow there (the test's body; ``source`` is a finished .test run)."""
    env = dvc_env(tmp_path)
    first, fresh, remote = tmp_path / "first", tmp_path / "fresh", tmp_path / "remote"
    copy_checkout(first, env)
    for folder in ("results/demo", "resources/demo"):  # hard links: no copying, the first run's mtimes
        shutil.copytree(source / folder, first / folder, copy_function=os.link)

    refused = rankclip("cache", "push", cwd=first, env=env)
    assert refused.returncode == 2 and "no default DVC remote" in refused.stderr, refused.stderr
    dvc("remote", "add", "--default", "storage", str(remote), cwd=first, env=env)
    pushed = rankclip("cache", "push", cwd=first, env=env)
    assert pushed.returncode == 0, pushed.stderr
    status = git("status", "--porcelain", "--untracked-files=all", cwd=first, env=env).splitlines()
    assert sorted(status) == sorted(
        [" M .dvc/config", *(f"?? {p}" for p in POINTERS)]
    )  # nothing else to commit
    runs = yaml.safe_load((first / POINTERS[0]).read_text())
    assert runs["outs"][0]["nfiles"] == 2 * 24  # model.pt + metrics.jsonl of the 24 runs, no checkpoints/
    git("add", ".dvc/config", *POINTERS, cwd=first, env=env)
    git("commit", "--quiet", "-m", "Outputs of record", cwd=first, env=env)
    assert json.loads(dvc("status", "--cloud", "--json", cwd=first, env=env)) == {}

    git("clone", "--quiet", str(first), str(fresh), cwd=tmp_path, env=env)
    assert not (fresh / "results" / "demo" / "eval").exists() and not (fresh / ".dvc" / "cache").exists()
    pulled = rankclip("cache", "pull", cwd=fresh, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert len(list((fresh / "results" / "demo" / "eval").rglob("*.json"))) == 24 * 3 + 18 * 5 + 2 * 2

    command = [sys.executable, "-m", "snakemake", "--cores", "2"]
    result = subprocess.run(command, cwd=fresh, env=env, capture_output=True, text=True, timeout=1800)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert job_stats(output) == {"tables": 1, "notebook": 6, "report": 1, "all": 1, "total": 9}
    for table in TABLES:
        assert (fresh / table).read_bytes() == (source / table).read_bytes(), f"{table} differs"
    assert "Fig. 7" in (fresh / "results" / "demo" / "report.html").read_text()
    assert json.loads(dvc("status", "--json", cwd=fresh, env=env)) == {}  # the outputs of record untouched
    again = subprocess.run([*command, "-n"], cwd=fresh, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.slow
def test_a_fresh_clone_pulls_the_cache_and_runs_only_the_report_jobs(demo_run, tmp_path):
    check_fresh_clone(demo_run.workdir, tmp_path)
