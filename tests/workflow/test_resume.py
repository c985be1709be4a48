"""Killing the workflow in the middle of a training job and running it again resumes that job."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "rankclip__rankclip-tiny-vit__n512__lc1.0__li1.0__ls0.03125__s0"
TINY = {
    "name": "tiny",
    "data": {"demo": {"num_train": 512, "num_eval": 64, "shard_size": 256}},
    "train": {"epochs": 12, "batch_size": 64, "checkpoint_every_steps": 4, "log_every_steps": 4},
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
STEPS = 12 * 512 // 64


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL Snakemake and every process below it, as a node failure or preemption would."""
    procs = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    process.wait(timeout=60)


def logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_killed_training_job_resumes_from_its_checkpoint(tmp_path: Path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    model = tmp_path / "results" / "tiny" / "runs" / RUN_ID / "model.pt"
    target = str(model.relative_to(tmp_path))
    command = [
        sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tiny.yaml",
        "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path), target,
    ]  # fmt: skip
    latest = model.parent / "checkpoints" / "latest.pt"
    log = tmp_path / "logs" / "tiny" / "train" / f"{RUN_ID}.log"

    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not latest.exists():
        assert first.poll() is None, f"workflow ended before the first checkpoint:\n{first.stdout.read()}"
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.2)
    kill_tree(first)
    assert not model.exists(), "the run finished before it was killed: make TINY longer"
    assert 0 < max(logged_steps(model.parent)) < STEPS

    unlock = subprocess.run([*command, "--unlock"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert unlock.returncode == 0, unlock.stderr
    second = subprocess.run(
        [*command, "--rerun-incomplete"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resumed from" in log.read_text()
    resumed_at = int(log.read_text().split("resumed from")[1].split("at step")[1].split()[0])
    assert 0 < resumed_at < STEPS
    assert model.exists()
    steps = logged_steps(model.parent)
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # no step logged twice, none lost at the end


@pytest.mark.slow
def test_changed_settings_rerun_the_job_afresh_and_keep_the_old_outputs(tmp_path: Path):
    """Snakemake reruns a job whose params changed; the run starts fresh instead of resuming old weights."""
    shutil.copytree(REPO / "config", tmp_path / "config")
    tiny = TINY | {"train": TINY["train"] | {"epochs": 1}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    (tmp_path / "tiny-lr.yaml").write_text(yaml.safe_dump(tiny | {"train": tiny["train"] | {"lr": 0.002}}))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    model = tmp_path / "results" / "tiny" / "runs" / RUN_ID / "model.pt"

    def snakemake(configfile: str) -> str:
        command = [
            sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", configfile,
            "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
            str(model.relative_to(tmp_path)),
        ]  # fmt: skip
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    snakemake("tiny.yaml")
    first = torch_load(model)
    assert "rule train" in snakemake("tiny-lr.yaml")  # params changed: the job reruns
    second = torch_load(model)
    assert (first["config"]["lr"], second["config"]["lr"]) == (0.001, 0.002)
    (superseded,) = (model.parent / "superseded").iterdir()
    kept = torch_load(superseded / "checkpoints" / "latest.pt")
    assert kept["config"]["lr"] == 0.001 and kept["step"] == second["step"] == 512 // 64
    assert logged_steps(model.parent) == list(range(4, 9, 4))  # a fresh metrics log, from step 1
    assert "starting fresh" in (tmp_path / "logs" / "tiny" / "train" / f"{RUN_ID}.log").read_text()


def torch_load(path: Path) -> dict:
    from rankclip.checkpoint import load

    return load(path)
