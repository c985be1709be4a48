"""DVC-tracking of the downloaded sources of record (rule ``track_downloads``; ``rankclip data track``).

Every downloaded file or folder is ``dvc add``ed in one DVC call (DVC locks the repository, so the workflow
runs one tracking job after the downloads), and its pointer ``PATH.dvc`` records where it came from: the
output's ``desc`` says so in words and ``meta.source_url`` holds the URL. ``dvc status`` then tells
whether the data on disk is what the pointer says, ``dvc push`` / ``dvc pull`` move it. DVC keeps ``desc``
and ``meta`` when the data is added again after a new download.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from rankclip.atomic import write_atomic_text
from rankclip.dvc_run import DvcError, check_dvc_repository, run_dvc

__all__ = ["pointer_path", "track_downloads"]


def pointer_path(path: Path) -> Path:
    """The DVC pointer file of ``path`` (a file or folder): ``path`` + ``.dvc``, beside it."""
    path = Path(path)
    return path.with_name(path.name + ".dvc")


def _record_source(pointer: Path, url: str) -> None:
    """Write ``url`` into the pointer's only output (``desc``, ``meta.source_url``), atomically."""
    try:
        content = yaml.safe_load(pointer.read_text(encoding="utf-8"))
        (out,) = content["outs"]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as error:
        raise DvcError(f"{pointer}: not a DVC pointer with one output: {error}") from None
    out["desc"] = f"downloaded from {url}"
    out["meta"] = {**(out.get("meta") or {}), "source_url": url}
    write_atomic_text(pointer, yaml.safe_dump(content, sort_keys=False))


def track_downloads(sources: dict[str, str], directory: Path = Path(".")) -> list[Path]:
    """``dvc add`` every path of ``sources`` (path relative to ``directory`` -> its source URL) in one DVC
    call, then record each URL in its pointer; returns the pointer files."""
    directory = Path(directory)
    if not sources:
        raise DvcError("nothing to track: no downloaded path given")
    missing = [path for path in sources if not (directory / path).exists()]
    if missing:
        raise DvcError(f"cannot track downloads that do not exist: {', '.join(missing)} (in {directory})")
    empty = [path for path, url in sources.items() if not url]
    if empty:
        raise DvcError(f"no source URL given for {', '.join(empty)}")
    check_dvc_repository(directory)
    run_dvc(directory, "add", "--quiet", *sources)
    pointers = []
    for path, url in sources.items():
        pointer = directory / pointer_path(Path(path))
        _record_source(pointer, url)
        pointers.append(pointer)
    return pointers
