"""Models through open_clip's factory, plus the package's tiny configs for CPU runs.

open_clip imports transformers and timm when they are installed, for its Hugging Face text towers and timm
image towers: 0.9 s in every training and evaluation process. No model here uses them, so open_clip is
imported with both unimportable (they stay importable afterwards); a model that needs them is refused.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import torch

from rankclip.atomic import atomic_path, write_atomic_text

UNUSED_OPEN_CLIP_EXTRAS = ("transformers", "timm")


def import_without(module: str, unused: tuple[str, ...]) -> ModuleType:
    """Import ``module`` with the ``unused`` packages unimportable; they stay importable afterwards."""
    hidden = [name for name in unused if name not in sys.modules]
    sys.modules.update(dict.fromkeys(hidden))  # None: `import name` raises ImportError
    try:
        return importlib.import_module(module)
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


open_clip = import_without("open_clip", UNUSED_OPEN_CLIP_EXTRAS)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"


def register_model_configs() -> None:
    """Make the package's configs (``rankclip-tiny-vit``, ``rankclip-tiny-rn``) known to open_clip."""
    if "rankclip-tiny-vit" not in open_clip.list_models():
        open_clip.add_model_config(MODEL_CONFIG_DIR)


def model_config(name: str) -> dict:
    """The architecture config of a model name, with a clear error for an unknown one."""
    register_model_configs()
    config = open_clip.get_model_config(name)
    if config is None:
        known = ", ".join(n for n in open_clip.list_models() if n.startswith(("rankclip", "ViT-B", "RN")))
        raise ValueError(f"unknown model {name!r}; known models include: {known}")
    if "timm_model_name" in config.get("vision_cfg", {}) or "hf_model_name" in config.get("text_cfg", {}):
        raise ValueError(
            f"model {name!r} has a timm or Hugging Face tower, which rankclip does not load (rankclip.models)"
        )
    return config


def create_model(name: str, device: str | torch.device = "cpu", pretrained: str | None = None):
    """Return ``(model, preprocess_train, preprocess_val, tokenizer)`` for a from-scratch (or saved) model."""
    model_config(name)
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        name, pretrained=pretrained, device=device, output_dict=True
    )
    tokenizer = open_clip.get_tokenizer(name)
    return model, preprocess_train, preprocess_val, tokenizer


def write_local_dir(model_name: str, checkpoint_path: Path, out_dir: Path) -> Path:
    """Write ``open_clip_config.json`` + weights so ``local-dir:out_dir`` loads without our registry."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_config(model_name), "preprocess_cfg": {}}
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    with atomic_path(out_dir / "open_clip_model.safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    write_atomic_text(out_dir / "open_clip_config.json", json.dumps(config, indent=2))
    return out_dir
