"""A procedurally rendered, seeded image-caption corpus for training tiny CLIP models on a CPU.

Each image shows one or two flat objects. An object has a shape (8), a colour (8), a size (2), a
position (5) and a fill (4); the scene has a background. Captions are drawn from several templates with
synonyms for every attribute word, so two images that share attributes get captions that share words
("a small crimson disc" / "a red circle at the top"), and images that share nothing share almost no
words. This graded similarity between samples is what RankCLIP's ranking-consistency losses exploit.

``make_demo`` writes, under ``out_dir``::

    manifest.json                     what was written (see ``make_demo``); written last
    train/shard-000000.tar ...        keys: png, txt, syn.txt (second caption, another template), json
    eval/zeroshot/                    classification set, 64 "colour shape" classes; test: png, cls, json
    eval/zeroshot_shift/              same classes, sketch-style rendering (the ImageNet-R analogue)
    eval/retrieval/                   retrieval set: txt holds 5 captions, one per line; test: png, txt, json
    eval/linear_probe/                32 "fill shape" classes (a texture task, like DTD), split train/test

each evaluation set in the evaluation-set layout (``evalset_layout``).

Every sample is drawn from its own ``numpy.random.default_rng([seed, split, index])`` stream, so the
corpus is bit-identical for the same seed (whatever ``shard_size``) and different for another seed.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from rankclip.atomic import temporary_path, write_atomic_text
from rankclip.evalset_layout import SHARD_NAME, write_layout, write_shard_count
from rankclip.shards import check_int, replace_shards

__all__ = [
    "BACKGROUND_WORDS",
    "COLOUR_RGB",
    "COLOUR_WORDS",
    "FILL_WORDS",
    "FORMAT_VERSION",
    "LINEAR_PROBE_CLASSES",
    "POSITION_WORDS",
    "SHAPE_WORDS",
    "SIZE_WORDS",
    "ZEROSHOT_CLASSES",
    "ZEROSHOT_TEMPLATES",
    "Scene",
    "SceneObject",
    "make_demo",
    "render_scene",
    "sample_scene",
    "scene_captions",
]

FORMAT_VERSION = 2  # 2: every retrieval caption unique to its image

# Attribute vocabularies. The first word of each tuple is the canonical name (used in class names and
# the json); the others are synonyms that captions draw from.
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "round shape", "disc"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle", "triangular shape", "three-sided shape"),
    "star": ("star", "five-pointed star", "star shape"),
    "cross": ("cross", "plus sign", "plus shape"),
    "heart": ("heart", "heart shape", "love heart"),
    "diamond": ("diamond", "rhombus", "lozenge"),
    "hexagon": ("hexagon", "six-sided shape", "hex shape"),
}
COLOUR_WORDS: dict[str, tuple[str, ...]] = {
    "red": ("red", "crimson", "scarlet"),
    "orange": ("orange", "tangerine", "amber"),
    "yellow": ("yellow", "golden", "lemon"),
    "green": ("green", "emerald", "grass-green"),
    "cyan": ("cyan", "turquoise", "aqua"),
    "blue": ("blue", "cobalt", "azure"),
    "purple": ("purple", "violet", "plum"),
    "pink": ("pink", "rose", "fuchsia"),
}
COLOUR_RGB: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 30),
    "green": (40, 170, 50),
    "cyan": (30, 200, 210),
    "blue": (40, 70, 220),
    "purple": (130, 50, 180),
    "pink": (245, 120, 190),
}
SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "tiny", "little"),
    "large": ("large", "big", "huge"),
}
POSITION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "to the left"),
    "right": ("on the right", "at the right", "to the right"),
    "top": ("at the top", "near the top", "in the upper part"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part"),
    "centre": ("in the centre", "in the middle", "at the center"),
}
FILL_WORDS: dict[str, tuple[str, ...]] = {
    "solid": ("solid", "filled", "opaque"),
    "striped": ("striped", "stripy", "lined"),
    "outlined": ("outlined", "hollow", "empty"),
    "dotted": ("dotted", "spotted", "polka-dot"),
}
# Training scenes use "plain"/"noisy"; the distribution-shifted set uses "dark"/"speckled".
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "blank", "clean"),
    "noisy": ("noisy", "grainy", "textured"),
    "dark": ("dark", "black", "night"),
    "speckled": ("speckled", "grey", "busy"),
}

SHAPES = tuple(SHAPE_WORDS)
COLOURS = tuple(COLOUR_WORDS)
SIZES = tuple(SIZE_WORDS)
POSITIONS = tuple(POSITION_WORDS)
FILLS = tuple(FILL_WORDS)

# Zero-shot classes: colour x shape ("red circle"), 64 classes, so top-1/3/5 are all informative and
# near-miss classes exist (a red square is a better wrong answer than a blue star).
ZEROSHOT_CLASSES: tuple[str, ...] = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
# Article-free, so "orange circle" reads as well as "red circle".
ZEROSHOT_TEMPLATES: tuple[str, ...] = (
    "a photo of one {c}.",
    "a picture of one {c}.",
    "a drawing of one {c}.",
    "one {c} on a plain background.",
    "the {c}.",
    "{c}.",
)
# Linear-probe classes: fill x shape ("striped star"), 32 classes, colour is a nuisance variable: a
# texture-and-form task (the DTD / GTSRB analogue) that zero-shot does not already measure.
LINEAR_PROBE_CLASSES: tuple[str, ...] = tuple(f"{f} {s}" for f in FILLS for s in SHAPES)

RETRIEVAL_CAPTIONS_PER_IMAGE = 5
TWO_OBJECT_PROBABILITY = 0.3

# Per-split streams of the per-sample generator: default_rng([seed, SPLIT_STREAMS[split], index]).
SPLIT_STREAMS = {
    "train": 0,
    "zeroshot/test": 1,
    "zeroshot_shift/test": 2,
    "retrieval/test": 3,
    "linear_probe/train": 4,
    "linear_probe/test": 5,
    "retrieval/test/redraw": 6,  # a retrieval caption drawn again: it clashed with another image's
}

_SUPERSAMPLE = 2  # draw at 2x and box-downsample: cheap antialiasing
_POSITION_XY = {
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "centre": (0.5, 0.5),
}
_TWO_OBJECT_LAYOUTS = (("left", "right"), ("right", "left"), ("top", "bottom"), ("bottom", "top"))
_RADIUS = {"small": 0.13, "large": 0.21}  # fraction of the image side


# --------------------------------------------------------------------------------------------- scenes
@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    position: str
    fill: str


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: str
    style: str  # "clean" (training distribution) or "sketch" (the shifted rendering)

    def to_json(self) -> dict:
        return {
            "objects": [asdict(o) for o in self.objects],
            "background": self.background,
            "style": self.style,
        }


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def sample_scene(
    rng: np.random.Generator,
    num_objects: int = 1,
    style: str = "clean",
    shape: str | None = None,
    colour: str | None = None,
    fill: str | None = None,
) -> Scene:
    """Draw a scene; ``shape``/``colour``/``fill`` pin the first object's attributes (for labelled sets).

    Two-object scenes put the objects on opposite sides (left/right or top/bottom) and never repeat the
    same colour and shape.
    """
    if num_objects not in (1, 2):
        raise ValueError(f"num_objects must be 1 or 2, got {num_objects}")
    if style not in ("clean", "sketch"):
        raise ValueError(f"style must be 'clean' or 'sketch', got {style!r}")
    for name, value, valid in (("shape", shape, SHAPES), ("colour", colour, COLOURS), ("fill", fill, FILLS)):
        if value is not None and value not in valid:
            raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")
    positions = (_pick(rng, POSITIONS),) if num_objects == 1 else _pick(rng, _TWO_OBJECT_LAYOUTS)
    objects: list[SceneObject] = []
    for i, position in enumerate(positions):
        while True:
            obj = SceneObject(
                shape=shape if (i == 0 and shape) else _pick(rng, SHAPES),
                colour=colour if (i == 0 and colour) else _pick(rng, COLOURS),
                size=_pick(rng, SIZES),
                position=position,
                fill="outlined" if style == "sketch" else (fill if (i == 0 and fill) else _pick(rng, FILLS)),
            )
            if not objects or (obj.shape, obj.colour) != (objects[0].shape, objects[0].colour):
                break
        objects.append(obj)
    background = _pick(rng, ("plain", "noisy") if style == "clean" else ("dark", "speckled"))
    return Scene(objects=tuple(objects), background=background, style=style)


# ------------------------------------------------------------------------------------------- captions
# One-object and two-object caption templates. Slots: {shape}, {colour}, {size}, {position}, {fill},
# {background}; in two-object templates suffixed with 1 or 2. Every template names each object's colour
# and shape; the other attributes appear in some templates only, as in real alt-text.
SINGLE_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape} {position}",
    "a photo of a {size} {colour} {shape}",
    "a {fill} {colour} {shape} on a {background} background",
    "a {size} {fill} {colour} {shape} {position}",
    "there is a {colour} {shape} {position}",
    "a picture of one {colour} {shape}",
    "{colour} {shape}, {size} and {fill}",
    "a drawing of a {size} {colour} {shape} {position}",
)
PAIR_TEMPLATES: tuple[str, ...] = (
    "two objects: a {colour1} {shape1} and a {colour2} {shape2}",
    "a {colour1} {shape1} {position1} and a {colour2} {shape2} {position2}",
    "a photo of a {size1} {colour1} {shape1} next to a {size2} {colour2} {shape2}",
    "a {colour2} {shape2} together with a {colour1} {shape1}",
    "a {fill1} {colour1} {shape1} {position1}, a {fill2} {colour2} {shape2} {position2}",
    "a pair of shapes, a {colour1} {shape1} and a {colour2} {shape2}, on a {background} background",
)
_ARTICLE = re.compile(r"\ba (?=[aeiou])")


def _word(rng: np.random.Generator, synonyms: tuple[str, ...]) -> str:
    """The canonical word half of the time, else any synonym: frequent and rare words, as in real text."""
    return synonyms[0] if rng.random() < 0.5 else _pick(rng, synonyms)


def _fill_template(template: str, scene: Scene, rng: np.random.Generator) -> str:
    words = {"background": _word(rng, BACKGROUND_WORDS[scene.background])}
    suffixes = ("",) if len(scene.objects) == 1 else ("1", "2")
    for suffix, obj in zip(suffixes, scene.objects, strict=True):
        words["shape" + suffix] = _word(rng, SHAPE_WORDS[obj.shape])
        words["colour" + suffix] = _word(rng, COLOUR_WORDS[obj.colour])
        words["size" + suffix] = _word(rng, SIZE_WORDS[obj.size])
        words["position" + suffix] = _word(rng, POSITION_WORDS[obj.position])
        words["fill" + suffix] = _word(rng, FILL_WORDS[obj.fill])
    return _ARTICLE.sub("an ", template.format(**words))


def _templates(scene: Scene) -> tuple[str, ...]:
    return SINGLE_TEMPLATES if len(scene.objects) == 1 else PAIR_TEMPLATES


def caption_templates(scene: Scene, rng: np.random.Generator, count: int) -> list[str]:
    """``count`` different caption templates for ``scene``, in a random order."""
    templates = _templates(scene)
    if not 1 <= count <= len(templates):
        raise ValueError(f"count must be in 1..{len(templates)}, got {count}")
    return [templates[int(t)] for t in rng.permutation(len(templates))[:count]]


def scene_captions(scene: Scene, rng: np.random.Generator, count: int) -> list[str]:
    """``count`` captions of ``scene``, each from a different template, synonyms drawn independently."""
    return [_fill_template(template, scene, rng) for template in caption_templates(scene, rng, count)]


def unused_caption(
    template: str, scene: Scene, rng: np.random.Generator, used: set[str], tries: int = 100
) -> str | None:
    """A caption of ``scene`` not in ``used``: from ``template`` if one of ``tries`` draws gives one, else
    from the scene's other templates (in a random order); None when every draw is taken."""
    others = [t for t in _templates(scene) if t != template]
    for candidate in [template, *(others[int(i)] for i in rng.permutation(len(others)))]:
        for _ in range(tries):
            caption = _fill_template(candidate, scene, rng)
            if caption not in used:
                return caption
    return None


