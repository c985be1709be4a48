"""DVC and git run offline in tests: analytics, update checks and user config off, all state in tmp."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def dvc_env(tmp_path: Path) -> dict[str, str]:
    """This environment with DVC's global, system and site-cache folders under ``tmp_path``, git's user
    config off and a fixed author, and the running interpreter's bin/ first on PATH."""
    dvc_home = tmp_path / "dvc-home"
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
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


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> str:
    """Run ``command``; its stdout, or an assertion error with both streams."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed in {cwd}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def dvc(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd, env)


def git(*args: str, cwd: Path, env: dict[str, str]) -> str:
    return run(["git", *args], cwd, env)


def init_repository(path: Path, env: dict[str, str], remote: Path | None = None) -> None:
    """A git + DVC repository at ``path`` (analytics, autostage and update checks off), with ``remote`` as
    its default DVC remote when given."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "--quiet", "--initial-branch=main", cwd=path, env=env)
    if not (path / ".dvc").is_dir():
        dvc("init", "--quiet", cwd=path, env=env)
    with open(path / ".dvc" / "config", "w", encoding="utf-8") as config:  # dvc config core.X false
        config.write("[core]\n    analytics = false\n    autostage = false\n    check_update = false\n")
    if remote is not None:
        dvc("remote", "add", "--default", "storage", str(remote), cwd=path, env=env)
