"""Miniature copies of the paper's published source files, in their real formats (shared by the tests).

Each ``write_*`` function writes one dataset's published file(s) into a folder under the published file
name(s) and returns what a test checks the conversion against (sample counts per split, labels, bytes).
The layouts are the published ones, as the converters (``rankclip/evalsets/imagenet.py``, ``coco.py``) and
torchvision's dataset classes (``rankclip.evalsets.linear_probe``) read them; only the sizes are tiny.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

from rankclip.evalsets.imagenet import IMAGENET_R_WNIDS, IMAGENET_WNIDS

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def jpeg(colour: tuple[int, int, int], size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png(colour: tuple[int, int, int], size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def ppm(colour: tuple[int, int, int], size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PPM")
    return buffer.getvalue()


def colour(i: int) -> tuple[int, int, int]:
    return (i * 37 % 256, i * 91 % 256, i * 53 % 256)


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------- ImageNet
def write_imagenet_val(root: Path, labels: dict[int, int]) -> dict:
    """ILSVRC2012_img_val.tar (image number -> JPEG) and the devkit mapping the numbers to ``labels``.

    The devkit's ILSVRC2012 ids are not the sorted-wnid order (id i+1 -> wnid 999-i), and its synsets table
    holds superclasses too, as the real meta.mat does.
    """
    images = {n: jpeg((n * 40 % 256, 10, 200)) for n in labels}
    val = root / "ILSVRC2012_img_val.tar"
    with tarfile.open(val, "w") as tar:
        for n in sorted(labels, key=lambda n: (n % 3, -n)):  # archive order is not image order
            add_bytes(tar, f"ILSVRC2012_val_{n:08d}.JPEG", images[n])
    rows = [(1000 - index, wnid, f"words {index}", "gloss", 0) for index, wnid in enumerate(IMAGENET_WNIDS)]
    rows += [(1001, "n00001740", "entity", "gloss", 3), (1002, "n00002137", "abstraction", "gloss", 2)]
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "wordnet_height", "num_train_images"]
    synsets = np.zeros((len(rows), 1), dtype=[(f, "O") for f in fields])
    for i, (ilsvrc_id, wnid, words, gloss, children) in enumerate(rows):
        synsets[i, 0] = (ilsvrc_id, wnid, words, gloss, children, 0, 0)
    meta = io.BytesIO()
    scipy.io.savemat(meta, {"synsets": synsets})
    truth = "".join(f"{1000 - labels[n]}\n" for n in sorted(labels))
    devkit = root / "ILSVRC2012_devkit_t12.tar.gz"
    with tarfile.open(devkit, "w:gz") as tar:
        add_bytes(tar, "ILSVRC2012_devkit_t12/data/meta.mat", meta.getvalue())
        add_bytes(tar, "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt", truth.encode())
        add_bytes(tar, "ILSVRC2012_devkit_t12/COPYING", b"devkit\n")
    pins = {val.name: sha256(val), devkit.name: sha256(devkit)}
    return {"val": val, "devkit": devkit, "images": images, "pins": pins, "counts": {"test": len(labels)}}


def write_imagenetv2(site: Path, variant: str, contents: dict[str, tuple[int, bytes]]) -> Path:
    """imagenetv2-<variant>.tar.gz: ``<class index>/<name>.jpeg`` below its top folder (+ a .DS_Store)."""
    path = site / f"imagenetv2-{variant}.tar.gz"
    top = f"imagenetv2-{variant}-format-val"
    with tarfile.open(path, "w:gz") as tar:
        for name, (_, data) in contents.items():
            add_bytes(tar, f"{top}/{name}.jpeg", data)
        add_bytes(tar, f"{top}/.DS_Store", b"junk")
    return path


def write_imagenet_r(path: Path, wnids) -> list[bytes]:
    """imagenet-r.tar: ``imagenet-r/<wnid>/art_<i>.jpg`` plus its README."""
    images = []
    with tarfile.open(path, "w") as tar:
        add_bytes(tar, "imagenet-r/README.txt", b"ImageNet-R\n")
        for i, wnid in enumerate(wnids):
            images.append(jpeg((i * 50 % 256, 0, 0)))
            add_bytes(tar, f"imagenet-r/{wnid}/art_{i}.jpg", images[-1])
    return images


# -------------------------------------------------------------------------------------------------- COCO
def write_coco(site: Path, entries: list[tuple[str, str, int]]) -> dict[str, bytes]:
    """val2014.zip and caption_datasets.zip (dataset_coco.json): ``entries`` = (file, split, captions),
    in the JSON's order. Returns file -> JPEG bytes, sorted by file name."""
    images = {name: jpeg(colour(i)) for i, (name, _, _) in enumerate(entries)}
    with zipfile.ZipFile(site / "val2014.zip", "w") as archive:
        archive.writestr("val2014/", b"")
        for name, data in images.items():
            archive.writestr(f"val2014/{name}", data)

    def entry(imgid, name, split, count):
        sentences = [
            {"raw": f" Caption {j} of\n{name}. ", "tokens": [], "imgid": imgid} for j in range(count)
        ]
        return {
            "filepath": "val2014",
            "filename": name,
            "imgid": imgid,
            "split": split,
            "sentences": sentences,
            "cocoid": int(name.rsplit("_", 1)[1].split(".")[0]),
            "sentids": list(range(count)),
        }

    data = {"dataset": "coco", "images": [entry(i, *e) for i, e in enumerate(entries)]}
    with zipfile.ZipFile(site / "caption_datasets.zip", "w") as archive:
        archive.writestr("dataset_coco.json", json.dumps(data))
        archive.writestr("dataset_flickr8k.json", "{}")
    return dict(sorted(images.items()))


