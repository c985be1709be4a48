"""rankclip.download against a loopback HTTP server (tests/http_server.py)."""

from __future__ import annotations

import hashlib
import os

import pytest
from http_server import serve_directory

from rankclip.download import ChecksumError, DownloadError, download, part_path
from rankclip.hashing import sha256_file

BODY = os.urandom(300_000)  # several chunks at the chunk size used below
BODY_SHA = hashlib.sha256(BODY).hexdigest()
CHUNK = 64 * 1024


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    (root / "data.bin").write_bytes(BODY)
    return root


@pytest.fixture
def server(site):
    with serve_directory(site) as server:
        yield server


def fetch(server, dest, sha256=BODY_SHA, **kwargs):
    kwargs = {"chunk_size": CHUNK, "progress": False, "backoff": 0.0, "timeout": 10.0, **kwargs}
    return download(server.url("data.bin"), dest, sha256, **kwargs)


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(BODY)
    assert sha256_file(path, chunk_size=1000) == BODY_SHA


def test_good_file(server, tmp_path):
    dest = tmp_path / "out" / "data.bin"
    assert fetch(server, dest) == dest
    assert dest.read_bytes() == BODY
    assert not part_path(dest).exists()
    assert server.requests_for("data.bin")[0].range is None


def test_accepts_upper_case_hash_and_none(server, tmp_path):
    assert fetch(server, tmp_path / "a", BODY_SHA.upper()).read_bytes() == BODY
    assert fetch(server, tmp_path / "b", None).read_bytes() == BODY


def test_rejects_malformed_hash(server, tmp_path):
    with pytest.raises(ValueError, match="64 hex digits"):
        fetch(server, tmp_path / "a", "abc")
    assert server.requests == []


def test_checksum_failure_names_url_file_and_hashes(server, tmp_path):
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as failure:
        fetch(server, dest, wrong, retries=2)
    message = str(failure.value)
    assert server.url("data.bin") in message and str(dest) in message
    assert wrong in message and BODY_SHA in message
    assert len(server.requests_for("data.bin")) == 3  # one attempt plus two retries, each from byte 0
    assert all(r.range is None for r in server.requests)
    assert not dest.exists() and not part_path(dest).exists()


def test_resumes_partial_file_with_range_request(server, tmp_path):
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(BODY[:123_457])
    fetch(server, dest)
    assert dest.read_bytes() == BODY
    assert [r.range for r in server.requests_for("data.bin")] == ["bytes=123457-"]


def test_server_ignoring_range_restarts_from_zero(site, tmp_path):
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(BODY[:50_000])
    with serve_directory(site, ignore_range=True) as server:
        fetch(server, dest)
        assert [r.range for r in server.requests_for("data.bin")] == ["bytes=50000-"]
    assert dest.read_bytes() == BODY


def test_complete_part_file_is_finished_without_a_body(server, tmp_path):
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(BODY)  # the server answers 416: nothing left to send
    fetch(server, dest)
    assert dest.read_bytes() == BODY


def test_stale_part_longer_than_the_file_is_discarded(server, tmp_path):
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(BODY + b"extra")
    fetch(server, dest)
    assert dest.read_bytes() == BODY
    assert [r.range for r in server.requests_for("data.bin")] == [f"bytes={len(BODY) + 5}-", None]


def test_wrong_part_file_fails_the_hash_and_is_downloaded_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    part_path(dest).write_bytes(b"x" * 1000)  # resumed, then the hash fails, then a fresh download
    fetch(server, dest, retries=1)
    assert dest.read_bytes() == BODY
    assert [r.range for r in server.requests_for("data.bin")] == ["bytes=1000-", None]


def test_existing_good_dest_is_not_downloaded_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(BODY)
    before = dest.stat().st_mtime_ns
    fetch(server, dest)
    assert server.requests == []
    assert dest.stat().st_mtime_ns == before


def test_corrupt_existing_dest_is_fetched_again(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(BODY[:-1] + bytes([BODY[-1] ^ 0xFF]))
    fetch(server, dest)
    assert dest.read_bytes() == BODY
    assert len(server.requests_for("data.bin")) == 1


def test_connection_dropped_mid_body_is_resumed_on_retry(server, tmp_path):
    dest = tmp_path / "data.bin"
    server.cut_off("data.bin", after_bytes=100_000, times=1)
    fetch(server, dest, retries=1)
    assert dest.read_bytes() == BODY
    ranges = [r.range for r in server.requests_for("data.bin")]
    assert ranges[0] is None
    assert len(ranges) == 2 and ranges[1] is not None and int(ranges[1][6:-1]) > 0  # resumed, not restarted


def test_dropped_every_time_gives_up_and_keeps_the_part_for_later(server, tmp_path):
    dest = tmp_path / "data.bin"
    server.cut_off("data.bin", after_bytes=70_000, times=2)
    with pytest.raises(DownloadError, match="resumed next time") as failure:
        fetch(server, dest, retries=1)
    assert not isinstance(failure.value, ChecksumError)
    assert server.url("data.bin") in str(failure.value)
    assert not dest.exists()
    assert 0 < part_path(dest).stat().st_size < len(BODY)
    fetch(server, dest)  # a later call resumes the part
    assert dest.read_bytes() == BODY
    assert server.requests_for("data.bin")[-1].range is not None


def test_missing_file_is_a_permanent_error(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(server.url("nope.bin"), tmp_path / "nope.bin", None, progress=False, backoff=0.0)
    assert len(server.requests_for("nope.bin")) == 1  # no retries for a 404
    assert not (tmp_path / "nope.bin").exists()


def test_unreachable_server_retries_then_fails(tmp_path):
    with serve_directory(tmp_path) as server:
        url = server.url("data.bin")
    with pytest.raises(DownloadError, match="after 2 attempt"):
        download(url, tmp_path / "data.bin", None, retries=1, progress=False, backoff=0.0, timeout=2.0)
