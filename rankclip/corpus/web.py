"""Web image-text data (CC3M, CC12M, YFCC-style URL + caption lists) to verified webdataset shards.

``shards_from_url_list(url_list, out_dir)`` downloads the images with img2dataset and writes, in
``out_dir``::

    00000.tar 00001.tar ...     webdataset shards; keys: jpg (resized, re-encoded), txt (caption),
                                json (img2dataset's metadata: url, caption, key, status, sizes, sha256, exif)
    00000.parquet ...           one row per input row of the shard, with its status and error message
    00000_stats.json ...        img2dataset's per-shard counts (the mark of a finished shard)
    _rankclip/                  the stage's own state: the URL list as parquet and the settings used
    summary.json                written last, only after every shard was read back and decoded

A sample key is the shard number followed by the row's index within the shard (``ceil(log10(
number_sample_per_shard))`` digits), so keys follow the input order. Shards where
no image succeeded are empty tars; they are kept so that the shard names stay contiguous and
``{00000..NNNNN}.tar`` (``summary["shard_pattern"]``, or ``train_data_url(out_dir)`` as an absolute path)
names them all.

**Resuming.** img2dataset skips shards that have a ``_stats.json``; a run that died part-way is finished
by calling this function again with the same arguments. The settings that decide shard content are kept in
``_rankclip/settings.json``; resuming with others raises (pass ``overwrite=True`` to start afresh).
``summary.json`` is removed when a run starts (img2dataset reads every ``*.json`` name in ``out_dir`` as a
shard number and would crash on it), so its presence means "complete and verified": make it the output
that later stages depend on.

**Never a corrupt shard.** img2dataset writes tars in place and may leave a partial one behind; after it
returns, every expected shard must have its stats, and every shard is read back with webdataset and each
image fully decoded with PIL (size, caption and sample count checked against img2dataset's records). A shard
that fails is renamed ``NAME.tar.corrupt`` and its stats removed, so a second call downloads it again, and
``ShardError`` names it.

**Installing img2dataset.** Every img2dataset release (1.47.0 checked) pins ``webdataset<0.3``, which
conflicts with our ``webdataset>=1.0``; its writer works with 1.0 (it only uses ``TarWriter``). Install
``pip install --no-deps img2dataset==1.47.0`` and, separately, what it imports: ``opencv-python-headless``,
``albumentations<2``, ``pandas``, ``pyarrow``, ``fire``, ``exifread-nocycle``, ``fsspec`` and ``wandb``
(imported unconditionally, never used here). It imports ``imghdr``, which Python 3.13 removed: this stage
needs Python 3.11 or 3.12.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from rankclip.atomic import atomic_path, write_atomic_text
from rankclip.hashing import sha256_file

__all__ = [
    "INPUT_FORMATS",
    "RESIZE_MODES",
    "SUMMARY_NAME",
    "ShardError",
    "shards_from_url_list",
    "train_data_url",
    "verify_shard",
]

log = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
STATE_DIR = "_rankclip"
RESIZE_MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
INPUT_FORMATS = ("tsv", "tsv.gz", "csv", "csv.gz", "parquet")
SHARD_DIGITS = 5  # img2dataset's oom_shard_count: shards are 00000.tar, 00001.tar, ...
IMAGE_KEY = "jpg"
# Rewrites of error messages that carry per-sample or per-build details, so that failures group by reason.
_REASON_REWRITES = [
    (re.compile(r"^IncompleteRead\(.*\)$"), "IncompleteRead"),
    (re.compile(r"^unknown url type: .*"), "unknown url type"),
    (re.compile(r"^OpenCV\(.*!buf\.empty\(\).*"), "empty response body"),
    (re.compile(r"^OpenCV\([^)]*\) \S+: error: "), "OpenCV error: "),
]


class ShardError(RuntimeError):
    """A shard is missing, incomplete or holds a sample that does not decode."""


def shards_from_url_list(
    url_list: Path,
    out_dir: Path,
    *,
    image_size: int = 224,
    resize_mode: str = "center_crop",
    processes: int | None = None,
    threads: int = 64,
    retries: int = 2,
    timeout: int = 10,
    url_col: str = "url",
    caption_col: str = "caption",
    input_format: str = "tsv",
    column_names: Sequence[str] | None = None,
    number_sample_per_shard: int = 10_000,
    encode_quality: int = 95,
    min_image_size: int = 0,
    max_aspect_ratio: float | None = None,
    overwrite: bool = False,
) -> dict:
    """Download the images of ``url_list`` into verified webdataset shards in ``out_dir``; return the summary.

    ``url_list`` is a table with a URL and a caption column (``url_col``, ``caption_col``) in
    ``input_format`` (one of ``INPUT_FORMATS``). A TSV is read without quote handling (captions may contain
    ``"``). ``column_names`` names the columns of a file without a header row: CC3M's
    ``Train_GCC-training.tsv`` is ``column_names=("caption", "url")``.

    Images are resized by img2dataset's ``resize_mode`` (one of ``RESIZE_MODES``; ``center_crop`` and
    ``border`` give ``image_size`` squares, ``keep_ratio`` makes the short side ``image_size``) and
    re-encoded as JPEG at ``encode_quality``. Images with a side under ``min_image_size`` or an aspect ratio
    over ``max_aspect_ratio`` are counted as resize failures. ``processes`` worker processes (default: as many
    as the CPUs this process may use) each download one shard at a time with ``threads`` threads; each URL
    is tried ``1 + retries`` times with a ``timeout`` in seconds.

    Returns the dict written to ``out_dir/summary.json`` (see ``_summarise``), plus ``train_data``: the
    absolute brace pattern of the shards, ready for the trainer. Must be called from the main thread
    (img2dataset installs a SIGINT handler).
    """
    url_list, out_dir = Path(url_list), Path(out_dir)
    _check_arguments(
        url_list, image_size, resize_mode, input_format, number_sample_per_shard, processes, threads, retries
    )
    if caption_col == url_col:
        raise ValueError(f"url_col and caption_col are both {url_col!r}; they must name different columns")
    _check_columns(url_list, input_format, column_names, url_col, caption_col)
    img2dataset = _import_img2dataset()
    processes = processes or _usable_cpus()
    settings = {
        "url_list_sha256": sha256_file(url_list),
        "input_format": input_format,
        "column_names": list(column_names) if column_names is not None else None,
        "url_col": url_col,
        "caption_col": caption_col,
        "image_size": image_size,
        "resize_mode": resize_mode,
        "encode_format": IMAGE_KEY,
        "encode_quality": encode_quality,
        "min_image_size": min_image_size,
        "max_aspect_ratio": max_aspect_ratio,
        "number_sample_per_shard": number_sample_per_shard,
    }
    state = out_dir / STATE_DIR
    if overwrite:
        _remove_outputs(out_dir)
    else:
        _check_settings_match(state / "settings.json", settings, out_dir)

    state.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY_NAME).unlink(missing_ok=True)  # from here on, out_dir is not a finished stage
    table = state / "url_list.parquet"
    rows, skipped_rows = _to_parquet(url_list, table, input_format, column_names, url_col, caption_col)
    if rows == 0:
        raise ValueError(f"{url_list} holds no rows")
    write_atomic_text(state / "settings.json", json.dumps(settings, indent=2) + "\n")

    _run_img2dataset(
        img2dataset,
        url_list=str(table),
        output_folder=str(out_dir.resolve()),
        processes_count=processes,
        thread_count=threads,
        image_size=image_size,
        resize_mode=resize_mode,
        encode_format=IMAGE_KEY,
        encode_quality=encode_quality,
        output_format="webdataset",
        input_format="parquet",
        url_col=url_col,
        caption_col=caption_col,
        number_sample_per_shard=number_sample_per_shard,
        oom_shard_count=SHARD_DIGITS,
        timeout=timeout,
        retries=retries,
        min_image_size=min_image_size,
        max_aspect_ratio=math.inf if max_aspect_ratio is None else max_aspect_ratio,
        incremental_mode="incremental",  # never "overwrite": img2dataset 1.47 then deletes its own _tmp
        enable_wandb=False,
    )

    names = [f"{index:0{SHARD_DIGITS}d}" for index in range(math.ceil(rows / number_sample_per_shard))]
    unfinished = [name for name in names if not (out_dir / f"{name}_stats.json").exists()]
    if unfinished:
        raise ShardError(
            f"img2dataset did not finish {len(unfinished)} of {len(names)} shards in {out_dir} "
            f"({', '.join(unfinished[:10])}{', ...' if len(unfinished) > 10 else ''}: no _stats.json); "
            "its log above says why. Call again with the same arguments to retry just those shards."
        )
    stats = {name: json.loads((out_dir / f"{name}_stats.json").read_text()) for name in names}
    _verify_all(out_dir, names, stats, image_size, resize_mode, processes)

    summary = _summarise(out_dir, names, stats, rows, skipped_rows, url_list, settings)
    write_atomic_text(out_dir / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    log.info(
        "%s: %d of %d images in %d shards (%d failed to download, %d failed to resize)",
        out_dir, summary["successes"], summary["total"], len(names),
        summary["failed_to_download"], summary["failed_to_resize"],
    )  # fmt: skip
    return {**summary, "train_data": train_data_url(out_dir)}


def train_data_url(out_dir: Path) -> str:
    """The absolute brace pattern of the shards in ``out_dir`` (from its ``summary.json``)."""
    out_dir = Path(out_dir)
    summary = json.loads((out_dir / SUMMARY_NAME).read_text())
    return str(out_dir.resolve() / summary["shard_pattern"])


def verify_shard(path: Path, *, image_size: int, resize_mode: str, caption: bool = True) -> int:
    """Read a shard back and decode every image; return its sample count, or raise ``ShardError``.

    Each sample must hold ``jpg`` (a JPEG that PIL decodes in full, at the size ``resize_mode`` gives for
    ``image_size``, and the size its json records), ``json`` and, if ``caption``, ``txt`` equal to the
    caption in its json. Keys must be unique.
    """
    from PIL import Image, ImageFile
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    path = Path(path)
    count, keys, key = 0, set(), None
    truncated_ok, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with open(path, "rb") as stream:
            files = ({**member, "__url__": str(path)} for member in tar_file_iterator(stream))
            for sample in group_by_keys(files):
                key = sample["__key__"]
                if key in keys:
                    raise ValueError("the key occurs twice")
                keys.add(key)
                missing = {IMAGE_KEY, "json", *(("txt",) if caption else ())} - sample.keys()
                if missing:
                    raise ValueError(f"no {', '.join(sorted(missing))} member")
                meta = json.loads(sample["json"])
                with Image.open(io.BytesIO(sample[IMAGE_KEY])) as image:
                    if image.format != "JPEG":
                        raise ValueError(f"the image is {image.format}, not JPEG")
                    image.load()
                    size = image.size
                if size != (meta.get("width"), meta.get("height")):
                    raise ValueError(
                        f"the image is {size}, its json says {(meta.get('width'), meta.get('height'))}"
                    )
                if not _size_ok(size, image_size, resize_mode):
                    raise ValueError(
                        f"the image is {size}, not what resize_mode={resize_mode!r} gives for {image_size}"
                    )
                if caption and sample["txt"].decode("utf-8") != str(meta.get("caption") or ""):
                    raise ValueError("the txt caption differs from the caption in its json")
                count += 1
                key = None  # an error from here on comes from reading the tar
    except Exception as error:
        where = f"sample {key!r}" if key is not None else f"reading the tar after {count} good samples"
        raise ShardError(f"{path}: {where}: {type(error).__name__}: {error}") from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_ok
    return count


def _size_ok(size: tuple[int, int], image_size: int, resize_mode: str) -> bool:
    if resize_mode in ("center_crop", "border"):
        return size == (image_size, image_size)
    if resize_mode == "keep_ratio":
        return min(size) == image_size
    if resize_mode == "keep_ratio_largest":
        return max(size) == image_size
    return True


def _check_arguments(url_list, image_size, resize_mode, input_format, per_shard, processes, threads, retries):
    if not url_list.is_file():
        raise FileNotFoundError(f"url_list {url_list} is not a file")
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {resize_mode!r}")
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {INPUT_FORMATS}, got {input_format!r}")
    for name, value, least in [
        ("image_size", image_size, 1),
        ("number_sample_per_shard", per_shard, 1),
        ("threads", threads, 1),
        ("retries", retries, 0),
    ]:
        if value < least:
            raise ValueError(f"{name} must be >= {least}, got {value}")
    if processes is not None and processes < 1:
        raise ValueError(f"processes must be >= 1 (or None for all usable CPUs), got {processes}")


def _remove_outputs(out_dir: Path) -> None:
    """Delete what this stage writes in ``out_dir`` (and nothing else)."""
    if not out_dir.exists():
        return
    pattern = re.compile(rf"\d{{{SHARD_DIGITS},}}(\.tar|\.tar\.corrupt|\.parquet|_stats\.json)")
    for path in out_dir.iterdir():
        if pattern.fullmatch(path.name) or path.name == SUMMARY_NAME:
            path.unlink()
        elif path.name in (STATE_DIR, "_tmp") and path.is_dir():
            shutil.rmtree(path)


def _check_settings_match(path: Path, settings: dict, out_dir: Path) -> None:
    if not path.exists():
        if any(out_dir.glob("*_stats.json")):
            raise ValueError(
                f"{out_dir} holds shards that this stage did not record settings for; "
                "pass overwrite=True to replace them, or choose another out_dir"
            )
        return
    previous = json.loads(path.read_text())
    changed = {
        key: (previous.get(key), value) for key, value in settings.items() if previous.get(key) != value
    }
    if changed:
        details = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changed.items())
        raise ValueError(
            f"{out_dir} holds shards made with other settings ({details}); "
            "pass overwrite=True to replace them, or choose another out_dir"
        )


def _check_columns(url_list, input_format, column_names, url_col, caption_col) -> None:
    """Raise if ``url_list`` lacks the URL or caption column, naming the columns it has."""
    if input_format == "parquet":
        import pyarrow.parquet as pq

        available = pq.read_schema(url_list).names
    elif column_names is not None:
        available = list(column_names)
    else:
        opener = gzip.open if input_format.endswith(".gz") else open
        with opener(url_list, "rt", encoding="utf-8", newline="") as stream:
            header = stream.readline().rstrip("\r\n")
        available = header.split("\t" if input_format.startswith("tsv") else ",")
    missing = [column for column in (url_col, caption_col) if column not in available]
    if missing:
        hint = "" if input_format == "parquet" or column_names else " (pass column_names if it has no header)"
        raise ValueError(
            f"{url_list} has no column {', '.join(map(repr, missing))}: its columns are {available}{hint}"
        )


def _to_parquet(url_list, table, input_format, column_names, url_col, caption_col) -> tuple[int, int]:
    """Write the URL and caption columns of ``url_list`` to ``table``; return (rows, rows skipped)."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    if input_format == "parquet":
        data = pq.read_table(url_list, columns=[url_col, caption_col])
        skipped = 0
    else:
        bad_rows: list[int] = []

        def skip(row):
            bad_rows.append(row.number)
            return "skip"

        tsv = input_format.startswith("tsv")
        try:
            data = pa_csv.read_csv(
                url_list,
                read_options=pa_csv.ReadOptions(column_names=list(column_names) if column_names else None),
                parse_options=pa_csv.ParseOptions(
                    delimiter="\t" if tsv else ",", quote_char=False if tsv else '"', invalid_row_handler=skip
                ),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=[url_col, caption_col],
                    column_types={url_col: pa.string(), caption_col: pa.string()},
                ),
            )
        except pa.ArrowInvalid as error:
            raise ValueError(f"{url_list} is not a valid {input_format} file: {error}") from error
        skipped = len(bad_rows)
        if skipped:
            log.warning("%s: skipped %d malformed rows (the first at row %s)", url_list, skipped, bad_rows[0])
    data = data.select([url_col, caption_col])
    with atomic_path(table) as tmp:
        pq.write_table(data, tmp)
    return data.num_rows, skipped