def coco_name(number: int) -> str:
    return f"COCO_val2014_{number:012d}.jpg"


# ------------------------------------------------------------------------------- linear-probe sets
def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            add_bytes(tar, name, data)
    return path


def write_cifar10(site: Path, train_per_batch: int = 3, num_test: int = 4, seed: int = 0):
    """cifar-10-python.tar.gz as published (pickled batches of 3072-byte rows, batches.meta).

    Returns (path, member name -> md5, split -> [(HWC pixels, label)]).
    """
    rng = np.random.default_rng(seed)
    members, pixels = {}, {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        count = num_test if name == "test_batch" else train_per_batch
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).tolist()
        filenames = [f"{i}.png" for i in range(count)]
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": filenames}
        members[name] = pickle.dumps(batch, protocol=2)
        split = "test" if name == "test_batch" else "train"
        pixels[split] += [
            (row.reshape(3, 32, 32).transpose(1, 2, 0), label)
            for row, label in zip(data, labels, strict=True)
        ]
    meta = {"label_names": CIFAR_NAMES, "num_cases_per_batch": 3}
    members["batches.meta"] = pickle.dumps(meta, protocol=2)
    tarball = {f"cifar-10-batches-py/{n}": d for n, d in members.items()}
    path = _tar_gz(site / "cifar-10-python.tar.gz", tarball)
    return path, {name: md5(data) for name, data in members.items()}, pixels


