"""Workflow config names checked at DAG time against what exists (torch-free: the Snakefile imports it).

The JSON schema (config/schema.yaml) checks types and shapes; this module checks that every method, backbone
and dataset name the config uses is one the package knows or the config itself defines, so a typo stops
``snakemake`` before any job runs, with the key at fault named.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any, get_args

from rankclip.config import ConfigError, LossName

METHODS = get_args(LossName)
OUR_MODEL_CONFIGS = Path(__file__).parent / "model_configs"


def known_models() -> set[str]:
    """Model names open_clip can build: its architecture configs plus ours (read without importing torch)."""
    spec = importlib.util.find_spec("open_clip")
    folders = [OUR_MODEL_CONFIGS]
    if spec is not None and spec.submodule_search_locations:
        folders.append(Path(next(iter(spec.submodule_search_locations))) / "model_configs")
    return {path.stem for folder in folders for path in folder.glob("*.json")}


def evaluated(config: dict[str, Any], task: str) -> set[str]:
    """The datasets that some run is evaluated on with ``task``."""
    pairs = [pair.split(":") for key in ("every_run", "main_runs") for pair in config["eval"].get(key, [])]
    return {dataset for pair_task, dataset in pairs if pair_task == task}


def name_problems(config: dict[str, Any], models: set[str] | None = None) -> list[str]:
    """Every unknown name in ``config``, as ``key: message`` lines (empty: all names are known)."""
    models = known_models() if models is None else models
    runs, evals, report = config["runs"], config["eval"], config.get("report", {})
    problems = []

    def check(key: str, names, known, what: str) -> None:
        for name in names:
            if name not in known:
                problems.append(
                    f"{key}: {name!r} is not {what} (known: {', '.join(map(str, sorted(known)))})"
                )

    for key in ("methods", "backbone_methods", "data_size_methods"):
        check(f"runs.{key}", runs.get(key, []), METHODS, "a method")
    model_names = sorted(models)
    backbones = (
        ("runs.backbone", [runs["backbone"]]),
        ("runs.backbones", runs.get("backbones", [])),
        ("runs.data_size_backbone", [runs["data_size_backbone"]] if runs.get("data_size_backbone") else []),
    )
    for key, names in backbones:
        for name in names:
            if name not in models:
                near = [m for m in model_names if m.lower().startswith(name.lower()[:3])][:8]
                problems.append(
                    f"{key}: {name!r} is not an open_clip model (similar: {', '.join(near) or '-'})"
                )
    datasets = evals["datasets"]
    for key in ("every_run", "main_runs", "backbone_runs"):
        check(
            f"eval.{key}", [pair.split(":")[1] for pair in evals.get(key, [])], datasets, "in eval.datasets"
        )
    zeroshot, retrieval = evaluated(config, "zeroshot"), evaluated(config, "retrieval")
    # a role names one of the datasets evaluated with its task; a config that runs no such task (a small
    # config merged into config/config.yaml's roles) leaves that part of the tables empty
    if "zeroshot" in report and zeroshot:
        check("report.zeroshot", [report["zeroshot"]], zeroshot, "evaluated with zeroshot")
    if "retrieval" in report and retrieval:
        check("report.retrieval", [report["retrieval"]], retrieval, "evaluated with retrieval")
    # mapping roles: a config given with --configfile is merged into config/config.yaml's mappings, so their
    # keys need only name a known dataset or model (results that do not exist leave the row empty)
    check("report.shift", report.get("shift", {}), datasets, "in eval.datasets")
    if report.get("robustness") is not None:
        check("report.robustness", [report["robustness"]], zeroshot, "evaluated with zeroshot")
    check("report.linear_probe", report.get("linear_probe", {}), datasets, "in eval.datasets")
    check("report.backbones", report.get("backbones", {}), models, "an open_clip model")
    return problems + list_overlaps(config)


def list_overlaps(config: dict[str, Any]) -> list[str]:
    """Benchmarks listed twice for one run: each of eval.every_run, main_runs and backbone_runs is one
    evaluation process per run that writes its benchmarks' results, so no file may come from two lists
    (main_runs and backbone_runs share one only when the main backbone is in runs.backbones too)."""
    evals, runs = config["eval"], config["runs"]
    pairs = [("every_run", "main_runs"), ("every_run", "backbone_runs")]
    if runs["backbone"] in runs.get("backbones", []):
        pairs.append(("main_runs", "backbone_runs"))
    problems = []
    for first, second in pairs:
        both = [pair for pair in evals.get(second, []) if pair in evals.get(first, [])]
        if both:
            problems.append(f"eval.{second}: {', '.join(both)} already in eval.{first} (list it once)")
    return problems


def downloaded_pairs(config: dict[str, Any], summary: Path) -> int | None:
    """The pairs the web download holds (its summary.json's ``successes``), None before it ran."""
    if config["data"]["source"] != "web" or not summary.is_file():
        return None
    return int(json.loads(summary.read_text())["successes"])


def size_problems(config: dict[str, Any], summary: Path) -> list[str]:
    """Every training-set size larger than the web download holds, once ``summary`` (the download's
    summary.json, rankclip.corpus.web) exists: the pairs that downloaded bound every subset (``all`` is
    every pair, whatever their count)."""
    downloaded = downloaded_pairs(config, summary)
    if downloaded is None:
        return []
    runs = config["runs"]
    sizes = [("runs.data_size", runs["data_size"])]
    sizes += [("runs.data_sizes", size) for size in runs.get("data_sizes", [])]
    return [
        f"{key}: {size:,} pairs requested, but {downloaded:,} pairs downloaded ({summary}); lower it to at "
        f"most {downloaded:,}"
        for key, size in sizes
        if isinstance(size, int) and size > downloaded
    ]


def check_sizes(config: dict[str, Any], summary: Path) -> None:
    """Raise ConfigError when a requested training-set size exceeds what downloaded (see size_problems)."""
    problems = size_problems(config, summary)
    if problems:
        raise ConfigError("invalid workflow config:\n  " + "\n  ".join(problems))


def check_names(config: dict[str, Any]) -> None:
    """Raise ConfigError listing every unknown name in the workflow config."""
    problems = name_problems(config)
    if problems:
        raise ConfigError("invalid workflow config:\n  " + "\n  ".join(problems))