def _import_img2dataset():
    """img2dataset, or an error saying how to install it; refuses to run outside the main thread."""
    # albumentations (imported by img2dataset, also in its spawned workers) checks PyPI for updates on import
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    try:
        import img2dataset
    except ImportError as error:
        raise ImportError(
            "shards_from_url_list needs img2dataset, installed without its dependencies (it pins "
            "webdataset<0.3): pip install --no-deps img2dataset==1.47.0, then its dependencies "
            "(see the rankclip.corpus.web docstring)"
        ) from error
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError(
            "shards_from_url_list must run in the main thread (img2dataset sets a SIGINT handler)"
        )
    return img2dataset


def _run_img2dataset(img2dataset, **arguments) -> None:
    """Call ``img2dataset.download``, shielding the caller from its process-wide side effects."""
    previous_handler = signal.getsignal(signal.SIGINT)
    try:
        img2dataset.download(**arguments)
    except SystemExit as exit_:
        # img2dataset's SIGINT handler calls sys.exit(0): an interrupted download must not look successful.
        raise KeyboardInterrupt("img2dataset was interrupted") from exit_
    finally:
        signal.signal(signal.SIGINT, previous_handler)


def _verify_all(out_dir, names, stats, image_size, resize_mode, processes) -> None:
    paths = [out_dir / f"{name}.tar" for name in names]
    missing = [str(path) for path in paths if not path.exists()]
    if missing:
        raise ShardError(f"shards with stats but no tar: {', '.join(missing)}")
    options = {"image_size": image_size, "resize_mode": resize_mode}
    if processes > 1 and len(paths) > 1:
        with ProcessPoolExecutor(min(processes, len(paths)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(_verify_shard_safely, path, **options) for path in paths]
            results = [future.result() for future in futures]
    else:
        results = [_verify_shard_safely(path, **options) for path in paths]
    failed = []
    for name, path, (count, error) in zip(names, paths, results, strict=True):
        if error is None and count != stats[name]["successes"]:
            error = f"{path}: {count} samples, but img2dataset recorded {stats[name]['successes']} successes"
        if error is not None:
            failed.append(error)
            path.rename(path.with_name(path.name + ".corrupt"))
            (out_dir / f"{name}_stats.json").unlink()
    if failed:
        raise ShardError(
            f"{len(failed)} shard(s) failed verification and were renamed to *.tar.corrupt (call again to "
            "download them anew): " + " | ".join(failed)
        )


def _verify_shard_safely(path: Path, **options) -> tuple[int, str | None]:
    try:
        return verify_shard(path, **options), None
    except ShardError as error:
        return 0, str(error)


def _summarise(out_dir, names, stats, rows, skipped_rows, url_list, settings) -> dict:
    """The summary: counts overall and per shard, failures by reason, the shards and their brace pattern."""
    import pyarrow.parquet as pq

    reasons = {"failed_to_download": Counter(), "failed_to_resize": Counter()}
    shards = []
    for name in names:
        table = pq.read_table(out_dir / f"{name}.parquet", columns=["status", "error_message"]).to_pydict()
        for status, message in zip(table["status"], table["error_message"], strict=True):
            if status in reasons:
                reasons[status][_reason(message)] += 1
        shard_stats = stats[name]
        shards.append({
            "name": f"{name}.tar",
            "samples": shard_stats["successes"],
            "count": shard_stats["count"],
            "failed_to_download": shard_stats["failed_to_download"],
            "failed_to_resize": shard_stats["failed_to_resize"],
        })  # fmt: skip
    total = sum(shard["count"] for shard in shards)
    if total != rows:
        raise ShardError(f"{out_dir}: img2dataset's stats count {total} rows, but {url_list} has {rows}")
    return {
        "url_list": str(url_list),
        "total": total,
        "successes": sum(shard["samples"] for shard in shards),
        "failed_to_download": sum(shard["failed_to_download"] for shard in shards),
        "failed_to_resize": sum(shard["failed_to_resize"] for shard in shards),
        "failures": {status: dict(counter.most_common()) for status, counter in reasons.items()},
        "skipped_rows": skipped_rows,
        "shard_pattern": f"{{{names[0]}..{names[-1]}}}.tar",
        "shards": shards,
        "settings": settings,
        "img2dataset_version": _distribution_version("img2dataset"),
    }


def _reason(message: str | None) -> str:
    message = (message or "unknown error").strip()
    for pattern, replacement in _REASON_REWRITES:
        message = pattern.sub(replacement, message)
    return message


def _usable_cpus() -> int:
    """The CPUs this process may run on (a SLURM job's allocation, not the whole node)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _distribution_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None
