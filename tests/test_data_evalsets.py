"""ImageNet-1K val, ImageNetV2, ImageNet-R and COCO Karpathy converters (rankclip/evalsets/build.py and the
family modules), on tiny archives fabricated here in the real formats, served from a loopback server."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import fabricated
import pytest
from fabricated import add_bytes, coco_name, jpeg, sha256, write_imagenet_r, write_imagenet_val
from http_server import serve_directory

from rankclip.cli import main
from rankclip.download import ChecksumError, part_path
from rankclip.eval.datasets import WdsSplit, dataset_type, read_classnames, read_templates
from rankclip.evalsets import imagenet
from rankclip.evalsets.build import EVAL_SETS, fetch_eval_files, make_eval_set
from rankclip.evalsets.converter import EvalSetError, staged_dataset
from rankclip.evalsets.imagenet import IMAGENET_WNIDS, WNID_INDEX, read_labels_file
from rankclip.evalsets.imagenet_facts import IMAGENET_R_CLASS_INDICES

QUIET = {"progress": False, "retries": 0}


def read_split(folder: Path, split: str = "test") -> tuple[WdsSplit, list[bytes]]:
    """The split as the evaluator indexes it, and every sample's image bytes."""
    wds_split = WdsSplit(folder, split)
    index = wds_split.index()
    images = []
    for ref in index.images:
        with open(index.shards[ref.shard], "rb") as stream:
            stream.seek(ref.offset)
            images.append(stream.read(ref.size))
    return wds_split, images


# ------------------------------------------------------------------------------------------ ImageNet val
VAL_LABELS = {1: 0, 2: 999, 3: 65, 4: 0, 5: 417, 6: 500}  # image number -> class index


