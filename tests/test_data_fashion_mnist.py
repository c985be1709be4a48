"""Tests for rankclip/demo_data/fashion_mnist.py: Debian's Fashion-MNIST as a clip_benchmark wds dataset.

These need Debian's dataset-fashion-mnist. Without it the tests fail (they do not skip) with the error
that says what to install: CI installs it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from rankclip.demo_data import fashion_mnist
from rankclip.demo_data.fashion_mnist import (
    CLASSNAMES,
    DEBIAN_PACKAGE,
    DEFAULT_ROOT,
    SPLITS,
    load_split,
    make_fashion_mnist,
    read_idx,
)

SMALL = {"max_train": 300, "max_test": 200, "image_size": 32, "shard_size": 128}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("fashion_mnist")
    return out_dir, make_fashion_mnist(out_dir, seed=0, **SMALL)


@pytest.fixture(scope="module")
def installed() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Both splits, read from the installed package (fails naming the package when it is missing)."""
    return {split: load_split(split) for split in SPLITS}


@pytest.fixture
def test_root(tmp_path, installed) -> Path:
    """A copy of the test split's two files, to corrupt."""
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for name in SPLITS["test"][:2]:
        shutil.copy(DEFAULT_ROOT / f"{name}.gz", root / f"{name}.gz")
    return root


def read_samples(root: Path, shards: list[str]) -> list[dict]:
    return list(wds.WebDataset([str(root / s) for s in shards], shardshuffle=False).decode("pil"))


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------- reading
def test_installed_files_hold_the_whole_dataset(installed):
    for split, count in (("train", 60_000), ("test", 10_000)):
        images, labels = installed[split]
        assert images.shape == (count, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (count,) and np.bincount(labels).tolist() == [count // 10] * 10
        assert 0 < images.mean() < 255


# ----------------------------------------------------------------------------------------- the dataset
def test_dataset_reads_back_in_the_wds_layout(dataset):
    root, manifest = dataset
    assert (root / "dataset_type.txt").read_text() == "classification\n"
    classnames = (root / "classnames.txt").read_text().splitlines()
    assert classnames == list(CLASSNAMES) and len(classnames) == 10
    assert classnames[0] == "t-shirt/top" and classnames[9] == "ankle boot"
    templates = (root / "zeroshot_classification_templates.txt").read_text().splitlines()
    assert len(templates) >= 3 and all("{c}" in t for t in templates)

    for split, count in (("train", 300), ("test", 200)):
        shards = manifest["splits"][split]["shards"]
        assert [Path(s).name for s in shards] == [f"{i}.tar" for i in range(len(shards))]
        assert (root / split / "nshards.txt").read_text() == f"{len(shards)}\n"
        samples = read_samples(root, shards)
        assert len(samples) == manifest["splits"][split]["num_samples"] == count
        keys = [int(s["__key__"]) for s in samples]
        assert keys == sorted(set(keys)) and max(keys) < SPLITS[split][2]  # indices into the IDX file
        labels = [s["cls"] for s in samples]
        assert set(labels) == set(range(10))
        assert np.bincount(labels).tolist() == [count // 10] * 10 == manifest["splits"][split]["class_counts"]
        for sample in samples:
            assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"png", "cls"}
            assert sample["png"].size == (32, 32) and sample["png"].mode == "RGB"
    assert json.loads((root / "manifest.json").read_text()) == manifest


def test_images_and_labels_are_the_files_own(tmp_path, installed):
    manifest = make_fashion_mnist(tmp_path, max_train=10, max_test=20, image_size=None)
    images, labels = installed["test"]
    samples = read_samples(tmp_path, manifest["splits"]["test"]["shards"])
    assert len(samples) == 20
    for sample in samples:
        index = int(sample["__key__"])
        pixels = np.asarray(sample["png"])
        assert pixels.shape == (28, 28, 3)  # native size, grey copied to RGB
        assert (pixels == images[index][:, :, None]).all() and sample["cls"] == labels[index]


def test_same_seed_is_byte_identical_and_another_seed_draws_other_samples(dataset, tmp_path):
    root, manifest = dataset
    assert make_fashion_mnist(tmp_path / "again", seed=0, **SMALL) == manifest
    assert tree_hashes(tmp_path / "again") == tree_hashes(root)
    other = make_fashion_mnist(tmp_path / "other", seed=1, **SMALL)
    keys = {s["__key__"] for s in read_samples(root, manifest["splits"]["test"]["shards"])}
    other_keys = {s["__key__"] for s in read_samples(tmp_path / "other", other["splits"]["test"]["shards"])}
    assert len(other_keys) == len(keys) and other_keys != keys


# ---------------------------------------------------------------------------------------------- errors
def test_missing_package_names_it(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEFAULT_ROOT", tmp_path / "not-installed")
    with pytest.raises(FileNotFoundError, match=f"apt-get install {DEBIAN_PACKAGE}"):
        make_fashion_mnist(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_file_under_root_is_named(test_root):
    (test_root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_split("test", root=test_root)


def test_bad_magic_names_the_file(test_root):
    path = test_root / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[3] = 3  # 0x00000803: the images' magic, not the labels'
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    with pytest.raises(ValueError, match=rf"{path}: bad IDX magic number 0x00000803; expected 0x00000801"):
        load_split("test", root=test_root)


def test_wrong_count_names_the_file(test_root):
    path = test_root / "t10k-labels-idx1-ubyte.gz"
    data = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(data[:4] + (9_999).to_bytes(4, "big") + data[8:-1], mtime=0))
    with pytest.raises(ValueError, match=rf"{path}: IDX dimensions \(9999,\), expected \(10000,\)"):
        load_split("test", root=test_root)


def test_short_data_names_the_file(test_root):
    path = test_root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-28], compresslevel=1, mtime=0))
    with pytest.raises(
        ValueError, match=rf"{path}: 7839972 bytes of data after the header, expected 7840000"
    ):
        load_split("test", root=test_root)


def test_truncated_gzip_names_the_file(test_root):
    path = test_root / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{path}: not a valid, complete gzip file"):
        load_split("test", root=test_root)


def test_label_out_of_range_names_the_file(test_root):
    path = test_root / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[8 + 5] = 10
    path.write_bytes(gzip.compress(bytes(data), mtime=0))
    with pytest.raises(ValueError, match=rf"{path}: label 10 at index 5 is out of range 0..9"):
        load_split("test", root=test_root)


def test_uncompressed_idx_files_are_read_too(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 0, 9]))
    assert read_idx(path, (3,)).tolist() == [7, 0, 9]
    with pytest.raises(ValueError, match=rf"{path}: IDX dimensions \(3,\), expected \(4,\)"):
        read_idx(path, (4,))


def test_a_corrupt_file_writes_nothing(tmp_path, installed):
    root = tmp_path / "fashion-mnist"
    root.mkdir()
    for images_name, labels_name, _ in SPLITS.values():
        for name in (images_name, labels_name):
            (root / f"{name}.gz").symlink_to(DEFAULT_ROOT / f"{name}.gz")
    bad = root / "t10k-labels-idx1-ubyte.gz"
    bad.unlink()
    bad.write_bytes(b"not gzip")
    with pytest.raises(ValueError, match=str(bad)):
        make_fashion_mnist(tmp_path / "out", root=root, max_train=10, max_test=10)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "value"), [("max_train", 0), ("max_test", 1.5), ("image_size", 4), ("seed", None)]
)
def test_invalid_options_are_named(tmp_path, option, value):
    with pytest.raises((ValueError, TypeError), match=option):
        make_fashion_mnist(tmp_path / "out", **{option: value})