def write_cifar100(site: Path, num_train: int, num_test: int, seed: int = 1) -> dict[str, int]:
    """cifar-100-python.tar.gz: pickled ``train``/``test`` with fine and coarse labels, ``meta``."""
    rng = np.random.default_rng(seed)
    members = {}
    for name, count in (("train", num_train), ("test", num_test)):
        fine = rng.integers(0, 100, size=count).tolist()
        members[name] = pickle.dumps(
            {
                "filenames": [f"{i}.png" for i in range(count)],
                "batch_label": name,
                "fine_labels": fine,
                "coarse_labels": [f // 5 for f in fine],
                "data": rng.integers(0, 256, size=(count, 3072), dtype=np.uint8),
            },
            protocol=2,
        )
    names = {
        "fine_label_names": [f"class_{i}" for i in range(100)],
        "coarse_label_names": [f"super_{i}" for i in range(20)],
    }
    members["meta"] = pickle.dumps(names, protocol=2)
    _tar_gz(site / "cifar-100-python.tar.gz", {f"cifar-100-python/{n}": d for n, d in members.items()})
    return {"train": num_train, "test": num_test}


def write_dtd(site: Path, classes=("banded", "dotted", "zigzagged"), per_class: int = 2) -> dict[str, int]:
    """dtd-r1.0.1.tar.gz: ``dtd/images/<class>/<class>_NNNN.jpg`` and ``dtd/labels/{train,val,test}1.txt``."""
    members, lists = {}, {"train": [], "val": [], "test": []}
    index = 0
    for cls in classes:
        for part in lists:
            for _ in range(per_class):
                name = f"{cls}/{cls}_{index:04d}.jpg"
                members[f"dtd/images/{name}"] = jpeg(colour(index))
                lists[part].append(name)
                index += 1
    for part, names in lists.items():
        members[f"dtd/labels/{part}1.txt"] = "".join(f"{n}\n" for n in names).encode()
    _tar_gz(site / "dtd-r1.0.1.tar.gz", members)
    return {"train": 2 * len(classes) * per_class, "test": len(classes) * per_class}


def write_fgvc_aircraft(site: Path, variants=("707-320", "A300B4", "Cessna 172"), per_class: int = 2) -> dict:
    """fgvc-aircraft-2013b.tar.gz: ``data/variants.txt``, ``images_variant_{trainval,test}.txt``, images."""
    top = "fgvc-aircraft-2013b/data"
    members = {f"{top}/variants.txt": "".join(f"{v}\n" for v in variants).encode()}
    number = 1_000_000
    for split in ("trainval", "test"):
        lines = []
        for variant in variants:
            for _ in range(per_class):
                members[f"{top}/images/{number}.jpg"] = jpeg(colour(number))
                lines.append(f"{number} {variant}\n")
                number += 1
        members[f"{top}/images_variant_{split}.txt"] = "".join(lines).encode()
    _tar_gz(site / "fgvc-aircraft-2013b.tar.gz", members)
    return {"train": len(variants) * per_class, "test": len(variants) * per_class}


def write_food101(site: Path, classes=("apple_pie", "pizza", "sushi"), per_class: int = 2) -> dict[str, int]:
    """food-101.tar.gz: ``food-101/meta/{train,test}.json`` (class -> ["class/id"]) and the JPEGs."""
    members, meta = {}, {"train": {}, "test": {}}
    number = 100
    for split in meta:
        for cls in classes:
            meta[split][cls] = []
            for _ in range(per_class):
                members[f"food-101/images/{cls}/{number}.jpg"] = jpeg(colour(number))
                meta[split][cls].append(f"{cls}/{number}")
                number += 1
        members[f"food-101/meta/{split}.json"] = json.dumps(meta[split]).encode()
    _tar_gz(site / "food-101.tar.gz", members)
    return {"train": len(classes) * per_class, "test": len(classes) * per_class}


def write_gtsrb(site: Path, classes: int = 3, per_class: int = 2) -> dict[str, int]:
    """GTSRB-Training_fixed.zip (``GTSRB/Training/000NN/*.ppm``), the test images and GT-final_test.csv."""
    with zipfile.ZipFile(site / "GTSRB-Training_fixed.zip", "w") as archive:
        for cls in range(classes):
            for i in range(per_class):
                archive.writestr(f"GTSRB/Training/{cls:05d}/00000_{i:05d}.ppm", ppm(colour(cls * 10 + i)))
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    with zipfile.ZipFile(site / "GTSRB_Final_Test_Images.zip", "w") as archive:
        for i in range(classes * per_class):
            name = f"{i:05d}.ppm"
            archive.writestr(f"GTSRB/Final_Test/Images/{name}", ppm(colour(100 + i)))
            rows.append(f"{name};12;10;1;1;11;9;{i % classes}")
    with zipfile.ZipFile(site / "GTSRB_Final_Test_GT.zip", "w") as archive:
        archive.writestr("GT-final_test.csv", "\n".join(rows) + "\n")
    return {"train": classes * per_class, "test": classes * per_class}


def write_pets(site: Path, breeds=("Abyssinian", "basset_hound", "Bengal"), per_class: int = 2) -> dict:
    """images.tar.gz (``images/<Breed>_<n>.jpg``) and annotations.tar.gz
    (``annotations/{trainval,test}.txt``: image id, class 1.., species, breed id)."""
    images, annotations = {}, {}
    number = 1
    for split in ("trainval", "test"):
        lines = []
        for label, breed in enumerate(breeds, 1):
            for _ in range(per_class):
                image_id = f"{breed}_{number}"
                images[f"images/{image_id}.jpg"] = jpeg(colour(number))
                species = 1 if breed[0].isupper() else 2  # cats are capitalised in the published lists
                lines.append(f"{image_id} {label} {species} {label}\n")
                number += 1
        annotations[f"annotations/{split}.txt"] = "".join(lines).encode()
    _tar_gz(site / "images.tar.gz", images)
    _tar_gz(site / "annotations.tar.gz", annotations)
    return {"train": len(breeds) * per_class, "test": len(breeds) * per_class}


def write_renderedsst2(site: Path, counts=(("train", 3), ("valid", 2), ("test", 2))) -> dict[str, bytes]:
    """rendered-sst2.tgz: ``rendered-sst2/{train,valid,test}/{negative,positive}/<n>.png``."""
    pngs = {}
    for folder, count in counts:
        for i in range(count):
            label = ("negative", "positive")[i % 2]
            pngs[f"rendered-sst2/{folder}/{label}/{i}.png"] = png((i * 60, 0, 0), size=(20, 8))
    _tar_gz(site / "rendered-sst2.tgz", pngs)
    return pngs


def write_stl10(site: Path, num_train: int, num_test: int, seed: int = 2) -> dict[str, int]:
    """stl10_binary.tar.gz: ``stl10_binary/{train,test}_{X,y}.bin`` (96x96 uint8, labels 1..10),
    ``unlabeled_X.bin`` and ``class_names.txt``."""
    rng = np.random.default_rng(seed)
    top = "stl10_binary"
    members = {}
    for split, count in (("train", num_train), ("test", num_test), ("unlabeled", 1)):
        pixels = rng.integers(0, 256, size=count * 3 * 96 * 96, dtype=np.uint8)
        members[f"{top}/{split}_X.bin"] = pixels.tobytes()
        if split != "unlabeled":
            members[f"{top}/{split}_y.bin"] = rng.integers(1, 11, size=count, dtype=np.uint8).tobytes()
    members[f"{top}/class_names.txt"] = "\n".join(CIFAR_NAMES).encode()
    _tar_gz(site / "stl10_binary.tar.gz", members)
    return {"train": num_train, "test": num_test}


def write_svhn(site: Path, num_train: int, num_test: int, seed: int = 3) -> dict[str, int]:
    """train_32x32.mat and test_32x32.mat: ``X`` (32, 32, 3, N) uint8, ``y`` (N, 1) with 10 for digit 0."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("test", num_test)):
        x = rng.integers(0, 256, size=(32, 32, 3, count), dtype=np.uint8)
        y = rng.integers(1, 11, size=(count, 1)).astype(np.uint8)
        scipy.io.savemat(site / f"{split}_32x32.mat", {"X": x, "y": y})
    return {"train": num_train, "test": num_test}


def imagenet_r_wnids(count: int) -> list[str]:
    """``count`` of ImageNet-R's 200 WordNet ids, cycling through the first few."""
    ordered = sorted(IMAGENET_R_WNIDS)
    return [ordered[i % 5] for i in range(count)]


# ---------------------------------------------------------------------------------- ALIP's captioner
def write_tiny_blip(folder: Path) -> Path:
    """A randomly initialised BLIP captioning model + processor saved to ``folder`` (a few MB, no hub)."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "a",
        "photo",
        "of",
        "red",
        "cat",
        "on",
        "the",
        "dog",
    ]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
    config = BlipConfig(
        text_config=small
        | {
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "sep_token_id": tokenizer.sep_token_id,
        },
        vision_config=small | {"image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
