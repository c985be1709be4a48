"""Fashion-MNIST from Debian's ``dataset-fashion-mnist``, as a clip_benchmark "wds" classification set.

Debian installs the four original IDX files (gzipped) in ``/usr/share/datasets/fashion-mnist/``: 60,000
training and 10,000 test images of 28 x 28 grey pixels, 10 balanced classes (Zalando, MIT licence). They
are read with numpy (nothing is downloaded) and checked: IDX magic, dimensions, counts, data length and
label range. A file that fails a check raises ``ValueError`` naming the file.

``make_fashion_mnist`` writes the dataset root ``out_dir`` (the workflow calls it ``fashion_mnist/``) in
the evaluation-set layout (``evalset_layout``): a classification set with the 10 class names, prompt-ready
("t-shirt/top", ...), prompt templates, and the splits ``train`` and ``test`` (keys: png (RGB), cls (label
0-9)); ``manifest.json`` (what was written) last.

The same files serve zero-shot classification (test) and linear probing (train + test). Sample keys are
the images' indices in the IDX files, so a subset (``max_train``/``max_test``) keeps its provenance.
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from rankclip.atomic import temporary_path, write_atomic_text
from rankclip.evalset_layout import SHARD_NAME, write_layout, write_shard_count
from rankclip.hashing import sha256_file
from rankclip.shards import check_int, replace_shards

__all__ = [
    "CLASSNAMES",
    "DEBIAN_PACKAGE",
    "DEFAULT_ROOT",
    "FORMAT_VERSION",
    "IMAGE_SHAPE",
    "SPLITS",
    "TEMPLATES",
    "load_split",
    "make_fashion_mnist",
    "read_idx",
]

FORMAT_VERSION = 1
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SHAPE = (28, 28)
# split -> (images file, labels file, number of samples); each file is NAME.gz or NAME.
SPLITS: dict[str, tuple[str, str, int]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
# The dataset's labels 0-9 ("T-shirt/top", "Trouser", ..., "Ankle boot"), lower-cased for prompts.
CLASSNAMES: tuple[str, ...] = (
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
# The images are small, grey, centred product shots (light object on black).
TEMPLATES: tuple[str, ...] = (
    "a photo of a {c}.",
    "a black and white photo of a {c}.",
    "a low resolution photo of a {c}.",
    "a grayscale product photo of a {c}.",
    "a small picture of a {c}.",
    "a photo of the {c}, a piece of clothing.",
)

_UNSIGNED_BYTE = 0x08  # IDX type code of the only type Fashion-MNIST uses
_SPLIT_STREAMS = {"train": 0, "test": 1}


# --------------------------------------------------------------------------------------------- reading
def _missing(path: Path, root: Path) -> FileNotFoundError:
    hint = (
        f"install Debian's {DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE})"
        if root == DEFAULT_ROOT
        else f"root={root} must hold the four Fashion-MNIST IDX files (gzipped or not); "
        f"Debian's {DEBIAN_PACKAGE} installs them in {DEFAULT_ROOT}"
    )
    return FileNotFoundError(f"Fashion-MNIST file {path} (or {path.name}.gz) not found: {hint}")


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise _missing(root / name, root)


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError; a truncated stream, EOF
        raise ValueError(
            f"{path}: not a valid, complete gzip file ({error}); reinstall {DEBIAN_PACKAGE}"
        ) from error


def read_idx(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Read an IDX file of unsigned bytes (``.gz`` or not) and check it holds an array of ``shape``.

    Raises ``ValueError`` naming ``path`` for a corrupt gzip stream, a wrong magic number (type or number
    of dimensions), dimensions other than ``shape``, or a data length other than the header's.
    """
    path = Path(path)
    data = _read_bytes(path)
    expected_magic = (_UNSIGNED_BYTE << 8) | len(shape)
    if len(data) < 4 or data[:2] != b"\0\0" or int.from_bytes(data[:4], "big") != expected_magic:
        found = f"0x{int.from_bytes(data[:4], 'big'):08x}" if len(data) >= 4 else f"{len(data)} bytes"
        raise ValueError(
            f"{path}: bad IDX magic number {found}; expected 0x{expected_magic:08x} "
            f"(unsigned bytes, {len(shape)} dimension{'s' if len(shape) > 1 else ''})"
        )
    header = 4 + 4 * len(shape)
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes, expected {header})")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(len(shape)))
    if dims != shape:
        raise ValueError(f"{path}: IDX dimensions {dims}, expected {shape}")
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise ValueError(
            f"{path}: {len(data) - header} bytes of data after the header, expected {size} "
            f"(dimensions {shape}): the file is truncated or padded"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_split(split: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (``N x 28 x 28`` uint8) and labels (``N`` uint8, 0-9) of ``split`` ("train" or "test")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    root = Path(root) if root is not None else DEFAULT_ROOT
    images_name, labels_name, count = SPLITS[split]
    images_path, labels_path = _find(root, images_name), _find(root, labels_name)
    images = read_idx(images_path, (count, *IMAGE_SHAPE))
    labels = read_idx(labels_path, (count,))
    bad = np.flatnonzero(labels >= len(CLASSNAMES))
    if bad.size:
        raise ValueError(
            f"{labels_path}: label {int(labels[bad[0]])} at index {int(bad[0])} is out of range "
            f"0..{len(CLASSNAMES) - 1} ({bad.size} such labels)"
        )
    return images, labels


# --------------------------------------------------------------------------------------------- writing
def _stratified(labels: np.ndarray, limit: int | None, seed: int, split: str) -> np.ndarray:
    """Indices of at most ``limit`` samples, spread evenly over the classes, drawn with ``seed``; sorted.

    Class ``c`` gets ``limit // 10`` samples, one more for the first ``limit % 10`` classes (fewer if the
    class is smaller; Fashion-MNIST's classes are all the same size).
    """
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split]])
    chosen = []
    for label in range(len(CLASSNAMES)):
        members = np.flatnonzero(labels == label)
        take = limit // len(CLASSNAMES) + (1 if label < limit % len(CLASSNAMES) else 0)
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen))


