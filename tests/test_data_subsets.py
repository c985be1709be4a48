"""Tests for rankclip/corpus/subsets.py: nested seeded subsets, manifests and the webdataset filter."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from rankclip.corpus.subsets import (
    MANIFEST_FORMAT,
    index_shards,
    make_subset,
    make_subsets,
    manifest_filter,
    manifest_size,
    read_manifest,
    write_manifest,
)

NUM_SHARDS, PER_SHARD = 4, 75
NUM_SAMPLES = NUM_SHARDS * PER_SHARD


def write_shards(out_dir: Path, num_shards: int = NUM_SHARDS, per_shard: int = PER_SHARD) -> str:
    """Small shards with keys that do not sort like their shard order; returns the brace URL."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for shard in range(num_shards):
        with wds.TarWriter(str(out_dir / f"shard-{shard:03d}.tar")) as sink:
            for index in range(per_shard):
                key = f"s{shard}-{(index * 37) % per_shard:04d}"
                sink.write({"__key__": key, "txt": f"caption {key}", "cls": index})
    return str(out_dir / f"shard-{{000..{num_shards - 1:03d}}}.tar")


@pytest.fixture(scope="module")
def shard_url(tmp_path_factory) -> str:
    return write_shards(tmp_path_factory.mktemp("subset-shards"))


@pytest.fixture(scope="module")
def index(shard_url) -> dict[str, list[str]]:
    return index_shards(shard_url)


def webdataset_keys(shards: list[str], predicate=None) -> list[tuple[str, str]]:
    dataset = wds.WebDataset(shards, shardshuffle=False, empty_check=False)
    if predicate is not None:
        dataset = dataset.select(predicate)
    return [(sample["__url__"], sample["__key__"]) for sample in dataset]


def pairs(manifest: dict) -> set[tuple[str, str]]:
    return {(shard, key) for shard, keys in manifest["shards"].items() for key in keys}


# ------------------------------------------------------------------------------------------------ index


def test_index_lists_every_shard_and_key_in_webdataset_order(shard_url, index):
    shards = wds.shardlists.expand_urls(shard_url)
    assert list(index) == shards
    assert all(len(keys) == PER_SHARD for keys in index.values())
    assert [(shard, key) for shard, keys in index.items() for key in keys] == webdataset_keys(shards)


def test_index_is_the_same_with_several_worker_processes(shard_url, index, tmp_path):
    assert index_shards(shard_url, workers=2) == index
    url = write_shards(tmp_path, num_shards=3, per_shard=5)
    (tmp_path / "shard-002.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="shard-002.tar"):
        index_shards(url, workers=2)


def test_index_keys_follow_webdataset_rules(tmp_path):
    """Subfolder keys, multi-dot names, metadata, folders, dotless names: the samples webdataset yields."""
    shard = tmp_path / "odd.tar"
    with tarfile.open(shard, "w") as tar:
        tar.addfile(tarfile.TarInfo("folder"), None)
        tar.getmember("folder").type = tarfile.DIRTYPE
        for name in [
            "__meta__",
            "README",
            "dir/0001.jpg",
            "dir/0001.txt",
            "0002.seg.png",
            "0002.txt",
            "0003.json",
        ]:
            data = name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    index = index_shards(str(shard))
    assert index == {str(shard): ["dir/0001", "0002", "0003"]}
    assert [key for _, key in webdataset_keys([str(shard)])] == index[str(shard)]


# TarWriter's members here are one header block and one data block each: member i starts at block 2 i.
def _truncate_in_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: 4 * tarfile.BLOCKSIZE + 100])


def _truncate_between_members(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: 4 * tarfile.BLOCKSIZE])


def _truncate_in_data(path: Path) -> None:
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    path.write_bytes(path.read_bytes()[: last.offset_data + last.size // 2])


def _damage_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4 * tarfile.BLOCKSIZE : 4 * tarfile.BLOCKSIZE + 20] = b"x" * 20  # the third member's name + checksum
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "corrupt",
    [
        pytest.param(lambda path: path.write_bytes(b"this is not a tar file" * 40), id="not-a-tar"),
        pytest.param(lambda path: path.write_bytes(b""), id="empty-file"),
        pytest.param(lambda path: path.unlink(), id="missing"),
        pytest.param(_truncate_in_header, id="truncated-header"),
        pytest.param(_truncate_between_members, id="truncated-between-members"),
        pytest.param(_truncate_in_data, id="truncated-data"),
        pytest.param(_damage_header, id="damaged-header"),
    ],
)
def test_index_names_the_unreadable_shard(tmp_path, corrupt):
    url = write_shards(tmp_path, num_shards=3, per_shard=5)
    bad = tmp_path / "shard-001.tar"
    corrupt(bad)
    with pytest.raises(ValueError, match="shard-001.tar"):
        index_shards(url)