# ------------------------------------------------------------------------------------------ rendering
def _polygon(points: list[tuple[float, float]]) -> np.ndarray:
    return np.asarray(points, dtype=np.float64)


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star() -> np.ndarray:
    radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
    angles = -np.pi / 2 + 2 * np.pi * np.arange(10) / 10
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([x / 17, (y + 2.5) / 15.5], axis=1)


# Unit outlines (about [-1, 1]^2, y down) of every shape.
_OUTLINES: dict[str, np.ndarray] = {
    "circle": _regular(48),
    "square": _polygon([(-0.82, -0.82), (0.82, -0.82), (0.82, 0.82), (-0.82, 0.82)]),
    "triangle": _regular(3) + np.array([0.0, 0.2]),
    "star": _star(),
    "cross": _polygon(
        [
            (-0.32, -1),
            (0.32, -1),
            (0.32, -0.32),
            (1, -0.32),
            (1, 0.32),
            (0.32, 0.32),
            (0.32, 1),
            (-0.32, 1),
            (-0.32, 0.32),
            (-1, 0.32),
            (-1, -0.32),
            (-0.32, -0.32),
        ]
    ),  # fmt: skip
    "heart": _heart(),
    "diamond": _polygon([(0, -1), (0.62, 0), (0, 1), (-0.62, 0)]),
    "hexagon": _regular(6, phase=0.0),
}


