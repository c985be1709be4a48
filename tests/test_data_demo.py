"""Tests for rankclip/demo_data/shapes.py and rankclip/shards.py."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from rankclip.demo_data.shapes import (
    COLOUR_RGB,
    COLOUR_WORDS,
    LINEAR_PROBE_CLASSES,
    SHAPE_WORDS,
    SPLIT_STREAMS,
    TWO_OBJECT_PROBABILITY,
    ZEROSHOT_CLASSES,
    _retrieval_samples,
    make_demo,
    sample_scene,
    scene_captions,
    unused_caption,
)
from rankclip.shards import atomic_tar_writer, write_shards

SMALL = {"num_train": 40, "num_eval": 70, "image_size": 32, "shard_size": 16}
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("demo")
    return out_dir, make_demo(out_dir, seed=3, **SMALL)


def read_samples(paths: list[Path]) -> list[dict]:
    return list(wds.WebDataset([str(p) for p in paths], shardshuffle=False).decode("pil"))


def split_shards(root: Path, manifest_split: dict) -> list[Path]:
    return [root / p for p in manifest_split["shards"]]


def mentions(caption: str, words: tuple[str, ...]) -> bool:
    return any(f" {w} " in f" {caption.replace(',', ' ')} " for w in words)


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------------------------- train
def test_train_shards_read_back_with_expected_keys_and_counts(corpus):
    root, manifest = corpus
    shards = split_shards(root, manifest["train"])
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert sorted(p.name for p in (root / "train").iterdir()) == [p.name for p in shards]

    samples = read_samples(shards)
    assert len(samples) == manifest["train"]["num_samples"] == SMALL["num_train"]
    assert [s["__key__"] for s in samples] == [f"{i:08d}" for i in range(SMALL["num_train"])]
    for sample in samples:
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"png", "txt", "syn.txt", "json"}
        assert sample["png"].size == (32, 32) and sample["png"].mode == "RGB"
        assert sample["txt"] != sample["syn.txt"]
        objects = sample["json"]["objects"]
        assert 1 <= len(objects) <= 2
        for caption in (sample["txt"], sample["syn.txt"]):
            for obj in objects:
                assert mentions(caption, SHAPE_WORDS[obj["shape"]]), (caption, obj)
                assert mentions(caption, COLOUR_WORDS[obj["colour"]]), (caption, obj)


def test_images_show_their_labelled_colour(corpus):
    root, manifest = corpus
    palette = {name: np.asarray(rgb, dtype=np.float32) for name, rgb in COLOUR_RGB.items()}
    samples = read_samples(split_shards(root, manifest["eval"]["zeroshot"]["splits"]["test"]))
    for sample in samples:
        pixels = np.asarray(sample["png"], dtype=np.float32).reshape(-1, 3)
        chroma = pixels.max(axis=1) - pixels.min(axis=1)
        object_rgb = pixels[np.argsort(chroma)[-8:]].mean(axis=0)  # the most saturated pixels
        nearest = min(palette, key=lambda name: np.linalg.norm(palette[name] - object_rgb))
        assert nearest == sample["json"]["objects"][0]["colour"] == ZEROSHOT_CLASSES[sample["cls"]].split()[0]


# ----------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    tiny = {"num_train": 12, "num_eval": 8, "image_size": 16, "shard_size": 5}
    first = make_demo(tmp_path / "a", seed=11, **tiny)
    second = make_demo(tmp_path / "b", seed=11, **tiny)
    other = make_demo(tmp_path / "c", seed=12, **tiny)
    assert first == second
    hashes_a, hashes_b, hashes_c = (tree_hashes(tmp_path / d) for d in "abc")
    assert len(hashes_a) > 10 and hashes_a == hashes_b
    assert hashes_c.keys() == hashes_a.keys()
    for name in hashes_a:
        if name.endswith(".tar"):
            assert hashes_a[name] != hashes_c[name], f"{name} does not depend on the seed"
    assert other["seed"] == 12


def test_samples_do_not_depend_on_shard_size(tmp_path):
    make_demo(tmp_path / "a", seed=5, num_train=9, num_eval=2, image_size=16, shard_size=2)
    make_demo(tmp_path / "b", seed=5, num_train=9, num_eval=2, image_size=16, shard_size=9)
    a = read_samples(sorted((tmp_path / "a" / "train").glob("*.tar")))
    b = read_samples(sorted((tmp_path / "b" / "train").glob("*.tar")))
    assert [(s["txt"], s["json"]) for s in a] == [(s["txt"], s["json"]) for s in b]


# ------------------------------------------------------------------------------------------- structure
def test_captions_share_more_words_the_more_attributes_scenes_share():
    rng = np.random.default_rng(0)
    items = []
    for _ in range(600):
        scene = sample_scene(rng, num_objects=1)
        items.append((scene.objects[0], set(scene_captions(scene, rng, 1)[0].split())))

    fields = ("shape", "colour", "size", "position", "fill")
    overlap: dict[str, list[float]] = {"shape+colour": [], "colour only": [], "nothing": []}
    for (obj_a, words_a), (obj_b, words_b) in itertools.combinations(items, 2):
        shared = {f for f in fields if getattr(obj_a, f) == getattr(obj_b, f)}
        if {"shape", "colour"} <= shared:
            group = "shape+colour"
        elif shared == {"colour"}:
            group = "colour only"
        elif not shared:
            group = "nothing"
        else:
            continue
        overlap[group].append(len(words_a & words_b) / len(words_a | words_b))
    means = {group: float(np.mean(values)) for group, values in overlap.items()}
    assert min(len(v) for v in overlap.values()) > 100
    assert means["shape+colour"] > 1.3 * means["colour only"] > 1.3 * means["nothing"], means


# ------------------------------------------------------------------------------------------ eval sets
def read_wds_split(directory: Path, label_key: str) -> list[tuple]:
    """Read a split the way clip_benchmark's build_wds_dataset does (nshards.txt + brace pattern)."""
    nshards = int((directory / "nshards.txt").read_text())
    assert sorted(p.name for p in directory.glob("*.tar")) == sorted(f"{i}.tar" for i in range(nshards))
    pattern = str(directory / f"{{0..{nshards - 1}}}.tar")
    handler = wds.autodecode.ImageHandler("pil", extensions=["webp", "png", "jpg", "jpeg"])
    dataset = wds.WebDataset(pattern, shardshuffle=False).decode(handler)
    return list(dataset.to_tuple("webp;png;jpg;jpeg", label_key, "json"))