def test_index_rejects_a_key_split_across_a_shard(tmp_path):
    shard = tmp_path / "split.tar"
    with wds.TarWriter(str(shard)) as sink:
        sink.write({"__key__": "a", "txt": "1"})
        sink.write({"__key__": "b", "txt": "2"})
        sink.write({"__key__": "a", "cls": "3"})
    with pytest.raises(ValueError, match=r"split\.tar.*'a'"):
        index_shards(str(shard))


def test_index_rejects_a_url_without_shards_or_with_repeats(tmp_path):
    url = write_shards(tmp_path, num_shards=1, per_shard=2)
    with pytest.raises(ValueError, match="more than once"):
        index_shards(f"{url}::{url}")
    with pytest.raises(ValueError, match="no such file"):
        index_shards(str(tmp_path / "nothing-{0..1}.tar"))


# ---------------------------------------------------------------------------------------------- subsets


def test_same_seed_gives_identical_manifest_bytes(shard_url, tmp_path):
    first = make_subsets(shard_url, [50, 120], seed=7, out_dir=tmp_path / "a")
    second = make_subsets(shard_url, [50, 120], seed=7, out_dir=tmp_path / "b")
    assert [path.name for path in first] == ["subset-50.json", "subset-120.json"]
    assert [path.read_bytes() for path in first] == [path.read_bytes() for path in second]


def test_different_seeds_draw_different_samples(index):
    assert pairs(make_subset(index, 100, seed=0)) != pairs(make_subset(index, 100, seed=1))


def test_index_order_does_not_change_the_subset(index):
    reordered = dict(reversed(index.items()))
    assert make_subset(reordered, 90, seed=3) == make_subset(index, 90, seed=3)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_subsets_of_one_seed_are_nested(index, seed):
    sizes = [1, 10, 50, 120, 200, NUM_SAMPLES - 1, NUM_SAMPLES]
    subsets = [pairs(make_subset(index, size, seed)) for size in sizes]
    for smaller, larger in zip(subsets, subsets[1:], strict=False):
        assert smaller < larger


@pytest.mark.parametrize("size", [1, 37, 150, NUM_SAMPLES])
def test_subset_has_exactly_size_samples_grouped_by_shard(index, size):
    manifest = make_subset(index, size, seed=5)
    assert manifest["format"] == MANIFEST_FORMAT
    assert (manifest["seed"], manifest["size"], manifest["source_num_samples"]) == (5, size, NUM_SAMPLES)
    assert sum(len(keys) for keys in manifest["shards"].values()) == size == len(pairs(manifest))
    assert list(manifest["shards"]) == sorted(index)
    for shard, keys in manifest["shards"].items():
        assert keys == [key for key in index[shard] if key in set(keys)]  # the shard's own order


