"""The training loop end to end on CPU: loss falls, determinism, kill-and-resume, NaN, every loss, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rankclip import train as train_module
from rankclip.checkpoint import load
from rankclip.config import make_config
from rankclip.losses import LOSSES


def config_for(shards: str, out: Path, **values):
    base = dict(
        train_data=shards,
        train_num_samples=256,
        output_dir=str(out),
        batch_size=32,
        epochs=2,
        lr=1e-3,
        warmup_steps=4,
        workers=0,
        shuffle_buffer=64,
        progress=False,
        tensorboard=False,
        log_every_steps=1,
        model="rankclip-tiny-vit",
    )
    return make_config(base | values)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load(path)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_tiny_model_loss_falls(colour_shards, tmp_path):
    config = config_for(
        colour_shards,
        tmp_path,
        train_num_samples=1024,
        epochs=8,
        warmup_steps=20,
        loss="rankclip",
        workers=2,
        tensorboard=True,
    )
    train_module.train(config)
    losses = [m["loss"] for m in read_metrics(tmp_path)]
    assert len(losses) == 8 * 1024 // 32
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.6 * first, (first, last)
    assert {"rank_cross", "rank_in", "clip"} <= set(read_metrics(tmp_path)[0])
    assert any((tmp_path / "tensorboard").iterdir())


def test_same_seed_gives_bit_identical_checkpoints(colour_shards, tmp_path):
    a = train_module.train(config_for(colour_shards, tmp_path / "a", epochs=1, workers=2))
    b = train_module.train(config_for(colour_shards, tmp_path / "b", epochs=1, workers=2))
    c = train_module.train(config_for(colour_shards, tmp_path / "c", epochs=1, workers=2, seed=1))
    assert_same_weights(a, b)
    assert not torch.equal(weights(a)["logit_scale"], weights(c)["logit_scale"]) or any(
        not torch.equal(weights(a)[k], weights(c)[k]) for k in weights(a)
    )


@pytest.mark.parametrize(("keep", "kept"), [(0, []), (1, ["epoch_3.pt"]), (2, ["epoch_3.pt", "epoch_2.pt"])])
def test_only_the_newest_epoch_checkpoints_are_kept(colour_shards, tmp_path, keep, kept):
    config = config_for(colour_shards, tmp_path, train_num_samples=64, epochs=3, keep_epoch_checkpoints=keep)
    train_module.train(config)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted(["latest.pt", *kept])
    assert load(tmp_path / "checkpoints" / "latest.pt")["epoch"] == 3
    assert [load(tmp_path / "checkpoints" / name)["epoch"] for name in kept] == [3, 2][: len(kept)]


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_and_logs_its_terms(colour_shards, tmp_path, loss):
    final = train_module.train(config_for(colour_shards, tmp_path, loss=loss, train_num_samples=64, epochs=1))
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(torch.isfinite(torch.tensor(m["loss"])) for m in metrics)
    assert load(final)["config"]["loss"] == loss


def test_nan_loss_stops_with_the_step_named(colour_shards, tmp_path, monkeypatch):
    real_build = train_module.build_loss

    class NanAtThirdStep(torch.nn.Module):
        def __init__(self, **kwargs):
            super().__init__()
            self.inner, self.calls = real_build("clip", **kwargs), 0

        def forward(self, *args, **kwargs):
            self.calls += 1
            loss, terms = self.inner(*args, **kwargs)
            return (loss * float("nan") if self.calls == 3 else loss), terms

    monkeypatch.setattr(train_module, "build_loss", lambda name, **kwargs: NanAtThirdStep(**kwargs))
    with pytest.raises(train_module.NonFiniteLossError, match="step 3"):
        train_module.train(config_for(colour_shards, tmp_path, loss="clip", checkpoint_every_steps=2))
    assert load(tmp_path / "checkpoints" / "latest.pt")["step"] == 2
    assert not (tmp_path / "model.pt").exists()


def _train_command(shards: str, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rankclip.cli",
        "train",
        "--train-data",
        shards,
        "--train-num-samples",
        "256",
        "--output-dir",
        str(out),
        "--batch-size",
        "32",
        "--epochs",
        "6",
        "--lr",
        "0.001",
        "--warmup-steps",
        "4",
        "--workers",
        "2",
        "--shuffle-buffer",
        "64",
        "--checkpoint-every-steps",
        "5",
        "--loss",
        "alip",
        "--progress",
        "false",
        "--tensorboard",
        "false",
        "--log-every-steps",
        "1",
    ]


@pytest.mark.slow
def test_killed_run_resumes_to_identical_weights(colour_shards, tmp_path):
    subprocess.run(_train_command(colour_shards, tmp_path / "whole"), check=True, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _train_command(colour_shards, killed),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    latest = killed / "checkpoints" / "latest.pt"
    deadline = time.monotonic() + 120
    while not latest.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "model.pt").exists(), "the run finished before it could be killed"
    killed_at = load(latest)["step"]
    assert 0 < killed_at < 48

    subprocess.run(_train_command(colour_shards, killed), check=True, capture_output=True)
    assert_same_weights(tmp_path / "whole" / "model.pt", killed / "model.pt")
    whole, resumed = load(tmp_path / "whole" / "checkpoints" / "latest.pt"), load(latest)
    for key, value in whole["loss"].items():  # ALIP's running means survive the kill
        assert torch.equal(value, resumed["loss"][key]), key
    steps = [m["step"] for m in read_metrics(killed)]
    assert steps == list(range(1, 49))
    assert [m["loss"] for m in read_metrics(killed)] == [m["loss"] for m in read_metrics(tmp_path / "whole")]


@pytest.mark.slow
def test_torchrun_two_processes(colour_shards, tmp_path):
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "rankclip.cli",
        "train",
        "--train-data",
        colour_shards,
        "--train-num-samples",
        "128",
        "--output-dir",
        str(out),
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--workers",
        "1",
        "--loss",
        "rankclip",
        "--progress",
        "false",
        "--tensorboard",
        "false",
        "--log-every-steps",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [m["step"] for m in read_metrics(out)] == [1, 2, 3, 4]  # 128 samples / global batch 32
    assert load(out / "model.pt")["step"] == 4
    assert load(out / "model.pt")["data_size"] == 128  # shard URLs: the samples per epoch it was given


def test_url_without_num_samples_is_a_clear_error(colour_shards, tmp_path):
    config = make_config({"train_data": colour_shards, "output_dir": str(tmp_path), "progress": False})
    with pytest.raises(ValueError, match="train_num_samples is required"):
        train_module.train(config)
