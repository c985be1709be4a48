"""DVC round trip, offline: shards added and pushed in one clone are pulled byte for byte into another.

This is the contract docs/data.md describes: raw downloads and shards are DVC-tracked with a default
remote, so a fresh clone gets them back with ``dvc pull`` instead of downloading them again. DVC runs
through its CLI (``python -m dvc``) with analytics, update checks and autostage off, and with its global,
system and site-cache directories inside the test's tmp dir, so the test touches nothing outside it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import webdataset as wds
from dvc_env import dvc, dvc_env, git

pytestmark = pytest.mark.slow  # ~10 s: a dozen DVC and git processes


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return dvc_env(tmp_path)


def write_shards(out_dir: Path, num_shards: int = 3, per_shard: int = 40) -> None:
    out_dir.mkdir(parents=True)
    for shard in range(num_shards):
        with wds.TarWriter(str(out_dir / f"shard-{shard:06d}.tar")) as sink:
            for index in range(per_shard):
                key = f"{shard * per_shard + index:08d}"
                sink.write({"__key__": key, "txt": f"caption {key}", "bin": os.urandom(256)})


def checksums(folder: Path) -> dict[str, str]:
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_dvc_push_then_pull_in_a_fresh_clone_restores_identical_shards(tmp_path, env):
    origin, clone, remote = tmp_path / "origin", tmp_path / "clone", tmp_path / "dvc-remote"
    origin.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=origin, env=env)
    dvc("init", "--quiet", cwd=origin, env=env)
    dvc("config", "core.analytics", "false", cwd=origin, env=env)
    dvc("config", "core.autostage", "false", cwd=origin, env=env)
    dvc("config", "core.check_update", "false", cwd=origin, env=env)
    dvc("remote", "add", "--default", "storage", str(remote), cwd=origin, env=env)

    shards = origin / "data" / "shards"
    write_shards(shards)
    original = checksums(shards)
    dvc("add", "data/shards", cwd=origin, env=env)
    assert (origin / "data" / "shards.dvc").is_file()
    assert "/shards" in (origin / "data" / ".gitignore").read_text().split()
    git(
        "add",
        ".dvc/config",
        ".dvc/.gitignore",
        ".dvcignore",
        "data/shards.dvc",
        "data/.gitignore",
        cwd=origin,
        env=env,
    )
    git("commit", "--quiet", "-m", "Track shards with DVC", cwd=origin, env=env)
    assert "data/shards/" not in git("ls-files", cwd=origin, env=env)  # git holds pointers, not data

    dvc("push", cwd=origin, env=env)
    assert any(path.is_file() for path in remote.rglob("*")), "dvc push wrote nothing to the remote"
    assert json.loads(dvc("status", "--cloud", "--json", cwd=origin, env=env)) == {}

    git("clone", "--quiet", str(origin), str(clone), cwd=tmp_path, env=env)
    assert not (clone / "data" / "shards").exists()
    assert not (clone / ".dvc" / "cache").exists()  # nothing to restore from but the remote
    dvc("pull", cwd=clone, env=env)

    assert checksums(clone / "data" / "shards") == original
    assert json.loads(dvc("status", "--json", cwd=clone, env=env)) == {}
    assert json.loads(dvc("status", "--cloud", "--json", cwd=clone, env=env)) == {}
    assert git("status", "--porcelain", cwd=clone, env=env) == ""  # pulled data is git-ignored
