"""Content hashes of checkpoints and evaluation data, and the code version stamped into results.

A file's sha256 is what ``sha256sum`` prints. Hashing a ViT-B/32 checkpoint or the ImageNet validation
shards takes seconds, so hashes can be memoised in a small JSON file keyed by (absolute path, size,
mtime_ns): a file rewritten in place gets a new mtime and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import cache
from pathlib import Path

import rankclip
from rankclip.atomic import write_atomic_text

__all__ = ["code_version", "file_digest", "sha256_file", "sha256_json"]

_CHUNK = 1 << 20


def _memo_key(path: Path) -> tuple[str, str]:
    stat = path.stat()
    return str(path.resolve()), f"{stat.st_size}:{stat.st_mtime_ns}"


def _read_memo(memo: Path) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_memo(memo: Path, data: dict) -> None:
    write_atomic_text(memo, json.dumps(data, indent=0, sort_keys=True), per_process=True)


def file_digest(path: Path, chunk_size: int = _CHUNK) -> hashlib._Hash:
    """The sha256 hash object of ``path``'s bytes (a download resuming a partial file goes on from it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            digest.update(chunk)
    return digest


def sha256_file(path: Path, memo: Path | None = None, chunk_size: int = _CHUNK) -> str:
    """The sha256 hex digest of ``path``'s bytes; ``memo`` (a JSON file) remembers earlier results."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot hash {path}: no such file")
    if memo is not None:
        name, stamp = _memo_key(path)
        entry = _read_memo(memo).get(name)
        if isinstance(entry, dict) and entry.get("stamp") == stamp and len(entry.get("sha256", "")) == 64:
            return entry["sha256"]
    value = file_digest(path, chunk_size).hexdigest()
    if memo is not None:
        data = _read_memo(memo)  # re-read: another process may have added entries meanwhile
        data[name] = {"stamp": stamp, "sha256": value}
        _write_memo(memo, data)
    return value


def sha256_json(value) -> str:
    """sha256 of a JSON-serialisable value in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _git(repo: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@cache
def code_version() -> str:
    """``rankclip.__version__``, plus ``+tree.<git tree hash>`` (and ``.dirty``) from a git checkout.

    The tree hash names the committed content of the package's repository (the same for two commits with
    the same files); ``.dirty`` means tracked files differ from it. Outside a git checkout (an installed
    wheel) it is the version alone.
    """
    version = rankclip.__version__
    repo = Path(rankclip.__file__).resolve().parent.parent
    top = _git(repo, "rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != repo:
        return version
    tree = _git(repo, "rev-parse", "HEAD^{tree}")
    if not tree:
        return version
    dirty = _git(repo, "status", "--porcelain", "--untracked-files=no")
    return f"{version}+tree.{tree[:12]}" + (".dirty" if dirty else "")
