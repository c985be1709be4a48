"""Checkpoints that open_clip loads directly (``pretrained=PATH``) and that carry our training state.

A checkpoint is a dict of tensors and plain Python types only (open_clip and we load it with
``weights_only=True``): ``state_dict`` (the model, no ``module.`` prefix), plus ``optimizer``, ``scaler``,
``loss`` (e.g. ALIP's running means), ``step``, ``epoch``, ``rng`` and ``config``. Files are written to a
temporary name and renamed, so a killed job never leaves a half-written checkpoint.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from rankclip.atomic import atomic_path

LATEST = "latest.pt"
log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or not one of ours; the message names the file."""


def tensor_bytes(obj: Any) -> int:
    """The bytes of every tensor in a nested dict/list: about the size of ``torch.save(obj)``."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(value) for value in obj)
    return 0


def atomic_save(obj: Any, path: Path) -> Path:
    """``torch.save`` to ``path`` through a temporary file in the same folder, then an atomic rename.

    A full disk is named as such (torch's zip writer reports it as "unexpected pos"); on any failure the
    previous file at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    needed = tensor_bytes(obj)
    if shutil.disk_usage(path.parent).free < needed:
        raise CheckpointError(_no_space(path, needed))
    try:
        with atomic_path(path, per_process=True) as tmp:
            torch.save(obj, tmp)
    except (OSError, RuntimeError) as error:
        if shutil.disk_usage(path.parent).free < needed:
            raise CheckpointError(_no_space(path, needed)) from error
        raise CheckpointError(f"cannot write checkpoint {path}: {error}") from error
    return path


def _no_space(path: Path, needed: int) -> str:
    free = shutil.disk_usage(path.parent).free
    return (
        f"no space left on the disk of {path.parent} to write {path.name} (needed ~{needed / 2**20:.0f} MB, "
        f"{free / 2**20:.0f} MB free); the previous checkpoint is intact: free space and run again to resume"
    )


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


def epoch_files(checkpoint_dir: Path) -> list[Path]:
    """The ``epoch_N.pt`` files in ``checkpoint_dir``, newest (highest N) first."""
    epochs = (
        (int(m.group(1)), p)
        for p in Path(checkpoint_dir).glob("epoch_*.pt")
        if (m := re.match(r"epoch_(\d+)\.pt$", p.name))
    )
    return [path for _, path in sorted(epochs, reverse=True)]


def prune_epoch_files(checkpoint_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` epoch files; returns the deleted paths."""
    dropped = epoch_files(checkpoint_dir)[keep:]
    for path in dropped:
        path.unlink()
    return dropped


def resumable(checkpoint_dir: Path) -> list[Path]:
    """The checkpoints in ``checkpoint_dir``, newest first: ``latest.pt``, then epoch files by epoch."""
    latest = Path(checkpoint_dir) / LATEST
    return ([latest] if latest.is_file() else []) + epoch_files(checkpoint_dir)


def find_latest(checkpoint_dir: Path) -> Path | None:
    """The newest resumable checkpoint in ``checkpoint_dir``: ``latest.pt``, else the highest epoch file."""
    candidates = resumable(checkpoint_dir)
    return candidates[0] if candidates else None


def load_newest_valid(checkpoint_dir: Path, required: tuple[str, ...]) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint in ``checkpoint_dir`` that loads, skipping unreadable ones with a warning."""
    failures = []
    for path in resumable(checkpoint_dir):
        try:
            state = load(path, required)
        except CheckpointError as error:
            log.warning("%s; trying an older checkpoint", error)
            failures.append(str(error))
            continue
        if failures:
            log.warning("resuming from %s: newer checkpoints could not be read", path)
        return path, state
    if failures:
        raise CheckpointError("no readable checkpoint to resume:\n  " + "\n  ".join(failures))
    return None


def strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP's / torch.compile's wrapper prefixes so open_clip's model loads the keys."""
    prefixes = ("module.", "_orig_mod.")
    out = {}
    for key, value in state_dict.items():
        while key.startswith(prefixes):
            key = key.split(".", 1)[1]
        out[key] = value
    return out
