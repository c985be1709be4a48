"""Real image-caption pairs that ship with the system: Noto Color Emoji glyphs captioned with CLDR names.

The images are the glyphs of Debian's ``fonts-noto-color-emoji`` (``NotoColorEmoji.ttf``, SIL OFL), drawn
with Pillow at the font's one bitmap size (109 px, which gives a 136 x 128 glyph); the captions are the
emoji's CLDR short names from PyPI's ``emoji`` package (``:woman_pilot:`` -> "woman pilot"). The corpus has
the many-to-many structure ranking consistency is about: "woman pilot", "man pilot", "pilot: dark skin
tone", flags, foods, animals. Nothing is downloaded.

An emoji is used when the installed font draws it as exactly one glyph. A candidate is skipped (and
counted, by reason, in the manifest) when the font

- ``split``: lays the sequence out as several glyphs (a ZWJ or skin-tone sequence the font has no
  ligature for: it draws the components side by side);
- ``blank``: draws nothing (a code point the font does not cover gets its empty ``.notdef`` glyph);
- ``fallback``: draws the same image as one of the sequence's code points alone (Noto draws the
  snowboarder's skin-tone variants exactly like the plain snowboarder), or as the font's unknown-flag
  glyph, a white flag with a question mark (a region or subdivision flag newer than the font).

The ``emoji`` package usually knows newer emoji than the installed font, so which emoji survive depends
on both versions; the manifest records them.

``make_emoji_corpus`` writes, under ``out_dir``::

    manifest.json                     what was written (see ``make_emoji_corpus``); written last
    train/shard-000000.tar ...        keys: png, txt (CLDR name), syn.txt (second caption), json
    eval/retrieval/                   retrieval set (``evalset_layout``): txt = 2 captions, one per line;
                                      test: png, txt, json

The retrieval set holds out whole *concepts*: an emoji and all its skin-tone variants ("pilot", "pilot:
dark skin tone", ...) are either all in training or all held out, chosen by a seeded split, so the
evaluation never scores an image whose near-duplicate was trained on.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageColor, ImageDraw, ImageFont, features

from rankclip.atomic import temporary_path, write_atomic_text
from rankclip.evalset_layout import SHARD_NAME, write_layout, write_shard_count
from rankclip.hashing import sha256_file
from rankclip.shards import check_int, replace_shards

__all__ = [
    "CAPTION_TEMPLATES",
    "FONT_PACKAGE",
    "FONT_PATH",
    "FRIBIDI_PACKAGE",
    "FONT_SIZE",
    "FORMAT_VERSION",
    "GLYPH_SIZE",
    "PYPI_PACKAGE",
    "EmojiEntry",
    "GlyphChecker",
    "emoji_entries",
    "load_emoji_data",
    "load_font",
    "make_emoji_corpus",
    "render_emoji",
]

FORMAT_VERSION = 1
FONT_PACKAGE = "fonts-noto-color-emoji"
FRIBIDI_PACKAGE = "libfribidi0"  # Pillow's wheels load it at run time for their raqm text layout
FONT_PATH = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")  # where Debian installs it
PYPI_PACKAGE = "emoji"
FONT_SIZE = 109  # the font's only bitmap strike (CBDT): every glyph is 136 x 128 pixels
GLYPH_SIZE = (136, 128)

# Templates of the second caption (``syn.txt``) when the emoji has no usable alias. The name comes last,
# so CLDR names with a colon ("pilot: dark skin tone") still read well.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "an emoji of {name}",
    "an icon of {name}",
    "a cartoon image of {name}",
    "a small drawing of {name}",
)
RETRIEVAL_CAPTIONS_PER_IMAGE = 2  # the CLDR name and the second caption

SKIN_TONES: dict[str, str] = {
    "\U0001f3fb": "light skin tone",
    "\U0001f3fc": "medium-light skin tone",
    "\U0001f3fd": "medium skin tone",
    "\U0001f3fe": "medium-dark skin tone",
    "\U0001f3ff": "dark skin tone",
}
_FULLY_QUALIFIED = 2  # emoji.STATUS["fully_qualified"]
_ZWJ = "\u200d"
_VARIATION_SELECTORS = frozenset("\ufe0e\ufe0f")
_UNKNOWN_FLAG = "\U0001f1ff\U0001f1ff"  # "ZZ" is no region: the font draws its unknown-flag glyph
_BLACK_FLAG = "\U0001f3f4"


def _is_tag(char: str) -> bool:
    return 0xE0020 <= ord(char) <= 0xE007F


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


# ------------------------------------------------------------------------------------------- sources
def load_font(font_path: Path | None = None) -> ImageFont.FreeTypeFont:
    """Noto Color Emoji at its bitmap size; ``font_path`` defaults to Debian's installed ``FONT_PATH``.

    Raises ``FileNotFoundError`` naming the Debian package when the file is missing, ``ValueError`` naming
    the file when it is not a colour bitmap font with 136 x 128 glyphs, and ``RuntimeError`` naming
    ``libfribidi0`` when Pillow's raqm layout engine is unavailable (without it ZWJ and flag sequences
    cannot form one glyph).
    """
    path = Path(font_path) if font_path is not None else FONT_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"emoji font {path} not found: install Debian's {FONT_PACKAGE} "
            f"(apt-get install {FONT_PACKAGE}) or pass the path of NotoColorEmoji.ttf"
        )
    if not features.check("raqm"):
        raise RuntimeError(
            "Pillow's raqm layout engine is unavailable (PIL.features.check('raqm') is False); the emoji "
            "corpus needs it to shape ZWJ, skin-tone and flag sequences into one glyph. Pillow's PyPI "
            f"wheels enable it only when the FriBiDi library is installed: apt-get install {FRIBIDI_PACKAGE}"
        )
    try:
        # From bytes: given a path it cannot load, Pillow would look the file name up in the system's
        # font folders and could silently load another file.
        font = ImageFont.truetype(
            io.BytesIO(path.read_bytes()), FONT_SIZE, layout_engine=ImageFont.Layout.RAQM
        )
        bbox = font.getbbox("\U0001f600")  # grinning face
    except OSError as error:
        raise ValueError(f"{path} is not a font Pillow can load at size {FONT_SIZE}: {error}") from error
    if (bbox[2] - bbox[0], bbox[3] - bbox[1]) != GLYPH_SIZE:
        raise ValueError(
            f"{path} draws U+1F600 as {bbox[2] - bbox[0]}x{bbox[3] - bbox[1]} pixels at size {FONT_SIZE}; "
            f"expected the {GLYPH_SIZE[0]}x{GLYPH_SIZE[1]} bitmaps of Noto Color Emoji ({FONT_PACKAGE})"
        )
    return font


def load_emoji_data():
    """The ``emoji`` package, or ``ModuleNotFoundError`` saying how to install it."""
    try:
        import emoji
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"the emoji corpus needs the CLDR names of PyPI's {PYPI_PACKAGE!r} package: "
            f"pip install '{PYPI_PACKAGE}>=2.16,<3'",
            name=PYPI_PACKAGE,
        ) from error
    return emoji


# -------------------------------------------------------------------------------------------- names
@dataclass(frozen=True)
class EmojiEntry:
    """One fully-qualified emoji of the ``emoji`` package, with its captions' raw material."""

    sequence: str
    name: str  # CLDR-style short name: "woman pilot", "pilot: dark skin tone", "flag: Japan"
    base_name: str  # the name without skin tones: the concept, shared by all tone variants
    skin_tones: tuple[str, ...]
    alias: str | None  # a usable alternative name ("sweet potato" for "roasted sweet potato"), if any
    emoji_version: float

    @property
    def codepoints(self) -> str:
        return " ".join(f"{ord(c):04X}" for c in self.sequence)

    def to_json(self) -> dict:
        return {
            "sequence": self.sequence,
            "codepoints": self.codepoints,
            "name": self.name,
            "base_name": self.base_name,
            "skin_tones": list(self.skin_tones),
            "alias": self.alias,
            "emoji_version": self.emoji_version,
        }


