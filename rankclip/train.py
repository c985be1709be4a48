"""The training loop: one validated TrainConfig in, checkpoints and metrics out."""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from rankclip import checkpoint as ckpt
from rankclip.atomic import write_atomic_text
from rankclip.code_hash import stage_code_hash
from rankclip.config import ConfigError, TrainConfig, changed_fields
from rankclip.corpus.loader import BatchSpec, DataFaultError, ShardStream, make_loader, open_train_data
from rankclip.distributed import DistInfo, barrier, init_distributed, mean_over_ranks
from rankclip.losses import build_loss
from rankclip.models import create_model
from rankclip.optim import cosine_lr, make_optimizer
from rankclip.run_lock import exclusive_output_dir

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step."""


class CheckpointConfigError(ConfigError):
    """The checkpoint to resume was trained with other settings; the message names them."""


def loss_kwargs(config: TrainConfig, dist_info: DistInfo) -> dict[str, Any]:
    """The keyword arguments of the configured loss."""
    kwargs: dict[str, Any] = {"rank": dist_info.rank, "world_size": dist_info.world_size}
    if config.loss == "cyclip":
        kwargs |= {"lambda_in": config.cyclip_lambda_in, "lambda_cross": config.cyclip_lambda_cross}
    elif config.loss == "alip":
        kwargs |= {"momentum": config.alip_momentum}
    elif config.loss.startswith("rankclip"):
        kwargs |= {
            "num_epochs": config.epochs,
            "schedule": config.rank_weight_schedule,
            "list_scale": config.list_scale,
            "tie_seed": config.tie_seed,
        }
        if config.loss != "rankclip_in":
            kwargs["lambda_cross"] = config.lambda_cross
        if config.loss != "rankclip_cross":
            kwargs["lambda_in"] = config.lambda_in
    return kwargs


def resolve_precision(config: TrainConfig, device: torch.device) -> str:
    precision = config.precision
    if precision == "auto":
        precision = "amp" if device.type == "cuda" else "fp32"
    if precision == "amp" and device.type != "cuda":
        raise ValueError("precision: 'amp' (fp16 + grad scaler) needs CUDA; use 'fp32' or 'bf16' on CPU")
    return precision


def autocast(precision: str, device: torch.device):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.float16 if precision == "amp" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric lines written after the checkpoint we resume from (they will be written again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    write_atomic_text(path, "".join(line + "\n" for line in keep))


class MetricsLog:
    """Metrics to a JSONL file and (optionally) TensorBoard, on the main rank only."""

    def __init__(self, output_dir: Path, enabled: bool, tensorboard: bool, start_step: int):
        self.enabled = enabled
        self.path = output_dir / "metrics.jsonl"
        self.writer = None
        if not enabled:
            return
        trim_metrics(self.path, start_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "tensorboard"), purge_step=start_step + 1)

    def write(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def train(config: TrainConfig) -> Path:
    """Train one run; returns the path of the final model checkpoint (``output_dir/model.pt``)."""
    dist_info = init_distributed(config.device)
    device = dist_info.device
    precision = resolve_precision(config, device)
    data = open_train_data(config.train_data)
    num_samples = config.train_num_samples or data.num_samples
    if num_samples is None:
        raise ValueError(
            "train_num_samples is required when train_data is a shard URL, not a subset manifest"
        )
    global_batch = config.batch_size
    if global_batch % dist_info.world_size:
        raise ValueError(
            f"batch_size {global_batch} (the global batch) does not divide over {dist_info.world_size} ranks"
        )
    steps_per_epoch = num_samples // global_batch
    if steps_per_epoch == 0:
        raise ValueError(
            f"train_num_samples ({num_samples}) is smaller than one global batch ({global_batch})"
        )
    total_steps = steps_per_epoch * config.epochs
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if not dist_info.is_main:
        return _train(config, dist_info, precision, data, steps_per_epoch, total_steps)
    with exclusive_output_dir(output_dir):
        return _train(config, dist_info, precision, data, steps_per_epoch, total_steps)


def _train(config, dist_info, precision, data, steps_per_epoch: int, total_steps: int) -> Path:
    device = dist_info.device
    output_dir = Path(config.output_dir)
    checkpoint_dir = output_dir / "checkpoints"
    global_batch = config.batch_size
    rank_batch = global_batch // dist_info.world_size
    skip_budget = math.floor(config.max_skipped_fraction * total_steps * rank_batch)
    code_hash = stage_code_hash("train")
    # the run's identity beside its config (the evaluation reads it): the pairs it draws from, i.e. the
    # subset manifest's size (a shard URL: the samples per epoch it was given)
    data_size = data.num_samples or config.train_num_samples
    torch.manual_seed(config.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    model, preprocess_train, preprocess_val, tokenizer = create_model(config.model, device=device)
    loss_fn = build_loss(config.loss, **loss_kwargs(config, dist_info)).to(device)
    optimizer = make_optimizer(
        model, config.lr, config.weight_decay, (config.beta1, config.beta2), config.eps
    )
    scaler = torch.amp.GradScaler("cuda") if precision == "amp" else None

    step = skipped = 0
    resumed = _resume_state(config, checkpoint_dir, dist_info.is_main, code_hash)
    if resumed is not None:
        resume_path, state = resumed
        model.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        loss_fn.load_state_dict(state["loss"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        step, skipped = state["step"], state.get("skipped", 0)
        if dist_info.is_main:
            log.info("resumed from %s at step %d", resume_path, step)
    if step >= total_steps and (output_dir / "model.pt").exists():
        return output_dir / "model.pt"

    spec = BatchSpec(
        batch_size=rank_batch,
        image_transform=preprocess_train if config.augment else preprocess_val,
        tokenizer=tokenizer,
        caption_key=config.caption_key,
        synthetic_caption_key=config.synthetic_caption_key if config.loss == "alip" else None,
    )
    stream = ShardStream(
        data.shards,
        spec,
        steps_per_epoch=steps_per_epoch,
        seed=config.seed,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        workers=config.workers,
        shuffle_buffer=config.shuffle_buffer,
        select=data.select,
        skip_budget=skip_budget,
        decode_cache_bytes=config.decode_cache_mb * 2**20,
    )
    train_model = model
    if dist_info.world_size > 1:
        train_model = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if config.compile:
        train_model = torch.compile(train_model)

    metrics = MetricsLog(output_dir, dist_info.is_main, config.tensorboard, step)

    def save(path: Path) -> None:
        if dist_info.is_main:
            ckpt.atomic_save(
                {
                    "state_dict": ckpt.strip_module_prefix(model.state_dict()),
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else {},
                    "loss": loss_fn.state_dict(),
                    "step": step,
                    "epoch": step // steps_per_epoch,
                    "rng": {"torch": torch.get_rng_state()},
                    "skipped": skipped,
                    "code_hash": code_hash,
                    "model_name": config.model,
                    "data_size": data_size,
                    "config": config.model_dump(mode="json"),
                },
                path,
            )
        barrier()

    try:
        while step < total_steps:
            epoch, start = divmod(step, steps_per_epoch)
            stream.set_epoch(epoch, start)
            progress = tqdm(
                total=steps_per_epoch,
                initial=start,
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=not (config.progress and dist_info.is_main),
                unit="step",
            )
            tick = time.perf_counter()
            for batch in _batches(stream, config.workers):
                skipped += int(batch.pop("skipped"))
                if skipped > skip_budget:
                    raise DataFaultError(
                        f"{skipped} unreadable training samples or shards by step {step + 1}, over the run's "
                        f"skip budget of {skip_budget} (max_skipped_fraction {config.max_skipped_fraction})"
                    )
                terms = _train_step(
                    train_model,
                    loss_fn,
                    optimizer,
                    scaler,
                    batch,
                    lr=cosine_lr(step, config.lr, config.warmup_steps, total_steps),
                    precision=precision,
                    device=device,
                    epoch=epoch,
                    step=step,
                    grad_clip_norm=config.grad_clip_norm,
                )
                with torch.no_grad():
                    model.logit_scale.clamp_(0, math.log(100))
                step += 1
                now = time.perf_counter()
                samples_per_s = global_batch / max(now - tick, 1e-9)
                tick = now
                progress.update(1)
                progress.set_postfix(loss=f"{terms['loss']:.4f}", samples_s=f"{samples_per_s:.0f}")
                if step % config.log_every_steps == 0 or step == total_steps:
                    values = {**terms, "epoch": epoch + 1, "samples_per_s": samples_per_s, "skipped": skipped}
                    metrics.write(step, values)
                if config.checkpoint_every_steps and step % config.checkpoint_every_steps == 0:
                    save(checkpoint_dir / ckpt.LATEST)
            progress.close()
            if config.keep_epoch_checkpoints:
                save(checkpoint_dir / f"epoch_{epoch + 1}.pt")
            save(checkpoint_dir / ckpt.LATEST)
            if dist_info.is_main:
                ckpt.prune_epoch_files(checkpoint_dir, keep=config.keep_epoch_checkpoints)
    finally:
        metrics.close()

    final = output_dir / "model.pt"
    if dist_info.is_main:
        ckpt.atomic_save(
            {
                "state_dict": ckpt.strip_module_prefix(model.state_dict()),
                "model_name": config.model,
                "data_size": data_size,
                "step": step,
                "skipped": skipped,
                "config": config.model_dump(mode="json"),
                "code_hash": code_hash,
            },
            final,
        )
    barrier()
    return final


def _batches(stream: ShardStream, workers: int):
    """The loader's batches; a data fault in a worker process surfaces as its own one-line error."""
    try:
        yield from make_loader(stream, workers)
    except DataFaultError as error:  # DataLoader re-raises a worker's error with its whole traceback
        raise DataFaultError(str(error).strip().splitlines()[-1].split("DataFaultError: ")[-1]) from None


