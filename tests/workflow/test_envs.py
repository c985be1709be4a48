"""The per-rule conda envs: each installs, from envs/lock.txt, exactly what its rules import.

tests/workflow/test_envs_build.py builds each env's pip half as conda would and runs its rules' commands.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
ENV_FILES = sorted((REPO / "envs").glob("*.yaml"))
LOCK = REPO / "envs" / "lock.txt"
PROJECT = "rankclip-repro"
# rule -> env: the web and caption stages need their own packages; tables share the report's env
RULE_ENVS = {"web_shards": "web", "captions": "captions", "train": "train"}
RULE_ENVS |= {f"evaluate_{name}": "eval" for name in ("every_run", "main_runs", "backbone_runs")}
RULE_ENVS |= {rule: "report" for rule in ("tables", "notebook", "report")}
# what the rules of each env import beyond the base (the point of the split, named once more here)
ENV_IMPORTS = {
    "data": {"torch", "torchvision", "open-clip-torch", "webdataset", "emoji", "scipy"},
    "web": {"opencv-python-headless", "albumentations", "pyarrow", "webdataset"},
    "captions": {"torch", "transformers", "webdataset"},
    "train": {"torch", "open-clip-torch", "webdataset", "tensorboard"},
    "eval": {"torch", "open-clip-torch", "scikit-learn", "umap-learn", "pandas"},
    "report": {"torch", "papermill", "jupytext", "nbconvert", "ipykernel", "seaborn", "pandas", "tabulate"},
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_lines() -> dict[str, str]:
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    return {normalise(line.split("==", 1)[0]): line for line in lines}


def pip_lines(path: Path) -> list[str]:
    env = yaml.safe_load(path.read_text())
    pips = [item["pip"] for item in env["dependencies"] if isinstance(item, dict) and "pip" in item]
    return pips[0] if pips else []


def env_packages(path: Path) -> set[str]:
    return {normalise(line.split("==", 1)[0]) for line in pip_lines(path)}


def rule_envs() -> dict[str, str]:
    found = {}
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            env = re.search(r'conda:\s*\n\s*"\.\./\.\./envs/([\w-]+)\.yaml"', block)
            found[block.split(":", 1)[0]] = env[1] if env else None
    return found


def closure(extra: str) -> set[str]:
    """Every distribution ``rankclip-repro[extra]`` needs, from pyproject.toml and installed metadata."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    todo = [Requirement(spec) for spec in project["dependencies"]]
    todo += [Requirement(spec) for spec in project["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        requirement = todo.pop()
        name = normalise(requirement.name)
        if name == PROJECT:
            todo += [Requirement(s) for x in requirement.extras for s in project["optional-dependencies"][x]]
            continue
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.requires(name) or []:
            dependency = Requirement(spec)
            wanted = requirement.extras or {""}
            if dependency.marker is None or any(
                dependency.marker.evaluate(default_environment() | {"extra": x}) for x in wanted
            ):
                todo.append(dependency)
    return seen


def test_every_rule_has_its_env_and_every_env_a_rule():
    envs = rule_envs()
    assert all(envs.values()), f"rules without a conda env: {[r for r, e in envs.items() if not e]}"
    assert set(envs.values()) == {path.stem for path in ENV_FILES}
    for rule, env in envs.items():
        assert env == RULE_ENVS.get(rule, "data"), f"rule {rule} runs in envs/{env}.yaml"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda path: path.name)
def test_env_installs_the_lock_and_finds_the_checkout_without_relative_paths(path: Path):
    lock = lock_lines()
    lines = pip_lines(path)
    assert lines, f"{path.name}: empty pip section"
    for line in lines:
        # no -e .., no paths: conda runs pip from Snakemake's copy of this file in .snakemake/conda/
        assert not line.startswith("-") and "/" not in line, f"{path.name}: {line!r} is not a locked pin"
        name = normalise(line.split("==", 1)[0])
        assert lock.get(name) == line, f"{path.name}: {name} differs from envs/lock.txt"
    script = path.with_suffix(".post-deploy.sh").read_text()
    assert 'pip install --quiet --no-deps -e "$repo"' in script
    assert "repo=${RANKCLIP_REPO:-$PWD}" in script
    snakefile = (REPO / "workflow" / "Snakefile").read_text()
    assert "os.environ.update(RANKCLIP_REPO=str(Path(workflow.basedir).parent))" in snakefile
    dependencies = yaml.safe_load(path.read_text())["dependencies"]
    python = next(dep for dep in dependencies if str(dep).startswith("python="))
    assert python == "python=3.11", f"{path.name}: envs/lock.txt is for CPython 3.11, not {python}"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda path: path.name)
def test_env_holds_exactly_its_extra(path: Path):
    installed = {normalise(dist.metadata["Name"]) for dist in metadata.distributions()}
    if not set(lock_lines()) <= installed:
        pytest.skip("this environment was not installed from envs/lock.txt (scripts/setup.sh)")
    packages = env_packages(path)
    assert packages == closure(path.stem), f"{path.name}: re-run scripts/lock.py"
    assert ENV_IMPORTS[path.stem] <= packages


def test_img2dataset_goes_into_the_web_env_only_without_its_dependencies():
    line = lock_lines()["img2dataset"]
    scripts = {path.stem: path.with_suffix(".post-deploy.sh").read_text() for path in ENV_FILES}
    assert f"echo '{line}'" in scripts["web"] and "--no-deps --require-hashes" in scripts["web"]
    assert [env for env, script in scripts.items() if "img2dataset" in script] == ["web"]
    assert not any("img2dataset" in env_packages(path) for path in ENV_FILES)


def test_no_two_envs_are_the_same():
    contents = [frozenset(env_packages(path)) for path in ENV_FILES]
    assert len(set(contents)) == len(contents), "merge envs with the same packages into one"


def test_setup_installs_the_lock():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "LOCK=envs/lock.txt" in setup
    assert 'pip install --quiet --no-deps --require-hashes -r "$LOCK"' in setup
    lock = lock_lines()
    assert lock["torch"].startswith("torch==2.14.1 ")
    assert lock["torchvision"].startswith("torchvision==0.29.1 ")
    assert all("--hash=sha256:" in line for line in lock.values())


def test_setup_stops_at_once_on_a_python_the_lock_does_not_fit(tmp_path: Path):
    """Debian 12's python3 is 3.11.2; the lock needs 3.11.5+: setup says so before making a venv."""
    shutil.copytree(REPO / "scripts", tmp_path / "scripts")
    python = tmp_path / "python3.11.2"
    python.write_text('#!/bin/sh\n[ "$1" = -V ] && echo "Python 3.11.2" && exit 0\nexit 1\n')
    python.chmod(0o755)
    result = subprocess.run(
        ["bash", str(tmp_path / "scripts" / "setup.sh")],
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(python)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"needs CPython 3.11.5 or a later 3.11; {python} is Python 3.11.2" in result.stderr
    assert not (tmp_path / ".venv").exists()
