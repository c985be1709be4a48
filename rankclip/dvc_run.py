"""Running the DVC command line from rankclip (``python -m dvc`` of this environment, else ``dvc``)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["DvcError", "check_dvc_repository", "dvc_command", "run_dvc"]


class DvcError(RuntimeError):
    """DVC is missing, not set up, or a DVC command failed; the message says which and where."""


def dvc_command() -> list[str]:
    """The DVC command line: this interpreter's ``-m dvc`` when DVC is installed here, else ``dvc``."""
    if importlib.util.find_spec("dvc") is not None:
        return [sys.executable, "-m", "dvc"]
    if shutil.which("dvc"):
        return ["dvc"]
    raise DvcError(
        'DVC is not installed: pip install "dvc>=3.50,<4" (plus the remote\'s extra, e.g. dvc[s3])'
    )


def check_dvc_repository(directory: Path) -> None:
    """DvcError unless ``directory`` is the root of a DVC repository."""
    if not (Path(directory) / ".dvc").is_dir():
        raise DvcError(
            f"{Path(directory).resolve()} is not a DVC repository (no .dvc/ folder): "
            "run `dvc init` in the repository root"
        )


def run_dvc(directory: Path, *args: str) -> str:
    """Run one DVC command in ``directory``; its standard output, or DvcError with DVC's own message."""
    command = [*dvc_command(), *args]
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-3000:]
        raise DvcError(f"`dvc {' '.join(args)}` failed in {directory}:\n{output}")
    return result.stdout
