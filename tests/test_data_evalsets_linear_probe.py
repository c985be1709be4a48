"""The ten linear-probe sets (rankclip/evalsets/linear_probe.py): CIFAR-10 end to end through
torchvision's own CIFAR10 class from a fabricated, real-format tarball on a loopback server, and every
other set checked against its torchvision class (URL, md5, where the class looks for the file, splits)."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import io
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets
from fabricated import CIFAR_NAMES, md5, write_cifar10, write_renderedsst2
from http_server import serve_directory
from PIL import Image

from rankclip.download import ChecksumError
from rankclip.eval.datasets import WdsSplit, dataset_type, read_classnames
from rankclip.evalsets import linear_probe as linear_probe_sets
from rankclip.evalsets.build import EVAL_SETS, make_eval_set

TRAIN_PER_BATCH, NUM_TEST = 3, 4


def cifar_tarball(site: Path) -> tuple[Path, dict, dict]:
    return write_cifar10(site, TRAIN_PER_BATCH, NUM_TEST)


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
    pngs = write_renderedsst2(site)
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


@pytest.fixture(scope="module")
def probe_mirror(tmp_path_factory):
    """The rehearsal mirror's ten linear-probe archives (tests/rehearsal_mirror.py), served."""
    from rehearsal_mirror import Mirror, write_linear_probe_sets

    mirror = Mirror(root=tmp_path_factory.mktemp("probe-site"), blip=Path("-"), imagenet={})
    write_linear_probe_sets(mirror)
    with serve_directory(mirror.root) as server:
        yield mirror, server


def _files_of(name: str, values: dict[str, str]) -> dict[str, str]:
    return {r.filename: values[r.filename] for r in EVAL_SETS[name].resources}


@pytest.mark.parametrize("name", sorted(linear_probe_sets.SETS))
def test_each_set_from_its_published_layout_with_the_mirrors_checksums(name, probe_mirror, tmp_path, caplog):
    """Every torchvision class reads the mirror's archive when the caller names its sha256 and md5; the
    override is logged and torchvision's own md5 check is back in place afterwards."""
    mirror, server = probe_mirror
    check_md5 = torchvision.datasets.utils.check_md5
    with caplog.at_level("WARNING"):
        manifest = make_eval_set(
            name,
            tmp_path / name,
            base_url=server.url(""),
            downloads=tmp_path / "dl",
            sha256=_files_of(name, mirror.sha256),
            md5=_files_of(name, mirror.md5),
            expected_counts=mirror.counts[name],
            progress=False,
            retries=0,
        )
    assert torchvision.datasets.utils.check_md5 is check_md5
    assert {split: info["num_samples"] for split, info in manifest["splits"].items()} == mirror.counts[name]
    assert "torchvision's published md5s replaced" in caplog.text
    if any(r.md5 for r in EVAL_SETS[name].resources):
        assert "replaces the published" in caplog.text
    for split in ("train", "test"):
        labels = WdsSplit(tmp_path / name, split).labels()
        assert len(labels) == mirror.counts[name][split] and labels.min() >= 0
    assert len(read_classnames(tmp_path / name)) == manifest["num_classes"]


def test_published_pins_hold_without_an_md5_override(probe_mirror, tmp_path):
    """The default path: a mirror file with the right sha256 but not the published md5 is refused, by our
    check before torchvision (and torchvision's own md5 is not touched without an override for every file)."""
    mirror, server = probe_mirror
    options = {"base_url": server.url(""), "progress": False, "retries": 0}
    with pytest.raises(ChecksumError, match="md5 .* expected fff73e5086ae6bdbea199a49dfb8a4c1"):
        pins = {"sha256": _files_of("dtd", mirror.sha256), "expected_counts": mirror.counts["dtd"]}
        make_eval_set("dtd", tmp_path / "dtd", downloads=tmp_path / "dl", **pins, **options)
    with pytest.raises(ChecksumError, match="sha256 mismatch"):
        make_eval_set("svhn", tmp_path / "svhn", downloads=tmp_path / "dl2", **options)
    # an md5 override for one of GTSRB's three files: torchvision's published md5s stay for the set
    spec = EVAL_SETS["gtsrb"]
    root = linear_probe_sets.torchvision_root(tmp_path)
    with linear_probe_sets.torchvision_md5_overrides(spec, root, {"GTSRB_Final_Test_GT.zip": "0" * 32}):
        assert torchvision.datasets.utils.check_md5.__module__ == "torchvision.datasets.utils"
    with pytest.raises(ValueError, match=r"--md5: cifar10 has no file cifar10.tar.gz"):
        make_eval_set("cifar10", tmp_path / "c", md5={"cifar10.tar.gz": "0" * 32}, **options)
    with pytest.raises(ValueError, match=r"--md5 images.tar.gz=abc: not a hex digest"):
        make_eval_set("pets", tmp_path / "p", md5={"images.tar.gz": "abc"}, **options)