def _short_name(code: str) -> str:
    """``:woman_pilot:`` -> ``woman pilot``."""
    return code.strip(":").replace("_", " ")


def _normalised(name: str) -> str:
    return " ".join(name.casefold().replace("-", " ").split())


def _names(sequence: str, code: str) -> tuple[str, str, tuple[str, ...]]:
    """The CLDR-style name, the name without skin tones, and the skin tones, of one emoji.

    The ``emoji`` package writes CLDR names as codes with underscores, which loses CLDR's colon. It is
    put back where the code points say where it goes: "flag: Japan", "keycap: 5", "pilot: dark skin
    tone", "handshake: light skin tone, dark skin tone".
    """
    raw = _short_name(code)
    tones = tuple(dict.fromkeys(SKIN_TONES[c] for c in sequence if c in SKIN_TONES))
    phrase = " ".join(tones)  # "kiss woman man light skin tone dark skin tone", "man dark skin tone beard"
    at = f" {raw} ".find(f" {phrase} ") if tones else -1
    head, rest = (raw[:at].strip(), raw[at + len(phrase) :].strip()) if at >= 0 else (raw, "")
    if all(_is_regional_indicator(c) for c in sequence) or (
        sequence.startswith(_BLACK_FLAG) and any(_is_tag(c) for c in sequence)
    ):
        head = f"flag: {head}"
    elif head.startswith("keycap "):
        head = f"keycap: {head.removeprefix('keycap ')}"
    base = f"{head} {rest}" if rest else head
    # Without the tones spelled out in the package's name (never seen), the name is used as it is.
    name = f"{head}: {', '.join((*tones, rest) if rest else tones)}" if at >= 0 else base
    return name, base, tones


