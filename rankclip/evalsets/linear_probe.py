"""The ten linear-probe sets of the paper's Table 3, read with torchvision's dataset classes.

CIFAR-10, CIFAR-100, DTD, FGVC-Aircraft, Food101, GTSRB, Oxford-IIIT Pets, Rendered SST2, STL10 and SVHN.
Each source file is fetched (or given) and verified by ``converter.fetch_resource`` (sha256 from TFDS /
torchvision's prototype datasets / Keras, where published; md5 as torchvision checks it), then linked into
a torchvision root at the path where the class's own ``download=True`` looks for it
(``<downloads>/torchvision/<placement>``). torchvision finds the file with the right md5, does not
download it, extracts it in its own layout and reads it: the same code paths its users run, no network.

Splits follow the CLIP paper's linear-probe protocol (its Table 9 sizes): the training split is every
labelled non-test part (DTD and Rendered SST2: train + val; FGVC-Aircraft and Pets: trainval), the test
split is the published test set. Samples are keyed ``<part>_<index>`` (``train_000123``,
``val_000007``) and keep their class index as ``cls``. Images that are files (DTD, FGVC-Aircraft,
Food101, Rendered SST2) are stored as published, through the classes' ``loader`` argument; arrays (CIFAR,
STL10, SVHN) and the classes without a ``loader`` (GTSRB's PPMs, Pets) are encoded as PNG (lossless).
Class names are torchvision's (``_`` -> space), or CLIP's for GTSRB and SVHN, which torchvision lacks;
the few prompt templates are CLIP's style (linear probing itself uses no text).

torchvision checks its own published md5s (class attributes and literals). Only when the caller replaces
the md5 of every file of a set (``make_eval_set(md5=...)``, the workflow's ``data.eval_sets.md5``: a
mirror of other files, such as the rehearsal's) are torchvision's checks of that set redirected, for the
conversion only and logged: each placed file against the caller's md5, and the files torchvision
extracted from those verified archives (CIFAR's and STL10's batches) accepted as extracted.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from rankclip.evalsets.converter import (
    EvalSetError,
    EvalSetSpec,
    check_count,
    spec_from_registry,
    write_layout,
    write_split,
)

__all__ = ["SETS", "torchvision_md5_overrides", "torchvision_root"]

log = logging.getLogger(__name__)

# CLIP's GTSRB class names (the 43 class ids 0..42 in order).
GTSRB_CLASSNAMES = (
    "red and white circle 20 kph speed limit",
    "red and white circle 30 kph speed limit",
    "red and white circle 50 kph speed limit",
    "red and white circle 60 kph speed limit",
    "red and white circle 70 kph speed limit",
    "red and white circle 80 kph speed limit",
    "end / de-restriction of 80 kph speed limit",
    "red and white circle 100 kph speed limit",
    "red and white circle 120 kph speed limit",
    "red and white circle red car and black car no passing",
    "red and white circle red truck and black car no passing",
    "red and white triangle road intersection warning",
    "white and yellow diamond priority road",
    "red and white upside down triangle yield right-of-way",
    "stop",
    "empty red and white circle",
    "red and white circle no truck entry",
    "red circle with white horizonal stripe no entry",
    "red and white triangle with exclamation mark warning",
    "red and white triangle with black left curve approaching warning",
    "red and white triangle with black right curve approaching warning",
    "red and white triangle with black double curve approaching warning",
    "red and white triangle rough / bumpy road warning",
    "red and white triangle car skidding / slipping warning",
    "red and white triangle with merging / narrow lanes warning",
    "red and white triangle with person digging / construction / road work warning",
    "red and white triangle with traffic light approaching warning",
    "red and white triangle with person walking warning",
    "red and white triangle with child and person walking warning",
    "red and white triangle with bicyle warning",
    "red and white triangle with snowflake / ice warning",
    "red and white triangle with deer warning",
    "white circle with gray strike bar no speed limit",
    "blue circle with white right turn arrow mandatory",
    "blue circle with white left turn arrow mandatory",
    "blue circle with white forward arrow mandatory",
    "blue circle with white forward or right turn arrow mandatory",
    "blue circle with white forward or left turn arrow mandatory",
    "blue circle with white keep right arrow mandatory",
    "blue circle with white keep left arrow mandatory",
    "blue circle with white arrows indicating a traffic circle",
    "white circle with gray strike bar indicating no passing for cars has ended",
    "white circle with gray strike bar indicating no passing for trucks has ended",
)
SVHN_CLASSNAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class TorchvisionSet:
    """How one set is read with torchvision: class, parts per split, where each file goes, names."""

    tv_class: str
    splits: dict[str, tuple[tuple[str, dict], ...]]  # split -> ((part name, constructor kwargs), ...)
    placement: dict[str, str]  # resource file name -> path below the torchvision root
    templates: tuple[str, ...]
    classnames: tuple[str, ...] | None = None  # None: the class's ``classes``
    raw_loader: bool = False  # the class takes ``loader=``: keep the image files' bytes


def torchvision_root(work_dir: Path) -> Path:
    """The root handed to the torchvision classes (extracted files live there)."""
    return Path(work_dir) / "torchvision"


@dataclass(frozen=True)
class _RawImage:
    data: bytes
    ext: str


def _raw_loader(path) -> _RawImage:
    suffix = Path(path).suffix.lower().lstrip(".")
    return _RawImage(Path(path).read_bytes(), "jpg" if suffix == "jpeg" else suffix)


def _image_member(image) -> tuple[str, bytes]:
    """(extension, bytes) of a sample's image: published JPEG/PNG bytes as they are, anything else PNG."""
    if isinstance(image, _RawImage):
        if image.ext in ("jpg", "png"):
            return image.ext, image.data
        image = Image.open(io.BytesIO(image.data))
    if not isinstance(image, Image.Image):
        raise EvalSetError(f"expected a PIL image from the dataset, got {type(image).__name__}")
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG", compress_level=6)
    return "png", buffer.getvalue()