def test_zeroshot_sets_have_consistent_classes(corpus):
    root, manifest = corpus
    labelled = {}
    for name in ("zeroshot", "zeroshot_shift"):
        directory = root / "eval" / name
        classnames = (directory / "classnames.txt").read_text().splitlines()
        templates = (directory / "zeroshot_classification_templates.txt").read_text().splitlines()
        rows = read_wds_split(directory / "test", "cls")
        assert len(rows) == SMALL["num_eval"] == manifest["eval"][name]["splits"]["test"]["num_samples"]
        labels = [cls for _, cls, _ in rows]
        assert len(classnames) == max(labels) + 1 == len(ZEROSHOT_CLASSES)
        assert templates and all("{c}" in t for t in templates)
        assert manifest["eval"][name]["classnames"] == classnames
        for image, cls, attributes in rows:
            assert image.size == (32, 32)
            obj = attributes["objects"][0]
            assert classnames[cls] == f"{obj['colour']} {obj['shape']}"
        labelled[name] = (classnames, {a["style"] for _, _, a in rows})
    assert labelled["zeroshot"][0] == labelled["zeroshot_shift"][0]
    assert labelled["zeroshot"][1] == {"clean"} and labelled["zeroshot_shift"][1] == {"sketch"}


def test_retrieval_set_has_five_distinct_captions_per_image(corpus):
    root, manifest = corpus
    directory = root / "eval" / "retrieval"
    assert (directory / "dataset_type.txt").read_text().strip() == "retrieval"
    rows = read_wds_split(directory / "test", "txt")
    assert len(rows) == SMALL["num_eval"]
    for _, text, attributes in rows:
        captions = text.splitlines()
        assert len(captions) == 5 == len(set(captions))
        for caption in captions:
            for obj in attributes["objects"]:
                assert mentions(caption, SHAPE_WORDS[obj["shape"]]), (caption, obj)
    assert any(len(a["objects"]) == 2 for _, _, a in rows), "retrieval should include two-object scenes"


def test_retrieval_captions_are_unique_across_images_and_only_clashes_are_redrawn():
    """No exact score tie between two images' captions can decide a hit (issue: 86 shared strings)."""
    count = 500  # the demo's retrieval set (config/config.yaml: num_eval)
    samples = list(_retrieval_samples(0, count, 16))
    captions = [sample["txt"].decode().splitlines() for sample in samples]
    assert len({c for kept in captions for c in kept}) == 5 * count
    earlier: set[str] = set()
    redrawn = 0
    for index, kept in enumerate(captions):
        rng = np.random.default_rng([0, SPLIT_STREAMS["retrieval/test"], index])
        scene = sample_scene(rng, num_objects=2 if rng.random() < TWO_OBJECT_PROBABILITY else 1)
        assert json.loads(samples[index]["json"]) == scene.to_json()  # the same scenes (and images)
        plain = scene_captions(scene, rng, 5)
        for position, (caption, first) in enumerate(zip(kept, plain, strict=True)):
            if caption != first:  # redrawn: only because the first draw was taken
                redrawn += 1
                assert first in earlier or first in kept[:position], (index, first)
        earlier |= set(kept)
    assert 0 < redrawn < count  # the plain draws do clash; few captions change


