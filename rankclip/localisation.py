"""Word-level localisation heatmaps (the paper's Fig. 7): for each word of a caption, a map over the image.

Each word is encoded as its own text, ``template.format(word)`` (default ``"{}"``: the bare word, no
prompt), through the model's text tower, and L2-normalised. The map depends on the image tower:

- ViT (open_clip ``VisionTransformer``, e.g. ``rankclip-tiny-vit``, ViT-B-32): ``patch_cosine``. The
  patch tokens of the last transformer block go through the final LayerNorm (``ln_post``) and the
  projection (``proj``), exactly as the class token does to become the image embedding; the map is the
  cosine similarity of each patch feature with the word's text feature, on the (grid_h, grid_w) patch
  grid (image_size / patch_size per side). Values are cosines in [-1, 1].
- ResNet (open_clip ``ModifiedResNet``, e.g. ``rankclip-tiny-rn``, RN50): ``gradcam``, a gradient map:
  Grad-CAM (Selvaraju et al., 2017) on the output A of a residual stage for the score
  s = cos(image embedding, word feature): channel weights are the spatial mean of ds/dA, the map is
  ReLU(sum_c weight_c A_c) on that stage's grid. The stage (``layer``) is by default the last one whose
  grid has at least ``MIN_GRID`` (4) cells per side (``default_resnet_layer``): ``layer4`` (7x7) for
  RN50 at 224 px, ``layer2`` (4x4) for the 32-px tiny RN, whose ``layer4`` grid is 1x1. Values are >= 0
  and unnormalised.

Both are deterministic (eval mode, no dropout, fp32). ``caption_words`` splits a caption into words
(runs of letters and digits, inner apostrophes and hyphens kept, punctuation dropped, lower-cased; by
default each word once, in order of first appearance). The notebook ``notebooks/fig7_localisation.py``
draws the maps upsampled (bilinear) over the model's own view of the image (resized, centre-cropped),
each min-max normalised (``normalise_maps``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from rankclip import checkpoint as ckpt
from rankclip.eval.results import read_result
from rankclip.report import method_order

__all__ = [
    "WORD_PATTERN",
    "WordHeatmaps",
    "caption_words",
    "default_resnet_layer",
    "display_image",
    "load_checkpoint_model",
    "localisation_runs",
    "normalise_maps",
    "resnet_gradcam",
    "resolve_recorded_path",
    "retrieval_images",
    "upsample",
    "vit_patch_features",
    "word_features",
    "word_heatmaps",
]

WORD_PATTERN = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
MIN_GRID = 4
RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")  # output grid: image_size / 4, 8, 16, 32


def caption_words(caption: str, unique: bool = True) -> list[str]:
    """The words of ``caption``, lower-cased, punctuation dropped; ``unique``: each once, first-seen order."""
    words = [word.lower() for word in WORD_PATTERN.findall(caption)]
    return list(dict.fromkeys(words)) if unique else words


@dataclass
class WordHeatmaps:
    """One map per word: ``maps`` (len(words), H', W') float32; ``scores``: cosine of the pooled image
    embedding with each word's feature; ``method``: ``patch_cosine`` (ViT) or ``gradcam`` (ResNet);
    ``layer``: the ResNet stage of the Grad-CAM (None for a ViT)."""

    words: list[str]
    maps: np.ndarray
    scores: np.ndarray
    method: str
    layer: str | None = None

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.maps.shape[1:])


@contextmanager
def _eval_mode(model: torch.nn.Module):
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)


def _kind(model) -> str:
    from open_clip.modified_resnet import ModifiedResNet
    from open_clip.transformer import VisionTransformer

    if isinstance(model.visual, VisionTransformer):
        return "vit"
    if isinstance(model.visual, ModifiedResNet):
        return "resnet"
    raise NotImplementedError(f"no localisation map for image tower {type(model.visual).__name__}")


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def word_features(model, tokenizer, words: Sequence[str], template: str = "{}") -> torch.Tensor:
    """L2-normalised text features (len(words), d) of ``template.format(word)`` for each word."""
    if not words:
        raise ValueError("no words to encode")
    with _eval_mode(model):
        tokens = tokenizer([template.format(word) for word in words]).to(_device(model))
        return F.normalize(model.encode_text(tokens), dim=-1)


@torch.no_grad()
def vit_patch_features(model, images: torch.Tensor) -> torch.Tensor:
    """Projected patch features (B, grid_h, grid_w, d) of a ViT: last block -> ``ln_post`` -> ``proj``
    (not normalised), through open_clip's ``forward_intermediates``."""
    visual = model.visual
    if getattr(visual, "attn_pool", None) is not None:
        raise NotImplementedError("patch features of a ViT with an attentional pooler are not supported")
    with _eval_mode(model):
        out = visual.forward_intermediates(
            images.to(_device(model)),
            indices=1,
            normalize_intermediates=True,
            intermediates_only=True,
            output_fmt="NLC",
        )
    tokens = out["image_intermediates"][-1]  # (B, grid_h * grid_w, width), class token removed
    if visual.proj is not None:
        tokens = tokens @ visual.proj
    grid_h, grid_w = images.shape[-2] // visual.patch_size[0], images.shape[-1] // visual.patch_size[1]
    return tokens.reshape(len(images), grid_h, grid_w, -1)