def _link(target: Path, source: Path) -> None:
    """Make ``target`` a symlink to ``source`` (replacing what an earlier run left there)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    source = Path(source).resolve()
    if target.is_symlink() and target.resolve() == source:
        return
    if target.is_symlink() or target.exists():
        target.unlink()
    os.symlink(source, target)


def _clean(name: str) -> str:
    return str(name).replace("_", " ").strip()


@contextlib.contextmanager
def torchvision_md5_overrides(spec: EvalSetSpec, root: Path, md5: Mapping[str, str]) -> Iterator[None]:
    """While converting ``spec``: torchvision's md5 checks follow ``md5`` when it covers all its files.

    Without overrides for every file of the set nothing is changed (torchvision's published md5s hold).
    """
    import torchvision.datasets.utils as tv_utils

    files = {r.filename for r in spec.resources}
    if not md5 or not files <= set(md5):
        yield
        return
    published = tv_utils.check_md5
    placed = {Path(spec.extra["torchvision"].placement[f]).name: md5[f].lower() for f in files}
    root = Path(root).resolve()

    def check_md5(fpath, expected: str, **kwargs) -> bool:
        path = Path(fpath)
        if path.name in placed:
            return tv_utils.calculate_md5(fpath, **kwargs) == placed[path.name]
        if path.resolve().is_relative_to(root):
            log.info(
                "%s: extracted from an archive verified by the given md5; torchvision's not checked", path
            )
            return True
        return published(fpath, expected, **kwargs)

    log.warning(
        "%s: torchvision's published md5s replaced by the given ones for %s", spec.name, sorted(files)
    )
    tv_utils.check_md5 = check_md5
    try:
        yield
    finally:
        tv_utils.check_md5 = published


def _convert_torchvision(spec: EvalSetSpec, out: Path, files: dict[str, Path], options) -> dict:
    if options.work_dir is None:
        raise ValueError("the torchvision sets need options.work_dir (the downloads folder)")
    root = torchvision_root(options.work_dir)
    with torchvision_md5_overrides(spec, root, options.md5):
        return _read_torchvision(spec, out, files, options, root)


def _read_torchvision(spec: EvalSetSpec, out: Path, files: dict[str, Path], options, root: Path) -> dict:
    import torchvision.datasets

    tv: TorchvisionSet = spec.extra["torchvision"]
    for filename, placement in tv.placement.items():
        _link(root / placement, files[filename])
    cls = getattr(torchvision.datasets, tv.tv_class)
    extra = {"loader": _raw_loader} if tv.raw_loader else {}
    classnames = list(tv.classnames) if tv.classnames is not None else None

    def open_part(part: str, kwargs: dict):
        try:
            return cls(str(root), download=True, **kwargs, **extra)
        except RuntimeError as error:  # torchvision: "Dataset not found or corrupted"
            raise EvalSetError(f"{spec.name} ({tv.tv_class}, {part}) under {root}: {error}") from None

    splits = {}
    for split, parts in tv.splits.items():
        datasets = [(part, open_part(part, kwargs)) for part, kwargs in parts]
        if classnames is None:
            classnames = [_clean(c) for c in datasets[0][1].classes]
        for part, dataset in datasets:
            if tv.classnames is None and [_clean(c) for c in dataset.classes] != classnames:
                raise EvalSetError(
                    f"{spec.name}: the class list of part {part!r} differs from the first part's"
                )

        num_classes = len(classnames)

        def samples(datasets=datasets, num_classes=num_classes):
            for part, dataset in datasets:
                for index in range(len(dataset)):
                    image, label = dataset[index]
                    if not 0 <= int(label) < num_classes:
                        raise EvalSetError(
                            f"{spec.name} ({part}) sample {index}: label {label} outside 0..{num_classes - 1}"
                        )
                    ext, data = _image_member(image)
                    label = str(int(label)).encode("ascii")
                    yield {"__key__": f"{part}_{index:06d}", ext: data, "cls": label}

        splits[split] = write_split(samples(), out / split, options.shard_size)
        splits[split]["parts"] = [part for part, _ in parts]
        check_count(f"{spec.name} {split} split", splits[split]["num_samples"], options.expected(spec, split))
    write_layout(out, "classification", classnames=classnames, templates=tv.templates)
    return {"splits": splits, "num_classes": len(classnames), "torchvision_class": tv.tv_class}


def _spec(name: str, tv: TorchvisionSet) -> EvalSetSpec:
    return spec_from_registry(name, _convert_torchvision, extra={"torchvision": tv})


_TRAIN_TEST = {"train": (("train", {"split": "train"}),), "test": (("test", {"split": "test"}),)}
_TRAIN_VAL_TEST = {
    "train": (("train", {"split": "train"}), ("val", {"split": "val"})),
    "test": (("test", {"split": "test"}),),
}
_TRAINVAL_TEST = {"train": (("trainval", {"split": "trainval"}),), "test": (("test", {"split": "test"}),)}
_CIFAR = {"train": (("train", {"train": True}),), "test": (("test", {"train": False}),)}
_GTSRB_FILES = ("GTSRB-Training_fixed.zip", "GTSRB_Final_Test_Images.zip", "GTSRB_Final_Test_GT.zip")


def _one(filename: str) -> dict[str, str]:
    return {filename: filename}


SETS: dict[str, EvalSetSpec] = {
    "cifar10": _spec(
        "cifar10", TorchvisionSet("CIFAR10", _CIFAR, _one("cifar-10-python.tar.gz"), ("a photo of a {c}.",))
    ),
    "cifar100": _spec(
        "cifar100",
        TorchvisionSet("CIFAR100", _CIFAR, _one("cifar-100-python.tar.gz"), ("a photo of a {c}.",)),
    ),
    "dtd": _spec(
        "dtd",
        TorchvisionSet(
            "DTD",
            _TRAIN_VAL_TEST,
            {"dtd-r1.0.1.tar.gz": "dtd/dtd-r1.0.1.tar.gz"},
            ("a photo of a {c} texture.", "a photo of a {c} pattern.", "a photo of a {c} object."),
            raw_loader=True,
        ),
    ),
    "fgvc_aircraft": _spec(
        "fgvc_aircraft",
        TorchvisionSet(
            "FGVCAircraft",
            _TRAINVAL_TEST,
            _one("fgvc-aircraft-2013b.tar.gz"),
            ("a photo of a {c}, a type of aircraft.", "a photo of the {c}, a type of aircraft."),
            raw_loader=True,
        ),
    ),
    "food101": _spec(
        "food101",
        TorchvisionSet(
            "Food101",
            _TRAIN_TEST,
            _one("food-101.tar.gz"),
            ("a photo of {c}, a type of food.",),
            raw_loader=True,
        ),
    ),
    "gtsrb": _spec(
        "gtsrb",
        TorchvisionSet(
            "GTSRB",
            _TRAIN_TEST,
            {name: f"gtsrb/{name}" for name in _GTSRB_FILES},
            ('a zoomed in photo of a "{c}" traffic sign.', 'a centered photo of a "{c}" traffic sign.'),
            classnames=GTSRB_CLASSNAMES,
        ),
    ),
    "pets": _spec(
        "pets",
        TorchvisionSet(
            "OxfordIIITPet",
            _TRAINVAL_TEST,
            {name: f"oxford-iiit-pet/{name}" for name in ("images.tar.gz", "annotations.tar.gz")},
            ("a photo of a {c}, a type of pet.",),
        ),
    ),
    "renderedsst2": _spec(
        "renderedsst2",
        TorchvisionSet(
            "RenderedSST2",
            _TRAIN_VAL_TEST,
            _one("rendered-sst2.tgz"),
            ("a {c} review of a movie.",),
            raw_loader=True,
        ),
    ),
    "stl10": _spec(
        "stl10", TorchvisionSet("STL10", _TRAIN_TEST, _one("stl10_binary.tar.gz"), ("a photo of a {c}.",))
    ),
    "svhn": _spec(
        "svhn",
        TorchvisionSet(
            "SVHN",
            _TRAIN_TEST,
            {"train_32x32.mat": "train_32x32.mat", "test_32x32.mat": "test_32x32.mat"},
            ('a photo of the number: "{c}".',),
            classnames=SVHN_CLASSNAMES,
        ),
    ),
}
