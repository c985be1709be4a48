"""The training configuration: one typed, validated object, read from YAML and/or command-line flags."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ALL_PAIRS = "all"  # a training-set size: every pair of the shards (the paper's "all of CC3M that downloaded")
LossName = Literal["clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown or invalid; the message names the field."""


class TrainConfig(BaseModel):
    """Everything ``rankclip train`` needs. Defaults follow the paper (PAPER.md, training protocol)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # data
    train_data: str = Field(
        description="Webdataset shard URL, brace-expanded (/data/cc3m/{000000..000331}.tar), or a subset "
        "manifest (subset-500000.json) written by `rankclip data subsets`."
    )
    train_num_samples: int | None = Field(
        None, gt=0, description="Samples per epoch (all ranks together); default: the subset manifest's size."
    )
    caption_key: str = Field("txt", description="Sample key of the caption.")
    synthetic_caption_key: str = Field("syn.txt", description="Sample key of ALIP's second caption.")
    shuffle_buffer: int = Field(1000, ge=0, description="Webdataset sample shuffle buffer (0: no shuffle).")
    workers: int = Field(2, ge=0, description="DataLoader workers per rank.")
    augment: bool = Field(False, description="open_clip's train augmentation; the paper uses none.")
    decode_cache_mb: int = Field(
        0,
        ge=0,
        description="Keep up to this many MB of decoded samples (image tensor and tokens) in memory, so that "
        "later epochs do not decode them again; needs workers 0 and no augment. 0: decode every epoch.",
    )
    max_skipped_fraction: float = Field(
        0.001,
        ge=0,
        le=1,
        description="Skip budget: the run stops when more than this fraction of its samples (or shards) "
        "cannot be read or decoded; skips are counted in metrics.jsonl.",
    )
    # model and loss
    model: str = Field("rankclip-tiny-vit", description="open_clip model name (ViT-B-32, RN50, RN101, ...).")
    loss: LossName = "rankclip"
    lambda_cross: float = Field(1.0, ge=0, description="RankCLIP lambda_1 (cross-modal consistency).")
    lambda_in: float = Field(1.0, ge=0, description="RankCLIP lambda_2 (in-modal consistency).")
    rank_weight_schedule: Literal["code", "paper", "constant"] = "code"
    list_scale: float = Field(1 / 32, gt=0, description="Scale of each ListMLE pair (the paper's 1/32).")
    tie_seed: int | None = Field(
        0, description="Seed of the tie-breaking column permutation (None: index order)."
    )
    cyclip_lambda_in: float = Field(0.25, ge=0)
    cyclip_lambda_cross: float = Field(0.25, ge=0)
    alip_momentum: float = Field(0.99, ge=0, lt=1)
    # optimisation
    epochs: int = Field(64, gt=0)
    batch_size: int = Field(
        128,
        gt=0,
        description="Global batch (all ranks together), as in the authors' code; each rank takes "
        "batch_size / world_size, which must divide.",
    )
    lr: float = Field(5e-4, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(10_000, ge=0)
    grad_clip_norm: float | None = Field(None, gt=0)
    precision: Literal["auto", "fp32", "amp", "bf16"] = Field(
        "auto", description="auto: amp (fp16 autocast + grad scaler) on CUDA, fp32 on CPU."
    )
    compile: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    # output
    output_dir: Path
    checkpoint_every_steps: int | None = Field(None, gt=0, description="Also checkpoint every N steps.")
    keep_epoch_checkpoints: int = Field(
        1,
        ge=0,
        description="How many epoch_N.pt (the newest) to keep beside latest.pt: the fallback if latest.pt "
        "is unreadable; 0 keeps none.",
    )
    log_every_steps: int = Field(10, gt=0)
    resume: str = Field("auto", description="'auto' (latest checkpoint in output_dir), 'none', or a path.")
    on_config_change: Literal["error", "restart"] = Field(
        "error",
        description="When the checkpoint to resume was made with other settings: 'error' (name them and "
        "stop) or 'restart' (move the old outputs to output_dir/superseded/<time>/ and start fresh).",
    )
    progress: bool = True
    tensorboard: bool = True

    @model_validator(mode="after")
    def _check_combinations(self) -> TrainConfig:
        if self.loss == "rankclip_cross" and self.lambda_cross == 0:
            raise ValueError("loss 'rankclip_cross' needs lambda_cross > 0")
        if self.loss == "rankclip_in" and self.lambda_in == 0:
            raise ValueError("loss 'rankclip_in' needs lambda_in > 0")
        if self.decode_cache_mb and (self.workers or self.augment):
            raise ValueError(
                "decode_cache_mb keeps decoded samples in the training process: it needs workers 0 and "
                f"augment false (got workers {self.workers}, augment {str(self.augment).lower()})"
            )
        return self


# A main run (Tables 1-4, Figs. 5-6): both ranking terms at weight 1 and the paper's list scale, TrainConfig's
# defaults; the sweeps (Fig. 3, the list-scale ablation) change one of them. The workflow's run list and the
# report's tables both use this one definition.
MAIN_RUN: dict[str, float] = {
    name: TrainConfig.model_fields[name].default for name in ("lambda_cross", "lambda_in", "list_scale")
}


def has_main_settings(settings: Mapping[str, Any]) -> bool:
    """Whether a run's lambdas and list scale (a run-id dict or a train config) are a main run's; a
    setting the mapping lacks counts as the main run's (its default)."""
    return all(math.isclose(float(settings.get(name, value)), value) for name, value in MAIN_RUN.items())


# Fields that do not change what a run computes: a checkpoint may be resumed under other values of these.
# ``epochs`` may also grow (extending a run); every other field must match the checkpoint's.
RUN_LOCAL_FIELDS = frozenset(
    {
        "output_dir",
        "resume",
        "on_config_change",
        "progress",
        "tensorboard",
        "log_every_steps",
        "checkpoint_every_steps",
        "keep_epoch_checkpoints",
        "decode_cache_mb",
        "device",
        "compile",
        "max_skipped_fraction",
    }
)


def changed_fields(stored: dict[str, Any], requested: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Result-changing fields whose requested value differs from a checkpoint's stored config.

    Returns ``{field: (stored, requested)}``. Fields an older checkpoint lacks count as their default.
    """
    wanted = requested.model_dump(mode="json")
    changes = {}
    for name, value in wanted.items():
        if name in RUN_LOCAL_FIELDS:
            continue
        field = TrainConfig.model_fields[name]
        before = stored.get(name, None if field.is_required() else field.default)
        if name == "epochs" and isinstance(before, int) and value >= before:
            continue
        if name == "train_data" and before is not None and _same_file(before, value):
            continue
        if before != value:
            changes[name] = (before, value)
    return changes


def _same_file(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def _format_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "config"
        got = f" (got {item['input']!r})" if item["type"] != "missing" and "input" in item else ""
        lines.append(f"  {field}: {item['msg']}{got}")
    return "invalid training config:\n" + "\n".join(lines)


def make_config(values: dict[str, Any]) -> TrainConfig:
    """Validate ``values`` into a TrainConfig, raising ConfigError that names every bad field."""
    try:
        return TrainConfig(**values)
    except ValidationError as error:
        raise ConfigError(_format_error(error)) from None


def load_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML file (optional) and apply ``overrides`` (e.g. from the command line) on top."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold a mapping of field: value, got {type(loaded).__name__}"
            )
        values.update(loaded or {})
    values.update(overrides or {})
    return make_config(values)
