"""Checkpoints that open_clip loads directly (``pretrained=PATH``) and that carry our training state.

A checkpoint is a dict of tensors and plain Python types only (open_clip and we load it with
``weights_only=True``): ``state_dict`` (the model, no ``module.`` prefix), plus ``optimizer``, ``scaler``,
``loss`` (e.g. ALIP's running means), ``step``, ``epoch``, ``rng`` and ``config``. Files are written to a
temporary name and renamed, so a killed job never leaves a half-written checkpoint.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

LATEST = "latest.pt"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not one of ours; the message names the file."""


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to ``path`` through a temporary file in the same folder, then an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path: Path, required: tuple[str, ...] = ("state_dict",)) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check it holds the ``required`` keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for truncated/corrupt/unsafe files
        raise CheckpointError(f"checkpoint {path} cannot be read: {error}") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a dict")
    missing = [key for key in required if key not in checkpoint]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}")
    return checkpoint


def find_latest(checkpoint_dir: Path) -> Path | None:
    """The newest resumable checkpoint in ``checkpoint_dir``: ``latest.pt``, else the highest epoch file."""
    checkpoint_dir = Path(checkpoint_dir)
    if (checkpoint_dir / LATEST).is_file():
        return checkpoint_dir / LATEST
    epochs = [
        (int(m.group(1)), p)
        for p in checkpoint_dir.glob("epoch_*.pt")
        if (m := re.match(r"epoch_(\d+)\.pt$", p.name))
    ]
    return max(epochs)[1] if epochs else None


def strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP's / torch.compile's wrapper prefixes so open_clip's model loads the keys."""
    prefixes = ("module.", "_orig_mod.")
    out = {}
    for key, value in state_dict.items():
        while key.startswith(prefixes):
            key = key.split(".", 1)[1]
        out[key] = value
    return out
