"""ALIP's caption stage (rankclip/corpus/captions.py): a caption file, and a tiny randomly initialised BLIP
captioning model built here from a transformers config and loaded from a folder (no hub access)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from fabricated import write_tiny_blip
from PIL import Image

from rankclip.cli import main
from rankclip.corpus.captions import caption_shards, read_caption_file, read_shard_samples
from rankclip.corpus.loader import BatchSpec, ShardStream


def jpeg(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 20), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_web_shards(folder: Path, shards: int = 2, per_shard: int = 5) -> list[Path]:
    """Shards laid out like img2dataset's: KEY.jpg, KEY.txt, KEY.json, keys 9 digits."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(shards):
        path = folder / f"{shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for i in range(per_shard):
                key = f"{shard:05d}{i:04d}"
                for ext, data in (
                    ("jpg", jpeg((i * 40, shard * 90, 50))),
                    ("txt", f"raw caption {key}".encode()),
                    ("json", json.dumps({"key": key}).encode()),
                ):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        paths.append(path)
    return paths


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def url(paths: list[Path]) -> str:
    return "::".join(str(p) for p in paths)


@pytest.fixture
def shards(tmp_path) -> list[Path]:
    return write_web_shards(tmp_path / "web")


@pytest.fixture
def caption_file(tmp_path, shards) -> Path:
    path = tmp_path / "captions.tsv"
    keys = [s["__key__"] for p in shards for s in read_shard_samples(p)]
    path.write_text(
        "key\tcaption\n" + "".join(f"{k}\tsynthetic\t{k}  text\n" for k in keys), encoding="utf-8"
    )
    return path


def test_captions_from_a_file(shards, caption_file, tmp_path):
    before = {p: digest(p) for p in shards}
    out = tmp_path / "captioned"
    summary = caption_shards(url(shards), out, source="file", captions_file=caption_file, progress=False)
    assert {p: digest(p) for p in shards} == before  # inputs untouched
    assert summary["num_samples"] == 10 and [s["name"] for s in summary["shards"]] == [
        "00000.tar",
        "00001.tar",
    ]
    for source in shards:
        originals = list(read_shard_samples(source))
        copies = list(read_shard_samples(out / source.name))
        assert [c["__key__"] for c in copies] == [o["__key__"] for o in originals]
        for original, copy in zip(originals, copies, strict=True):
            assert {
                k: v for k, v in copy.items() if k != "syn.txt"
            } == original  # every member, byte for byte
            # the caption is the rest of the line after the first tab, white space collapsed
            assert copy["syn.txt"].decode() == f"synthetic {original['__key__']} text"
    assert json.loads((out / "captions.json").read_text()) == summary


def test_the_training_loader_reads_the_new_caption(shards, caption_file, tmp_path):
    out = tmp_path / "captioned"
    caption_shards(url(shards), out, source="file", captions_file=caption_file, progress=False)
    seen = []

    def tokenizer(texts):
        seen.extend(texts)
        return torch.zeros(len(texts), 4, dtype=torch.long)

    spec = BatchSpec(2, lambda image: torch.zeros(3), tokenizer, synthetic_caption_key="syn.txt")
    stream = ShardStream(
        [str(out / p.name) for p in shards], spec, steps_per_epoch=2, seed=0, shuffle_buffer=0
    )
    batches = list(stream)
    assert len(batches) == 2 and batches[0]["synthetic_text"].shape == (2, 4)
    assert any(text.startswith("synthetic ") for text in seen)


def test_missing_key_fails_naming_it_and_leaves_no_partial_shard(shards, caption_file, tmp_path):
    lines = caption_file.read_text().splitlines()
    caption_file.write_text("\n".join(line for line in lines if not line.startswith("000010003")) + "\n")
    out = tmp_path / "captioned"
    with pytest.raises(ValueError, match=r"00001.tar: no caption for key '000010003'"):
        caption_shards(url(shards), out, source="file", captions_file=caption_file, progress=False)
    assert (out / "00000.tar").is_file()  # the first shard was complete
    assert sorted(p.name for p in out.iterdir()) == ["00000.tar", "captions-state.json"]  # no partial 00001


def test_rerun_skips_finished_shards_and_other_settings_redo_them(shards, caption_file, tmp_path):
    out = tmp_path / "captioned"
    options = {"source": "file", "captions_file": caption_file, "progress": False}
    caption_shards(url(shards), out, **options)
    again = caption_shards(url(shards), out, **options)
    assert again["reused_shards"] == 2
    redone = caption_shards(url(shards), out, key="alt.txt", **options)
    assert redone["reused_shards"] == 0
    assert "alt.txt" in next(read_shard_samples(out / "00000.tar"))


def test_bad_arguments(shards, caption_file, tmp_path):
    with pytest.raises(ValueError, match="holds the input shards"):
        caption_shards(url(shards), shards[0].parent, source="file", captions_file=caption_file)
    with pytest.raises(ValueError, match="needs captions_file"):
        caption_shards(url(shards), tmp_path / "o", source="file")
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab here\n")
    with pytest.raises(ValueError, match=r"bad.tsv, line 1: expected 'key<TAB>caption'"):
        read_caption_file(bad)


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    return write_tiny_blip(tmp_path_factory.mktemp("tiny-blip"))


def test_captions_from_a_model_folder(shards, tiny_blip, tmp_path):
    out = tmp_path / "captioned"
    options = {
        "model": str(tiny_blip),
        "batch_size": 3,
        "device": "cpu",
        "max_new_tokens": 6,
        "progress": False,
    }
    summary = caption_shards(url(shards), out, source="model", **options)
    first = [s["syn.txt"].decode() for p in shards for s in read_shard_samples(out / p.name)]
    assert len(first) == 10 and summary["model"] == str(tiny_blip)
    assert all("\n" not in text for text in first)
    # deterministic: a fresh run (other folder) gives the same captions
    caption_shards(url(shards), tmp_path / "again", source="model", **options)
    assert [
        s["syn.txt"].decode() for p in shards for s in read_shard_samples(tmp_path / "again" / p.name)
    ] == first


def test_cli_captions(shards, caption_file, tmp_path, capsys):
    out = tmp_path / "captioned"
    args = ["data", "captions", "--shards", url(shards), "--out", str(out), "--source", "file"]
    assert main([*args, "--captions-file", str(caption_file), "--no-progress"]) == 0
    assert "captioned 10 samples in 2 shards" in capsys.readouterr().out
    assert main([*args, "--no-progress"]) == 2
    assert "needs captions_file" in capsys.readouterr().err