@pytest.fixture(scope="module")
def imagenet_files(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("imagenet")
    return write_imagenet_val(root, VAL_LABELS) | {"root": root}


def make_imagenet(files, out, **kwargs):
    options = {
        "archives": [files["val"], files["devkit"]],
        "sha256": files["pins"],
        "expected_counts": {"test": 6},
        "downloads": files["root"] / "downloads",
        "shard_size": 4,
        **QUIET,
    }
    return make_eval_set("imagenet1k", out, **(options | kwargs))


def test_imagenet_val_from_devkit(imagenet_files, tmp_path):
    out = tmp_path / "imagenet1k"
    manifest = make_imagenet(imagenet_files, out)
    split, images = read_split(out)
    assert split.index().keys == [f"ILSVRC2012_val_{n:08d}" for n in range(1, 7)]  # sorted by number
    assert split.labels().tolist() == [VAL_LABELS[n] for n in range(1, 7)]
    assert images == [imagenet_files["images"][n] for n in range(1, 7)]  # JPEG bytes as published
    assert len(split.shards) == 2 and (out / "test" / "nshards.txt").read_text() == "2\n"
    import open_clip

    assert read_classnames(out) == list(open_clip.IMAGENET_CLASSNAMES)
    templates = read_templates(out)
    assert len(templates) == 80 and templates[0] == "a bad photo of a {c}."
    assert dataset_type(out) == "classification" and not (out / "class_subset.txt").exists()
    assert manifest["splits"]["test"]["num_samples"] == 6
    assert {s["file"]: s["sha256"] for s in manifest["sources"]} == imagenet_files["pins"]
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert not list(tmp_path.glob(".imagenet1k.*"))  # no staging leftovers


def test_imagenet_val_checks_the_published_sha256_and_count(imagenet_files, tmp_path):
    out = tmp_path / "imagenet1k"
    with pytest.raises(ChecksumError) as failure:
        make_imagenet(imagenet_files, out, sha256={})
    message = str(failure.value)
    assert str(imagenet_files["val"]) in message and imagenet.IMAGENET_VAL_SHA256 in message
    with pytest.raises(EvalSetError, match=r"ILSVRC2012_img_val.tar: 6 samples, expected 50000"):
        make_imagenet(imagenet_files, out, expected_counts=None)
    assert not out.exists()  # nothing written on failure
    make_imagenet(imagenet_files, out, expected_counts=None, check_counts=False)
    assert imagenet_files["val"].is_file()  # a user's file is never deleted


def test_imagenet_val_from_a_labels_file(imagenet_files, tmp_path):
    labels = tmp_path / "val.txt"
    lines = [f"ILSVRC2012_val_{n:08d}.JPEG {VAL_LABELS[n]}" for n in (1, 2, 3)]
    lines += [f"ILSVRC2012_val_{n:08d},{IMAGENET_WNIDS[VAL_LABELS[n]]} 1 2 3 4" for n in (4, 5)]
    lines += ["# a comment", "", f"6 {IMAGENET_WNIDS[VAL_LABELS[6]]}"]
    labels.write_text("ImageId,PredictionString\n" + "\n".join(lines) + "\n")
    out = tmp_path / "imagenet1k"
    make_imagenet(imagenet_files, out, archives=[imagenet_files["val"]], labels=labels)
    assert WdsSplit(out, "test").labels().tolist() == [VAL_LABELS[n] for n in range(1, 7)]

    labels.write_text("ILSVRC2012_val_00000001.JPEG 3\n")
    with pytest.raises(EvalSetError, match=r"has no label for 5 image\(s\).*ILSVRC2012_val_00000002"):
        make_imagenet(imagenet_files, out, archives=[imagenet_files["val"]], labels=labels)
    labels.write_text("ILSVRC2012_val_00000001.JPEG n99999999\n")
    with pytest.raises(EvalSetError, match=r"val.txt, line 1: n99999999 is not one of the 1000"):
        read_labels_file(labels)
    with pytest.raises(EvalSetError, match="needs labels"):
        make_imagenet(imagenet_files, out, archives=[imagenet_files["val"]])
    with pytest.raises(FileNotFoundError, match="no public download: pass it with --archive"):
        make_imagenet(imagenet_files, out, archives=[])


def test_wnids_are_the_standard_sorted_list():
    from clip_benchmark.datasets import builder

    assert list(IMAGENET_WNIDS) == builder.all_imagenet_wordnet_ids == sorted(IMAGENET_WNIDS)
    assert len(WNID_INDEX) == 1000


# --------------------------------------------------------------------------- ImageNetV2 and ImageNet-R
@pytest.fixture
def site(tmp_path) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    return root


def write_imagenetv2(site: Path) -> dict[str, tuple[int, bytes]]:
    contents = {
        "0/aaa": (0, jpeg((255, 0, 0))),
        "999/bbb": (999, jpeg((0, 255, 0))),
        "7/ccc": (7, jpeg((0, 0, 9))),
    }
    fabricated.write_imagenetv2(site, "matched-frequency", contents)
    return contents


def test_imagenetv2_downloads_verifies_and_converts(site, tmp_path):
    contents = write_imagenetv2(site)
    archive = site / "imagenetv2-matched-frequency.tar.gz"
    pins = {archive.name: sha256(archive)}
    out, downloads = tmp_path / "eval" / "imagenetv2_matched", tmp_path / "downloads"
    with serve_directory(site) as server:
        base = server.url("")
        manifest = make_eval_set(
            "imagenetv2_matched",
            out,
            base_url=base,
            sha256=pins,
            downloads=downloads,
            expected_counts={"test": 3},
            **QUIET,
        )
        assert len(server.requests) == 1
        # A second run reuses the verified download: no request.
        make_eval_set(
            "imagenetv2_matched",
            out,
            base_url=base,
            sha256=pins,
            downloads=downloads,
            expected_counts={"test": 3},
            **QUIET,
        )
        assert len(server.requests) == 1
    split, images = read_split(out)
    assert split.index().keys == ["000_aaa", "999_bbb", "007_ccc"]  # archive order
    assert split.labels().tolist() == [0, 999, 7]
    assert images == [data for _, data in contents.values()]
    assert manifest["variant"] == "matched-frequency"
    assert manifest["sources"][0]["url"] == server.url(archive.name)


def test_a_wrong_hash_is_rejected_and_nothing_is_kept(site, tmp_path):
    write_imagenetv2(site)
    downloads = tmp_path / "downloads"
    with serve_directory(site) as server, pytest.raises(ChecksumError) as failure:
        # the real pinned sha256 of imagenetv2-matched-frequency.tar.gz does not match the tiny archive
        fetch_eval_files("imagenetv2_matched", downloads, base_url=server.url(""), **QUIET)
    assert imagenet.IMAGENETV2_VARIANTS["imagenetv2_matched"][1] in str(failure.value)
    dest = downloads / "imagenetv2-matched-frequency.tar.gz"
    assert not dest.exists() and not part_path(dest).exists()


def test_corrupt_and_partial_downloads_are_fetched_again(site, tmp_path):
    write_imagenetv2(site)
    archive = site / "imagenetv2-matched-frequency.tar.gz"
    pins = {archive.name: sha256(archive)}
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    dest = downloads / archive.name
    with serve_directory(site) as server:
        fetch = {"base_url": server.url(""), "sha256": pins, **QUIET}
        dest.write_bytes(b"corrupt" + archive.read_bytes()[7:])  # same size, wrong bytes
        fetch_eval_files("imagenetv2_matched", downloads, **fetch)
        assert dest.read_bytes() == archive.read_bytes()
        assert [r.range for r in server.requests] == [None]
        dest.unlink()
        part_path(dest).write_bytes(archive.read_bytes()[:100])  # an interrupted download
        fetch_eval_files("imagenetv2_matched", downloads, **fetch)
        assert dest.read_bytes() == archive.read_bytes()
        assert server.requests[-1].range == "bytes=100-"


def test_imagenetv2_rejects_a_bad_layout(site, tmp_path):
    with tarfile.open(site / "imagenetv2-top-images.tar.gz", "w:gz") as tar:
        add_bytes(tar, "imagenetv2-top-images-format-val/1000/x.jpeg", jpeg((1, 2, 3)))
    archive = site / "imagenetv2-top-images.tar.gz"
    with pytest.raises(EvalSetError, match=r"1000/x.jpeg is not <class 0..999>/<image>"):
        make_eval_set(
            "imagenetv2_top",
            tmp_path / "out",
            archives=[archive],
            sha256={archive.name: sha256(archive)},
            **QUIET,
        )


def test_imagenet_r_keeps_1000_class_labels_and_ships_the_subset(tmp_path):
    wnids = ["n01443537", "n12267677", "n01443537"]  # classes 1, 988, 1 of ImageNet-1K
    archive = tmp_path / "imagenet-r.tar"
    images = write_imagenet_r(archive, wnids)
    out = tmp_path / "imagenet_r"
    manifest = make_eval_set(
        "imagenet_r",
        out,
        archives=[archive],
        sha256={"imagenet-r.tar": sha256(archive)},
        expected_counts={"test": 3},
        **QUIET,
    )
    split, stored = read_split(out)
    assert split.labels().tolist() == [1, 988, 1] and stored == images
    subset = [int(line) for line in (out / "class_subset.txt").read_text().split()]
    assert subset == list(IMAGENET_R_CLASS_INDICES) and len(subset) == 200
    assert manifest["class_folders"] == 2
    # the evaluator resolves the file into the 200-class subset
    from rankclip.eval.evaluator import resolve_class_subset

    indices, _ = resolve_class_subset(out / "class_subset.txt", read_classnames(out))
    assert indices == subset

    write_imagenet_r(archive, ["n01440764"])  # tench: not one of ImageNet-R's classes
    with pytest.raises(EvalSetError, match="n01440764/art_0.jpg is not <one of ImageNet-R's 200"):
        make_eval_set(
            "imagenet_r", out, archives=[archive], sha256={"imagenet-r.tar": sha256(archive)}, **QUIET
        )
    assert WdsSplit(out, "test").labels().tolist() == [1, 988, 1]  # the earlier output is intact


# --------------------------------------------------------------------------------------------- COCO
def write_coco(site: Path, captions_for_third=7) -> dict:
    entries = [(42, "test", 5), (999, "val", 5), (73, "test", 6), (74, "test", captions_for_third)]
    return fabricated.write_coco(site, [(coco_name(number), split, n) for number, split, n in entries])


def coco_pins(site: Path) -> dict[str, str]:
    return {name: sha256(site / name) for name in ("val2014.zip", "caption_datasets.zip")}


def test_coco_karpathy_test_split_with_five_captions_per_image(site, tmp_path):
    images = write_coco(site)
    out = tmp_path / "mscoco_karpathy"
    with serve_directory(site) as server:
        manifest = make_eval_set(
            "mscoco_karpathy",
            out,
            base_url=server.url(""),
            sha256=coco_pins(site),
            downloads=tmp_path / "downloads",
            expected_counts={"test": 3},
            **QUIET,
        )
    split, stored = read_split(out)
    assert split.index().keys == [
        "COCO_val2014_000000000042",
        "COCO_val2014_000000000073",
        "COCO_val2014_000000000074",
    ]
    names = list(images)
    assert stored == [images[names[0]], images[names[1]], images[names[2]]]
    captions = split.captions()
    assert [len(c) for c in captions] == [5, 5, 5]
    assert captions[0][3] == f"Caption 3 of {names[0]}."  # one line, white space collapsed
    assert dataset_type(out) == "retrieval"
    assert manifest["splits"]["test"]["num_texts"] == 15


def test_coco_image_with_too_few_captions_is_named(site, tmp_path):
    write_coco(site, captions_for_third=4)
    with pytest.raises(EvalSetError, match="COCO_val2014_000000000074.jpg has 4 captions, fewer than 5"):
        make_eval_set(
            "mscoco_karpathy",
            tmp_path / "out",
            archives=[site / "val2014.zip", site / "caption_datasets.zip"],
            sha256=coco_pins(site),
            check_counts=False,
            **QUIET,
        )


# ------------------------------------------------------------------------------ shared rules and the CLI
def test_out_dir_with_foreign_files_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(EvalSetError, match="holds files no converter wrote"), staged_dataset(out):
        pass
    assert (out / "notes.txt").read_text() == "keep me"


def test_every_set_is_registered_with_pinned_or_flagged_sources():
    assert len(EVAL_SETS) == 16
    for spec in EVAL_SETS.values():
        assert spec.task in ("zeroshot", "retrieval", "linear_probe")
        assert spec.expected_counts and spec.resources
        for resource in spec.resources:
            assert resource.sha256 or resource.md5, resource.filename  # verified either way
            assert resource.url or spec.name == "imagenet1k"
    unpinned = [r.filename for s in EVAL_SETS.values() for r in s.resources if r.sha256 is None]
    assert unpinned == ["rendered-sst2.tgz"]  # "to be pinned" (torchvision's md5 is checked)


def test_cli_eval_set_and_errors(tmp_path, capsys):
    archive = tmp_path / "imagenet-r.tar"
    write_imagenet_r(archive, ["n01443537"])
    out = tmp_path / "imagenet_r"
    args = ["data", "eval-set", "imagenet_r", "--out", str(out), "--archive", f"imagenet-r.tar={archive}"]
    args += ["--sha256", f"imagenet-r.tar={sha256(archive)}", "--no-progress"]
    assert main([*args, "--expected-count", "test=1"]) == 0
    assert "wrote imagenet_r" in capsys.readouterr().out
    assert WdsSplit(out, "test").labels().tolist() == [1]
    assert main(args) == 2  # the published count, 30,000
    assert "1 samples, expected 30000" in capsys.readouterr().err
    assert main([*args[:-3], "--no-progress"]) == 2  # the published sha256
    assert "not the published imagenet-r.tar" in capsys.readouterr().err
    assert main([*args, "--expected-count", "test"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_rankclip_eval_reads_the_converted_sets(site, tmp_path):
    """The converted ImageNet-R and COCO sets go through `rankclip eval` as they are (tiny random model)."""
    import torch

    from rankclip.checkpoint import atomic_save
    from rankclip.eval.results import read_result
    from rankclip.models import create_model

    torch.manual_seed(0)
    model = create_model("rankclip-tiny-vit")[0]
    config = {"loss": "clip", "seed": 0, "output_dir": "runs/tiny", "model": "rankclip-tiny-vit"}
    checkpoint = atomic_save(
        {"state_dict": model.state_dict(), "model_name": "rankclip-tiny-vit", "config": config, "step": 1},
        tmp_path / "model.pt",
    )
    archive = tmp_path / "imagenet-r.tar"
    write_imagenet_r(archive, ["n01443537", "n12267677", "n01443537", "n02007558"])
    make_eval_set(
        "imagenet_r", tmp_path / "imagenet_r", archives=[archive], sha256={archive.name: sha256(archive)},
        check_counts=False, **QUIET,
    )  # fmt: skip
    write_coco(site)
    make_eval_set(
        "mscoco_karpathy", tmp_path / "coco", archives=[site / "val2014.zip", site / "caption_datasets.zip"],
        sha256=coco_pins(site), check_counts=False, **QUIET,
    )  # fmt: skip
    common = ["--checkpoint", str(checkpoint), "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    common += ["--workers", "0", "--device", "cpu"]
    out = tmp_path / "results"
    one_template = tmp_path / "template.txt"  # 1000 prompts instead of 80,000 on a CPU
    one_template.write_text("a photo of a {c}.\n")
    zeroshot = ["--dataset", str(tmp_path / "imagenet_r"), "--out", str(out / "zs.json")]
    zeroshot += ["--templates", str(one_template)]
    assert main(["eval", "zeroshot", *common, *zeroshot]) == 0
    retrieval = ["--dataset", str(tmp_path / "coco"), "--out", str(out / "ret.json")]
    assert main(["eval", "retrieval", *common, *retrieval]) == 0
    result = read_result(out / "zs.json")
    assert result.num_samples == 4 and result.num_classes == 200  # logits restricted to ImageNet-R's 200
    assert result.protocol["num_templates"] == 1
    result = read_result(out / "ret.json")
    assert result.num_samples == 3 and result.num_texts == 15