def test_a_large_subset_draws_from_every_shard(index):
    counts = [len(keys) for keys in make_subset(index, NUM_SAMPLES // 2, seed=0)["shards"].values()]
    assert all(PER_SHARD // 4 < count < PER_SHARD for count in counts)


@pytest.mark.parametrize("size", [0, -3, True, 2.5])
def test_subset_size_must_be_a_positive_integer(index, size):
    with pytest.raises(ValueError, match="positive integer"):
        make_subset(index, size, seed=0)


@pytest.mark.parametrize("seed", [None, -1, 1.0])
def test_subset_seed_must_be_a_non_negative_integer(index, seed):
    with pytest.raises(ValueError, match="seed"):
        make_subset(index, 10, seed=seed)


def test_subset_larger_than_the_source_names_both_numbers(index):
    with pytest.raises(ValueError, match=rf"{NUM_SAMPLES + 1}.*{NUM_SAMPLES}"):
        make_subset(index, NUM_SAMPLES + 1, seed=0)


def test_make_subsets_writes_nothing_when_one_size_is_invalid(shard_url, tmp_path):
    with pytest.raises(ValueError, match=str(NUM_SAMPLES)):
        make_subsets(shard_url, [10, NUM_SAMPLES + 5], seed=0, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_subset_all_is_every_pair_and_counts_them(shard_url, index, tmp_path):
    """``all`` (the paper's "all of CC3M that downloaded"): every pair, its count in the manifest, the
    largest of the nested subsets; the CLI writes subset-all.json."""
    every = make_subset(index, "all", seed=4)
    assert every["size"] == every["source_num_samples"] == NUM_SAMPLES
    assert every["shards"] == {shard: keys for shard, keys in sorted(index.items())}  # in webdataset order
    smaller = make_subset(index, 90, seed=4)
    assert all(set(keys) <= set(every["shards"][shard]) for shard, keys in smaller["shards"].items())
    from rankclip.cli import main

    assert (
        main(["data", "subsets", "--shards", shard_url, "--sizes", "90", "all", "--out", str(tmp_path)]) == 0
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == ["subset-90.json", "subset-all.json"]
    assert (
        manifest_size(tmp_path / "subset-all.json")
        == NUM_SAMPLES
        == read_manifest(tmp_path / "subset-all.json")["size"]
    )
    assert manifest_size(tmp_path / "subset-90.json") == 90
    with pytest.raises(SystemExit):
        main(["data", "subsets", "--shards", shard_url, "--sizes", "most", "--out", str(tmp_path)])


def test_manifest_size_reads_any_spelling_of_the_manifest_and_names_a_missing_file(index, tmp_path):
    manifest = make_subset(index, 40, seed=1)
    (tmp_path / "indented.json").write_text(json.dumps(manifest, indent=4))  # not write_manifest's lines
    assert manifest_size(tmp_path / "indented.json") == 40
    (tmp_path / "one-line.json").write_text(json.dumps(manifest))
    assert manifest_size(tmp_path / "one-line.json") == 40
    with pytest.raises(ValueError, match="subset-7.json: subset manifest not found"):
        manifest_size(tmp_path / "subset-7.json")


# ------------------------------------------------------------------------------------------ manifest I/O


def test_manifest_round_trips_through_its_file(index, tmp_path):
    manifest = make_subset(index, 80, seed=2)
    path = tmp_path / "sub" / "subset-80.json"
    write_manifest(manifest, path)
    assert read_manifest(path) == manifest
    assert json.loads(path.read_text()) == manifest
    assert sorted(p.name for p in path.parent.iterdir()) == ["subset-80.json"]  # no temporary left


def _edit(field: str, value):
    def edit(manifest: dict) -> dict:
        manifest[field] = value
        return manifest

    return edit


def _drop(field: str):
    def drop(manifest: dict) -> dict:
        del manifest[field]
        return manifest

    return drop


def _first_shard_keys(value):
    def edit(manifest: dict) -> dict:
        manifest["shards"][next(iter(manifest["shards"]))] = value
        return manifest

    return edit


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (_edit("format", "rankclip-subset/0"), "format"),
        (_drop("seed"), "seed"),
        (_edit("size", "10"), "size"),
        (_edit("size", 11), "shards"),
        (_edit("source_num_samples", 5), "size"),
        (_edit("shards", []), "shards"),
        (_first_shard_keys("abc"), "shards."),
        (_first_shard_keys(["x", "x"]), "shards."),
    ],
)
def test_read_manifest_names_the_file_and_the_bad_field(index, tmp_path, edit, field):
    manifest = make_subset(index, 10, seed=0)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(edit(manifest)))
    with pytest.raises(ValueError, match=rf"bad\.json: field '{field}"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("text", "message"), [("{not json", "not a JSON"), ("[1, 2]", "JSON object"), (None, "not found")]
)
def test_read_manifest_rejects_a_file_that_is_no_manifest(tmp_path, text, message):
    path = tmp_path / "broken.json"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=rf"broken\.json.*{message}"):
        read_manifest(path)


# ------------------------------------------------------------------------------------------------ filter


@pytest.mark.parametrize("size", [1, 64, 211, NUM_SAMPLES])
def test_filter_selects_exactly_the_manifest_samples_from_webdataset(shard_url, index, size):
    manifest = make_subset(index, size, seed=11)
    selected = webdataset_keys(wds.shardlists.expand_urls(shard_url), manifest_filter(manifest))
    assert len(selected) == size
    assert set(selected) == pairs(manifest)


def test_filter_matches_relative_and_absolute_spellings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = write_shards(Path("rel"), num_shards=2, per_shard=10)
    assert not relative.startswith("/")
    manifest = make_subset(index_shards(relative), 7, seed=0)
    absolute = [str(Path(shard).resolve()) for shard in wds.shardlists.expand_urls(relative)]
    selected = webdataset_keys(absolute, manifest_filter(manifest))
    assert {key for _, key in selected} == {key for _, key in pairs(manifest)}


def test_filter_rejects_samples_from_a_shard_the_manifest_does_not_list(shard_url, index, tmp_path):
    predicate = manifest_filter(make_subset(index, 10, seed=0))
    other = write_shards(tmp_path / "other", num_shards=1, per_shard=3)
    with pytest.raises(ValueError, match="other/shard-000.tar"):
        webdataset_keys(wds.shardlists.expand_urls(other), predicate)
    with pytest.raises(ValueError, match="__url__ and __key__"):
        predicate({"__key__": "s0-0000"})
