"""Which source files each stage of the workflow runs, and a content hash of them ("the code that made this").

``STAGE_CODE`` is the one place that says which files a stage runs; paths are relative to the repository
root (the folder holding ``rankclip/``), a folder stands for every ``*.py`` and ``*.json`` file below it.
``stage_code_hash(stage)`` is a short sha256 over the sorted relative paths and contents of those files:

- the workflow puts it into each rule's ``params`` (``workflow/rules/common.smk``), so Snakemake reruns
  exactly the jobs whose code changed (a version string does not change when the code does);
- the evaluation writes ``stage_code_hash("eval")`` into every results JSON (``code_hash``) and training
  into its checkpoints, and the report marks numbers whose results carry another hash than the current one.

Plain Python (no torch, no numpy): the workflow imports it while parsing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["HASH_LENGTH", "STAGE_CODE", "stage_code_hash", "stage_files"]

HASH_LENGTH = 16
_SHARDS = ("rankclip/shards.py", "rankclip/atomic.py")
_LAYOUT = "rankclip/evalset_layout.py"
_DOWNLOAD = ("rankclip/download.py", "rankclip/hashing.py")
STAGE_CODE: dict[str, tuple[str, ...]] = {
    # data: one entry per kind of data rule (a converter edit reruns its own rule and what consumes it);
    # the web corpus download (days) has none: rerun it by hand (`--forcerun web_shards`)
    "demo": ("rankclip/demo_data/shapes.py", _LAYOUT, *_SHARDS),
    "emoji": ("rankclip/demo_data/emoji.py", _LAYOUT, "rankclip/hashing.py", *_SHARDS),
    "fashion_mnist": ("rankclip/demo_data/fashion_mnist.py", _LAYOUT, "rankclip/hashing.py", *_SHARDS),
    "captions": (
        "rankclip/corpus/captions.py",
        "rankclip/corpus/loader.py",
        "rankclip/corpus/subsets.py",
        "rankclip/config.py",
        "rankclip/device.py",
        *_SHARDS,
    ),
    "subsets": ("rankclip/corpus/subsets.py", "rankclip/config.py", *_SHARDS),
    "eval_sets": (
        "rankclip/evalsets/registry.py",
        "rankclip/evalsets/build.py",
        "rankclip/evalsets/converter.py",
        _LAYOUT,
        "rankclip/evalsets/imagenet.py",
        "rankclip/evalsets/coco.py",
        "rankclip/evalsets/linear_probe.py",
        "rankclip/evalsets/imagenet_facts.py",
        *_DOWNLOAD,
        *_SHARDS,
    ),
    # training: the losses, models, loader, training loop and config
    "train": (
        "rankclip/train.py",
        "rankclip/config.py",
        "rankclip/losses.py",
        "rankclip/listmle.py",
        "rankclip/models.py",
        "rankclip/model_configs",
        "rankclip/optim.py",
        "rankclip/checkpoint.py",
        "rankclip/distributed.py",
        "rankclip/device.py",
        "rankclip/corpus/loader.py",
        "rankclip/corpus/subsets.py",
        "rankclip/run_lock.py",
        "rankclip/atomic.py",
    ),
    # the linear probe's schedule is training's cosine_lr; the datasets' file names are the layout's; the
    # prompt templates and ImageNet-R's classes are the evaluation sets' facts
    "eval": (
        "rankclip/eval",
        "rankclip/models.py",
        "rankclip/model_configs",
        "rankclip/checkpoint.py",
        "rankclip/atomic.py",
        "rankclip/optim.py",
        "rankclip/device.py",
        "rankclip/hashing.py",
        _LAYOUT,
        "rankclip/evalsets/imagenet_facts.py",
    ),
    # the tables, the notebooks' library (Fig. 7's heatmaps included) and the HTML report (a notebook job's
    # notebook is its input); the report's Protocol table reads TrainConfig's defaults and our model configs
    "report": (
        "rankclip/report.py",
        "rankclip/report_html.py",
        "rankclip/hashing.py",
        "rankclip/protocol.py",
        "rankclip/localisation.py",
        "rankclip/eval/results.py",
        "rankclip/eval/uncertainty.py",
        "rankclip/eval/datasets.py",
        _LAYOUT,
        "rankclip/models.py",
        "rankclip/checkpoint.py",
        "rankclip/atomic.py",
        "rankclip/config.py",
        "rankclip/model_configs",
    ),
}
_SUFFIXES = (".py", ".json")


def repo_root() -> Path:
    """The folder holding the ``rankclip`` package that is imported."""
    return Path(__file__).resolve().parent.parent


def stage_files(stage: str, *extra: str, root: Path | str | None = None) -> list[str]:
    """The sorted relative paths of the files ``stage`` runs (plus ``extra`` paths), folders expanded."""
    if stage not in STAGE_CODE:
        raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGE_CODE)}")
    root = Path(root) if root is not None else repo_root()
    files: set[str] = set()
    for name in (*STAGE_CODE[stage], *extra):
        path = root / name
        if path.is_dir():
            files.update(
                p.relative_to(root).as_posix()
                for p in path.rglob("*")
                if p.is_file() and p.suffix in _SUFFIXES and "__pycache__" not in p.parts
            )
        elif path.is_file():
            files.add(Path(name).as_posix())
        else:
            raise FileNotFoundError(f"{path}: listed for stage {stage!r} in rankclip/code_hash.py, not found")
    return sorted(files)


def _hash(stage: str, extra: tuple[str, ...], root: Path) -> str:
    digest = hashlib.sha256()
    for name in stage_files(stage, *extra, root=root):
        data = (root / name).read_bytes()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:HASH_LENGTH]


def stage_code_hash(stage: str, *extra: str, root: Path | str | None = None) -> str:
    """Short sha256 (16 hex digits) of the sorted relative paths and contents of the files ``stage`` runs.

    ``extra``: more files of this job (a notebook). ``root``: the repository whose files are hashed
    (default: the one of the imported package; the workflow passes its own).
    """
    return _hash(stage, tuple(extra), Path(root).resolve() if root is not None else repo_root())
