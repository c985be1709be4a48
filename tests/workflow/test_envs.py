"""The per-rule conda envs install what CI installs: the torch pins of scripts/setup.sh and this package."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))


def setup_torch_pins() -> list[str]:
    match = re.search(r'TORCH_SPEC:-"([^"]+)"', (REPO / "scripts" / "setup.sh").read_text())
    assert match, "scripts/setup.sh no longer sets TORCH_SPEC"
    return match[1].split()


def pip_lines(env: dict) -> list[str]:
    pips = [item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item]
    return pips[0] if pips else []


def test_every_rule_env_exists_and_is_used():
    used = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        used |= set(re.findall(r'conda:\s*\n\s*"\.\./\.\./envs/([\w-]+\.yaml)"', smk.read_text()))
    assert used, "no rule declares a conda env"
    assert used <= {path.name for path in ENV_FILES}, f"rules name missing env files: {used}"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda path: path.name)
def test_env_agrees_with_pyproject_and_setup(path: Path):
    env = yaml.safe_load(path.read_text())
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pips = pip_lines(env)
    # rankclip itself, so its pinned dependencies come from pyproject.toml and nowhere else
    assert "-e .." in pips, f"{path.name}: must pip-install this checkout (-e ..): PYTHONPATH is cleared"
    for pin in setup_torch_pins():
        assert pin in pips, f"{path.name}: torch pins differ from scripts/setup.sh ({pin} missing)"
    extra = [line for line in pips if line != "-e .." and not line.startswith(("torch==", "torchvision=="))]
    assert not extra, f"{path.name}: packages outside pyproject.toml: {extra} (add them there instead)"
    python = next(dep for dep in env["dependencies"] if isinstance(dep, str) and dep.startswith("python="))
    minimum = pyproject["requires-python"].removeprefix(">=")
    version = python.removeprefix("python=")
    assert tuple(map(int, version.split("."))) >= tuple(map(int, minimum.split("."))), (
        f"{path.name}: python {version} is below requires-python {minimum}"
    )