def _usable_alias(aliases: list[str], *names: str) -> str | None:
    """The first alias that is a real alternative to ``names``, not a short code (":us:", ":clock330:")."""
    taken = {_normalised(name.removeprefix("flag: ")) for name in names}
    for code in aliases:
        alias = _short_name(code)
        if len(alias) > 3 and not any(c.isdigit() for c in alias) and _normalised(alias) not in taken:
            return alias
    return None


def emoji_entries(include_skin_tones: bool = True) -> list[EmojiEntry]:
    """Every fully-qualified emoji the ``emoji`` package knows (components excluded), by code points.

    Without skin tones, only the emoji with no skin-tone modifier are kept (the default yellow ones).
    """
    data = load_emoji_data().EMOJI_DATA
    entries = []
    for sequence in sorted(data, key=lambda s: [ord(c) for c in s]):
        info = data[sequence]
        if info.get("status") != _FULLY_QUALIFIED:
            continue
        name, base_name, tones = _names(sequence, info["en"])
        if tones and not include_skin_tones:
            continue
        alias = None
        if tones:  # aliases belong to the base emoji: "kneeling man" -> "kneeling man: dark skin tone"
            base_sequence = "".join(c for c in sequence if c not in SKIN_TONES)
            base_info = data.get(base_sequence) or data.get(base_sequence + "\ufe0f") or {}
            base_alias = _usable_alias(base_info.get("alias", []), base_name)
            if base_alias:
                alias = f"{base_alias}: {', '.join(tones)}"
        else:
            alias = _usable_alias(info.get("alias", []), name, _short_name(info["en"]))
        entries.append(
            EmojiEntry(
                sequence=sequence,
                name=name,
                base_name=base_name,
                skin_tones=tones,
                alias=alias,
                emoji_version=float(info.get("E", 0)),
            )
        )
    return entries


# ---------------------------------------------------------------------------------------- rendering
def _background_rgb(background) -> tuple[int, int, int]:
    try:
        rgb = ImageColor.getrgb(background) if isinstance(background, str) else tuple(background)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"background must be a colour name, '#rrggbb' or an RGB triple, got {background!r}"
        ) from error
    if len(rgb) not in (3, 4) or not all(isinstance(v, int) and 0 <= v <= 255 for v in rgb):
        raise ValueError(f"background must be an RGB triple of ints in 0..255, got {background!r}")
    return rgb[:3]


