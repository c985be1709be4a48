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
import subprocess
import sys
from pathlib import Path

import pytest
import webdataset as wds

pytestmark = pytest.mark.slow  # ~10 s: a dozen DVC and git processes


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    dvc_home = tmp_path / "dvc-home"
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "DVC_STUDIO_OFFLINE": "1",
        "DVC_GLOBAL_CONFIG_DIR": str(dvc_home / "global"),
        "DVC_SYSTEM_CONFIG_DIR": str(dvc_home / "system"),
        "DVC_SITE_CACHE_DIR": str(dvc_home / "site-cache"),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "rankclip tests",
        "GIT_AUTHOR_EMAIL": "tests@rankclip.invalid",
        "GIT_COMMITTER_NAME": "rankclip tests",
        "GIT_COMMITTER_EMAIL": "tests@rankclip.invalid",
    }


def run(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(command)} failed in {cwd}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def dvc(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd, env)


def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return run(["git", *args], cwd, env)


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