def default_resnet_layer(image_size: int) -> str:
    """The last ResNet stage whose output grid has at least ``MIN_GRID`` cells per side (else layer1)."""
    for stage in range(len(RESNET_LAYERS), 0, -1):
        if image_size // 2 ** (stage + 1) >= MIN_GRID:
            return RESNET_LAYERS[stage - 1]
    return RESNET_LAYERS[0]


def resnet_gradcam(
    model, image: torch.Tensor, text_features: torch.Tensor, layer: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (W, h, w) of one image (3, H, W) for W normalised text features, on the output of
    ``model.visual.<layer>``, and the cosine scores (W,). One backward pass: the image is repeated per
    word (eval-mode BatchNorm makes the rows independent). ``layer`` None: ``default_resnet_layer``."""
    visual = model.visual
    layer = layer or default_resnet_layer(min(image.shape[-2:]))
    block = getattr(visual, layer, None)
    if not isinstance(block, torch.nn.Module):
        raise ValueError(f"model.visual has no block {layer!r} (ResNet blocks: layer1 ... layer4)")
    captured: dict[str, torch.Tensor] = {}
    handle = block.register_forward_hook(lambda module, inputs, output: captured.__setitem__("a", output))
    try:
        with _eval_mode(model), torch.enable_grad():
            count = max(1, len(text_features))
            x = image.to(_device(model))[None].expand(count, *image.shape).clone().requires_grad_(True)
            embedding = F.normalize(visual(x), dim=-1)
            activations = captured["a"]
            if len(text_features) == 0:
                return np.zeros((0, *activations.shape[-2:]), np.float32), np.zeros(0, np.float32)
            scores = (embedding * text_features.to(embedding)).sum(dim=-1)
            (grads,) = torch.autograd.grad(scores.sum(), activations)
    finally:
        handle.remove()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    maps = F.relu((weights * activations.detach()).sum(dim=1))
    return _numpy(maps), _numpy(scores)


def word_heatmaps(
    model,
    tokenizer,
    image: torch.Tensor,
    words: str | Sequence[str],
    template: str = "{}",
    layer: str | None = None,
) -> WordHeatmaps:
    """One heatmap per word over ``image`` (3, H, W), preprocessed as the model's validation transform
    does. ``words``: a list (kept as given, repeats included), or a caption (split by ``caption_words``).
    ViT: patch cosine maps; ResNet: Grad-CAM on ``layer`` (None: ``default_resnet_layer``)."""
    if isinstance(words, str):
        words = caption_words(words)
    words = list(words)
    if image.ndim != 3:
        raise ValueError(f"image must be one (3, H, W) tensor, got shape {tuple(image.shape)}")
    kind = _kind(model)
    texts = word_features(model, tokenizer, words, template) if words else torch.zeros(0, 1)
    if kind == "resnet":
        layer = layer or default_resnet_layer(min(image.shape[-2:]))
        maps, scores = resnet_gradcam(model, image, texts, layer)
        return WordHeatmaps(words, maps, scores, "gradcam", layer)
    patches = F.normalize(vit_patch_features(model, image[None])[0], dim=-1)  # (h, w, d)
    if not words:
        empty = np.zeros((0, *patches.shape[:2]), np.float32)
        return WordHeatmaps([], empty, np.zeros(0, np.float32), "patch_cosine")
    with torch.no_grad(), _eval_mode(model):
        pooled = F.normalize(model.encode_image(image[None].to(_device(model))), dim=-1)[0]
    maps = torch.einsum("hwd,nd->nhw", patches, texts.to(patches))
    scores = texts.to(pooled) @ pooled
    return WordHeatmaps(words, _numpy(maps), _numpy(scores), "patch_cosine")


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


# ------------------------------------------------------------------------------------------ drawing
def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Each map min-max scaled to [0, 1] (a constant map gives zeros)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.size == 0:
        return maps.copy()
    low = maps.min(axis=(-2, -1), keepdims=True)
    span = maps.max(axis=(-2, -1), keepdims=True) - low
    return np.where(span > 0, (maps - low) / np.where(span > 0, span, 1), 0).astype(np.float32)


def upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Maps (N, h, w) resized to ``size`` (H, W), bilinear (half-pixel centres, as the patches lie)."""
    tensor = torch.as_tensor(np.asarray(maps, dtype=np.float32))[:, None]
    if tensor.shape[0] == 0:
        return np.zeros((0, *size), np.float32)
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def display_image(image: torch.Tensor, preprocess) -> np.ndarray:
    """The model's view of an image, (H, W, 3) in [0, 1]: ``image`` (3, H, W) with ``preprocess``'s
    Normalize undone."""
    from torchvision.transforms import Normalize

    normalize = next((t for t in getattr(preprocess, "transforms", []) if isinstance(t, Normalize)), None)
    pixels = image.detach().float().cpu()
    if normalize is not None:
        mean = torch.as_tensor(normalize.mean, dtype=torch.float32)[:, None, None]
        std = torch.as_tensor(normalize.std, dtype=torch.float32)[:, None, None]
        pixels = pixels * std + mean
    return pixels.clamp(0, 1).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------ inputs
def load_checkpoint_model(path: Path, device: str | torch.device = "cpu"):
    """``(model, preprocess_val, tokenizer)`` of a ``rankclip train`` checkpoint, in eval mode."""
    from rankclip.models import create_model

    checkpoint = ckpt.load(Path(path), required=("state_dict", "model_name"))
    model, _, preprocess, tokenizer = create_model(checkpoint["model_name"], device="cpu")
    try:
        model.load_state_dict(ckpt.strip_module_prefix(checkpoint["state_dict"]))
    except RuntimeError as error:
        raise ckpt.CheckpointError(
            f"checkpoint {path}: weights do not fit {checkpoint['model_name']!r}: {error}"
        ) from None
    return model.eval().to(device), preprocess, tokenizer


def resolve_recorded_path(recorded: str, results_dir: Path) -> Path | None:
    """A path as a results JSON records it: absolute, or relative to the workflow's working folder. A
    relative one is tried against the current folder, then each folder above ``results_dir``; None when
    it exists nowhere."""
    path = Path(recorded)
    if path.is_absolute():
        return path if path.exists() else None
    for base in [Path.cwd(), *Path(results_dir).resolve().parents]:
        if (base / path).exists():
            return base / path
    return None


def localisation_runs(
    results_dir: Path,
    dataset: str,
    backbone: str | None = None,
    data_size: int | None = None,
    methods: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per method (its lowest seed) of the main runs evaluated on ``dataset`` (lambdas 1): run,
    recorded and resolved checkpoint and dataset paths (None: not found), split and checkpoint sha256."""
    rows = {}
    for path in sorted(Path(results_dir).rglob("*.json")):
        result = read_result(path)
        lambdas = (result.train_config.get("lambda_cross", 1.0), result.train_config.get("lambda_in", 1.0))
        if (
            result.dataset != dataset
            or (backbone is not None and result.backbone != backbone)
            or (data_size is not None and result.data_size != data_size)
            or (methods is not None and result.method not in methods)
            or lambdas != (1.0, 1.0)
        ):
            continue
        seed = -math.inf if result.seed is None else result.seed
        if result.method in rows and rows[result.method][0] <= seed:
            continue
        rows[result.method] = (
            seed,
            {
                "method": result.method,
                "run_id": result.run_id,
                "seed": result.seed,
                "backbone": result.backbone,
                "checkpoint_path": result.checkpoint_path,
                "checkpoint": resolve_recorded_path(result.checkpoint_path, results_dir),
                "checkpoint_sha256": result.checkpoint_sha256,
                "dataset_path": result.dataset_path,
                "dataset_dir": resolve_recorded_path(result.dataset_path, results_dir),
                "split": result.split,
            },
        )
    columns = ["method", "run_id", "seed", "backbone", "checkpoint_path", "checkpoint"]
    columns += ["checkpoint_sha256", "dataset_path", "dataset_dir", "split"]
    return pd.DataFrame([rows[m][1] for m in method_order(rows)], columns=columns)


def retrieval_images(dataset_dir: Path, split: str = "test", count: int = 3, seed: int = 0) -> list[dict]:
    """``count`` images of a retrieval split drawn with ``seed`` (sorted by index; the same for every
    model): ``index``, ``key``, ``image`` (PIL RGB) and ``caption`` (its first caption, or "")."""
    from rankclip.eval.datasets import WdsImages, WdsSplit

    index = WdsSplit(dataset_dir, split).index()
    captions = index.captions or [[""]] * len(index)
    count = min(count, len(index))
    chosen = np.sort(np.random.default_rng(seed).choice(len(index), size=count, replace=False))
    images = WdsImages(index, transform=lambda image: image)
    return [
        {"index": int(i), "key": index.keys[i], "image": images[int(i)], "caption": (captions[i] or [""])[0]}
        for i in chosen
    ]