@cache
def _pixel_grid(side: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:side, 0:side].astype(np.float32)
    return xs, ys


def _jittered_rgb(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    rgb = np.clip(np.asarray(COLOUR_RGB[colour]) + rng.integers(-18, 19, size=3), 0, 255)
    return tuple(int(v) for v in rgb)


def _background(rng: np.random.Generator, kind: str, side: int) -> tuple[np.ndarray, float]:
    """Base RGB colour and noise standard deviation (applied after downsampling)."""
    if kind in ("plain", "noisy"):
        base = rng.integers(205, 251) + rng.integers(-8, 9, size=3)
        return base.astype(np.float32), (0.0 if kind == "plain" else 10.0)
    if kind == "dark":
        base = rng.integers(20, 61) + rng.integers(-6, 7, size=3)
        return base.astype(np.float32), 14.0
    base = rng.integers(115, 151) + rng.integers(-10, 11, size=3)  # speckled
    return base.astype(np.float32), 28.0


def _object_points(
    obj: SceneObject, rng: np.random.Generator, side: int, sketch: bool
) -> tuple[np.ndarray, float]:
    """Outline vertices in canvas pixels, and the object's radius."""
    jitter, max_turn = (0.07, 45.0) if sketch else (0.04, 12.0)
    cx, cy = _POSITION_XY[obj.position]
    centre = (np.array([cx, cy]) + rng.uniform(-jitter, jitter, size=2)) * side
    radius = _RADIUS[obj.size] * rng.uniform(0.9, 1.1) * side
    turn = np.deg2rad(rng.uniform(-max_turn, max_turn))
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return centre + radius * (_OUTLINES[obj.shape] @ rotation.T), radius


def _pattern_mask(fill: str, rng: np.random.Generator, side: int) -> np.ndarray:
    """Boolean mask of the stripe or dot pattern over the whole canvas."""
    xs, ys = _pixel_grid(side)
    angle = rng.uniform(0, np.pi)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    period = max(4.0 * _SUPERSAMPLE, side / 9)  # tied to the image, so it survives resizing to 32 px
    if fill == "striped":
        return (u % period) < period / 2
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    du, dv = (u % period) - period / 2, (v % period) - period / 2
    return du * du + dv * dv < (0.3 * period) ** 2


def _draw_object(canvas: Image.Image, obj: SceneObject, rng: np.random.Generator, sketch: bool) -> None:
    side = canvas.size[0]
    points, radius = _object_points(obj, rng, side, sketch)
    rgb = _jittered_rgb(rng, obj.colour)
    draw = ImageDraw.Draw(canvas)
    if sketch:  # two hand-drawn, slightly displaced strokes around the outline
        width = max(2, int(round(radius * rng.uniform(0.09, 0.16))))
        for _ in range(2):
            wobbly = points + rng.normal(0, 0.05 * radius, size=points.shape)
            draw.line(
                [tuple(p) for p in np.vstack([wobbly, wobbly[:1]])], fill=rgb, width=width, joint="curve"
            )
        return
    outline = [tuple(p) for p in points]
    line_width = max(2, int(round(0.14 * radius)))
    if obj.fill == "solid":
        draw.polygon(outline, fill=rgb)
    elif obj.fill == "outlined":
        draw.line(outline + outline[:1], fill=rgb, width=line_width, joint="curve")
    else:
        shape_mask = Image.new("L", canvas.size, 0)
        ImageDraw.Draw(shape_mask).polygon(outline, fill=255)
        pattern = _pattern_mask(obj.fill, rng, side)
        mask = Image.fromarray(np.where(pattern, np.asarray(shape_mask), 0).astype(np.uint8))
        canvas.paste(rgb, (0, 0), mask)
        draw.line(outline + outline[:1], fill=rgb, width=max(2, line_width // 2), joint="curve")


def render_scene(scene: Scene, rng: np.random.Generator, image_size: int) -> Image.Image:
    """Render ``scene`` as an RGB image of ``image_size`` x ``image_size`` pixels."""
    side = image_size * _SUPERSAMPLE
    base, noise_std = _background(rng, scene.background, side)
    canvas = Image.new("RGB", (side, side), tuple(int(v) for v in np.clip(base, 0, 255)))
    for obj in scene.objects:
        _draw_object(canvas, obj, rng, sketch=scene.style == "sketch")
    image = canvas.resize((image_size, image_size), Image.Resampling.BOX)
    if noise_std > 0:
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, noise_std, size=pixels.shape).astype(np.float32)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# -------------------------------------------------------------------------------------------- samples
def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_STREAMS[split], index])


