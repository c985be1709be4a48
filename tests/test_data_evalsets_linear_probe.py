"""The ten linear-probe sets (rankclip/data/linear_probe_sets.py): CIFAR-10 end to end through
torchvision's own CIFAR10 class from a fabricated, real-format tarball on a loopback server, and every
other set checked against its torchvision class (URL, md5, where the class looks for the file, splits)."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets
from http_server import serve_directory
from PIL import Image

from rankclip.data import linear_probe_sets
from rankclip.data.download import ChecksumError
from rankclip.data.evalsets import EVAL_SETS, make_eval_set
from rankclip.eval.datasets import WdsSplit, dataset_type, read_classnames

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_PER_BATCH, NUM_TEST = 3, 4


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def cifar_tarball(site: Path) -> tuple[Path, dict, dict]:
    """cifar-10-python.tar.gz as published (pickled batches of 3072-byte rows, batches.meta); tiny."""
    rng = np.random.default_rng(0)
    members, pixels = {}, {"train": [], "test": []}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        count = NUM_TEST if name == "test_batch" else TRAIN_PER_BATCH
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=count).tolist()
        batch = {
            "batch_label": name,
            "labels": labels,
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(count)],
        }
        members[name] = pickle.dumps(batch, protocol=2)
        split = "test" if name == "test_batch" else "train"
        pixels[split] += [
            (row.reshape(3, 32, 32).transpose(1, 2, 0), label)
            for row, label in zip(data, labels, strict=True)
        ]
    members["batches.meta"] = pickle.dumps({"label_names": CIFAR_NAMES, "num_cases_per_batch": 3}, protocol=2)
    path = site / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, {name: md5(data) for name, data in members.items()}, pixels


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch):
    """The tarball, with torchvision's and our registry's checksums pointed at the fabricated files."""
    site = tmp_path / "site"
    site.mkdir()
    path, member_md5, pixels = cifar_tarball(site)
    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "tgz_md5", md5(path.read_bytes()))
    monkeypatch.setattr(
        cls, "train_list", [[f"data_batch_{i}", member_md5[f"data_batch_{i}"]] for i in range(1, 6)]
    )
    monkeypatch.setattr(cls, "test_list", [["test_batch", member_md5["test_batch"]]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": member_md5["batches.meta"]})
    spec = EVAL_SETS["cifar10"]
    resource = dataclasses.replace(
        spec.resources[0], sha256=hashlib.sha256(path.read_bytes()).hexdigest(), md5=md5(path.read_bytes())
    )
    monkeypatch.setitem(EVAL_SETS, "cifar10", dataclasses.replace(spec, resources=(resource,)))
    return site, path, pixels


def test_cifar10_end_to_end_through_torchvision(fake_cifar, tmp_path):
    site, archive, pixels = fake_cifar
    out, downloads = tmp_path / "eval" / "cifar10", tmp_path / "downloads"
    options = {
        "downloads": downloads,
        "expected_counts": {"train": 15, "test": 4},
        "progress": False,
        "retries": 0,
    }
    with serve_directory(site) as server:
        manifest = make_eval_set("cifar10", out, base_url=server.url(""), **options)
        # rerun: the verified download and torchvision's extraction are reused, nothing is fetched
        make_eval_set("cifar10", out, base_url=server.url(""), **options)
        assert len(server.requests) == 1
    assert (downloads / archive.name).read_bytes() == archive.read_bytes()
    link = linear_probe_sets.torchvision_root(downloads) / archive.name
    assert link.is_symlink() and link.resolve() == (downloads / archive.name).resolve()
    assert read_classnames(out) == CIFAR_NAMES and dataset_type(out) == "classification"
    for split, count in (("train", 15), ("test", 4)):
        wds_split = WdsSplit(out, split)
        index = wds_split.index()
        assert index.keys == [f"{split}_{i:06d}" for i in range(count)]
        assert wds_split.labels().tolist() == [label for _, label in pixels[split]]
        for ref, (expected, _) in zip(index.images, pixels[split], strict=True):
            with open(index.shards[ref.shard], "rb") as stream:
                stream.seek(ref.offset)
                image = Image.open(io.BytesIO(stream.read(ref.size)))
                assert image.format == "PNG"
                np.testing.assert_array_equal(np.asarray(image), expected)  # lossless
    assert manifest["splits"]["train"]["parts"] == ["train"] and manifest["torchvision_class"] == "CIFAR10"


def test_cifar10_published_counts_and_md5_are_checked(fake_cifar, tmp_path, monkeypatch):
    site, archive, _ = fake_cifar
    with serve_directory(site) as server:
        options = {"base_url": server.url(""), "downloads": tmp_path / "dl", "progress": False, "retries": 0}
        with pytest.raises(ValueError, match="cifar10 train split: 15 samples, expected 50000"):
            make_eval_set("cifar10", tmp_path / "out", **options)
        assert not (tmp_path / "out").exists()
        spec = EVAL_SETS["cifar10"]
        wrong = dataclasses.replace(spec.resources[0], sha256=None, md5="0" * 32)
        monkeypatch.setitem(EVAL_SETS, "cifar10", dataclasses.replace(spec, resources=(wrong,)))
        (tmp_path / "dl2").mkdir()
        (tmp_path / "dl2" / archive.name).write_bytes(archive.read_bytes())  # a copy failing the md5
        before = len(server.requests)
        with pytest.raises(ChecksumError, match=r"md5 .* expected 0{32} after downloading it again"):
            make_eval_set("cifar10", tmp_path / "out", **(options | {"downloads": tmp_path / "dl2"}))
        assert len(server.requests) == before + 1  # the bad copy was deleted and fetched once more
        assert not (tmp_path / "dl2" / archive.name).exists()


def _class_text(cls) -> str:
    return inspect.getsource(cls)


@pytest.mark.parametrize("name", sorted(linear_probe_sets.SETS))
def test_registered_with_its_torchvision_class(name):
    spec = EVAL_SETS[name]
    tv = spec.extra["torchvision"]
    cls = getattr(torchvision.datasets, tv.tv_class)
    source = _class_text(cls)
    assert spec.task == "linear_probe" and set(tv.splits) == {"train", "test"}
    assert set(spec.expected_counts) == {"train", "test"}
    assert set(tv.placement) == {r.filename for r in spec.resources}
    for resource in spec.resources:
        # torchvision downloads the same file name from the same host path, with the same md5
        assert resource.url.rsplit("/", 1)[1] == resource.filename
        tail = resource.url.split("://", 1)[1].split("/", 1)[1]
        assert tail in source.replace("{base_url}", "public/archives/daaeac0d7ce1152aea9b61d9f1e19370/"), (
            resource.url
        )
        if resource.md5:
            assert resource.md5 in source, resource.filename
        else:
            assert name == "fgvc_aircraft"  # torchvision checks no md5 for it
    parameters = inspect.signature(cls.__init__).parameters
    if tv.raw_loader:
        assert "loader" in parameters
    for parts in tv.splits.values():
        for _, kwargs in parts:
            assert set(kwargs) <= set(parameters)
            for key, value in kwargs.items():
                if key == "split":
                    assert f'"{value}"' in source, (name, value)
    if tv.classnames is not None:
        assert len(tv.classnames) == {"gtsrb": 43, "svhn": 10}[name]
    assert all("{c}" in t for t in tv.templates)


def _recording_downloads():
    """A list and two stand-ins for torchvision's download helpers that record the path and stop."""
    asked = []

    def fake_download(url, root, filename=None, md5=None, **_):
        asked.append(str(Path(root) / (filename or url.rsplit("/", 1)[1])))
        raise RuntimeError("stop")

    def fake_extract(url, download_root, extract_root=None, filename=None, md5=None, **_):
        fake_download(url, download_root, filename, md5)

    return asked, fake_download, fake_extract