def _draw(font: ImageFont.FreeTypeFont, sequence: str, rgb: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", GLYPH_SIZE, rgb)
    ImageDraw.Draw(image).text((0, 0), sequence, font=font, embedded_color=True)
    return image


def _square(glyph: Image.Image, rgb: tuple[int, int, int], image_size: int) -> Image.Image:
    side = max(GLYPH_SIZE)
    image = Image.new("RGB", (side, side), rgb)
    image.paste(glyph, ((side - GLYPH_SIZE[0]) // 2, (side - GLYPH_SIZE[1]) // 2))
    if image_size != side:
        image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return image


def render_emoji(
    font: ImageFont.FreeTypeFont,
    sequence: str,
    background: str | tuple[int, int, int] = "white",
    image_size: int | None = None,
) -> Image.Image:
    """Draw ``sequence`` as an RGB image: the native 136 x 128 glyph, or, with ``image_size``, the glyph
    centred on a 136 x 136 square of ``background`` and resized to ``image_size`` x ``image_size``."""
    rgb = _background_rgb(background)
    glyph = _draw(font, sequence, rgb)
    return glyph if image_size is None else _square(glyph, rgb, image_size)


class GlyphChecker:
    """Tells whether the font draws a sequence as one glyph of its own (see the module docstring).

    Drawings are compared on white at native size; those of single code points are cached.
    """

    WHITE = (255, 255, 255)

    def __init__(self, font: ImageFont.FreeTypeFont):
        self.font = font
        self.advance = font.getlength("\U0001f600")
        self._drawings: dict[str, bytes] = {}
        self._blank = Image.new("RGB", GLYPH_SIZE, self.WHITE).tobytes()

    def _drawing(self, text: str) -> bytes:
        if text not in self._drawings:
            self._drawings[text] = _draw(self.font, text, self.WHITE).tobytes()
        return self._drawings[text]

    def problem(self, sequence: str) -> str | None:
        """``None`` if the font draws ``sequence`` as one glyph of its own, else why not: ``"split"``,
        ``"blank"`` or ``"fallback"``."""
        return self.check(sequence)[0]

    def check(self, sequence: str) -> tuple[str | None, Image.Image | None]:
        """The problem (as ``problem``) and the native drawing on white (``None`` when split)."""
        if self.font.getlength(sequence) > 1.5 * self.advance:
            return "split", None
        image = _draw(self.font, sequence, self.WHITE)
        drawing = image.tobytes()
        if drawing == self._blank:
            return "blank", image
        if drawing == self._drawing(_UNKNOWN_FLAG):  # a flag (region or subdivision) the font lacks
            return "fallback", image
        if len([c for c in sequence if c not in _VARIATION_SELECTORS]) > 1:
            parts = [c for c in dict.fromkeys(sequence) if c not in _VARIATION_SELECTORS and c != _ZWJ]
            if any(drawing == self._drawing(c) for c in parts if not _is_tag(c)):
                return "fallback", image
        return None, image


# ------------------------------------------------------------------------------------------- corpus
def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


def _json_bytes(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _second_caption(entry: EmojiEntry, seed: int) -> str:
    if entry.alias:
        return entry.alias
    rng = np.random.default_rng([seed, *map(ord, entry.sequence)])
    return CAPTION_TEMPLATES[int(rng.integers(len(CAPTION_TEMPLATES)))].format(name=entry.name)


def _write_split(samples, directory: Path, shard_size: int, name_pattern: str, root: Path) -> list[str]:
    """Write shards and delete those (and temporaries of killed runs) an earlier, larger run left."""
    paths = replace_shards(samples, directory, shard_size, name_pattern)
    return [p.relative_to(root).as_posix() for p in paths]


def _holdout_concepts(entries: list[EmojiEntry], seed: int, eval_fraction: float) -> set[str]:
    concepts = sorted({e.base_name for e in entries})
    count = int(round(eval_fraction * len(concepts)))
    if eval_fraction > 0 and count == 0:
        count = 1
    order = np.random.default_rng([seed, 0]).permutation(len(concepts))
    return {concepts[int(i)] for i in order[:count]}


def make_emoji_corpus(
    out_dir: Path,
    *,
    seed: int = 0,
    image_size: int | None = 64,
    include_skin_tones: bool = True,
    shard_size: int = 512,
    eval_fraction: float = 0.1,
    background: str | tuple[int, int, int] = "white",
    font_path: Path | None = None,
) -> dict:
    """Render the emoji corpus into ``out_dir`` and return its manifest (also written to manifest.json).

    ``image_size`` ``None`` keeps the native 136 x 128 glyph; an int gives square images (see
    ``render_emoji``). ``eval_fraction`` of the concepts (an emoji with its skin-tone variants), drawn
    with ``seed``, go to the retrieval set; the rest, in a seeded order, to ``train/shard-NNNNNN.tar``.
    Each training sample has ``txt`` (the CLDR name), ``syn.txt`` (a usable alias of the emoji, else the
    name in a seeded template: "an emoji of pizza") and ``json`` (``EmojiEntry.to_json``). The ``emoji``
    package has no emoji groups, so the json has none. The same seed and the same font, ``emoji`` and
    Pillow versions give byte-identical files. ``manifest.json`` is removed first and written last.
    """
    check_int("seed", seed, 0)
    if image_size is not None:
        check_int("image_size", image_size, 16, 1024)
    check_int("shard_size", shard_size, 1)
    if (
        isinstance(eval_fraction, bool)
        or not isinstance(eval_fraction, int | float)
        or not 0 <= eval_fraction < 1
    ):
        raise ValueError(f"eval_fraction must be a number in [0, 1), got {eval_fraction!r}")
    background_rgb = _background_rgb(background)
    font = load_font(font_path)
    emoji = load_emoji_data()
    candidates = emoji_entries(include_skin_tones=include_skin_tones)

    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    manifest_path.unlink(missing_ok=True)
    temporary_path(manifest_path).unlink(missing_ok=True)

    # One pass draws every candidate once: to check it, and (encoded) for the shards.
    checker = GlyphChecker(font)
    kept: list[EmojiEntry] = []
    pngs: dict[str, bytes] = {}
    skipped: list[dict] = []
    for entry in candidates:
        reason, glyph = checker.check(entry.sequence)
        if reason is not None:
            skipped.append({"sequence": entry.sequence, "name": entry.name, "reason": reason})
            continue
        kept.append(entry)
        if background_rgb != GlyphChecker.WHITE:
            glyph = _draw(font, entry.sequence, background_rgb)
        pngs[entry.sequence] = _png_bytes(
            glyph if image_size is None else _square(glyph, background_rgb, image_size)
        )

    held_out = _holdout_concepts(kept, seed, float(eval_fraction))
    train = [e for e in kept if e.base_name not in held_out]
    evaluation = [e for e in kept if e.base_name in held_out]
    train = [train[int(i)] for i in np.random.default_rng([seed, 1]).permutation(len(train))]

    def train_samples():
        for index, entry in enumerate(train):
            yield {
                "__key__": f"{index:08d}",
                "png": pngs[entry.sequence],
                "txt": entry.name.encode("utf-8"),
                "syn.txt": _second_caption(entry, seed).encode("utf-8"),
                "json": _json_bytes(entry.to_json()),
            }

    def retrieval_samples():
        for index, entry in enumerate(evaluation):
            captions = [entry.name, _second_caption(entry, seed)]
            yield {
                "__key__": f"{index:07d}",
                "png": pngs[entry.sequence],
                "txt": "\n".join(captions).encode("utf-8"),
                "json": _json_bytes(entry.to_json()),
            }

    train_shards = _write_split(train_samples(), root / "train", shard_size, "shard-{index:06d}.tar", root)
    directory = root / "eval" / "retrieval"
    test_shards = _write_split(retrieval_samples(), directory / "test", shard_size, SHARD_NAME, root)
    write_shard_count(directory / "test", len(test_shards))
    write_layout(directory, "retrieval")

    font_file = Path(font_path) if font_path is not None else FONT_PATH
    manifest = {
        "format": "rankclip-emoji",
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "image_size": None if image_size is None else int(image_size),
        "native_size": list(GLYPH_SIZE),
        "background": list(background_rgb),
        "include_skin_tones": bool(include_skin_tones),
        "shard_size": int(shard_size),
        "eval_fraction": float(eval_fraction),
        "sources": {
            "font": {
                "package": FONT_PACKAGE,
                "path": str(font_file),
                "sha256": sha256_file(font_file),
                "license": "SIL OFL 1.1",
            },
            "names": {"package": PYPI_PACKAGE, "version": emoji.__version__, "license": "BSD-3-Clause"},
            "pillow": PIL.__version__,
            "freetype": features.version("freetype2"),
            "raqm": features.version("raqm"),
        },
        "counts": {
            "candidates": len(candidates),
            "kept": len(kept),
            "skipped": dict(sorted(Counter(s["reason"] for s in skipped).items())),
            "concepts": len({e.base_name for e in kept}),
            "held_out_concepts": len(held_out),
        },
        "skipped": skipped,
        "train": {
            "num_samples": len(train),
            "keys": ["png", "txt", "syn.txt", "json"],
            "shards": train_shards,
        },
        "eval": {
            "retrieval": {
                "task": "retrieval",
                "root": directory.relative_to(root).as_posix(),
                "captions_per_image": RETRIEVAL_CAPTIONS_PER_IMAGE,
                "description": "held-out emoji concepts (with their skin-tone variants): CLDR name and "
                "second caption",
                "splits": {"test": {"num_samples": len(evaluation), "shards": test_shards}},
            }
        },
    }
    write_atomic_text(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest
