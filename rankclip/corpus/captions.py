"""ALIP's synthetic captions: copies of training shards with a second caption per sample.

ALIP (PAPER.md) trains on a raw caption ``t`` and a synthetic caption ``c`` of every image; the authors
generated ``c`` with the OFA captioning model and did not release them. ``caption_shards`` writes a copy
of each input shard into ``out_dir`` (same file name) holding every member of every sample byte for byte,
plus the member ``KEY.<key>`` (``syn.txt``: ``TrainConfig.synthetic_caption_key``, what the loader reads
for ALIP). The caption comes from

- ``source="model"``: an image-captioning model loaded with ``transformers`` (``AutoProcessor`` +
  ``AutoModelForImageTextToText``; a hub name or a local folder), batched, on CUDA when present (fp16
  there by default), greedy or beam search, deterministic. Default ``Salesforce/blip-image-captioning-base``
  (the paper used OFA-base, which ``transformers`` does not ship);
- ``source="file"``: a UTF-8 TSV of ``key<TAB>caption`` lines (an optional ``key<TAB>caption`` header),
  e.g. captions made elsewhere; a sample whose key is missing is an error naming the shard and key.

Captions are single lines (runs of white space collapsed). An existing ``<key>`` member is replaced.
Inputs are only read. Each output shard is written under a temporary name and renamed when complete;
``captions-state.json`` records the settings and the finished shards after each one, so a rerun with the
same settings skips them (other settings: everything is redone). ``captions.json`` (written last) sums
up the run: settings, per-shard counts, empty captions.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from rankclip.atomic import temporary_path, write_atomic_text
from rankclip.shards import atomic_tar_writer, check_int

__all__ = ["DEFAULT_MODEL", "caption_shards", "read_caption_file", "read_shard_samples"]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "Salesforce/blip-image-captioning-base"
DEFAULT_KEY = "syn.txt"
SUMMARY = "captions.json"
STATE = "captions-state.json"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")
_SPACE = re.compile(r"\s+")


def _one_line(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


# --------------------------------------------------------------------------------------------- reading
def read_shard_samples(path: Path) -> Iterator[dict]:
    """The samples of a webdataset shard as ``{"__key__": key, ext: bytes, ...}``, in file order.

    Members are grouped like webdataset groups them (key = the name up to the first dot of its base
    name; consecutive members with the same key form one sample). A truncated or unreadable tar raises
    ``ValueError`` naming the shard.
    """
    sample: dict | None = None
    try:
        with tarfile.open(path, "r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                match = _KEY_EXT.match(member.name)
                if match is None:
                    raise ValueError(
                        f"{path}: member {member.name!r} has no extension (not a webdataset shard)"
                    )
                key, ext = match.group(1), match.group(2)
                if sample is None or sample["__key__"] != key:
                    if sample is not None:
                        yield sample
                    sample = {"__key__": key}
                if ext in sample:
                    raise ValueError(f"{path}: sample {key!r} has two {ext!r} members")
                sample[ext] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(f"{path}: cannot read the shard ({error})") from None
    if sample is not None:
        yield sample


def read_caption_file(path: Path) -> dict[str, str]:
    """key -> caption from a TSV file (see the module docstring); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    captions: dict[str, str] = {}
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, 1):
            line = line.rstrip("\n").rstrip("\r")
            if not line.strip() or (number == 1 and line.lower().startswith("key\t")):
                continue
            key, tab, caption = line.partition("\t")
            if not tab or not key.strip():
                raise ValueError(f"{path}, line {number}: expected 'key<TAB>caption', got {line[:80]!r}")
            if key in captions:
                raise ValueError(f"{path}, line {number}: key {key!r} occurs twice")
            captions[key.strip()] = _one_line(caption)
    if not captions:
        raise ValueError(f"{path}: no captions in the file")
    return captions


# ------------------------------------------------------------------------------------------ captioners
Captioner = Callable[[Sequence[dict], str], list[str]]  # (samples, shard name) -> captions


def file_captioner(captions: dict[str, str]) -> Captioner:
    def caption(samples: Sequence[dict], shard: str) -> list[str]:
        missing = [s["__key__"] for s in samples if s["__key__"] not in captions]
        if missing:
            raise ValueError(
                f"{shard}: no caption for key {missing[0]!r} in the caption file ({len(missing)} key(s) of "
                "this batch missing)"
            )
        return [captions[s["__key__"]] for s in samples]

    return caption


def model_captioner(
    model_name: str,
    *,
    device: str = "auto",
    precision: str = "auto",
    max_new_tokens: int = 30,
    num_beams: int = 1,
    prompt: str | None = None,
) -> Captioner:
    """Captions from a ``transformers`` image-captioning model (hub name or local folder)."""
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rankclip.device import resolve_device

    target = resolve_device(device)
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "auto":
        precision = "fp16" if target.type == "cuda" else "fp32"
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    try:
        processor = AutoProcessor.from_pretrained(model_name)
        model = AutoModelForImageTextToText.from_pretrained(model_name)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load the captioning model {model_name!r}: {error}") from None
    model.to(target, dtype=dtype).eval()
    log.info("captioning with %s on %s (%s)", model_name, target, precision)

    def decode(sample: dict, shard: str):
        ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        if ext is None:
            raise ValueError(
                f"{shard}: sample {sample['__key__']!r} has no image ({'/'.join(IMAGE_EXTENSIONS)})"
            )
        try:
            with Image.open(io.BytesIO(sample[ext])) as image:
                return image.convert("RGB")
        except Exception as error:  # PIL raises several types for corrupt images
            raise ValueError(
                f"{shard}: sample {sample['__key__']!r}: cannot decode the image: {error}"
            ) from None

    @torch.inference_mode()
    def caption(samples: Sequence[dict], shard: str) -> list[str]:
        images = [decode(s, shard) for s in samples]
        text = [prompt] * len(images) if prompt else None
        inputs = processor(images=images, text=text, return_tensors="pt").to(target)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        return [_one_line(t) for t in processor.batch_decode(output, skip_special_tokens=True)]

    return caption


