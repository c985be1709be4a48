"""The rehearsal's mirror: every source file of the paper DAG, miniature, in its published format.

``build_mirror(root)`` writes into ``root`` (the folder a ``http_server.serve_directory`` serves):

- the CC3M-style URL list is written once the port is known (``write_url_list``): ``cc3m_train.tsv``
  (caption<TAB>url, no header, as ``Train_GCC-training.tsv``) whose URLs point at ``web/*.jpg`` served
  here, with broken ones among them (404s, a truncated JPEG, an HTML page, a refused connection) and an
  oversized image (resized like any other);
- ImageNet-1K val (``ILSVRC2012_img_val.tar`` + devkit; the user's files, read from disk, not served),
  the three ImageNetV2 tarballs, ``imagenet-r.tar``, COCO's ``val2014.zip`` + Karpathy's
  ``caption_datasets.zip`` and the ten linear-probe sets' published archives (``fabricated``);
- a tiny BLIP captioning model folder for ALIP's caption stage (no hub).

``Mirror.config(base_url)`` is the extra config the rehearsal puts on top of ``config/rehearsal.yaml``:
the mirror's URLs and paths, its files' own sha256 and md5 (``data.eval_sets.sha256``/``md5``: the
published pins cannot match fabricated files) and its sample counts (``data.eval_sets.expected_counts``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import fabricated
import numpy as np

from rankclip.evalsets.registry import IMAGENETV2_VARIANTS, REGISTRY

URL_LIST = "cc3m_train.tsv"
NUM_PAIRS = 300  # rows of the URL list, broken ones included
EVAL_IMAGES = 24  # images per zero-shot / retrieval set
# (file under web/, what the download makes of it); the rest of the rows are good JPEGs
BROKEN = {
    "missing_1.jpg": "404",
    "missing_2.jpg": "404",
    "missing_3.jpg": "404",
    "truncated.jpg": "decode",  # the first 40 % of a JPEG
    "page.jpg": "decode",  # an HTML page under an image name
}
OVERSIZED = "oversized.jpg"  # 3000 x 2000: downloaded and resized like the others
REFUSED = "refused"  # a URL on a port nothing listens on


@dataclass
class Mirror:
    """What was written (see the module docstring) and the checksums and counts the config needs."""

    root: Path
    blip: Path
    imagenet: dict[str, Path]
    sha256: dict[str, str] = field(default_factory=dict)
    md5: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # URL -> expected failure kind

    def config(self, base_url: str) -> dict:
        """The rehearsal's extra config (written by the test on top of config/rehearsal.yaml)."""
        return {
            "data": {
                "web": {
                    "url_list_url": f"{base_url.rstrip('/')}/{URL_LIST}",
                    "captions": {"model": str(self.blip)},
                },
                "eval_sets": {
                    "imagenet": {k: str(v) for k, v in self.imagenet.items()},
                    "base_url": base_url,
                    "sha256": dict(self.sha256),
                    "md5": dict(self.md5),
                    "expected_counts": {name: dict(c) for name, c in self.counts.items()},
                },
            }
        }


def _hashes(path: Path) -> tuple[str, str]:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest()


def _pin(mirror: Mirror, path: Path, with_md5: bool) -> None:
    sha, md5 = _hashes(path)
    mirror.sha256[path.name] = sha
    if with_md5:
        mirror.md5[path.name] = md5


