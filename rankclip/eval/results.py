"""The results file: one JSON per (run, benchmark), validated when written and when read.

The schema is the pydantic model ``EvalResult`` (documented field by field in docs/results_schema.md;
``EvalResult.model_json_schema()`` gives the JSON Schema). Accuracies and recalls are fractions in
[0, 1], not percent. Files are written through a temporary name and ``os.replace``.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rankclip.atomic import write_atomic_text

__all__ = [
    "SCHEMA_VERSION",
    "TASKS",
    "EvalResult",
    "PerClassResult",
    "ResultsError",
    "read_result",
    "read_results",
    "results_frame",
    "write_result",
]

SCHEMA_VERSION = 2  # 2: the task names of config and CLI (was zeroshot_classification, ..., representation)
# The evaluation tasks, one name each in config (`eval.every_run`), CLI (`rankclip eval TASK`), file names
# (`TASK-DATASET.json`), results (`task`) and report.
Task = Literal["zeroshot", "retrieval", "linear_probe", "gap"]
TASKS: tuple[str, ...] = get_args(Task)
# Metrics each task must report (at least one name matching each pattern).
REQUIRED_METRICS: dict[str, tuple[str, ...]] = {
    "zeroshot": (r"top\d+",),
    "retrieval": (r"image_to_text_R@\d+", r"text_to_image_R@\d+"),
    "linear_probe": (r"top\d+",),
    "gap": (r"modality_gap",),
}
_SHA256 = r"^[0-9a-f]{64}$"


class ResultsError(ValueError):
    """A results file is unreadable or does not follow the schema; the message names file and field."""


def _is_fraction_metric(name: str) -> bool:
    return name.startswith(("top", "mean_per_class_top")) or "R@" in name


class PerClassResult(BaseModel):
    """One class's accuracy (zero-shot or linear probe), for classes with at least one test image."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="Class index in the dataset's classnames.txt.")
    name: str = Field(description="Class name.")
    num_samples: int = Field(ge=1, description="Test images of this class.")
    accuracy: dict[str, float] = Field(description="top{k} accuracy of this class (fractions).")

    @field_validator("accuracy")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        for key, number in value.items():
            if not (0.0 <= number <= 1.0):
                raise ValueError(f"accuracy {key!r} must be a fraction in [0, 1], got {number}")
        return value