def _png_bytes(pixels: np.ndarray, image_size: int | None) -> bytes:
    image = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")  # uint8 H x W: mode L
    if image_size is not None and image_size != IMAGE_SHAPE[0]:
        image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _write_split(samples, directory: Path, shard_size: int, root: Path) -> list[str]:
    """A split's shards and their count; shards (and temporaries) of an earlier, larger run go."""
    paths = replace_shards(samples, directory, shard_size, SHARD_NAME)
    write_shard_count(directory, len(paths))
    return [p.relative_to(root).as_posix() for p in paths]


def make_fashion_mnist(
    out_dir: Path,
    *,
    max_train: int | None = None,
    max_test: int | None = None,
    seed: int = 0,
    image_size: int | None = None,
    shard_size: int = 10_000,
    root: Path | None = None,
) -> dict:
    """Write Fashion-MNIST to the dataset root ``out_dir``; return the manifest (also manifest.json).

    ``max_train``/``max_test`` keep a seeded, class-stratified subset of that many samples of a split
    (``None``: all); the kept samples stay in file order. ``image_size`` ``None`` keeps 28 x 28, an int
    resizes (bicubic). ``root`` is where the IDX files are (default: Debian's ``DEFAULT_ROOT``). Every file
    is read and checked before anything is written; ``manifest.json`` is removed first and written last.
    """
    check_int("max_train", max_train, 1, optional=True)
    check_int("max_test", max_test, 1, optional=True)
    check_int("seed", seed, 0)
    check_int("image_size", image_size, 8, 1024, optional=True)
    check_int("shard_size", shard_size, 1)
    source = Path(root) if root is not None else DEFAULT_ROOT
    data = {split: load_split(split, source) for split in SPLITS}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)
    temporary_path(manifest_path).unlink(missing_ok=True)

    splits = {}
    for split, limit in (("train", max_train), ("test", max_test)):
        images, labels = data[split]
        indices = _stratified(labels, limit, int(seed), split)
        samples = (
            {
                "__key__": f"{int(i):07d}",
                "png": _png_bytes(images[i], image_size),
                "cls": str(int(labels[i])).encode("ascii"),
            }
            for i in indices
        )
        shards = _write_split(samples, out / split, int(shard_size), out)
        splits[split] = {
            "num_samples": int(len(indices)),
            "num_available": int(len(labels)),
            "class_counts": np.bincount(labels[indices], minlength=len(CLASSNAMES)).tolist(),
            "shards": shards,
        }
    write_layout(out, "classification", classnames=CLASSNAMES, templates=TEMPLATES)

    files = {}
    for split, (images_name, labels_name, _) in SPLITS.items():
        for name in (images_name, labels_name):
            path = _find(source, name)
            files[path.name] = {"split": split, "sha256": sha256_file(path)}
    manifest = {
        "format": "rankclip-fashion-mnist",
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "image_size": list(IMAGE_SHAPE) if image_size is None else [int(image_size)] * 2,
        "shard_size": int(shard_size),
        "source": {"package": DEBIAN_PACKAGE, "root": str(source), "license": "MIT", "files": files},
        "task": ["zeroshot", "linear_probe"],
        "keys": ["png", "cls"],
        "classnames": list(CLASSNAMES),
        "templates": list(TEMPLATES),
        "splits": splits,
    }
    write_atomic_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return manifest