RESUME_KEYS = ("state_dict", "optimizer", "loss", "step")


def _resume_state(
    config: TrainConfig, checkpoint_dir: Path, is_main: bool, code_hash: str
) -> tuple[Path, dict] | None:
    """The checkpoint to resume and its state, checked against ``config`` and the training code's hash
    (None: start fresh)."""
    if config.resume == "none":
        return None
    if config.resume == "auto":
        found = ckpt.load_newest_valid(checkpoint_dir, RESUME_KEYS)
    else:
        found = Path(config.resume), ckpt.load(Path(config.resume), RESUME_KEYS)
    if found is None:
        return None
    path, state = found
    changes = changed_fields(state.get("config", {}), config)
    if state.get("code_hash", code_hash) != code_hash:  # rankclip/code_hash.py: the training stage's files
        changes["code"] = (state["code_hash"], code_hash)
    if not changes:
        return found
    if config.on_config_change == "restart" and config.resume == "auto":
        if is_main:
            moved_to = supersede_outputs(Path(config.output_dir))
            log.warning(
                "settings changed since %s (%s): starting fresh; the old outputs are in %s",
                path,
                ", ".join(changes),
                moved_to,
            )
        return None
    raise CheckpointConfigError(describe_changes(path, changes))


def describe_changes(path: Path, changes: dict) -> str:
    """One line for a model/loss mismatch, then every other changed field with both values."""
    lines = []
    if {"model", "loss"} & changes.keys():
        stored = {name: changes.get(name, (None, None))[0] for name in ("model", "loss")}
        asked = {name: changes.get(name, (None, None))[1] for name in ("model", "loss")}
        lines.append(
            f"checkpoint {path} is "
            + " / ".join(f"{k} {v}" for k, v in stored.items() if k in changes)
            + ", you asked for "
            + " / ".join(f"{k} {v}" for k, v in asked.items() if k in changes)
        )
    others = {k: v for k, v in changes.items() if k not in ("model", "loss")}
    if others:
        lines.append(
            f"checkpoint {path} was trained with other settings: "
            + "; ".join(
                f"{k} {before!r} (checkpoint) vs {after!r} (now)" for k, (before, after) in others.items()
            )
        )
    lines.append(
        "to train these settings from scratch, pass --resume none (overwrites the old checkpoints), "
        "--on-config-change restart (moves them to superseded/), or another --output-dir"
    )
    return "\n".join(lines)