def _json_bytes(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _num_objects(rng: np.random.Generator) -> int:
    return 2 if rng.random() < TWO_OBJECT_PROBABILITY else 1


def _train_sample(seed: int, index: int, image_size: int) -> dict[str, bytes | str]:
    rng = _rng(seed, "train", index)
    scene = sample_scene(rng, num_objects=_num_objects(rng))
    caption, synthetic = scene_captions(scene, rng, 2)
    image = render_scene(scene, rng, image_size)
    return {
        "__key__": f"{index:08d}",
        "png": _png_bytes(image),
        "txt": caption.encode("utf-8"),
        "syn.txt": synthetic.encode("utf-8"),
        "json": _json_bytes(scene.to_json()),
    }


def _zeroshot_sample(seed: int, split: str, index: int, image_size: int) -> dict[str, bytes | str]:
    rng = _rng(seed, split, index)
    label = index % len(ZEROSHOT_CLASSES)  # cycle through the classes: balanced test sets
    colour, shape = ZEROSHOT_CLASSES[label].split(" ")
    style = "sketch" if split.startswith("zeroshot_shift") else "clean"
    scene = sample_scene(rng, num_objects=1, style=style, shape=shape, colour=colour)
    image = render_scene(scene, rng, image_size)
    return {
        "__key__": f"{index:07d}",
        "png": _png_bytes(image),
        "cls": str(label).encode("ascii"),
        "json": _json_bytes(scene.to_json()),
    }


def _linear_probe_sample(seed: int, split: str, index: int, image_size: int) -> dict[str, bytes | str]:
    rng = _rng(seed, split, index)
    label = index % len(LINEAR_PROBE_CLASSES)
    fill, shape = LINEAR_PROBE_CLASSES[label].split(" ")
    scene = sample_scene(rng, num_objects=1, shape=shape, fill=fill)
    image = render_scene(scene, rng, image_size)
    return {
        "__key__": f"{index:07d}",
        "png": _png_bytes(image),
        "cls": str(label).encode("ascii"),
        "json": _json_bytes(scene.to_json()),
    }


def _retrieval_samples(seed: int, count: int, image_size: int) -> Iterator[dict[str, bytes | str]]:
    """The retrieval set. Every caption string belongs to one image (COCO's nearly all do), so no exact
    score tie between two images' captions decides a hit: a caption an earlier image (or this one) already
    has is drawn again, from the same template first, on the image's own second random stream (the first
    draws, the images and the captions without a clash are those of the plain per-image stream)."""
    used: set[str] = set()
    for index in range(count):
        rng = _rng(seed, "retrieval/test", index)
        scene = sample_scene(rng, num_objects=_num_objects(rng))
        templates = caption_templates(scene, rng, RETRIEVAL_CAPTIONS_PER_IMAGE)
        captions = [_fill_template(template, scene, rng) for template in templates]
        image = render_scene(scene, rng, image_size)
        redraw = _rng(seed, "retrieval/test/redraw", index)
        for i, template in enumerate(templates):
            if captions[i] in used:
                captions[i] = unused_caption(template, scene, redraw, used)
                if captions[i] is None:
                    raise ValueError(
                        f"retrieval image {index}: every caption its scene can have is taken by other images "
                        "(num_eval too large for the caption vocabulary)"
                    )
            used.add(captions[i])
        yield {
            "__key__": f"{index:07d}",
            "png": _png_bytes(image),
            "txt": "\n".join(captions).encode("utf-8"),
            "json": _json_bytes(scene.to_json()),
        }


# ------------------------------------------------------------------------------------------ make_demo
def _write_split(samples, directory: Path, shard_size: int, name_pattern: str, root: Path) -> dict:
    paths = replace_shards(samples, directory, shard_size, name_pattern)
    return {"shards": [p.relative_to(root).as_posix() for p in paths]}


def _write_wds_split(samples, directory: Path, shard_size: int, root: Path, count: int) -> dict:
    """A split of an evaluation set: its shards and their count (``evalset_layout``)."""
    entry = _write_split(samples, directory, shard_size, SHARD_NAME, root)
    write_shard_count(directory, len(entry["shards"]))
    return {"num_samples": count, **entry}


def make_demo(
    out_dir: Path,
    seed: int = 0,
    num_train: int = 8192,
    num_eval: int = 1000,
    image_size: int = 64,
    shard_size: int = 1024,
) -> dict:
    """Render the demo corpus into ``out_dir`` and return its manifest (also written to manifest.json).

    ``num_train`` training pairs go to ``train/shard-NNNNNN.tar`` (``shard_size`` per shard; the defaults
    give 8 shards). Each evaluation set (zero-shot, shifted zero-shot, retrieval, linear-probe train and
    test) gets ``num_eval`` images. Shard paths in the manifest are relative to ``out_dir``.
    ``manifest.json`` is removed first and written last, so its presence means the corpus is complete.
    """
    check_int("seed", seed, 0)
    check_int("num_train", num_train, 1)
    check_int("num_eval", num_eval, 1)
    check_int("image_size", image_size, 16, 1024)
    check_int("shard_size", shard_size, 1)
    seed, num_train, num_eval, image_size, shard_size = map(
        int, (seed, num_train, num_eval, image_size, shard_size)
    )
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    manifest_path.unlink(missing_ok=True)
    temporary_path(manifest_path).unlink(missing_ok=True)

    train = _write_split(
        (_train_sample(seed, i, image_size) for i in range(num_train)),
        root / "train",
        shard_size,
        "shard-{index:06d}.tar",
        root,
    )

    evaluation: dict[str, dict] = {}
    for name, description in (
        ("zeroshot", "single objects, training-style rendering"),
        ("zeroshot_shift", "single objects, sketch-style rendering on dark or speckled backgrounds"),
    ):
        directory = root / "eval" / name
        split = f"{name}/test"
        test = _write_wds_split(
            (_zeroshot_sample(seed, split, i, image_size) for i in range(num_eval)),
            directory / "test",
            shard_size,
            root,
            num_eval,
        )
        write_layout(directory, "classification", classnames=ZEROSHOT_CLASSES, templates=ZEROSHOT_TEMPLATES)
        evaluation[name] = {
            "task": "zeroshot",
            "root": (directory.relative_to(root)).as_posix(),
            "label": "colour shape",
            "description": description,
            "classnames": list(ZEROSHOT_CLASSES),
            "templates": list(ZEROSHOT_TEMPLATES),
            "splits": {"test": test},
        }

    directory = root / "eval" / "retrieval"
    test = _write_wds_split(
        _retrieval_samples(seed, num_eval, image_size),
        directory / "test",
        shard_size,
        root,
        num_eval,
    )
    write_layout(directory, "retrieval")
    evaluation["retrieval"] = {
        "task": "retrieval",
        "root": directory.relative_to(root).as_posix(),
        "captions_per_image": RETRIEVAL_CAPTIONS_PER_IMAGE,
        "description": "training-distribution scenes, 5 captions each; no caption string is another image's",
        "splits": {"test": test},
    }

    directory = root / "eval" / "linear_probe"
    splits = {
        name: _write_wds_split(
            (_linear_probe_sample(seed, f"linear_probe/{name}", i, image_size) for i in range(num_eval)),
            directory / name,
            shard_size,
            root,
            num_eval,
        )
        for name in ("train", "test")
    }
    write_layout(directory, "classification", classnames=LINEAR_PROBE_CLASSES)
    evaluation["linear_probe"] = {
        "task": "linear_probe",
        "root": directory.relative_to(root).as_posix(),
        "label": "fill shape",
        "description": "single objects, random colour; classify the fill pattern and the shape",
        "classnames": list(LINEAR_PROBE_CLASSES),
        "splits": splits,
    }

    manifest = {
        "format": "rankclip-demo",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "image_size": image_size,
        "shard_size": shard_size,
        "train": {
            "num_samples": num_train,
            "keys": ["png", "txt", "syn.txt", "json"],
            **train,
        },
        "eval": evaluation,
        "attributes": {
            "shape": list(SHAPES),
            "colour": list(COLOURS),
            "size": list(SIZES),
            "position": list(POSITIONS),
            "fill": list(FILLS),
        },
    }
    write_atomic_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return manifest