# -------------------------------------------------------------------------------------------- writing
def _shard_paths(shards) -> list[Path]:
    from rankclip.corpus.loader import expand_shards

    paths = [Path(p) for p in (expand_shards(shards) if isinstance(shards, str) else shards)]
    if not paths:
        raise ValueError("no input shards")
    names = [p.name for p in paths]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"input shards share file names ({', '.join(duplicates)}): outputs would collide")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"input shard(s) missing: {', '.join(missing[:5])}")
    return paths


def _batches(samples: Iterator[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _caption_one_shard(
    source: Path, dest: Path, captioner: Captioner, key: str, batch_size: int, bar
) -> dict:
    counts = {"num_samples": 0, "replaced": 0, "empty": 0}
    with atomic_tar_writer(dest) as writer:
        for batch in _batches(read_shard_samples(source), batch_size):
            captions = captioner(batch, str(source))
            for sample, text in zip(batch, captions, strict=True):
                counts["replaced"] += key in sample
                counts["empty"] += not text
                writer.write({**sample, key: text.encode("utf-8")})
            counts["num_samples"] += len(batch)
            bar.update(len(batch))
    if counts["empty"]:
        log.warning("%s: %d empty caption(s)", dest, counts["empty"])
    return counts


def caption_shards(
    shards,
    out_dir: Path,
    *,
    source: str = "model",
    model: str = DEFAULT_MODEL,
    captions_file: Path | None = None,
    key: str = DEFAULT_KEY,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    max_new_tokens: int = 30,
    num_beams: int = 1,
    prompt: str | None = None,
    progress: bool = True,
) -> dict:
    """Write captioned copies of ``shards`` (a brace/``::`` URL or a list of paths) into ``out_dir``.

    Returns the summary also written to ``out_dir/captions.json``. See the module docstring.
    """
    if source not in ("model", "file"):
        raise ValueError(f"source must be 'model' or 'file', got {source!r}")
    if source == "file" and captions_file is None:
        raise ValueError("source 'file' needs captions_file (a key<TAB>caption TSV)")
    if not key or "/" in key or key.startswith("."):
        raise ValueError(f"key must be a member extension such as 'syn.txt', got {key!r}")
    check_int("batch_size", batch_size, 1)
    check_int("max_new_tokens", max_new_tokens, 1)
    check_int("num_beams", num_beams, 1)
    paths = _shard_paths(shards)
    out = Path(out_dir)
    if any(p.parent.resolve() == out.resolve() for p in paths):
        raise ValueError(f"--out {out} holds the input shards: write the captioned copies elsewhere")
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).unlink(missing_ok=True)

    settings = {"source": source, "key": key, "inputs": [str(p.resolve()) for p in paths]}
    if source == "model":
        settings |= {
            "model": model,
            "max_new_tokens": max_new_tokens,
            "num_beams": num_beams,
            "prompt": prompt,
        }
    else:
        settings |= {"captions_file": str(Path(captions_file).resolve())}
    state_path = out / STATE
    state = {"settings": settings, "done": {}}
    if state_path.is_file():
        previous = json.loads(state_path.read_text(encoding="utf-8"))
        if previous.get("settings") == settings:
            state["done"] = {n: c for n, c in previous.get("done", {}).items() if (out / n).is_file()}
        else:
            log.info("%s: other settings than the last run: captioning every shard again", out)
    todo = [p for p in paths if p.name not in state["done"]]
    if todo:
        captioner = (
            file_captioner(read_caption_file(captions_file))
            if source == "file"
            else model_captioner(
                model,
                device=device,
                precision=precision,
                max_new_tokens=max_new_tokens,
                num_beams=num_beams,
                prompt=prompt,
            )
        )
        with tqdm(unit="sample", desc="captions", disable=not progress) as bar:
            for path in todo:
                temporary_path(out / path.name).unlink(missing_ok=True)
                state["done"][path.name] = _caption_one_shard(
                    path, out / path.name, captioner, key, batch_size, bar
                )
                write_atomic_text(state_path, json.dumps(state, indent=1) + "\n")
    shards_summary = [{"name": p.name, **state["done"][p.name]} for p in paths]
    summary = {
        "format": "rankclip-captions",
        "format_version": 1,
        **settings,
        "batch_size": batch_size,
        "shards": shards_summary,
        "num_samples": sum(s["num_samples"] for s in shards_summary),
        "empty_captions": sum(s["empty"] for s in shards_summary),
        "reused_shards": len(paths) - len(todo),
    }
    write_atomic_text(out / SUMMARY, json.dumps(summary, indent=1) + "\n")
    return summary
