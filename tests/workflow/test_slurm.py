"""The workflow through the SLURM profile on a real single-node SLURM, against the same DAG run locally.

The cluster is started by ``scripts/slurm-single-node.sh`` (root; CI installs its packages first) and
stopped at the end. A small DAG (2 methods, 1 epoch, 512 pairs, zero-shot on one set) runs twice: locally with
``--cores 2`` and through ``profiles/slurm``; every metric, and the checkpoints' sha256, must agree.
Training is bit-for-bit deterministic on the CPU for a fixed seed and thread count: both runs give the
training jobs 2 threads (``resources.train.cpus``; Snakemake exports it as OMP_NUM_THREADS), so their
torch reductions run in the same order.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "slurm-single-node.sh"
ACCOUNT, PARTITION = "rankclip-test", "debug"

# config/config.yaml is the workflow's default configfile; --configfile merges this on top of it.
TINY = {
    "name": "tiny",
    "data": {
        "source": "demo",
        "demo": {"seed": 0, "num_train": 512, "num_eval": 64, "image_size": 32, "shard_size": 256},
        "subset_seed": 0,
    },
    "train": {
        "epochs": 1,
        "batch_size": 64,
        "lr": 0.001,
        "warmup_steps": 2,
        "workers": 2,  # loader worker processes inside a SLURM job
        "decode_cache_mb": 0,  # the demo's cache needs workers 0
        "shuffle_buffer": 256,
        "checkpoint_every_steps": 4,
        "keep_epoch_checkpoints": 0,
        "log_every_steps": 2,
    },
    "runs": {
        "methods": ["clip", "rankclip"],
        "backbone": "rankclip-tiny-vit",
        "data_size": 512,
        "seeds": [0],
        "main_seeds": None,
        "backbones": [],
        "backbone_methods": [],
        "data_sizes": [],
        "data_size_methods": [],
        "lambda_cross": [],
        "lambda_in": [],
    },
    "eval": {
        "datasets": {"shapes": "demo/eval/zeroshot"},
        "every_run": ["zeroshot:shapes"],
        "main_runs": [],
    },
    "resources": {
        "train": {"gpu": 0, "cpus": 2, "mem_mb": 2000, "runtime": 10},  # the jobs' threads in both runs
        "eval": {"gpu": 0, "mem_mb": 2000, "runtime": 10},
    },
}
# The DAG's sink here: Table 1's partial target (the notebooks and the report are local rules only).
TARGET = "table1"
RESULTS_CSV = "results/tiny/targets/table1/results.csv"
# The jobs SLURM runs: demo_corpus and table1 are local rules, run by the submitting Snakemake.
SUBMITTED = {"rule_subset": 1, "rule_train": 2, "group_eval_evaluate_every_run": 2}
# Provenance, not results: when, how long, where, and the code's tree hash (another checkout may be
# edited while the two runs happen).
NOT_COMPARED = ["created_at", "duration_s", "checkpoint_path", "dataset_path", "code_version"]


def script(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), command], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def slurm():
    """A running single-node SLURM; stopped afterwards unless it was already running."""
    if os.geteuid() != 0:
        pytest.fail(f"the SLURM test starts SLURM daemons and needs root: run it as root ({SCRIPT})")
    already_running = script("status").returncode == 0
    started = script("start")
    if started.returncode != 0:
        pytest.fail(f"could not start a single-node SLURM with {SCRIPT}:\n{started.stdout}{started.stderr}")
    yield
    if not already_running:
        stopped = script("stop")
        assert stopped.returncode == 0, stopped.stderr


def workdir(path: Path) -> Path:
    path.mkdir()
    shutil.copytree(REPO / "config", path / "config")
    shutil.copytree(REPO / "profiles", path / "profiles")
    return path


def snakemake(workdir: Path, configfile: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
        TARGET,
    ]


def results(workdir: Path) -> pd.DataFrame:
    frame = pd.read_csv(workdir / RESULTS_CSV)
    frame = frame.drop(columns=[column for column in NOT_COMPARED if column in frame])
    return frame.sort_values(["run_id", "task", "dataset"]).reset_index(drop=True)


@pytest.mark.slow
def test_slurm_profile_runs_the_dag_as_slurm_jobs_with_local_results(slurm, tmp_path: Path):
    configfile = tmp_path / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(TINY, sort_keys=False))
    local, cluster = workdir(tmp_path / "local"), workdir(tmp_path / "slurm")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    slurm_env = {**env, "SBATCH_ACCOUNT": ACCOUNT, "SBATCH_PARTITION": PARTITION}
    slurm_command = snakemake(
        cluster,
        configfile,
        "--workflow-profile",
        str(cluster / "profiles" / "slurm"),
        # the single-node cluster has no accounting database: sacct never sees a job finish
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "2",
    )

    # The SLURM run waits on the scheduler most of the time: the local run goes meanwhile.
    start = time.monotonic()
    slurm_log = tmp_path / "snakemake-slurm.log"
    with (
        slurm_log.open("w") as sink,
        subprocess.Popen(
            slurm_command, cwd=cluster, env=slurm_env, stdout=sink, stderr=subprocess.STDOUT
        ) as process,
    ):
        try:
            ran_local = subprocess.run(
                snakemake(local, configfile, "--cores", "2"),
                cwd=local,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            process.wait(timeout=900)
        except subprocess.TimeoutExpired:
            process.kill()  # Snakemake's SLURM executor does not stop on SIGTERM
            process.wait()
            job_ids = re.findall(r"with SLURM jobid (\d+)", slurm_log.read_text())
            subprocess.run(["scancel", *job_ids], check=False)
            raise
    output = slurm_log.read_text()
    print(f"local and SLURM runs took {time.monotonic() - start:.0f} s together")
    assert ran_local.returncode == 0, ran_local.stderr[-5000:]
    assert process.returncode == 0, output[-5000:]

    # Every non-local job ran as a SLURM job: one SLURM log each, and SLURM knows it as completed.
    logs = sorted((cluster / "logs" / "slurm").rglob("*.log"))
    per_rule = {}
    for log in logs:
        rule = log.relative_to(cluster / "logs" / "slurm").parts[0]
        per_rule[rule] = per_rule.get(rule, 0) + 1
    assert per_rule == SUBMITTED, output[-5000:]
    job_ids = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    assert sorted(job_ids) == sorted(log.stem for log in logs)
    states = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i %T", "--jobs", ",".join(job_ids)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert dict(zip(states[::2], states[1::2], strict=True)) == dict.fromkeys(job_ids, "COMPLETED")
    for log in logs:
        assert "--executor slurm-jobstep" in log.read_text(), log

    # Same numbers either way (and the same checkpoints: checkpoint_sha256 is compared too).
    pd.testing.assert_frame_equal(results(cluster), results(local), check_exact=True)
    assert len(results(local)) == 2
