"""No silent staleness: editing one module reruns exactly the jobs that run it (and what consumes them).

Each rule carries the hash of its stage's code in ``params`` (rankclip/code_hash.py); Snakemake's params
trigger does the rest. The DAG is "done" by ``snakemake --touch`` (which records params), then dry-runs
after edits in a copy of the repository say which jobs would run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
# One run (test_resume.py's config), a main run: one evaluation process on every list (the demo's per_run)
TINY = {
    "name": "tiny",
    "data": {"demo": {"num_train": 512, "num_eval": 64, "shard_size": 256}},
    "runs": {
        "methods": ["rankclip"],
        "main_seeds": None,
        "data_size": 512,
        "backbones": [],
        "data_sizes": [],
        "lambda_cross": [],
        "lambda_in": [],
    },
}
DATA_RULES = {"demo_corpus", "emoji_corpus", "fashion_mnist", "subset"}
REPORT_RULES = {"tables": 1, "notebook": 6, "report": 1, "all": 1}
EVALUATIONS = {"evaluate_main_runs": 1}


def copy_repo(dest: Path) -> Path:
    """The repository's tracked (and untracked, not ignored) files, as they are in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def snakemake(repo: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--configfile", "tiny.yaml", "--cores", "2", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def scheduled(repo: Path) -> dict[str, int]:
    """Jobs per rule a dry-run would run ({} when nothing is to be done)."""
    output = snakemake(repo, "-n", "--quiet", "rules")
    if "Job stats:" not in output:
        assert "Nothing to be done" in output, output
        return {}
    table = output.split("Job stats:")[1]
    counts = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}
    counts.pop("total")
    return counts


def mark_done(repo: Path) -> None:
    """Create every output (empty; a folder where the path has no suffix), then touch every job in DAG
    order, which records its params as a run would (--forceall: a job with outputs in order is skipped)."""
    plan = snakemake(repo, "-n")
    outputs = [p.strip() for line in re.findall(r"^\s+output: (.+)$", plan, re.M) for p in line.split(",")]
    assert outputs, plan
    for name in outputs:
        path = repo / name
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        else:
            path.mkdir(parents=True, exist_ok=True)
    snakemake(repo, "--touch", "--forceall")


def edit(repo: Path, name: str) -> None:
    with open(repo / name, "a") as file:
        file.write("\n# an edit\n")


def test_an_edit_reruns_the_jobs_of_its_stage_and_their_consumers(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    (repo / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    mark_done(repo)
    assert scheduled(repo) == {}

    # edits add up: each one's jobs include the previous one's
    edit(repo, "notebooks/fig3_lambda_sweep.py")  # one notebook: its job and the report
    assert scheduled(repo) == {"notebook": 1, "report": 1, "all": 1}

    edit(repo, "rankclip/report_html.py")  # the report library: the tables, every notebook, the report
    assert scheduled(repo) == REPORT_RULES

    edit(repo, "rankclip/eval/metrics.py")  # evaluation: every evaluation and the report, no training
    assert scheduled(repo) == EVALUATIONS | REPORT_RULES

    edit(repo, "rankclip/losses.py")  # training: the run and everything downstream, no data
    counts = scheduled(repo)
    assert counts == {"train": 1} | EVALUATIONS | REPORT_RULES
    assert not DATA_RULES & set(counts)
