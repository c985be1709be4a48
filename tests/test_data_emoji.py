"""Tests for rankclip/demo_data/emoji.py: Noto Color Emoji glyphs captioned with CLDR names.

These need Debian's fonts-noto-color-emoji and PyPI's emoji package. Without them the tests fail (they
do not skip) with the error that says what to install: CI installs both.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import webdataset as wds

from rankclip.demo_data import emoji as emoji_module
from rankclip.demo_data.emoji import (
    FONT_PACKAGE,
    FRIBIDI_PACKAGE,
    GLYPH_SIZE,
    GlyphChecker,
    emoji_entries,
    load_font,
    make_emoji_corpus,
    render_emoji,
)

# No skin-tone variants and small images: the whole font is still checked, in about 2 s.
SMALL = {"image_size": 32, "include_skin_tones": False, "shard_size": 256}
BLACK_FLAG, CANCEL_TAG = "\U0001f3f4", "\U000e007f"


def tags(text: str) -> str:
    return "".join(chr(0xE0000 + ord(c)) for c in text)


@pytest.fixture(scope="module")
def font():
    return load_font()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, dict]:
    out_dir = tmp_path_factory.mktemp("emoji")
    return out_dir, make_emoji_corpus(out_dir, seed=0, **SMALL)


def read_samples(root: Path, shards: list[str]) -> list[dict]:
    return list(wds.WebDataset([str(root / s) for s in shards], shardshuffle=False).decode("pil"))


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def split_names(root: Path, manifest: dict) -> tuple[set[str], set[str]]:
    train = read_samples(root, manifest["train"]["shards"])
    test = read_samples(root, manifest["eval"]["retrieval"]["splits"]["test"]["shards"])
    return {s["txt"] for s in train}, {s["json"]["name"] for s in test}


# ------------------------------------------------------------------------------------------ the corpus
def test_corpus_reads_back_with_expected_keys_and_counts(corpus, font):
    root, manifest = corpus
    counts = manifest["counts"]
    assert counts["candidates"] == counts["kept"] + sum(counts["skipped"].values())
    assert 1500 < counts["kept"] <= counts["candidates"]  # about 1,900 emoji without skin tones

    train = read_samples(root, manifest["train"]["shards"])
    assert [p.name for p in sorted((root / "train").iterdir())] == [
        Path(s).name for s in manifest["train"]["shards"]
    ]
    assert len(train) == manifest["train"]["num_samples"]
    assert [s["__key__"] for s in train] == [f"{i:08d}" for i in range(len(train))]
    for sample in train:
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"png", "txt", "syn.txt", "json"}
        assert sample["png"].size == (32, 32) and sample["png"].mode == "RGB"
        assert sample["txt"] == sample["json"]["name"] and sample["txt"] != sample["syn.txt"]
        assert sample["json"]["skin_tones"] == []

    retrieval = manifest["eval"]["retrieval"]
    directory = root / retrieval["root"]
    assert (directory / "dataset_type.txt").read_text() == "retrieval\n"
    shards = retrieval["splits"]["test"]["shards"]
    assert (directory / "test" / "nshards.txt").read_text() == f"{len(shards)}\n"
    assert [Path(s).name for s in shards] == [f"{i}.tar" for i in range(len(shards))]
    test = read_samples(root, shards)
    assert len(test) == retrieval["splits"]["test"]["num_samples"] > 0
    assert len(train) + len(test) == counts["kept"]
    for sample in test:
        assert set(sample) - {"__key__", "__url__", "__local_path__"} == {"png", "txt", "json"}
        captions = sample["txt"].split("\n")
        assert len(captions) == retrieval["captions_per_image"] == 2
        assert captions[0] == sample["json"]["name"] and captions[1] != captions[0]
    pizza = next(s for s in train + test if s["json"]["name"] == "pizza")
    assert pizza["png"].tobytes() == render_emoji(font, "\U0001f355", image_size=32).tobytes()
    assert json.loads((root / "manifest.json").read_text()) == manifest


def test_captions_are_the_cldr_names(corpus):
    root, manifest = corpus
    train, test = split_names(root, manifest)
    names = train | test
    for name in ("pizza", "grinning face", "woman pilot", "man pilot", "flag: Japan", "keycap: 5"):
        assert name in names
    assert len(names) == manifest["counts"]["kept"]  # every emoji has its own name


def test_names_put_back_the_cldr_colon():
    entries = {e.sequence: e for e in emoji_entries(include_skin_tones=True)}
    pilot = entries["\U0001f9d1\U0001f3ff\u200d\u2708\ufe0f"]
    assert (pilot.name, pilot.base_name, pilot.skin_tones) == (
        "pilot: dark skin tone",
        "pilot",
        ("dark skin tone",),
    )
    white_hair = entries["\U0001f9d1\U0001f3fd\u200d\U0001f9b3"]
    assert white_hair.name == "person: medium skin tone, white hair"
    assert white_hair.base_name == entries["\U0001f9d1\u200d\U0001f9b3"].name == "person white hair"
    handshake = entries["\U0001faf1\U0001f3fb\u200d\U0001faf2\U0001f3ff"]
    assert handshake.name == "handshake: light skin tone, dark skin tone"
    assert handshake.base_name == entries["\U0001f91d"].name == "handshake"
    assert entries[BLACK_FLAG + tags("gbeng") + CANCEL_TAG].name == "flag: England"
    assert entries["\U0001f51f"].name == "keycap: 10"
    assert entries["\U0001f360"].alias == "sweet potato"  # roasted sweet potato
    assert entries["\U0001f1fa\U0001f1f8"].alias == "flag for United States"  # not the short code "us"

    plain = emoji_entries(include_skin_tones=False)
    assert 1800 < len(plain) < len(entries) and not any(e.skin_tones for e in plain)


# ----------------------------------------------------------------------------------------- skipping
def test_glyph_checker_skips_what_the_font_cannot_draw_as_one_glyph(font):
    checker = GlyphChecker(font)
    assert checker.problem("\U0001f355") is None  # pizza
    assert checker.problem("\U0001f469\u200d\u2708\ufe0f") is None  # woman pilot: one ZWJ ligature
    assert checker.problem("\U0001f1ef\U0001f1f5") is None  # flag: Japan
    assert checker.problem(BLACK_FLAG + tags("gbeng") + CANCEL_TAG) is None  # flag: England
    # A ZWJ sequence no font has: laid out as pizza and hamburger side by side.
    assert checker.problem("\U0001f355\u200d\U0001f354") == "split"
    assert checker.problem("\U0001f355\U0001f3fb") == "split"  # a skin tone on a pizza
    assert checker.problem("\ue000") == "blank"  # private use: the empty .notdef glyph
    assert checker.problem("\U0001f1e6\U0001f1e6") == "fallback"  # "AA" is no region: unknown-flag glyph
    assert checker.problem(BLACK_FLAG + tags("gbzzz") + CANCEL_TAG) == "fallback"  # no such subdivision


def test_corpus_skips_split_blank_and_fallback_glyphs(corpus, font):
    root, manifest = corpus
    candidates = {e.sequence: e for e in emoji_entries(include_skin_tones=False)}
    skipped = {s["sequence"]: s["reason"] for s in manifest["skipped"]}
    assert len(candidates) == manifest["counts"]["candidates"]
    assert len(candidates) - len(skipped) == manifest["counts"]["kept"]
    assert manifest["counts"]["skipped"] == {
        reason: list(skipped.values()).count(reason) for reason in sorted(set(skipped.values()))
    }
    # The emoji package knows emoji newer than the installed font: some are always skipped.
    assert len(skipped) > 0
    # Each reason, checked with other Pillow calls than the checker's: layout width and glyph bitmap.
    for sequence, reason in skipped.items():
        width = font.getbbox(sequence)[2] - font.getbbox(sequence)[0]
        if reason == "split":
            assert width >= 2 * GLYPH_SIZE[0], sequence
        elif reason == "blank":
            assert font.getmask(sequence, mode="RGBA").getbbox() is None, sequence
        else:
            assert reason == "fallback" and width == GLYPH_SIZE[0], sequence
    train, test = split_names(root, manifest)
    assert not {candidates[s].name for s in skipped} & (train | test)


# -------------------------------------------------------------------------------------------- splits
def test_skin_tone_corpus_holds_out_whole_concepts(tmp_path, font):
    manifest = make_emoji_corpus(
        tmp_path, seed=1, include_skin_tones=True, image_size=16, shard_size=1024, background="black"
    )
    counts = manifest["counts"]
    assert 3000 < counts["kept"] <= counts["candidates"]  # about 3,800 emoji with skin tones
    train = read_samples(tmp_path, manifest["train"]["shards"])
    test = read_samples(tmp_path, manifest["eval"]["retrieval"]["splits"]["test"]["shards"])
    train_concepts = {s["json"]["base_name"] for s in train}
    test_concepts = {s["json"]["base_name"] for s in test}
    assert not train_concepts & test_concepts
    assert len(test_concepts) == counts["held_out_concepts"] == round(0.1 * counts["concepts"])
    assert any(s["json"]["skin_tones"] for s in train)
    assert manifest["background"] == [0, 0, 0]
    assert all(s["png"].size == (16, 16) for s in train + test)
    pizza = next(s for s in train + test if s["json"]["name"] == "pizza")
    assert pizza["png"].tobytes() == render_emoji(font, "\U0001f355", "black", image_size=16).tobytes()
    assert pizza["png"].getpixel((0, 0)) == (0, 0, 0)
    names = {s["txt"] for s in train} | {s["json"]["name"] for s in test}
    assert {"pilot", "pilot: dark skin tone", "woman pilot", "man pilot: light skin tone"} <= names


def test_same_seed_is_byte_identical_and_another_seed_splits_differently(corpus, tmp_path):
    root, manifest = corpus
    again = make_emoji_corpus(tmp_path / "again", seed=0, **SMALL)
    assert again == manifest
    assert tree_hashes(tmp_path / "again") == tree_hashes(root)

    other = make_emoji_corpus(tmp_path / "other", seed=1, **SMALL)
    assert other["counts"]["kept"] == manifest["counts"]["kept"]
    train, test = split_names(root, manifest)
    other_train, other_test = split_names(tmp_path / "other", other)
    assert test != other_test and train | test == other_train | other_test


# ------------------------------------------------------------------------------------------ rendering
def test_render_sizes_and_background(font):
    native = render_emoji(font, "\U0001f355")
    assert native.size == GLYPH_SIZE and native.mode == "RGB"
    assert native.getpixel((0, 0)) == (255, 255, 255)
    square = render_emoji(font, "\U0001f355", background="black", image_size=64)
    assert square.size == (64, 64) and square.getpixel((0, 0)) == (0, 0, 0)
    assert render_emoji(font, "\U0001f355", background=(10, 20, 30), image_size=136).getpixel((0, 0)) == (
        10,
        20,
        30,
    )


# ---------------------------------------------------------------------------------------------- errors
def test_missing_font_names_the_debian_package(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"apt-get install {FONT_PACKAGE}"):
        make_emoji_corpus(tmp_path / "out", font_path=tmp_path / "NotoColorEmoji.ttf")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_raqm_layout_names_the_fribidi_package(monkeypatch):
    monkeypatch.setattr(emoji_module.features, "check", lambda feature: feature != "raqm")
    with pytest.raises(RuntimeError, match=f"apt-get install {FRIBIDI_PACKAGE}"):
        load_font()


def test_a_file_that_is_not_the_emoji_font_is_named(tmp_path):
    bad = tmp_path / "NotoColorEmoji.ttf"
    bad.write_bytes(b"not a font")
    with pytest.raises(ValueError, match=str(bad)):
        load_font(bad)


def test_missing_emoji_package_names_the_pypi_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "emoji", None)  # makes `import emoji` raise ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match="pip install 'emoji"):
        emoji_entries()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("eval_fraction", 1.0),
        ("eval_fraction", -0.1),
        ("image_size", 8),
        ("shard_size", 0),
        ("background", "nope"),
    ],
)
def test_invalid_options_are_named(tmp_path, option, value):
    with pytest.raises((ValueError, TypeError), match=option):
        make_emoji_corpus(tmp_path, **{option: value})
    assert not (tmp_path / "manifest.json").exists()