class EvalResult(BaseModel):
    """One evaluation of one checkpoint on one dataset split."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = Field(SCHEMA_VERSION, description="Version of this schema.")
    # the run
    run_id: str = Field(min_length=1, description="Training run id (the run's output folder name).")
    method: str = Field(min_length=1, description="Training loss: clip, cyclip, alip, rankclip, ...")
    backbone: str = Field(min_length=1, description="open_clip model name, e.g. ViT-B-32, RN50.")
    data_size: int | None = Field(None, gt=0, description="Training pairs per epoch (data-size ablation).")
    seed: int | None = Field(None, description="Training seed.")
    train_step: int | None = Field(None, ge=0, description="Optimiser steps done when checkpointed.")
    train_skipped: int | None = Field(
        None, ge=0, description="Unreadable training samples or shards the run skipped (its skip budget)."
    )
    train_config: dict[str, Any] = Field(
        default_factory=dict, description="The checkpoint's training config (lambdas, epochs, ...)."
    )
    checkpoint_path: str = Field(min_length=1, description="Checkpoint file as given to the evaluation.")
    checkpoint_sha256: str = Field(pattern=_SHA256, description="sha256 of the checkpoint file.")
    # the benchmark
    task: Task
    dataset: str = Field(min_length=1, description="Dataset name, e.g. imagenet1k, mscoco_karpathy.")
    dataset_path: str = Field(min_length=1, description="The dataset folder (clip_benchmark wds layout).")
    split: str = Field(min_length=1, description="Evaluated split; linear probe: the test split.")
    dataset_sha256: str = Field(pattern=_SHA256, description="Content hash of the evaluated data.")
    num_samples: int = Field(ge=1, description="Images evaluated (test images for the linear probe).")
    num_texts: int | None = Field(None, ge=1, description="Captions (retrieval, representation).")
    num_classes: int | None = Field(None, ge=1, description="Classes scored (after any class subset).")
    # the numbers
    metrics: dict[str, float] = Field(description="Metric name -> value; accuracies/recalls in [0, 1].")
    per_class: list[PerClassResult] | None = Field(None, description="Per-class accuracies.")
    intervals: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Metric name -> bootstrap interval over test items (protocol.bootstrap: level, seed).",
    )
    item_hits: dict[str, str] = Field(
        default_factory=dict,
        description="Metric name -> per-item 1/0 hits in the split's order (uncertainty.pack_hits): "
        "paired comparisons of two runs on the same items.",
    )
    protocol: dict[str, Any] = Field(default_factory=dict, description="Settings that define the metrics.")
    artifacts: dict[str, str] = Field(
        default_factory=dict, description="Extra files (e.g. the UMAP table), relative to this JSON's folder."
    )
    # provenance
    code_version: str = Field(min_length=1, description="rankclip version [+tree.<git tree hash>[.dirty]].")
    code_hash: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{16}$",
        description="stage_code_hash('eval') of the evaluation code (rankclip/code_hash.py); None: unknown.",
    )
    created_at: datetime = Field(description="When the result was computed (UTC).")
    duration_s: float | None = Field(None, ge=0, description="Wall time of the evaluation, seconds.")

    @field_validator("metrics")
    @classmethod
    def _finite_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("no metrics")
        for key, number in value.items():
            if not math.isfinite(number):
                raise ValueError(f"metric {key!r} is not finite: {number}")
            if _is_fraction_metric(key) and not 0.0 <= number <= 1.0:
                raise ValueError(f"metric {key!r} must be a fraction in [0, 1], got {number}")
        return value

    @model_validator(mode="after")
    def _intervals_of_metrics(self) -> EvalResult:
        for name, (low, high) in self.intervals.items():
            if name not in self.metrics:
                raise ValueError(f"interval of {name!r}, which is not a metric")
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ValueError(f"interval of {name!r} must be finite with low <= high, got [{low}, {high}]")
        unknown = sorted(set(self.item_hits) - set(self.metrics))
        if unknown:
            raise ValueError(f"item_hits of {unknown}, which are not metrics")
        return self

    @model_validator(mode="after")
    def _task_metrics(self) -> EvalResult:
        missing = [
            pattern
            for pattern in REQUIRED_METRICS[self.task]
            if not any(re.fullmatch(pattern, name) for name in self.metrics)
        ]
        if missing:
            raise ValueError(
                f"task {self.task!r} requires metrics matching {missing}; got {sorted(self.metrics)}"
            )
        return self

    def record(self) -> dict[str, Any]:
        """A flat row for a table: the scalar fields plus one column per metric (and train lambdas)."""
        row = self.model_dump(
            exclude={
                "metrics",
                "per_class",
                "protocol",
                "artifacts",
                "train_config",
                "intervals",
                "item_hits",
            }
        )
        for name in ("lambda_cross", "lambda_in", "list_scale"):
            if name in self.train_config:
                row[name] = self.train_config[name]
        row.update(self.metrics)
        return row


def _format_validation_error(path: Path | str, error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "(top level)"
        got = f" (got {item['input']!r})" if item["type"] != "missing" and "input" in item else ""
        lines.append(f"  field '{field}': {item['msg']}{got}")
    return f"{path}: not a valid rankclip result (schema version {SCHEMA_VERSION}):\n" + "\n".join(lines)


def validate_result(data: dict[str, Any], source: Path | str = "result") -> EvalResult:
    try:
        return EvalResult.model_validate(data)
    except ValidationError as error:
        raise ResultsError(_format_validation_error(source, error)) from None


def write_result(result: EvalResult | dict[str, Any], path: Path) -> Path:
    """Validate ``result`` and write it to ``path`` atomically (indented JSON)."""
    path = Path(path)
    data = result.model_dump(mode="json") if isinstance(result, EvalResult) else result
    result = validate_result(data, path)  # re-validate: a model may have been mutated after creation
    text = json.dumps(result.model_dump(mode="json"), indent=2, allow_nan=False) + "\n"
    return write_atomic_text(path, text, per_process=True)


def read_result(path: Path) -> EvalResult:
    """Read and validate one results file; ResultsError names the file and every bad field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ResultsError(f"{path}: cannot read results file: {error.strerror or error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResultsError(
            f"{path}: not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}"
        ) from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: a results file holds a JSON object, got {type(data).__name__}")
    return validate_result(data, path)


def read_results(paths) -> list[EvalResult]:
    """Read results files; a folder contributes every ``*.json`` below it (sorted)."""
    files: list[Path] = []
    for item in [paths] if isinstance(paths, str | Path) else paths:
        item = Path(item)
        files.extend(sorted(item.rglob("*.json")) if item.is_dir() else [item])
    return [read_result(file) for file in files]


def results_frame(paths):
    """A pandas DataFrame with one row per results file (``EvalResult.record``); needs pandas."""
    import pandas as pd

    return pd.DataFrame([result.record() for result in read_results(paths)])


def now_utc() -> datetime:
    return datetime.now(UTC)
