"""rankclip/atomic.py: a file appears complete or not at all, and no temporary file outlives a write."""

from __future__ import annotations

import os

import pytest

from rankclip.atomic import atomic_path, temporary_path, write_atomic_text


def test_the_temporary_name_is_hidden_and_per_process_when_asked(tmp_path):
    target = tmp_path / "results.json"
    assert temporary_path(target) == tmp_path / ".results.json.tmp"
    assert temporary_path(target, per_process=True) == tmp_path / f".results.json.tmp-{os.getpid()}"


@pytest.mark.parametrize("per_process", [False, True])
@pytest.mark.parametrize("fsync", [False, True])
def test_a_completed_block_replaces_the_file(tmp_path, per_process, fsync):
    target = tmp_path / "sub" / "out.bin"  # the folder is made
    with atomic_path(target, per_process=per_process, fsync=fsync) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".out.bin.tmp")
        tmp.write_bytes(b"new")
        assert not target.exists()  # nothing at the target until the block completes
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_a_failed_block_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_path(target, per_process=True) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt  # a killed job
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_write_atomic_text_writes_utf8_and_returns_the_path(tmp_path):
    target = tmp_path / "names.txt"
    assert write_atomic_text(target, "café\n", per_process=True) == target
    assert target.read_bytes() == "café\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["names.txt"]