def supersede_outputs(output_dir: Path) -> Path:
    """Move a run's checkpoints, metrics, TensorBoard logs and model to ``superseded/<UTC time>/``."""
    target = output_dir / "superseded" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target.mkdir(parents=True, exist_ok=True)
    for name in ("checkpoints", "metrics.jsonl", "tensorboard", "model.pt"):
        if (output_dir / name).exists():
            shutil.move(output_dir / name, target / name)
    return target


def _train_step(
    model,
    loss_fn,
    optimizer,
    scaler,
    batch: dict,
    *,
    lr: float,
    precision: str,
    device: torch.device,
    epoch: int,
    step: int,
    grad_clip_norm: float | None,
) -> dict[str, float]:
    """One optimisation step; returns the logged terms (loss averaged over ranks)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    images = batch["image"].to(device, non_blocking=True)
    texts = batch["text"].to(device, non_blocking=True)
    synthetic = batch.get("synthetic_text")
    if synthetic is not None:
        texts = torch.cat([texts, synthetic.to(device, non_blocking=True)])
    optimizer.zero_grad(set_to_none=True)
    with autocast(precision, device):
        out = model(images, texts)
        text_features, caption_features = out["text_features"], None
        if synthetic is not None:
            text_features, caption_features = text_features.chunk(2)
        loss, terms = loss_fn(
            out["image_features"],
            text_features,
            out["logit_scale"],
            epoch=epoch + 1,
            caption_features=caption_features,
        )
    loss_value = mean_over_ranks(loss.detach().float()).item()
    if not math.isfinite(loss_value):
        raise NonFiniteLossError(f"loss is {loss_value} at step {step + 1} (epoch {epoch + 1}); stopping")
    if scaler is not None:
        scaler.scale(loss).backward()
        if grad_clip_norm is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        if grad_clip_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        optimizer.step()
    return {
        "loss": loss_value,
        "lr": lr,
        "logit_scale": float(out["logit_scale"].detach()),
        **{name: float(value) for name, value in terms.items()},
    }
