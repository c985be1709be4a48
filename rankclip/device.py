"""The one place a device name (``auto``, ``cpu``, ``cuda``, ``cuda:1``, ...) becomes a ``torch.device``."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` (or None) picks CUDA when present, else the CPU; ``cuda`` means this process's GPU
    (``local_rank``) and, without a GPU, is an error naming the setting rather than a failure later."""
    if isinstance(name, torch.device):
        return name
    if name is None or name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device: 'cuda' was asked for but torch sees no CUDA device")
        return torch.device("cuda", local_rank)
    return torch.device(name)