def test_unused_caption_tries_other_templates_then_gives_up():
    scene = sample_scene(np.random.default_rng(0), num_objects=1)
    template = "a picture of one {colour} {shape}"

    class Taken(set):
        """Every caption of ``template`` (or, with ``prefix=""``, every caption) is taken."""

        def __init__(self, prefix: str):
            super().__init__()
            self.prefix = prefix

        def __contains__(self, caption):
            return caption.startswith(self.prefix)

    rng = np.random.default_rng(1)
    assert unused_caption(template, scene, rng, set()).startswith("a picture of one ")
    other = unused_caption(template, scene, rng, Taken("a picture of one "), tries=3)
    assert other is not None and not other.startswith("a picture of one ")  # another template
    assert unused_caption(template, scene, rng, Taken(""), tries=2) is None  # all taken: the caller says so


def test_linear_probe_set_has_train_and_test(corpus):
    root, manifest = corpus
    directory = root / "eval" / "linear_probe"
    classnames = (directory / "classnames.txt").read_text().splitlines()
    assert classnames == list(LINEAR_PROBE_CLASSES) == manifest["eval"]["linear_probe"]["classnames"]
    for split in ("train", "test"):
        rows = read_wds_split(directory / split, "cls")
        assert len(rows) == SMALL["num_eval"]
        assert len(classnames) == max(cls for _, cls, _ in rows) + 1
        for _, cls, attributes in rows:
            obj = attributes["objects"][0]
            assert classnames[cls] == f"{obj['fill']} {obj['shape']}"


def test_manifest_file_matches_returned_manifest(corpus):
    root, manifest = corpus
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["format_version"] == 2 and manifest["seed"] == 3
    for entry in [manifest["train"]] + [
        split for dataset in manifest["eval"].values() for split in dataset["splits"].values()
    ]:
        assert all((root / p).is_file() for p in entry["shards"])


def test_rerun_with_fewer_shards_removes_stale_shards(tmp_path):
    make_demo(tmp_path, num_train=10, num_eval=4, image_size=16, shard_size=2)
    assert len(list((tmp_path / "train").glob("*.tar"))) == 5
    manifest = make_demo(tmp_path, num_train=10, num_eval=4, image_size=16, shard_size=5)
    assert sorted((tmp_path / "train").glob("*.tar")) == split_shards(tmp_path, manifest["train"])
    assert (tmp_path / "eval" / "zeroshot" / "test" / "nshards.txt").read_text().strip() == "1"
    assert sorted(p.name for p in (tmp_path / "eval" / "zeroshot" / "test").glob("*.tar")) == ["0.tar"]


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_train": 0}, "num_train"),
        ({"num_eval": -1}, "num_eval"),
        ({"image_size": 8}, "image_size"),
        ({"shard_size": 0}, "shard_size"),
        ({"seed": -2}, "seed"),
    ],
)
def test_invalid_arguments_name_the_argument(tmp_path, kwargs, name):
    with pytest.raises(ValueError, match=name):
        make_demo(tmp_path, **kwargs)
    assert not any(tmp_path.rglob("*.tar"))


@pytest.mark.parametrize("kwargs", [{"num_train": 2.5}, {"image_size": True}, {"seed": "0"}])
def test_non_integer_arguments_are_rejected(tmp_path, kwargs):
    with pytest.raises(TypeError, match=next(iter(kwargs))):
        make_demo(tmp_path, **kwargs)


# ----------------------------------------------------------------------------------- atomic writing
def sample(i: int) -> dict[str, bytes]:
    return {"__key__": f"{i:04d}", "txt": f"caption {i}".encode()}


def test_failed_write_leaves_no_partial_tar_and_keeps_old_shard(tmp_path):
    path = tmp_path / "shard-000000.tar"
    path.write_bytes(b"previous complete shard")
    with pytest.raises(RuntimeError, match="boom"), atomic_tar_writer(path) as writer:
        writer.write(sample(0))
        raise RuntimeError("boom")
    assert path.read_bytes() == b"previous complete shard"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]


def test_write_shards_failing_midway_keeps_only_complete_shards(tmp_path):
    def samples():
        for i in range(7):
            if i == 5:
                raise RuntimeError("renderer crashed")
            yield sample(i)

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_shards(samples(), tmp_path, shard_size=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]
    assert [s["__key__"] for s in read_samples([tmp_path / "shard-000000.tar"])] == ["0000", "0001", "0002"]


def test_killed_process_leaves_no_tar(tmp_path):
    path = tmp_path / "shard-000000.tar"
    script = textwrap.dedent(
        f"""
        import os, signal
        from rankclip.shards import atomic_tar_writer
        with atomic_tar_writer({str(path)!r}) as writer:
            writer.write({{"__key__": "0000", "txt": b"x" * 100000}})
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
    assert result.returncode == -9, result.stderr.decode()
    assert not list(tmp_path.glob("*.tar"))
    assert [p.name for p in tmp_path.iterdir()] == [".shard-000000.tar.tmp"]