def write_web_images(root: Path, count: int) -> list[str]:
    """``count`` good JPEGs (64 x 48, one colour gradient each) plus the broken and oversized files."""
    web = root / "web"
    web.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"img_{i:04d}.jpg"
        (web / name).write_bytes(fabricated.jpeg(fabricated.colour(i), size=(64, 48)))
        names.append(name)
    good = fabricated.jpeg((10, 120, 200), size=(320, 240))
    (web / "truncated.jpg").write_bytes(good[: len(good) * 4 // 10])
    (web / "page.jpg").write_bytes(b"<!doctype html><html><body>moved</body></html>\n")
    (web / OVERSIZED).write_bytes(fabricated.jpeg((200, 30, 30), size=(3000, 2000)))
    return names


def write_url_list(mirror: Mirror, base_url: str, refused_url: str) -> Path:
    """cc3m_train.tsv (caption<TAB>url, no header) of NUM_PAIRS rows: good, broken and oversized images."""
    good = sorted(p.name for p in (mirror.root / "web").glob("img_*.jpg"))
    broken = [*BROKEN, OVERSIZED]
    rows = []
    positions = {int(i * NUM_PAIRS / (len(broken) + 2)) + 1: name for i, name in enumerate(broken)}
    positions[NUM_PAIRS - 1] = REFUSED
    good_iter = iter(good)
    mirror.failures = {}
    for index in range(NUM_PAIRS):
        name = positions.get(index) or next(good_iter)
        url = refused_url if name == REFUSED else f"{base_url.rstrip('/')}/web/{name}"
        if name in BROKEN or name == REFUSED:
            mirror.failures[url] = BROKEN.get(name, "refused")
        rows.append(f"a photo number {index} of a coloured card\t{url}")
    path = mirror.root / URL_LIST
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _imagenetv2_contents(seed: int) -> dict[str, tuple[int, bytes]]:
    rng = np.random.default_rng(seed)
    classes = rng.choice(1000, size=EVAL_IMAGES // 3, replace=False).tolist()
    return {
        f"{cls}/{seed}_{i}": (cls, fabricated.jpeg(fabricated.colour(seed * 100 + i)))
        for i, cls in enumerate(classes * 3)
    }


def write_eval_sets(mirror: Mirror) -> None:
    """The evaluation sets' published files (served) and ImageNet's (the user's, under imagenet/)."""
    root = mirror.root
    user = root / "imagenet"
    user.mkdir(exist_ok=True)
    labels = {n: (n * 37) % 1000 for n in range(1, EVAL_IMAGES + 1)}
    val = fabricated.write_imagenet_val(user, labels)
    mirror.imagenet = {"val_archive": val["val"], "devkit": val["devkit"]}
    mirror.sha256 |= val["pins"]
    mirror.counts["imagenet1k"] = val["counts"]
    for seed, (name, (variant, _, _)) in enumerate(IMAGENETV2_VARIANTS.items()):
        path = fabricated.write_imagenetv2(root, variant, _imagenetv2_contents(seed))
        _pin(mirror, path, with_md5=False)
        mirror.counts[name] = {"test": EVAL_IMAGES}
    path = root / "imagenet-r.tar"
    fabricated.write_imagenet_r(path, fabricated.imagenet_r_wnids(EVAL_IMAGES))
    _pin(mirror, path, with_md5=False)
    mirror.counts["imagenet_r"] = {"test": EVAL_IMAGES}
    entries = [(fabricated.coco_name(1000 + i), "test", 5 + i % 2) for i in range(EVAL_IMAGES)]
    entries += [(fabricated.coco_name(9000 + i), split, 5) for i, split in enumerate(("train", "val"))]
    fabricated.write_coco(root, entries)
    for name in ("val2014.zip", "caption_datasets.zip"):
        _pin(mirror, root / name, with_md5=False)
    mirror.counts["mscoco_karpathy"] = {"test": EVAL_IMAGES}
    write_linear_probe_sets(mirror)


def write_linear_probe_sets(mirror: Mirror) -> None:
    """The ten linear-probe sets' archives in torchvision's layouts, with their sha256 and md5."""
    root = mirror.root
    _, _, pixels = fabricated.write_cifar10(root, train_per_batch=4, num_test=8)
    counts = {
        "cifar10": {split: len(items) for split, items in pixels.items()},
        "cifar100": fabricated.write_cifar100(root, num_train=16, num_test=8),
        "dtd": fabricated.write_dtd(root),
        "fgvc_aircraft": fabricated.write_fgvc_aircraft(root),
        "food101": fabricated.write_food101(root),
        "gtsrb": fabricated.write_gtsrb(root),
        "pets": fabricated.write_pets(root),
        "stl10": fabricated.write_stl10(root, num_train=12, num_test=8),
        "svhn": fabricated.write_svhn(root, num_train=12, num_test=8),
    }
    fabricated.write_renderedsst2(root, counts=(("train", 6), ("valid", 4), ("test", 6)))
    counts["renderedsst2"] = {"train": 10, "test": 6}
    for name, split_counts in counts.items():
        mirror.counts[name] = split_counts
        for resource in REGISTRY[name].resources:
            _pin(mirror, root / resource.filename, with_md5=True)


def build_mirror(root: Path) -> Mirror:
    """Write every source file of the paper DAG into ``root`` (URL list: ``write_url_list``, later)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny-blip").mkdir()
    mirror = Mirror(root=root, blip=fabricated.write_tiny_blip(root / "tiny-blip"), imagenet={})
    write_web_images(root, NUM_PAIRS)
    write_eval_sets(mirror)
    return mirror
