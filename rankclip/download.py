"""Verified, resumable, atomic file downloads (``urllib.request``; no third-party HTTP client).

``download(url, dest, sha256)`` streams ``url`` into ``DEST.part`` beside ``dest`` and renames it onto
``dest`` with ``os.replace`` only after the whole body arrived and, when ``sha256`` is given, its hash
matched; ``dest`` is therefore never half-written. An interrupted transfer leaves the ``.part`` file, and
the next attempt (in this call or a later one) resumes it with an HTTP ``Range`` request; a server that
ignores ``Range`` (answers 200) is read again from byte 0. A hash mismatch deletes the ``.part`` and
downloads again; after ``retries`` more attempts a ``ChecksumError`` names the URL, the file and both
hashes. An existing ``dest`` whose hash matches is kept without any request; one whose hash does not
match (a corrupt or stale file) is deleted and fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from rankclip.hashing import file_digest, sha256_file

__all__ = ["ChecksumError", "DownloadError", "download", "part_path"]

log = logging.getLogger(__name__)

USER_AGENT = "rankclip-download/1 (+https://arxiv.org/abs/2404.09387)"
# 4xx answers other than these are permanent: retrying a 404 only wastes time.
_RETRYABLE_4XX = {408, 425, 429}
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(RuntimeError):
    """A download failed for good (permanent HTTP error, or every attempt failed)."""


class ChecksumError(DownloadError):
    """The downloaded bytes did not have the expected sha256."""


def part_path(dest: Path) -> Path:
    """Where ``dest`` is downloaded to before it is complete and verified: ``DEST.part``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".part")


def download(
    url: str,
    dest: Path,
    sha256: str | None,
    *,
    retries: int = 3,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    timeout: float = 60.0,
    backoff: float = 1.0,
) -> Path:
    """Download ``url`` to ``dest`` (see the module docstring) and return ``dest``.

    ``sha256`` is the expected hex digest, or None to accept any content (then an existing ``dest`` is
    trusted as it is). ``retries`` is how many further attempts follow a failed one (connection errors,
    5xx/408/429 answers, truncated bodies, hash mismatches); the wait before retry ``k`` is
    ``backoff * 2**(k-1)`` seconds. ``timeout`` is the socket timeout of each request.
    """
    dest = Path(dest)
    expected = _check_sha256_argument(sha256)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if dest.exists():
        if expected is None:
            log.info("%s exists and no sha256 was given: keeping it", dest)
            return dest
        actual = sha256_file(dest, chunk_size=chunk_size)
        if actual == expected:
            log.info("%s exists with the expected sha256: not downloading it again", dest)
            return dest
        log.warning("%s exists but its sha256 is %s, not %s: downloading it again", dest, actual, expected)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)

    failures: list[str] = []
    mismatched_hash = None  # the hash got by the last attempt, when that attempt failed on it
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            log.warning(
                "retrying %s in %.1f s (attempt %d of %d): %s",
                url,
                delay,
                attempt + 1,
                retries + 1,
                failures[-1],
            )
            time.sleep(delay)
        try:
            actual = _fetch_into(url, part, chunk_size=chunk_size, progress=progress, timeout=timeout)
        except urllib.error.HTTPError as error:
            if 400 <= error.code < 500 and error.code not in _RETRYABLE_4XX:
                message = f"downloading {url} to {dest}: HTTP {error.code} {error.reason}"
                raise DownloadError(message) from error
            failures.append(f"HTTP {error.code} {error.reason}")
            mismatched_hash = None
            continue
        except (OSError, http.client.HTTPException, _RetryableError) as error:  # URLError, timeouts, resets
            failures.append(f"{type(error).__name__}: {error}")
            mismatched_hash = None
            continue
        if expected is not None and actual != expected:
            part.unlink(missing_ok=True)
            failures.append(f"sha256 mismatch: expected {expected}, got {actual}")
            mismatched_hash = actual
            continue
        os.replace(part, dest)
        return dest

    if mismatched_hash is not None:
        raise ChecksumError(
            f"downloading {url} to {dest}: sha256 mismatch after {retries + 1} attempt(s): "
            f"expected {expected}, got {mismatched_hash}"
        )
    raise DownloadError(
        f"downloading {url} to {dest} failed after {retries + 1} attempt(s); last error: {failures[-1]}"
        + (f" (partial download kept in {part}; it is resumed next time)" if part.exists() else "")
    )


class _RetryableError(Exception):
    """An attempt failed in a way another attempt may not: a body cut short, a botched resume."""


def _check_sha256_argument(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    normalised = sha256.strip().lower()
    if not _SHA256.fullmatch(normalised):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return normalised


def _fetch_into(url: str, part: Path, *, chunk_size: int, progress: bool, timeout: float) -> str:
    """One attempt: bring ``part`` to the full content of ``url`` and return its sha256.

    Resumes an existing ``part`` with a Range request. Raises ``_RetryableError`` when the body ends
    early, keeping ``part`` for the next attempt to resume.
    """
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The part is at least as long as the file: it is complete, or longer than (so not) the file.
            error.close()
            total = _total_from_content_range(error.headers.get("Content-Range"))
            if total is not None and total == offset:
                return sha256_file(part, chunk_size=chunk_size)
            log.warning("%s: the server refused to resume %s at byte %d; starting again", url, part, offset)
            part.unlink()
            return _fetch_into(url, part, chunk_size=chunk_size, progress=progress, timeout=timeout)
        raise
    with response:
        status = response.status or 200  # file:// answers carry no status
        if offset and status == 206:
            start, total = _parse_content_range(response.headers.get("Content-Range"), url)
            if start != offset:
                part.unlink()
                raise _RetryableError(
                    f"asked to resume at byte {offset}, got bytes from {start}: starting again"
                )
            mode, digest = "ab", file_digest(part, chunk_size)
        else:
            if offset:
                log.info("%s ignored the Range request: downloading %s from the start", url, part.name)
                offset = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
            mode, digest = "wb", hashlib.sha256()
        received = offset
        with (
            open(part, mode) as stream,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.name.removesuffix(".part"),
                disable=not progress,
                leave=False,
            ) as bar,
        ):
            while True:
                try:
                    chunk = response.read(chunk_size)
                except http.client.IncompleteRead as error:  # body shorter than Content-Length
                    stream.write(error.partial)
                    raise _RetryableError(
                        f"connection closed after {received + len(error.partial)} bytes of {total}"
                    ) from error
                if not chunk:
                    break
                stream.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            stream.flush()
            os.fsync(stream.fileno())
    if total is not None and received != total:
        raise _RetryableError(f"received {received} bytes of {total}")
    return digest.hexdigest()


def _parse_content_range(value: str | None, url: str) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.fullmatch((value or "").strip())
    if match is None:
        raise _RetryableError(f"{url} answered 206 with an unreadable Content-Range {value!r}")
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), total


def _total_from_content_range(value: str | None) -> int | None:
    match = re.fullmatch(r"bytes \*/(\d+)", (value or "").strip())
    return int(match.group(1)) if match else None
