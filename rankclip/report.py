"""The paper's tables and figures from the results, each with the paper's number beside ours.

Every table function takes the results frame (``collect(results_dir)`` or ``results.csv``: one row per
results JSON, metrics as fractions) and returns a table in percent laid out by ``compare``: for each key
(a method, a backbone and method, ...) up to three rows, ``ours`` (mean over seeds), ``paper`` (from
PAPER.md, the constants below) and ``ours - paper``, with rows that would be empty left out (a method the
paper does not report has no ``paper`` row). Which of our evaluation datasets plays which of the paper's
benchmarks is the config's ``report`` section (``Roles``). A difference is shown only where our dataset IS
the paper's benchmark (``same_benchmark``: its name is the evaluation set that ``rankclip data eval-set``
makes for that benchmark, ``BENCHMARK_SETS``); a stand-in (the demo's shapes for ImageNet) gets the paper's
number beside ours for reference, but no ``ours - paper``, which would compare two different tests.
The notebooks in ``notebooks/`` call these functions and only draw; ``ReportOutputs`` saves their tables
(CSV + Markdown) and figures (PNG) with an ``index.json`` that the HTML report (``rankclip.report_html``)
reads.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rankclip.atomic import atomic_path, write_atomic_text
from rankclip.code_hash import stage_code_hash
from rankclip.config import ALL_PAIRS, MAIN_RUN, has_main_settings
from rankclip.eval.results import TASKS, EvalResult, read_result, read_results, results_frame
from rankclip.eval.uncertainty import (
    mean_interval,
    paired_delta,
    percentile_interval,
    resampled_means,
    seed_spread,
    unpack_hits,
)

ZEROSHOT, RETRIEVAL, LINEAR_PROBE, GAP = TASKS  # the results' task names

# PAPER.md, Table 1 (CC3M, ViT-B/32): ImageNet top-1/3/5, COCO I->T R@1/5/10, T->I R@1/5/10 (percent).
PAPER_TABLE1 = {
    "clip": (9.06, 16.94, 21.63, 6.68, 18.36, 26.94, 3.70, 9.74, 14.04),
    "cyclip": (9.40, 17.32, 21.72, 6.50, 19.34, 29.14, 3.72, 11.16, 16.06),
    "alip": (9.71, 18.31, 23.07, 6.04, 18.04, 26.92, 3.70, 10.22, 14.38),
    "rankclip": (10.16, 19.57, 24.01, 7.18, 19.46, 28.48, 3.74, 10.28, 14.18),
}
TABLE1_COLUMNS = [
    "top1", "top3", "top5",
    "image_to_text_R@1", "image_to_text_R@5", "image_to_text_R@10",
    "text_to_image_R@1", "text_to_image_R@5", "text_to_image_R@10",
]  # fmt: skip
# PAPER.md, Table 2: top-1/3/5 under distribution shift, by benchmark (the keys the config maps onto).
PAPER_TABLE2_BENCHMARKS = {
    "v2_matched": "ImageNetV2 matched-frequency",
    "v2_threshold": "ImageNetV2 threshold-0.7",
    "v2_top": "ImageNetV2 top-images",
    "imagenet_r": "ImageNet-R",
}
PAPER_TABLE2 = {
    "clip": {
        "v2_matched": (7.53, 14.99, 19.61),
        "v2_threshold": (8.89, 17.22, 21.86),
        "v2_top": (10.76, 19.80, 24.87),
        "imagenet_r": (9.36, 10.56, 19.76),
    },
    "cyclip": {
        "v2_matched": (7.68, 15.07, 19.11),
        "v2_threshold": (9.10, 17.42, 21.94),
        "v2_top": (11.20, 20.18, 25.34),
        "imagenet_r": (9.23, 16.72, 21.64),
    },
    "alip": {
        "v2_matched": (7.82, 15.56, 19.81),
        "v2_threshold": (9.65, 18.31, 22.85),
        "v2_top": (11.43, 20.88, 26.10),
        "imagenet_r": (10.92, 20.27, 26.24),
    },
    "rankclip": {
        "v2_matched": (9.01, 16.95, 21.12),
        "v2_threshold": (10.32, 19.31, 24.13),
        "v2_top": (12.31, 22.11, 27.17),
        "imagenet_r": (11.34, 20.88, 26.94),
    },
}
# PAPER.md, Table 3: linear-probe top-1 on ten datasets and their average.
PAPER_TABLE3_DATASETS = {
    "cifar10": "CIFAR-10",
    "cifar100": "CIFAR-100",
    "dtd": "DTD",
    "fgvc_aircraft": "FGVC-Aircraft",
    "food101": "Food101",
    "gtsrb": "GTSRB",
    "pets": "Oxford-IIIT Pets",
    "sst2": "Rendered SST2",
    "stl10": "STL10",
    "svhn": "SVHN",
}
PAPER_TABLE3 = {
    "clip": (77.6, 56.2, 43.2, 22.6, 39.7, 60.0, 40.4, 51.0, 79.0, 50.5, 52.0),
    "cyclip": (76.8, 54.3, 45.8, 19.2, 37.5, 58.6, 44.2, 51.5, 82.3, 41.3, 51.2),
    "alip": (71.1, 49.1, 47.1, 17.4, 36.1, 51.5, 41.9, 53.3, 81.0, 38.3, 48.7),
    "rankclip": (78.4, 56.6, 42.4, 23.4, 40.2, 60.6, 40.6, 53.4, 79.6, 47.7, 52.3),
}
# PAPER.md, Table 4 (backbones, probably the 15M set): Table 1's columns plus the linear-probe average.
TABLE4_COLUMNS = [*TABLE1_COLUMNS, "linear_probe_avg"]
PAPER_TABLE4 = {
    ("RN50", "clip"): (21.6, 36.9, 44.9, 15.6, 36.4, 48.4, 6.7, 15.2, 20.1, 64.2),
    ("RN50", "rankclip"): (30.9, 49.4, 57.6, 19.5, 42.6, 54.8, 7.5, 16.2, 21.6, 68.9),
    ("ViT-B/32", "clip"): (20.7, 35.0, 42.4, 11.9, 29.4, 40.8, 5.1, 12.9, 17.9, 60.7),
    ("ViT-B/32", "rankclip"): (26.2, 41.4, 48.9, 13.8, 33.8, 45.9, 6.0, 13.6, 18.6, 61.3),
}
PAPER_TABLE4_BACKBONES = ("RN50", "ViT-B/32")
# PAPER.md, Fig. 4: ImageNet top-1 by training pairs, read off the plot (approximate).
PAPER_FIG4 = {
    "clip": {500_000: 4.5, 750_000: 7.5, 1_000_000: 9.4, 3_000_000: 12.1, 15_000_000: 21.6},
    "rankclip": {500_000: 8.3, 750_000: 11.3, 1_000_000: 13.1, 3_000_000: 17.0, 15_000_000: 30.9},
}
# The paper's benchmarks (the keys above, plus ImageNet1K and MS-COCO) -> the name of the evaluation set
# that IS that benchmark (rankclip.evalsets.registry, written by `rankclip data eval-set`).
BENCHMARK_SETS = {
    "imagenet1k": "imagenet1k",
    "mscoco": "mscoco_karpathy",
    "v2_matched": "imagenetv2_matched",
    "v2_threshold": "imagenetv2_threshold",
    "v2_top": "imagenetv2_top",
    "imagenet_r": "imagenet_r",
    **{name: name for name in PAPER_TABLE3_DATASETS if name != "sst2"},
    "sst2": "renderedsst2",
}
BENCHMARK_NAMES = {
    "imagenet1k": "ImageNet1K",
    "mscoco": "MS-COCO (Karpathy 5k test)",
    **PAPER_TABLE2_BENCHMARKS,
    **PAPER_TABLE3_DATASETS,
}
METHOD_ORDER = ["clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"]
SOURCES = ("ours", "paper", "ours - paper")
NO_COUNTERPART = "-"
SEEDS = "seeds"  # a count column of ``compare`` tables: how many seeds a row of ours pools (an integer)
NOT_RUN = "not run"  # a paper point (Fig. 4's 15M) that this config trains nothing for
# A number made (in part) from results whose code_hash is not the current evaluation code's.
STALE_MARK = "\u2020"
STALE_NOTE = (
    f"{STALE_MARK} made by older evaluation code (results whose code_hash differs from the current one)."
)


# ------------------------------------------------------------------------------------------ benchmarks
def same_benchmark(dataset: str | None, benchmark: str | None) -> bool:
    """Whether our evaluation set ``dataset`` is the paper's ``benchmark`` itself (not a stand-in): its
    name is the evaluation set made for that benchmark (``BENCHMARK_SETS``). Only then is ``ours - paper``
    a difference between two numbers of one test."""
    return dataset is not None and benchmark is not None and BENCHMARK_SETS.get(benchmark) == dataset


def paper_probe_sets() -> set[str]:
    """Our names of the paper's ten linear-probe sets: an average over exactly these is the paper's."""
    return {BENCHMARK_SETS[name] for name in PAPER_TABLE3_DATASETS}


def stand_in_note(pairs: dict[str, str | None]) -> str:
    """A caption sentence naming the stand-ins among ``pairs`` (our dataset -> the paper's benchmark key),
    for which the table has no ``ours - paper``; "" when every one is the paper's benchmark."""
    stand_ins = [
        f"`{ours}` for {BENCHMARK_NAMES.get(paper, paper)}"
        for ours, paper in pairs.items()
        if paper is not None and not same_benchmark(ours, paper)
    ]
    if not stand_ins:
        return ""
    return (
        f"Stand-ins, not the paper's benchmark ({', '.join(stand_ins)}): the paper's number is there for "
        "reference, with no `ours - paper`."
    )


# ------------------------------------------------------------------------------------------ roles
@dataclass(frozen=True)
class Roles:
    """Which of our evaluation datasets (and backbones, data sizes) stands in for which of the paper's.

    ``zeroshot`` plays ImageNet1K and ``retrieval`` MS-COCO (Tables 1 and 4, Figs. 3-7); ``shift`` maps
    our shifted zero-shot sets to Table 2's benchmarks (``PAPER_TABLE2_BENCHMARKS``); ``linear_probe``
    maps our linear-probe sets to Table 3's columns (``PAPER_TABLE3_DATASETS``, or None); ``backbones``
    our backbones to Table 4's (``RN50``, ``ViT-B/32``); ``data_sizes`` our training sizes to Fig. 4's
    (500000 ... 15000000); ``robustness`` is the shifted set of Fig. 4's robustness scatter (default:
    the first of ``shift``); ``reasons``: why a setting of the report's protocol table
    (``rankclip.protocol``) differs from the paper's, by setting key.
    """

    zeroshot: str
    retrieval: str
    shift: dict[str, str] = field(default_factory=dict)
    linear_probe: dict[str, str | None] = field(default_factory=dict)
    backbones: dict[str, str | None] = field(default_factory=dict)
    data_sizes: dict[int | str, int | None] = field(default_factory=dict)  # str: ALL_PAIRS
    robustness: str | None = None
    reasons: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> Roles:
        """From the config's ``report`` section (as YAML/JSON gives it: integer keys may be strings)."""
        section = dict(section or {})
        unknown = set(section) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(
                f"report: unknown keys {sorted(unknown)}; valid: {sorted(cls.__dataclass_fields__)}"
            )
        for key in ("zeroshot", "retrieval"):
            if not isinstance(section.get(key), str) or not section[key]:
                raise ValueError(f"report.{key}: the name of one of our evaluation datasets is required")
        checks = {
            "shift": (PAPER_TABLE2_BENCHMARKS, False),
            "linear_probe": (PAPER_TABLE3_DATASETS, True),
            "backbones": (PAPER_TABLE4_BACKBONES, True),
            "data_sizes": (PAPER_FIG4["clip"], True),
        }
        values: dict[str, Any] = {"zeroshot": section["zeroshot"], "retrieval": section["retrieval"]}
        for key, (valid, nullable) in checks.items():
            mapping = dict(section.get(key) or {})
            if key == "data_sizes":
                mapping = {
                    (size if size == ALL_PAIRS else int(size)): None if v is None else int(v)
                    for size, v in mapping.items()
                }
            for ours, paper in mapping.items():
                if paper is None and nullable:
                    continue
                if paper not in valid:
                    raise ValueError(
                        f"report.{key}.{ours}: {paper!r} is not one of the paper's "
                        f"{', '.join(map(str, valid))}" + (" (or null)" if nullable else "")
                    )
            values[key] = mapping
        robustness = section.get("robustness") or next(iter(values["shift"]), None)
        if robustness is not None and robustness not in values["shift"]:
            raise ValueError(f"report.robustness: {robustness!r} is not one of report.shift's datasets")
        reasons = dict(section.get("reasons") or {})
        if not all(isinstance(v, str) for v in reasons.values()):
            raise ValueError("report.reasons: each value must be a sentence (a string)")
        return cls(**values, robustness=robustness, reasons=reasons)


# ------------------------------------------------------------------------------------------ frames
def collect(results_dir: Path) -> pd.DataFrame:
    """One row per results file below ``results_dir``."""
    paths = sorted(Path(results_dir).rglob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no results JSON below {results_dir}")
    return results_frame(paths)


def read_frame(results_csv: Path) -> pd.DataFrame:
    """``results.csv`` as written by ``write_tables``."""
    return prepare(pd.read_csv(results_csv))


def prepare(frame: pd.DataFrame) -> pd.DataFrame:
    """Lambdas default to 1 and the list scale to the main one (runs without them), and ``mean_R@1`` from
    its two directions when absent."""
    frame = frame.copy()
    for name, main in MAIN_RUN.items():
        frame[name] = frame[name].fillna(main) if name in frame else main
    for k in (1, 5, 10):
        pair = [f"image_to_text_R@{k}", f"text_to_image_R@{k}"]
        if set(pair) <= set(frame.columns) and f"mean_R@{k}" not in frame:
            frame[f"mean_R@{k}"] = frame[pair].mean(axis=1, skipna=False)
    return frame


def select(
    frame: pd.DataFrame,
    task: str,
    dataset: str | None = None,
    backbone: str | None = None,
    data_size: int | None = None,
    unit_lambdas: bool = True,
    main_list_scale: bool = True,
) -> pd.DataFrame:
    """Rows of one task (and dataset, backbone, data size); ``unit_lambdas``: the main runs' lambdas
    (``config.MAIN_RUN``: 1 and 1); ``main_list_scale``: the main runs' list scale (1/32, the paper's), not
    the list-scale ablation's."""
    frame = prepare(frame)
    keep = frame["task"] == task
    if dataset is not None:
        keep &= frame["dataset"] == dataset
    if backbone is not None:
        keep &= frame["backbone"] == backbone
    if data_size is not None:
        keep &= frame["data_size"] == data_size
    if unit_lambdas:
        keep &= _at_main(frame, "lambda_cross") & _at_main(frame, "lambda_in")
    if main_list_scale:
        keep &= _at_main(frame, "list_scale")
    return frame[keep]


def _at_main(frame: pd.DataFrame, setting: str) -> pd.Series:
    """Rows whose ``setting`` (a lambda or the list scale) is the main runs' (``config.MAIN_RUN``)."""
    return pd.Series(np.isclose(frame[setting], MAIN_RUN[setting]), index=frame.index)


def mean_percent(rows: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean over seeds (and any other repeat) of ``metrics`` by ``keys``, in percent; absent metrics: NaN."""
    rows = rows.reindex(columns=list(dict.fromkeys([*keys, *metrics])))
    table = rows.groupby(keys, sort=False)[metrics].mean().astype(float) * 100
    return table


def seed_count(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """How many seeds each group of ``rows`` by ``keys`` pools (column ``seeds``)."""
    rows = rows.reindex(columns=list(dict.fromkeys([*keys, "seed"])))
    return rows.groupby(keys, sort=False)["seed"].nunique().rename(SEEDS).to_frame()


def method_order(methods) -> list[str]:
    methods = list(dict.fromkeys(methods))
    return [m for m in METHOD_ORDER if m in methods] + sorted(m for m in methods if m not in METHOD_ORDER)


def _key(key) -> tuple:
    return key if isinstance(key, tuple) else (key,)


def compare(
    ours: pd.DataFrame,
    paper: pd.DataFrame,
    order: list | None = None,
    decimals: int = 2,
    same: list[str] | None = None,
) -> pd.DataFrame:
    """Rows ``ours``, ``paper``, ``ours - paper`` per key (index of ``ours``/``paper``), same columns.

    The result has the key columns (the index names), ``source`` and the value columns; a row with no
    value (the paper does not report the method, or we did not run it) is left out. ``same``: the columns
    measured on the paper's own benchmark, the only ones that get a difference (None: every column); with
    none of them, there is no ``ours - paper`` row.
    """
    names = [n for n in (ours.index.names if ours.index.names[0] is not None else paper.index.names)]
    names = [name or "key" for name in names]
    columns = list(dict.fromkeys([*ours.columns, *paper.columns]))
    mine = {_key(k): row for k, row in ours.reindex(columns=columns).astype(float).iterrows()}
    theirs = {_key(k): row for k, row in paper.reindex(columns=columns).astype(float).iterrows()}
    keys = [_key(k) for k in order] if order is not None else list(dict.fromkeys([*mine, *theirs]))
    empty = pd.Series(np.nan, index=columns, dtype=float)
    differs = pd.Series([(same is None or c in same) and c != SEEDS for c in columns], index=columns)
    rows = []
    for key in keys:
        a, b = mine.get(key, empty), theirs.get(key, empty)
        for source, values in zip(SOURCES, (a, b, (a - b).where(differs)), strict=True):
            if values.notna().any():
                rows.append({**dict(zip(names, key, strict=True)), "source": source, **values.to_dict()})
    table = pd.DataFrame(rows, columns=[*names, "source", *columns])
    table[columns] = table[columns].astype(float).round(decimals)
    if SEEDS in table:
        table[SEEDS] = table[SEEDS].astype("Int64")
    return table


def key_columns(table: pd.DataFrame) -> list[str]:
    """The columns before ``source``."""
    return list(table.columns[: list(table.columns).index("source")])


def to_markdown(table: pd.DataFrame, decimals: int = 2) -> str:
    """A ``compare`` table as Markdown: one row per (key, source) labelled ``key (source)``; empty: -."""
    keys = key_columns(table)
    body = table.drop(columns=[*keys, "source"])
    body.index = [" ".join(str(v) for v in row[keys]) + f" ({row['source']})" for _, row in table.iterrows()]
    stale = table.attrs.get("stale", [])
    return _markdown(body, decimals, marks=stale) + (f"\n{STALE_NOTE}\n" if stale else "")


def _markdown(body: pd.DataFrame, decimals: int = 2, index: bool = True, marks=()) -> str:
    """Numbers with ``decimals`` places, empty cells as ``-``, numbers right-aligned; ``marks``: [row
    position, column] of cells that get ``STALE_MARK``."""

    def cell(value) -> str:
        if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return NO_COUNTERPART
        if isinstance(value, float | np.floating):
            return f"{value:.{decimals}f}"
        return str(value)

    numeric = [pd.api.types.is_numeric_dtype(body[c]) for c in body.columns]
    align = (("left",) if index else ()) + tuple("right" if n else "left" for n in numeric)
    cells = body.astype(object).map(cell)
    for position, column in marks:
        cells.iloc[position, cells.columns.get_loc(column)] += STALE_MARK
    return cells.to_markdown(index=index, disable_numparse=True, colalign=align) + "\n"


def _paper(values: dict, columns: list[str], names: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame.from_dict(values, orient="index", columns=columns)
    if frame.empty:
        frame.index = pd.MultiIndex.from_tuples([], names=names) if len(names) > 1 else pd.Index([])
    if len(names) > 1 and not frame.empty:
        frame.index = pd.MultiIndex.from_tuples(frame.index, names=names)
    else:
        frame.index.name = names[0]
    return frame


# ------------------------------------------------------------------------------------------ staleness
def is_stale(frame: pd.DataFrame, current: str | None = None) -> pd.Series:
    """Rows made by evaluation code other than ``current`` (default: the installed code's hash); a row
    without ``code_hash`` (written before hashes were recorded) counts as stale."""
    current = current or stage_code_hash("eval")
    if "code_hash" not in frame:
        return pd.Series(True, index=frame.index)
    return frame["code_hash"].ne(current)


def _metric_columns(frame: pd.DataFrame) -> list[str]:
    fields = {*EvalResult.model_fields, "lambda_cross", "lambda_in"}
    return [c for c in frame.columns if c not in fields and pd.api.types.is_numeric_dtype(frame[c])]


def _changed_cells(table: pd.DataFrame, other: pd.DataFrame) -> list[list]:
    """[row position, column] of ``table``'s values that differ in ``other`` (rows matched by key, source)."""
    keys = [*key_columns(table), "source"]
    values = [c for c in table.columns if c not in keys]
    rows = {tuple(map(str, row[keys])): row for _, row in other.iterrows()}
    cells = []
    for position, (_, row) in enumerate(table.iterrows()):
        twin = rows.get(tuple(map(str, row[keys])))
        for column in values:
            value = row[column]
            if pd.isna(value):
                continue
            if twin is None or pd.isna(twin[column]) or not math.isclose(value, twin[column], abs_tol=1e-9):
                cells.append([position, column])
    return cells


def marks_stale(table_function):
    """A ``compare`` table function whose result lists, in ``attrs["stale"]``, the cells made (in part)
    from stale results: the table is made again with those results' metrics shifted, and the cells that
    move are theirs."""

    @functools.wraps(table_function)
    def wrapper(frame: pd.DataFrame, *args, **kwargs) -> pd.DataFrame:
        table = table_function(frame, *args, **kwargs)
        stale = is_stale(frame)
        if stale.any() and len(table):
            shifted = prepare(frame)
            columns = _metric_columns(shifted)
            shifted.loc[stale.to_numpy(), columns] = shifted.loc[stale.to_numpy(), columns] + 1000.0
            table.attrs["stale"] = _changed_cells(table, table_function(shifted, *args, **kwargs))
        return table

    return wrapper


# ------------------------------------------------------------------------------------------ tables
@marks_stale
def table1(frame: pd.DataFrame, backbone: str, data_size: int, zeroshot: str, retrieval: str) -> pd.DataFrame:
    """Table 1: zero-shot top-1/3/5 on ``zeroshot`` and Recall@1/5/10 on ``retrieval`` of the main runs."""
    zs = select(frame, ZEROSHOT, zeroshot, backbone, data_size)
    ret = select(frame, RETRIEVAL, retrieval, backbone, data_size)
    ours = mean_percent(zs, ["method"], TABLE1_COLUMNS[:3]).join(
        mean_percent(ret, ["method"], TABLE1_COLUMNS[3:]), how="outer"
    )
    paper = _paper(PAPER_TABLE1, TABLE1_COLUMNS, ["method"])
    same = _same_columns(zeroshot, retrieval, TABLE1_COLUMNS)
    return compare(ours, paper, method_order([*ours.index, *paper.index]), same=same)


def _same_columns(zeroshot: str, retrieval: str, columns: list[str]) -> list[str]:
    """Of Table 1's (or 4's) ``columns``, those measured on the paper's benchmark."""
    same = []
    if same_benchmark(zeroshot, "imagenet1k"):
        same += [c for c in columns if c.startswith("top")]
    if same_benchmark(retrieval, "mscoco"):
        same += [c for c in columns if "_R@" in c]
    return same


@marks_stale
def table2(frame: pd.DataFrame, backbone: str, data_size: int, shift: dict[str, str]) -> pd.DataFrame:
    """Table 2: top-1/3/5 on each shifted dataset (columns ``<dataset> top<k>``), the paper's benchmark
    that ``shift`` maps it to beside."""
    ks = (1, 3, 5)
    parts, paper_rows = [], {}
    for dataset, benchmark in shift.items():
        rows = select(frame, ZEROSHOT, dataset, backbone, data_size)
        part = mean_percent(rows, ["method"], [f"top{k}" for k in ks])
        parts.append(part.rename(columns={f"top{k}": f"{dataset} top{k}" for k in ks}))
        for method, values in PAPER_TABLE2.items():
            for k, value in zip(ks, values[benchmark], strict=True):
                paper_rows.setdefault(method, {})[f"{dataset} top{k}"] = value
    columns = [f"{dataset} top{k}" for dataset in shift for k in ks]
    ours = pd.concat(parts, axis=1) if parts else pd.DataFrame(columns=columns)
    ours.index.name = "method"
    paper = pd.DataFrame.from_dict(paper_rows, orient="index").reindex(columns=columns)
    paper.index.name = "method"
    same = [f"{ds} top{k}" for ds, benchmark in shift.items() if same_benchmark(ds, benchmark) for k in ks]
    return compare(ours, paper, method_order([*ours.index, *paper.index]), same=same)


def _linear_probe_percent(rows: pd.DataFrame, keys: list[str], datasets: list[str]) -> pd.DataFrame:
    """Linear-probe top-1 per dataset (columns named after the datasets) and their mean ``avg``."""
    table = rows.pivot_table(index=keys, columns="dataset", values="top1", aggfunc="mean") * 100
    table = table.reindex(columns=datasets)
    table.columns.name = None
    table["avg"] = table[datasets].mean(axis=1, skipna=False)
    return table


@marks_stale
def table3(
    frame: pd.DataFrame, backbone: str, data_size: int, linear_probe: dict[str, str | None]
) -> pd.DataFrame:
    """Table 3: linear-probe top-1 on our datasets and their average; the paper's value beside each
    dataset ``linear_probe`` maps to one of its ten, and the paper's ten-dataset average beside ours (a
    difference for the average only when ours is over the paper's ten)."""
    datasets = list(linear_probe)
    rows = select(frame, LINEAR_PROBE, None, backbone, data_size)
    rows = rows[rows["dataset"].isin(datasets)]
    ours = _linear_probe_percent(rows, ["method"], datasets) if len(rows) else pd.DataFrame()
    ours = ours.reindex(columns=[*datasets, "avg"])
    ours.index.name = "method"
    paper_columns = [*PAPER_TABLE3_DATASETS, "avg"]
    paper = pd.DataFrame.from_dict(PAPER_TABLE3, orient="index", columns=paper_columns)
    paper = pd.DataFrame(
        {
            **{ds: paper[name] if name else np.nan for ds, name in linear_probe.items()},
            "avg": paper["avg"],
        },
        index=paper.index,
    )
    paper.index.name = "method"
    same = [ds for ds, name in linear_probe.items() if same_benchmark(ds, name)]
    if set(same) == set(datasets) == paper_probe_sets():  # our average is over the paper's ten
        same.append("avg")
    return compare(ours, paper, method_order([*ours.index, *paper.index]), same=same)


@marks_stale
def table4(
    frame: pd.DataFrame,
    data_size: int,
    zeroshot: str,
    retrieval: str,
    linear_probe: list[str],
    backbones: dict[str, str | None],
    same_training_data: bool = False,
) -> pd.DataFrame:
    """Table 4: Table 1's columns and the linear-probe average, per backbone, for the methods run on
    every backbone (at the main data size); ``backbones`` maps ours to the paper's RN50 / ViT-B/32.

    The paper's Table 4 was probably trained on 15M pairs (its RN50 CLIP top-1, 21.6, is Fig. 4's 15M
    point), ours on the main data: no ``ours - paper`` rows unless ``same_training_data``."""
    keys = ["backbone", "method"]
    zs = select(frame, ZEROSHOT, zeroshot, data_size=data_size)
    ret = select(frame, RETRIEVAL, retrieval, data_size=data_size)
    probe = select(frame, LINEAR_PROBE, data_size=data_size)
    probe = probe[probe["dataset"].isin(linear_probe)]
    ours = mean_percent(zs, keys, TABLE1_COLUMNS[:3]).join(
        mean_percent(ret, keys, TABLE1_COLUMNS[3:]), how="outer"
    )
    if len(probe) and linear_probe:
        ours = ours.join(
            _linear_probe_percent(probe, keys, list(linear_probe))[["avg"]].rename(
                columns={"avg": "linear_probe_avg"}
            ),
            how="left",
        )
    ours = ours.reindex(columns=TABLE4_COLUMNS)
    present = list(dict.fromkeys([*backbones, *sorted(ours.index.get_level_values(0).unique())]))
    present = [b for b in present if b in ours.index.get_level_values(0) or backbones.get(b)]
    shared = None
    for backbone in present:
        if backbone in ours.index.get_level_values(0):
            methods = set(ours.loc[backbone].index)
            shared = methods if shared is None else shared & methods
    paper_rows = {}
    for backbone in present:
        for (paper_backbone, method), values in PAPER_TABLE4.items():
            if backbones.get(backbone) == paper_backbone:
                paper_rows[(backbone, method)] = values
    if shared is None:
        shared = {method for _, method in paper_rows}
    ours = ours[[method in shared for _, method in ours.index]]
    paper = _paper(paper_rows, TABLE4_COLUMNS, keys)
    methods = method_order([*shared, *(m for _, m in paper_rows)])
    order = [(b, m) for b in present for m in methods]
    same = _same_columns(zeroshot, retrieval, TABLE4_COLUMNS) if same_training_data else []
    if same_training_data and set(linear_probe) == paper_probe_sets():
        same.append("linear_probe_avg")
    return compare(ours, paper, order, same=same)


@marks_stale
def lambda_sweep(
    frame: pd.DataFrame,
    backbone: str,
    data_size: int,
    zeroshot: str,
    retrieval: str,
    method: str = "rankclip",
    hits: ItemHits | None = None,
) -> pd.DataFrame:
    """Fig. 3: zero-shot top-1 and mean R@1 of ``method`` with one lambda swept, the other at 1.

    Keys ``swept`` (``lambda_cross`` or ``lambda_in``) and ``lambda``. The paper plots the sweep without
    printing it; its lambda = 1 point is Table 1's RankCLIP row (top-1, mean of the two R@1). With
    ``hits`` (``load_item_hits``), our rows get each metric's 95% interval (``interval_percent``)."""
    zs = select(frame, ZEROSHOT, zeroshot, backbone, data_size, unit_lambdas=False)
    ret = select(frame, RETRIEVAL, retrieval, backbone, data_size, unit_lambdas=False)
    parts = []
    for swept, fixed in (("lambda_cross", "lambda_in"), ("lambda_in", "lambda_cross")):
        a = zs[(zs["method"] == method) & _at_main(zs, fixed)]
        b = ret[(ret["method"] == method) & _at_main(ret, fixed)]
        part = mean_percent(a, [swept], ["top1"]).join(mean_percent(b, [swept], ["mean_R@1"]), how="outer")
        if hits is not None:
            part = part.join(interval_percent(a, [swept], "top1", hits)).join(
                interval_percent(b, [swept], "mean_R@1", hits)
            )
        part = part.join(seed_count(pd.concat([a, b]), [swept]))
        part.index = pd.MultiIndex.from_tuples(
            [(swept, float(v)) for v in part.index], names=["swept", "lambda"]
        )
        parts.append(part)
    ours = pd.concat(parts).sort_index() if parts else pd.DataFrame()
    values = PAPER_TABLE1.get(method)
    paper_rows = {}
    if values is not None:
        point = (values[0], (values[3] + values[6]) / 2)
        paper_rows = {("lambda_cross", 1.0): point, ("lambda_in", 1.0): point}
    paper = _paper(paper_rows, ["top1", "mean_R@1"], ["swept", "lambda"])
    same = ["top1"] * same_benchmark(zeroshot, "imagenet1k") + ["mean_R@1"] * same_benchmark(
        retrieval, "mscoco"
    )
    return compare(ours, paper, same=same)


@marks_stale
def list_scale_sweep(
    frame: pd.DataFrame, backbone: str, data_size: int, zeroshot: str, retrieval: str
) -> pd.DataFrame:
    """The proposed list-scale ablation: RankCLIP's zero-shot top-1 and mean R@1 by list scale (lambdas
    at 1; the main runs' 1/32 included), keyed ``list_scale``. The paper ran none: no paper rows."""
    zs = select(frame, ZEROSHOT, zeroshot, backbone, data_size, main_list_scale=False)
    ret = select(frame, RETRIEVAL, retrieval, backbone, data_size, main_list_scale=False)
    zs, ret = zs[zs["method"] == "rankclip"], ret[ret["method"] == "rankclip"]
    ours = mean_percent(zs, ["list_scale"], ["top1"]).join(
        mean_percent(ret, ["list_scale"], ["mean_R@1"]), how="outer"
    )
    return compare(ours.sort_index(), _paper({}, ["top1", "mean_R@1"], ["list_scale"]))


def size_label(size: int | None) -> str:
    if size is None:
        return NO_COUNTERPART
    return f"{size / 1e6:g}M" if size >= 1_000_000 else f"{size / 1e3:g}K"


@marks_stale
def data_size_curve(
    frame: pd.DataFrame,
    backbone: str,
    zeroshot: str,
    data_sizes: dict[int, int | None],
    methods: list[str] | None = None,
    hits: ItemHits | None = None,
) -> pd.DataFrame:
    """Fig. 4 (left): zero-shot top-1 by training-set size, keys ``method``, ``data_size`` (ours, or ``-``)
    and ``paper_data_size`` (the paper's size ``data_sizes`` maps ours to, or ``-``); the paper's points
    without a counterpart of ours are kept (paper rows only). With ``hits`` (``load_item_hits``), our rows
    get top-1's 95% interval (``interval_percent``)."""
    rows = select(frame, ZEROSHOT, zeroshot, backbone)
    if methods is None:  # the methods trained at several sizes
        counts = rows.groupby("method")["data_size"].nunique()
        methods = [m for m in counts.index if counts[m] > 1] or list(counts.index)
    rows = rows[rows["method"].isin(methods)]
    ours = mean_percent(rows, ["method", "data_size"], ["top1"])
    if hits is not None:
        ours = ours.join(interval_percent(rows, ["method", "data_size"], "top1", hits))
    ours = ours.join(seed_count(rows, ["method", "data_size"]))
    keyed = {}
    for (method, size), values in ours.iterrows():
        paper_size = data_sizes.get(int(size))
        keyed[(method, int(size), size_label(paper_size))] = values
    paper_rows = {}
    mapped = {v: k for k, v in data_sizes.items() if v is not None}
    for method, curve in PAPER_FIG4.items():
        if method not in methods and methods:
            continue
        for paper_size, value in curve.items():
            size = mapped.get(paper_size, NOT_RUN)
            paper_rows[(method, size, size_label(paper_size))] = value
    names = ["method", "data_size", "paper_data_size"]
    ours = pd.DataFrame(list(keyed.values()), columns=ours.columns, dtype=float)
    ours.index = pd.MultiIndex.from_tuples(list(keyed), names=names) if keyed else pd.Index([])
    paper = _paper({k: (v,) for k, v in paper_rows.items()}, ["top1"], names)

    def sort_key(key):
        method, size, paper_size = key
        paper_value = next((p for p in PAPER_FIG4.get(method, {}) if size_label(p) == paper_size), 0)
        return (
            method_order([*methods, *PAPER_FIG4]).index(method),
            size if isinstance(size, int) else paper_value,
        )

    order = sorted(dict.fromkeys([*keyed, *paper_rows]), key=sort_key)
    return compare(ours, paper, order, same=["top1"] if same_benchmark(zeroshot, "imagenet1k") else [])


def robustness_points(frame: pd.DataFrame, zeroshot: str, shift: str) -> pd.DataFrame:
    """Fig. 4 (right): every run's zero-shot top-1 on ``zeroshot`` and on the shifted ``shift``, percent."""
    frame = prepare(frame)
    info = ["run_id", "method", "backbone", "data_size", "seed", "lambda_cross", "lambda_in", "list_scale"]
    main = frame[(frame["task"] == ZEROSHOT) & (frame["dataset"] == zeroshot)][[*info, "top1"]]
    shifted = frame[(frame["task"] == ZEROSHOT) & (frame["dataset"] == shift)][["run_id", "top1"]]
    points = main.merge(shifted, on="run_id", suffixes=("_main", "_shift"))
    points = points.rename(columns={"top1_main": "zeroshot_top1", "top1_shift": "shift_top1"})
    points[["zeroshot_top1", "shift_top1"]] *= 100
    return points.reset_index(drop=True)


@marks_stale
def robustness_table(
    frame: pd.DataFrame, backbone: str, data_size: int, zeroshot: str, shift: str, benchmark: str
) -> pd.DataFrame:
    """Fig. 4 (right) as numbers for the main runs: top-1 on ``zeroshot`` (ImageNet's role), on ``shift``
    (``benchmark``'s role), and shift minus main (above 0: above the y = x line)."""
    points = robustness_points(frame, zeroshot, shift)
    points = points[
        (points["backbone"] == backbone)
        & (points["data_size"] == data_size)
        & _at_main(points, "lambda_cross")
        & _at_main(points, "lambda_in")
        & _at_main(points, "list_scale")
    ]
    columns = ["zeroshot_top1", "shift_top1", "shift_minus_zeroshot"]
    ours = points.groupby("method", sort=False)[columns[:2]].mean()
    ours[columns[2]] = ours[columns[1]] - ours[columns[0]]
    paper_rows = {
        method: (PAPER_TABLE1[method][0], PAPER_TABLE2[method][benchmark][0])
        for method in PAPER_TABLE1
        if method in PAPER_TABLE2
    }
    paper = pd.DataFrame.from_dict(paper_rows, orient="index", columns=columns[:2])
    paper[columns[2]] = paper[columns[1]] - paper[columns[0]]
    paper.index.name = ours.index.name = "method"
    same_zeroshot, same_shift = same_benchmark(zeroshot, "imagenet1k"), same_benchmark(shift, benchmark)
    same = (
        [columns[0]] * same_zeroshot
        + [columns[1]] * same_shift
        + [columns[2]] * (same_zeroshot and same_shift)
    )
    return compare(ours, paper, method_order([*ours.index, *paper.index]), same=same)


ItemHits = dict[tuple[str, str, str], dict[str, np.ndarray]]


def load_item_hits(results_dir: Path) -> ItemHits:
    """(run_id, task, dataset) -> metric -> per-item hits, from every results JSON below ``results_dir``."""
    return {
        (result.run_id, result.task, result.dataset): {
            metric: unpack_hits(packed) for metric, packed in result.item_hits.items()
        }
        for result in read_results(results_dir)
    }


def interval_percent(rows: pd.DataFrame, keys: list[str], metric: str, hits: ItemHits) -> pd.DataFrame:
    """Per group of ``rows`` by ``keys``: the bootstrap 95% interval over test items (percent) of
    ``metric``, the group's runs (seeds) pooled item by item, as columns ``<metric> low`` and ``<metric>
    high``; ``mean_R@k`` resamples its two directions independently and averages them. A group whose runs
    lack per-item hits gets NaN."""
    directions = (
        [metric.replace("mean_", f"{d}_") for d in ("image_to_text", "text_to_image")]
        if metric.startswith("mean_R@")
        else [metric]
    )
    intervals = {}
    for key, group in rows.groupby(keys, sort=False):
        key = key[0] if len(keys) == 1 and isinstance(key, tuple) else key
        per_direction = []
        for name in directions:
            found = [
                hits.get((run, task, dataset), {}).get(name)
                for run, task, dataset in zip(group["run_id"], group["task"], group["dataset"], strict=True)
            ]
            if any(h is None for h in found) or len({len(h) for h in found}) != 1:
                per_direction = []
                break
            per_direction.append(resampled_means(np.stack(found)))
        if per_direction:
            low, high = percentile_interval(np.mean(per_direction, axis=0))
            intervals[key] = (100 * low, 100 * high)
        else:
            intervals[key] = (np.nan, np.nan)
    table = pd.DataFrame.from_dict(intervals, orient="index", columns=[f"{metric} low", f"{metric} high"])
    if len(keys) > 1:
        table.index = pd.MultiIndex.from_tuples(list(intervals), names=keys)
    else:
        table.index = pd.Index(list(intervals), name=keys[0])
    return table


def uncertainty_table(
    results_dir: Path,
    backbone: str,
    data_size: int,
    benchmarks: list[tuple[str, str, str]],
    reference: str = "clip",
) -> pd.DataFrame:
    """Per (task, dataset, metric) of ``benchmarks`` and method of the main runs, in percent: the mean over
    seeds, its standard deviation and seed count, the bootstrap 95% interval over test items (seeds
    pooled), and the paired difference to ``reference`` on the same items and seeds (``delta [low, high]``,
    ``*`` where the interval excludes 0). From the results' per-item hits (rankclip/eval/uncertainty.py)."""
    results = read_results(results_dir)
    frame = prepare(pd.DataFrame([result.record() for result in results]))
    rows = []
    for task, dataset, metric in benchmarks:
        hits: dict[str, dict[int, np.ndarray]] = {}
        for index, row in select(frame, task, dataset, backbone, data_size).iterrows():
            if metric in results[index].item_hits:
                seed = -1 if pd.isna(row["seed"]) else int(row["seed"])
                hits.setdefault(row["method"], {})[seed] = unpack_hits(results[index].item_hits[metric])
        base = hits.get(reference, {})
        for method in method_order(hits):
            seeds = sorted(hits[method])
            values = np.stack([hits[method][seed] for seed in seeds])
            mean, std, count = seed_spread(values.mean(axis=1))
            low, high = mean_interval(values)
            common = [seed for seed in seeds if seed in base]
            delta = None
            if method != reference and common:
                ours = np.stack([hits[method][seed] for seed in common])
                delta = paired_delta(ours, np.stack([base[seed] for seed in common]))
            rows.append(
                {
                    "benchmark": f"{dataset} {metric}",
                    "method": method,
                    "seeds": count,
                    "mean": 100 * mean,
                    "std": 100 * std,
                    "95% interval": f"[{100 * low:.2f}, {100 * high:.2f}]",
                    f"delta vs {reference}": str(delta) if delta else "-",
                    "excludes 0": bool(delta.excludes_zero) if delta else None,
                }
            )
    return pd.DataFrame(rows)


def table1_uncertainty(uncertainty: pd.DataFrame, reference: str = "clip") -> pd.DataFrame:
    """Table 1 with its uncertainty, from an ``uncertainty_table`` of its metrics: per method a row
    ``mean ± sd`` (over its seeds, percent) and, but for ``reference``, a row ``delta vs <reference>``
    (paired difference [95% interval], ``*`` where it excludes 0); one column per benchmark, plus
    ``seeds``."""
    delta = f"delta vs {reference}"
    rows = []
    for method, part in uncertainty.groupby("method", sort=False):
        spread = {"method": method, "row": "mean ± sd", "seeds": int(part["seeds"].max())}
        differences = {"method": method, "row": f"{delta} [95%]", "seeds": int(part["seeds"].max())}
        for _, row in part.iterrows():
            spread[row["benchmark"]] = f"{row['mean']:.2f} ± {row['std']:.2f}"
            differences[row["benchmark"]] = row[delta]
        rows.append(spread)
        if method != reference:
            rows.append(differences)
    return pd.DataFrame(rows)


@marks_stale
def modality_gap_table(frame: pd.DataFrame, backbone: str, data_size: int, dataset: str) -> pd.DataFrame:
    """Fig. 6: modality gap ||mean(I) - mean(T)|| and mean paired cosine of the main runs (not percent).
    PAPER.md gives no number for them, so there are ``ours`` rows only."""
    rows = select(frame, GAP, dataset, backbone, data_size)
    columns = ["modality_gap", "mean_paired_cosine", "image_centroid_norm", "text_centroid_norm"]
    ours = rows.reindex(columns=["method", *columns]).groupby("method", sort=False)[columns].mean()
    paper = pd.DataFrame(columns=columns, index=pd.Index([], name="method"), dtype=float)
    return compare(ours, paper, method_order(ours.index), decimals=4)


COLLAPSE_NORM = 0.99  # a centroid norm this close to 1: every normalised embedding is about one vector


def collapsed_methods(gap: pd.DataFrame, threshold: float = COLLAPSE_NORM) -> list[str]:
    """The methods of a ``modality_gap_table`` whose image and text embeddings each point one way: both
    centroid norms ||mean(I)||, ||mean(T)|| >= ``threshold`` (the norm of the mean of unit vectors is 1
    exactly when they are all equal). Such a model scores every image against every text alike."""
    ours = gap[gap["source"] == "ours"]
    both = (ours["image_centroid_norm"] >= threshold) & (ours["text_centroid_norm"] >= threshold)
    return list(ours.loc[both, "method"])


# ------------------------------------------------------------------------------------------ artifacts
def results_with_paths(results_dir: Path) -> list[tuple[Path, EvalResult]]:
    """(path, result) for every results JSON below ``results_dir`` (artifacts are relative to the path)."""
    return [(path, read_result(path)) for path in sorted(Path(results_dir).rglob("*.json"))]


def artifact_frame(
    results_dir: Path,
    artifact: str,
    dataset: str | None = None,
    backbone: str | None = None,
    data_size: int | None = None,
    methods: list[str] | None = None,
) -> pd.DataFrame:
    """The CSV artifact ``artifact`` (``umap``, ``retrievals``) of every matching main run, concatenated,
    with the run's ``run_id``, ``method``, ``seed`` and metrics (``metric:<name>``) as extra columns."""
    parts = []
    for path, result in results_with_paths(results_dir):
        if artifact not in result.artifacts:
            continue
        if (
            (dataset is not None and result.dataset != dataset)
            or (backbone is not None and result.backbone != backbone)
            or (data_size is not None and result.data_size != data_size)
            or (methods is not None and result.method not in methods)
            or not has_main_settings(result.train_config)
        ):
            continue
        text = {"key": str, "target_key": str, "caption": str, "modality": str}  # keys like 00000042
        part = pd.read_csv(path.parent / result.artifacts[artifact], keep_default_na=False, dtype=text)
        part.insert(0, "run_id", result.run_id)
        part.insert(1, "method", result.method)
        part.insert(2, "seed", result.seed)
        for name, value in result.metrics.items():
            part[f"metric:{name}"] = value
        parts.append(part)
    if not parts:
        return pd.DataFrame(columns=["run_id", "method", "seed"])
    return pd.concat(parts, ignore_index=True)


def retrieval_summary(examples: pd.DataFrame) -> pd.DataFrame:
    """Fig. 5 as numbers: per method and query, the caption, the rank of its own image (1-based) and
    whether it is in the top 10. The paper shows images only, so there are ``ours`` rows only."""
    if examples.empty:
        return pd.DataFrame(columns=["method", "query", "caption", "target_rank", "in_top10", "top1_score"])
    first = examples.sort_values("rank").groupby(["method", "query"], sort=False).first().reset_index()
    summary = pd.DataFrame(
        {
            "method": first["method"],
            "query": first["query"],
            "caption": first["caption"],
            "target_rank": first["target_rank"].astype(int) + 1,
            "in_top10": first["target_rank"].astype(int) < 10,
            "top1_score": first["score"].astype(float).round(4),
        }
    )
    order = {m: i for i, m in enumerate(method_order(summary["method"]))}
    return summary.sort_values(["query", "method"], key=lambda s: s.map(order) if s.name == "method" else s)


# ------------------------------------------------------------------------------------------ outputs
def plot_intervals(ax, table: pd.DataFrame, x: str, y: str, by: str) -> None:
    """On the matplotlib axes ``ax``, one line per ``by`` group of ``table``: ``y`` against ``x``, its 95%
    interval (columns ``<y> low``, ``<y> high``) as error bars."""
    for label, line in table.groupby(by, sort=False):
        line = line.sort_values(x)
        value, low, high = (line[c].to_numpy(float) for c in (y, f"{y} low", f"{y} high"))
        errors = np.vstack([value - low, high - value])
        ax.errorbar(line[x].to_numpy(), value, yerr=errors, marker="o", capsize=4, label=label)


def _write_text(path: Path, text: str) -> Path:
    return write_atomic_text(path, text, per_process=True)


class ReportOutputs:
    """A notebook's tables (CSV + Markdown) and figures (PNG) in ``out_dir``, listed in order in
    ``index.json`` (title, caption, files), which the HTML report reads."""

    def __init__(self, out_dir: Path, title: str, description: str = ""):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.index: dict[str, Any] = {"title": title, "description": description, "items": []}
        self._save_index()

    def _save_index(self) -> None:
        _write_text(self.out_dir / "index.json", json.dumps(self.index, indent=2) + "\n")

    def _add(self, item: dict[str, Any]) -> None:
        same = (item["kind"], item["name"])
        self.index["items"] = [i for i in self.index["items"] if (i["kind"], i["name"]) != same] + [item]
        self._save_index()

    def table(self, table: pd.DataFrame, name: str, title: str, caption: str = "", decimals: int = 2) -> Path:
        """Write ``name.csv`` and ``name.md`` (a ``compare`` table, or any frame) and list them."""
        csv = _write_text(self.out_dir / f"{name}.csv", table.to_csv(index=False))
        if "source" in table.columns:
            markdown = to_markdown(table, decimals)
        else:
            markdown = _markdown(table, decimals, index=False)
        _write_text(self.out_dir / f"{name}.md", f"**{title}**\n\n{markdown}\n{caption}\n")
        item = {"kind": "table", "name": name, "title": title, "caption": caption, "csv": csv.name}
        if table.attrs.get("stale"):
            item |= {"caption": f"{caption} {STALE_NOTE}".strip(), "stale": table.attrs["stale"]}
        self._add(item | {"md": f"{name}.md", "decimals": decimals})
        return csv

    def figure(self, figure, name: str, title: str, caption: str = "", dpi: int = 110) -> Path:
        """Save a matplotlib figure as ``name.png`` and list it."""
        path = self.out_dir / f"{name}.png"
        with atomic_path(path, per_process=True) as tmp:
            figure.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
        self._add({"kind": "figure", "name": name, "title": title, "caption": caption, "png": path.name})
        return path


# ------------------------------------------------------------------------------------------ tables rule
def write_tables(
    results_dir: Path,
    out_dir: Path,
    backbone: str,
    data_size: int,
    zeroshot: str,
    retrieval: str,
) -> list[Path]:
    """Write ``results.csv`` (every metric) and ``table1.md``; return the paths (written atomically)."""
    frame = collect(results_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _write_text(out_dir / "results.csv", frame.to_csv(index=False)),
        _write_text(
            out_dir / "table1.md", to_markdown(table1(frame, backbone, data_size, zeroshot, retrieval))
        ),
    ]