def test_placements_are_where_torchvision_looks(tmp_path):
    """Each class, pointed at a root holding only our placed files, looks for exactly those paths."""
    import torchvision.datasets.utils as tv_utils

    for name, spec in linear_probe_sets.SETS.items():
        tv = spec.extra["torchvision"]
        cls = getattr(torchvision.datasets, tv.tv_class)
        asked, fake_download, fake_extract = _recording_downloads()

        root = tmp_path / name
        module = __import__(cls.__module__, fromlist=["x"])
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(module, "download_and_extract_archive", fake_extract, raising=False)
            patch.setattr(module, "download_url", fake_download, raising=False)
            patch.setattr(tv_utils, "download_url", fake_download)
            for _, kwargs in [p for parts in tv.splits.values() for p in parts]:
                with pytest.raises(RuntimeError):
                    cls(str(root), download=True, **kwargs)
        expected = {str(root / placement) for placement in tv.placement.values()}
        assert set(asked) <= expected and asked, (name, asked, expected)


def test_renderedsst2_unpinned_md5_checked_files_kept_as_published(tmp_path, monkeypatch, caplog):
    """A file-backed set: PNG bytes kept as published (the class's loader), train = train + val, and the
    one file without a published sha256 is accepted on torchvision's md5 with its sha256 logged."""
    site = tmp_path / "site"
    site.mkdir()
    pngs = {}
    with tarfile.open(site / "rendered-sst2.tgz", "w:gz") as tar:
        for folder, count in (("train", 3), ("valid", 2), ("test", 2)):
            for i in range(count):
                label = ("negative", "positive")[i % 2]
                buffer = io.BytesIO()
                Image.new("RGB", (20, 8), (i * 60, 0, 0)).save(buffer, format="PNG")
                name = f"rendered-sst2/{folder}/{label}/{i}.png"
                pngs[name] = buffer.getvalue()
                info = tarfile.TarInfo(name)
                info.size = len(pngs[name])
                tar.addfile(info, io.BytesIO(pngs[name]))
    archive = (site / "rendered-sst2.tgz").read_bytes()
    monkeypatch.setattr(torchvision.datasets.RenderedSST2, "_MD5", md5(archive))
    spec = EVAL_SETS["renderedsst2"]
    resource = dataclasses.replace(spec.resources[0], md5=md5(archive))
    monkeypatch.setitem(EVAL_SETS, "renderedsst2", dataclasses.replace(spec, resources=(resource,)))
    out = tmp_path / "sst2"
    with serve_directory(site) as server, caplog.at_level("WARNING"):
        manifest = make_eval_set(
            "renderedsst2",
            out,
            base_url=server.url(""),
            downloads=tmp_path / "dl",
            expected_counts={"train": 5, "test": 2},
            progress=False,
            retries=0,
        )
    sha = hashlib.sha256(archive).hexdigest()
    assert f"--sha256 rendered-sst2.tgz={sha}" in caplog.text
    assert manifest["sources"][0]["sha256"] == sha and manifest["sources"][0]["pinned_sha256"] is None
    assert manifest["splits"]["train"]["parts"] == ["train", "val"]
    assert read_classnames(out) == ["negative", "positive"]
    split = WdsSplit(out, "train")
    assert [k.split("_")[0] for k in split.index().keys] == ["train"] * 3 + ["val"] * 2
    stored = set()
    for ref in split.index().images:
        with open(split.index().shards[ref.shard], "rb") as stream:
            stream.seek(ref.offset)
            stored.add(stream.read(ref.size))
    expected = {data for name, data in pngs.items() if "/test/" not in name}
    assert stored == expected  # byte for byte
