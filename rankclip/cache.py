"""``rankclip cache push|pull``: a workflow config's stage outputs of record, versioned and moved with DVC.

The outputs of record are what a new machine needs to rebuild the tables, notebooks and report without
training or evaluating again (docs/data.md, "Cached stages"): the finished training runs (``model.pt`` and
``metrics.jsonl``; ``.dvcignore`` leaves out the intermediate checkpoints), the results JSONs, the
embedding cache, the subset manifests, and the retrieval set that Fig. 7 draws its images from. Each is one
folder with one DVC pointer beside it (``results/demo/eval.dvc``); ``.gitignore`` lets git see those
pointers although ``results/`` and ``resources/`` are ignored.

``pull`` gives every restored file one modification time: ``dvc pull`` writes them in no particular order,
and Snakemake would otherwise rerun a job whose restored input happened to be written after its output.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from rankclip.dvc_run import DvcError, check_dvc_repository, run_dvc
from rankclip.dvc_track import pointer_path

__all__ = ["CacheError", "Record", "load_workflow_config", "outputs_of_record", "pull", "push"]

DEFAULT_CONFIG = Path("config") / "config.yaml"


class CacheError(DvcError):
    """A cache command cannot go on; the message names the file, folder or setting at fault."""


@dataclass(frozen=True)
class Record:
    """One output folder of record, relative to the working directory, and whether the report needs it."""

    path: Path
    required: bool
    what: str

    @property
    def pointer(self) -> Path:
        return pointer_path(self.path)


def _merge(base: dict, update: dict) -> dict:
    """``update`` merged into ``base`` key by key, nested dicts too (as Snakemake merges --configfile)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_workflow_config(directory: Path, configfiles: Sequence[Path] = ()) -> dict:
    """The workflow config as Snakemake sees it: ``config/config.yaml`` of ``directory``, then each of
    ``configfiles`` (relative to ``directory``) merged over it."""
    config: dict = {}
    for path in [DEFAULT_CONFIG, *configfiles]:
        file = Path(directory) / path
        if not file.is_file():
            raise CacheError(f"config file {file} does not exist")
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as error:
            raise CacheError(f"config file {file} is not valid YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise CacheError(f"config file {file}: expected a mapping at the top level")
        config = _merge(config, loaded)
    return config


def outputs_of_record(config: dict) -> list[Record]:
    """The folders a new machine pulls to rebuild the report of ``config`` (paths as the workflow's
    common.smk makes them: results/<name>/..., resources/<name>/...)."""
    try:
        name = config["name"]
        retrieval = config["report"]["retrieval"]
        retrieval_dir = config["eval"]["datasets"][retrieval]
    except (KeyError, TypeError) as error:
        raise CacheError(
            f"workflow config lacks {error} (needed: name, report.retrieval, eval.datasets)"
        ) from None
    results, data = Path("results") / name, Path("resources") / name
    return [
        Record(results / "runs", True, "training runs (model.pt, metrics.jsonl)"),
        Record(results / "eval", True, "results JSONs"),
        Record(results / "embeddings", False, "embedding cache"),
        Record(data / "subsets", False, "subset manifests"),
        Record(data / retrieval_dir, True, f"retrieval set {retrieval!r} (Fig. 7's images)"),
    ]


def _check_repository(directory: Path, remote: str | None) -> str:
    """The remote to use; CacheError when ``directory`` is no DVC repository or has no such remote."""
    check_dvc_repository(directory)
    remotes = [line.split()[0] for line in run_dvc(directory, "remote", "list").splitlines() if line.strip()]
    if remote is None:
        try:
            remote = run_dvc(directory, "remote", "default").strip() or None
        except DvcError:  # DVC 3: "No default remote set", exit 251
            remote = None
        if remote is None:
            raise CacheError(
                f"no default DVC remote in {Path(directory) / '.dvc' / 'config'}: add one with "
                "`dvc remote add -d storage URL` (a folder, s3://..., ssh://...) and commit .dvc/config, "
                "or pass --remote NAME"
            )
    if remote not in remotes:
        known = ", ".join(remotes) or "none"
        raise CacheError(f"DVC remote {remote!r} is not configured (configured: {known})")
    return remote


def _holds_files(folder: Path) -> bool:
    return folder.is_dir() and any(path.is_file() for path in folder.rglob("*"))


def _unfinished_runs(runs_dir: Path) -> list[Path]:
    """``model.pt`` of every run folder that lacks it (a killed or still running training job)."""
    return [
        run / "model.pt"
        for run in sorted(runs_dir.iterdir())
        if run.is_dir() and not (run / "model.pt").is_file()
    ]


def push(directory: Path, configfiles: Sequence[Path] = (), remote: str | None = None) -> list[Path]:
    """``dvc add`` every output folder of record of the config, then ``dvc push`` them; returns the pointer
    files (relative to ``directory``), which are to be committed with git."""
    directory = Path(directory)
    records = outputs_of_record(load_workflow_config(directory, configfiles))
    present = [r for r in records if _holds_files(directory / r.path)]
    if not present:
        listed = ", ".join(str(r.path) for r in records)
        raise CacheError(
            f"nothing to push: none of {listed} exists in {directory} "
            "(run snakemake first, with the same --configfile)"
        )
    missing = [r for r in records if r.required and r not in present]
    if missing:
        names = "; ".join(f"{r.path} ({r.what})" for r in missing)
        raise CacheError(f"missing outputs of record in {directory}: {names}; run snakemake to the end first")
    unfinished = _unfinished_runs(directory / records[0].path)
    if unfinished:
        names = ", ".join(str(path.relative_to(directory)) for path in unfinished[:5])
        raise CacheError(
            f"{len(unfinished)} training runs are unfinished, no {names}: "
            "finish them (snakemake) or remove their folders"
        )
    remote = _check_repository(directory, remote)
    paths = [str(r.path) for r in present]
    run_dvc(directory, "add", "--quiet", *paths)
    pointers = [r.pointer for r in present]
    print(run_dvc(directory, "push", "--remote", remote, *map(str, pointers)).strip())
    return pointers


def pull(directory: Path, configfiles: Sequence[Path] = (), remote: str | None = None) -> list[Path]:
    """``dvc pull`` the output folders of record whose pointers this checkout holds, then give every restored
    file one modification time so that Snakemake reruns only what is missing; returns the folders."""
    directory = Path(directory)
    records = outputs_of_record(load_workflow_config(directory, configfiles))
    missing = [r for r in records if r.required and not (directory / r.pointer).is_file()]
    if missing:
        names = ", ".join(str(r.pointer) for r in missing)
        raise CacheError(
            f"no DVC pointer {names} in {directory}: on the machine that ran the workflow, run "
            "`rankclip cache push` (same --configfile) and commit the pointer files it lists"
        )
    remote = _check_repository(directory, remote)
    present = [r for r in records if (directory / r.pointer).is_file()]
    print(run_dvc(directory, "pull", "--remote", remote, *(str(r.pointer) for r in present)).strip())
    now = time.time()
    for record in present:
        for root, _, files in os.walk(directory / record.path):
            for file in files:
                os.utime(Path(root) / file, (now, now))
    return [r.path for r in present]
