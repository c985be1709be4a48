"""MS-COCO Karpathy 5k test split as a retrieval set: every image with all of its captions (5 by default).

Sources (sha256 as TFDS pins them): COCO 2014 validation images ``val2014.zip`` (the Karpathy test images
are all in val2014) and Karpathy's ``caption_datasets.zip``, whose ``dataset_coco.json`` lists each image
(``filepath``, ``filename``, ``split``, ``cocoid``) with its ``sentences`` (``raw`` caption text).

Written as a retrieval set (``evalset_layout``), in the JSON's order::

    test/0.tar ...   KEY.jpg (the JPEG as published), KEY.txt (captions, one per line)

``KEY`` is the image's file name without ``.jpg`` (``COCO_val2014_000000391895``). Captions are the
``raw`` strings with runs of white space (newlines included) collapsed to one space; the first
``captions_per_image`` are kept (5: the 25,000 captions of the standard 5k protocol; a handful of COCO
images have 6 or 7). An image with fewer captions is an error naming it.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

from rankclip.evalsets.converter import (
    EvalSetError,
    EvalSetSpec,
    check_count,
    spec_from_registry,
    write_layout,
    write_split,
)
from rankclip.evalsets.registry import CAPTIONS_FILE, IMAGES_FILE

__all__ = ["CAPTIONS_FILE", "IMAGES_FILE", "SETS", "read_karpathy_split"]

KARPATHY_JSON = "dataset_coco.json"
CAPTIONS_PER_IMAGE = 5
_SPACE = re.compile(r"\s+")


def read_karpathy_split(captions_zip: Path, split: str = "test") -> list[dict]:
    """The images of one Karpathy split: ``{"filepath", "filename", "cocoid", "captions"}`` in file order.

    ``captions_zip`` is ``caption_datasets.zip`` or ``dataset_coco.json`` itself.
    """
    path = Path(captions_zip)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.rsplit("/", 1)[-1] == KARPATHY_JSON]
                if not names:
                    raise EvalSetError(f"{path}: no {KARPATHY_JSON} in the zip")
                data = json.loads(archive.read(names[0]))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise EvalSetError(f"{path}: cannot read Karpathy's {KARPATHY_JSON} ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise EvalSetError(f"{path}: {KARPATHY_JSON} has no 'images' list")
    images = []
    for position, entry in enumerate(data["images"]):
        try:
            if entry["split"] != split:
                continue
            captions = [_SPACE.sub(" ", sentence["raw"]).strip() for sentence in entry["sentences"]]
            images.append(
                {
                    "filepath": str(entry["filepath"]),
                    "filename": str(entry["filename"]),
                    "cocoid": int(entry["cocoid"]),
                    "captions": [c for c in captions if c],
                }
            )
        except (KeyError, TypeError, ValueError) as error:
            raise EvalSetError(f"{path}: images[{position}] is malformed ({error!r})") from None
    return images


def _convert_karpathy(spec: EvalSetSpec, out: Path, files: dict[str, Path], options) -> dict:
    images_zip, captions_zip = files[IMAGES_FILE], files[CAPTIONS_FILE]
    per_image = spec.extra["captions_per_image"]
    images = read_karpathy_split(captions_zip, "test")
    check_count(f"{captions_zip} (Karpathy test split)", len(images), options.expected(spec, "test"))
    for image in images:
        if len(image["captions"]) < per_image:
            raise EvalSetError(
                f"{captions_zip}: {image['filename']} has {len(image['captions'])} captions, "
                f"fewer than {per_image}"
            )
    try:
        archive = zipfile.ZipFile(images_zip)
    except (OSError, zipfile.BadZipFile) as error:
        raise EvalSetError(f"{images_zip}: not a readable zip file ({error})") from None

    def samples():
        for image in images:
            member = f"{image['filepath']}/{image['filename']}"
            try:
                data = archive.read(member)
            except KeyError:
                raise EvalSetError(f"{images_zip} has no {member} (named by {captions_zip})") from None
            yield {
                "__key__": image["filename"].rsplit(".", 1)[0],
                "jpg": data,
                "txt": "\n".join(image["captions"][:per_image]).encode("utf-8"),
            }

    with archive:
        split = write_split(samples(), out / "test", options.shard_size)
    write_layout(out, "retrieval")
    return {
        "splits": {"test": split | {"num_texts": split["num_samples"] * per_image}},
        "captions_per_image": per_image,
    }


SETS: dict[str, EvalSetSpec] = {
    "mscoco_karpathy": spec_from_registry(
        "mscoco_karpathy", _convert_karpathy, extra={"captions_per_image": CAPTIONS_PER_IMAGE}
    )
}
