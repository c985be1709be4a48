"""One self-contained HTML report: every table and figure the notebooks wrote, with provenance.

``build_report`` starts with a "Protocol" table (``rankclip.protocol``: every setting, the paper's beside
this run's, each difference highlighted with its reason), then reads each notebook output folder's
``index.json`` (written by ``rankclip.report.ReportOutputs``) and embeds, in order, its tables (from the
CSV; the paper's rows and the differences styled apart) and figures (PNG as base64 ``data:`` URIs),
then the provenance: the code version (``rankclip.__version__`` + git tree hash) of the report and of
every result, the config used, the data versions (the hashes of DVC-tracked data where ``.dvc`` files
exist, else content hashes of the data folders, plus the ``dataset_sha256`` of every evaluated dataset)
and the runs with their checkpoint hashes. Nothing is fetched when the file is opened: no scripts, no
external style sheets or images.

    rankclip report html --notebooks results/demo/report/tables ... --results-dir results/demo/eval \\
        --config-json "$(cat config.json)" --data-dir resources/demo --out results/demo/report.html
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rankclip.atomic import write_atomic_text
from rankclip.code_hash import stage_code_hash
from rankclip.hashing import code_version, sha256_file, sha256_json
from rankclip.protocol import protocol_rows
from rankclip.report import STALE_MARK, key_columns, results_with_paths

__all__ = ["build_report", "data_versions", "dvc_outputs", "folder_hash"]

SKIP_DIRS = {".git", ".dvc", ".venv", "venv", ".snakemake", "node_modules", "__pycache__", ".pytest_cache"}
MAX_HASH_BYTES = 4 << 30  # folders above this are listed, not hashed (track them with DVC instead)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1400px;
       padding: 0 1.5em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #bbb; }
h3 { margin-top: 1.6em; }
nav ul { columns: 2; }
table { border-collapse: collapse; margin: .6em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; white-space: nowrap; }
div.scroll { overflow-x: auto; max-width: 100%; }
th { background: #eee; position: sticky; top: 0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.src-paper td { background: #f3f3f3; color: #555; }
tr.src-diff td { background: #fbfbf4; font-style: italic; }
td.pos { color: #17702a; } td.neg { color: #b3261e; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption, p.caption { color: #555; font-size: 13px; max-width: 1100px; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 12px; }
.meta { color: #555; }
code { background: #f2f2f2; padding: 0 .2em; }
#protocol td { white-space: normal; max-width: 420px; vertical-align: top; }
#protocol tr.differs td { background: #fff1d6; }
#protocol tr.differs td.differs-flag { color: #b3261e; font-weight: bold; }
#protocol tr.unknown td.differs-flag { color: #777; }
#protocol td.source { color: #666; font-size: 12px; }
"""


# ------------------------------------------------------------------------------------------ data versions
def _walk(root: Path):
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(files):
            yield Path(folder) / name


def _dvc_digest(out: dict) -> str:
    return str(out.get("md5") or out.get("etag") or out.get("checksum") or "?")


def dvc_outputs(workdir: Path) -> list[dict[str, Any]]:
    """The outputs recorded in every ``*.dvc`` pointer file below ``workdir``: path, hash, size, files."""
    rows = []
    for pointer in _walk(Path(workdir)):
        if pointer.suffix != ".dvc" or not pointer.is_file():
            continue
        try:
            data = yaml.safe_load(pointer.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ValueError(f"{pointer}: not a readable DVC pointer file: {error}") from None
        for out in data.get("outs") or []:
            rows.append(
                {
                    "path": os.path.normpath(os.path.relpath(pointer.parent / out["path"], workdir)),
                    "pointer": os.path.relpath(pointer, workdir),
                    "hash": f"{out.get('hash', 'md5')}:{_dvc_digest(out)}",
                    "size": out.get("size"),
                    "files": out.get("nfiles", 1),
                }
            )
    return rows


def folder_hash(folder: Path, memo: Path | None = None, max_bytes: int = MAX_HASH_BYTES) -> dict[str, Any]:
    """sha256 over the names and sha256s of every file below ``folder`` (sorted); above ``max_bytes``
    the folder is not hashed (``sha256`` None) and only its file count and size are given."""
    files = [path for path in _walk(folder) if path.is_file()]
    size = sum(path.stat().st_size for path in files)
    row = {"path": str(folder), "files": len(files), "size": size, "sha256": None}
    if size <= max_bytes:
        entries = [[str(path.relative_to(folder)), sha256_file(path, memo)] for path in files]
        row["sha256"] = sha256_json({"format": "folder/1", "files": entries})
    return row


def data_versions(
    workdir: Path, data_dir: Path | None, memo: Path | None = None, max_bytes: int = MAX_HASH_BYTES
) -> dict[str, list[dict[str, Any]]]:
    """``dvc``: DVC-tracked outputs; ``folders``: content hashes of ``data_dir``'s folders that DVC does
    not track (each dataset or corpus the workflow made or downloaded)."""
    workdir = Path(workdir)
    dvc = dvc_outputs(workdir)
    tracked = {Path(workdir, row["path"]).resolve() for row in dvc}
    folders = []
    if data_dir is not None and Path(data_dir).is_dir():
        for folder in sorted(p for p in Path(data_dir).iterdir() if p.is_dir() and p.name not in SKIP_DIRS):
            resolved = folder.resolve()
            if any(resolved == t or t in resolved.parents or resolved in t.parents for t in tracked):
                continue
            folders.append(folder_hash(folder, memo, max_bytes))
    return {"dvc": dvc, "folders": folders}


# ------------------------------------------------------------------------------------------ HTML pieces
def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _text(value: str) -> str:
    """Escaped text with Markdown's `code` spans as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(value))


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _size(size: Any) -> str:
    if _is_missing(size):
        return "-"
    size = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def _cell(value: Any, decimals: int, diff: bool = False) -> str:
    if _is_missing(value):
        return '<td class="num">-</td>'
    if isinstance(value, bool):
        return f"<td>{_esc(value)}</td>"
    if isinstance(value, int | float):
        sign = " pos" if diff and value > 0 else " neg" if diff and value < 0 else ""
        text = f"{value:+.{decimals}f}" if diff else f"{value:.{decimals}f}"
        if isinstance(value, int) and not diff:
            text = str(value)
        return f'<td class="num{sign}">{text}</td>'
    return f"<td>{_esc(value)}</td>"


def table_html(frame: pd.DataFrame, decimals: int = 2, table_id: str = "", stale=()) -> str:
    """A results table; a ``compare`` table (with ``source``) gets its paper and difference rows styled;
    ``stale``: [row position, column] of cells made by older evaluation code, marked ``STALE_MARK``."""
    marked = {(position, column) for position, column in stale}
    has_source = "source" in frame.columns
    keys = key_columns(frame) if has_source else []
    head = "".join(f"<th>{_esc(c)}</th>" for c in frame.columns)
    rows = []
    for position, record in enumerate(frame.to_dict("records")):
        source = record.get("source") if has_source else None
        kind = {"ours": "ours", "paper": "paper"}.get(source, "diff") if has_source else ""
        cells = []
        for column in frame.columns:
            value = record[column]
            if isinstance(value, float) and value.is_integer() and column in keys:
                value = int(value)
            is_value = has_source and column not in keys and column != "source"
            cell = _cell(value, decimals, diff=is_value and kind == "diff")
            if (position, column) in marked:
                cell = cell.replace("</td>", f'<sup class="stale">{STALE_MARK}</sup></td>')
            cells.append(cell)
        rows.append(
            f'<tr class="src-{kind}">' + "".join(cells) + "</tr>"
            if kind
            else "<tr>" + "".join(cells) + "</tr>"
        )
    ident = f' id="{_esc(table_id)}"' if table_id else ""
    table = f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _records_table(records: list[dict[str, Any]], columns: list[str], table_id: str) -> str:
    if not records:
        return '<p class="meta">none</p>'
    return table_html(pd.DataFrame(records, columns=columns), table_id=table_id)


def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _notebook_section(folder: Path) -> tuple[str, str, str]:
    """(anchor, title, HTML) of one notebook's outputs, from its ``index.json``."""
    index_path = folder / "index.json"
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{index_path}: cannot read the notebook's output index: {error}") from None
    anchor = f"nb-{folder.name}"
    parts = [f'<section id="{_esc(anchor)}"><h2>{_esc(index["title"])}</h2>']
    if index.get("description"):
        parts.append(f'<p class="meta">{_text(index["description"])}</p>')
    for item in index["items"]:
        ident = f"{item['kind']}-{folder.name}-{item['name']}"
        parts.append(f"<h3>{_esc(item['title'])}</h3>")
        if item["kind"] == "table":
            try:
                frame = pd.read_csv(folder / item["csv"])
            except pd.errors.EmptyDataError:  # a table with no columns at all
                frame = pd.DataFrame()
            parts.append(table_html(frame, int(item.get("decimals", 2)), ident, item.get("stale", ())))
            if item.get("caption"):
                parts.append(f'<p class="caption">{_text(item["caption"])}</p>')
        elif item["kind"] == "figure":
            caption = f"<figcaption>{_text(item['caption'])}</figcaption>" if item.get("caption") else ""
            parts.append(
                f'<figure id="{_esc(ident)}"><img src="{_png(folder / item["png"])}" '
                f'alt="{_esc(item["title"])}">{caption}</figure>'
            )
        else:
            raise ValueError(f"{index_path}: item {item['name']!r} has unknown kind {item['kind']!r}")
    parts.append("</section>")
    return anchor, index["title"], "\n".join(parts)


def _protocol(config: dict | None, results: list) -> str:
    """The "Protocol" section: the paper's settings beside this run's, differences highlighted."""
    parts = ["<section id=\"protocol-section\"><h2>Protocol: the paper's settings beside this run's</h2>"]
    if not config:
        parts.append('<p class="meta">no config given</p></section>')
        return "\n".join(parts)
    rows = protocol_rows(config, results)
    differing = [row for row in rows if row["differs"]]
    unexplained = [row["setting"] for row in differing if not row["reason"]]
    summary = f"{len(differing)} of {len(rows)} settings differ from the paper (highlighted)"
    if unexplained:
        summary += f"; without a recorded reason (add one under report.reasons): {', '.join(unexplained)}"
    parts.append(
        f'<p class="meta">{_esc(summary)}. Values from the runs\' stored settings where results exist, '
        "else from the config. <code>ours - paper</code> rows appear only where our benchmark is the "
        "paper's own; for a stand-in the paper's number is shown for reference.</p>"
    )
    columns = ("setting", "paper", "this run", "differs", "reason", "from", "paper source")
    head = "".join(f"<th>{name}</th>" for name in columns)
    body = []
    for row in rows:
        kind, flag = {True: ("differs", "yes"), False: ("same", "no"), None: ("unknown", "?")}[row["differs"]]
        cells = [
            f"<td>{_esc(row['setting'])}</td>",
            f"<td>{_esc(row['paper'])}</td>",
            f"<td>{_text(row['ours'])}</td>",
            f'<td class="differs-flag">{flag}</td>',
            f"<td>{_text(row['reason']) if row['reason'] else ('-' if row['differs'] is False else '')}</td>",
            f"<td>{_esc(row['ours_from'])}</td>",
            f'<td class="source">{_esc(row["paper_source"])}</td>',
        ]
        body.append(f'<tr class="{kind}" data-key="{_esc(row["key"])}">' + "".join(cells) + "</tr>")
    parts.append(
        f'<div class="scroll"><table id="protocol"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div></section>"
    )
    return "\n".join(parts)


def _provenance(
    results_dir: Path | None,
    config: dict | None,
    versions: dict[str, list[dict[str, Any]]],
) -> str:
    results = (
        results_with_paths(results_dir) if results_dir is not None and Path(results_dir).is_dir() else []
    )
    parts = ['<section id="provenance"><h2>Provenance</h2>', "<h3>Code</h3><ul>"]
    parts.append(f"<li>report built with rankclip <code>{_esc(code_version())}</code></li>")
    for version, count in sorted(Counter(r.code_version for _, r in results).items()):
        parts.append(f"<li>{count} result(s) computed with rankclip <code>{_esc(version)}</code></li>")
    current = stage_code_hash("eval")
    parts.append(f"<li>current evaluation code: <code>{current}</code> (rankclip/code_hash.py)</li>")
    stale = [path for path, r in results if r.code_hash != current]
    if stale:
        parts.append(
            f'<li class="stale">{len(stale)} result(s) made by other evaluation code; the numbers made '
            f"from them are marked {STALE_MARK}: "
            + ", ".join(f"<code>{_esc(Path(p).relative_to(results_dir))}</code>" for p in stale)
            + "</li>"
        )
    parts.append("</ul>")
    parts.append("<h3>Configuration</h3>")
    if config:
        parts.append(f'<pre id="config">{_esc(yaml.safe_dump(config, sort_keys=False, width=110))}</pre>')
    else:
        parts.append('<p class="meta">not given</p>')
    parts.append("<h3>Data versions</h3>")
    if versions["dvc"]:
        parts.append("<p>DVC-tracked data (hash from the <code>.dvc</code> pointer files):</p>")
        rows = [row | {"size": _size(row["size"])} for row in versions["dvc"]]
        parts.append(_records_table(rows, ["path", "pointer", "hash", "size", "files"], "data-dvc"))
    if versions["folders"]:
        parts.append("<p>Content hashes of the data folders (sha256 over every file's name and sha256):</p>")
        rows = [
            row
            | {
                "size": _size(row["size"]),
                "sha256": row["sha256"] or "not hashed (too large: track with DVC)",
            }
            for row in versions["folders"]
        ]
        parts.append(_records_table(rows, ["path", "files", "size", "sha256"], "data-folders"))
    if not versions["dvc"] and not versions["folders"]:
        parts.append('<p class="meta">no .dvc files and no data folder given</p>')
    evaluated: dict[tuple, set] = {}
    for _, result in results:
        evaluated.setdefault(
            (result.dataset, result.split, result.dataset_path, result.dataset_sha256), set()
        ).add(result.run_id)
    parts.append("<p>Evaluated datasets (<code>dataset_sha256</code> of the results):</p>")
    rows = [
        {"dataset": d, "split": s, "path": p, "dataset_sha256": h, "runs": len(runs)}
        for (d, s, p, h), runs in sorted(evaluated.items())
    ]
    parts.append(
        _records_table(rows, ["dataset", "split", "path", "dataset_sha256", "runs"], "data-evaluated")
    )
    runs: dict[str, dict[str, Any]] = {}
    for _, result in results:
        runs.setdefault(
            result.run_id,
            {
                "run_id": result.run_id,
                "method": result.method,
                "backbone": result.backbone,
                "data_size": result.data_size,
                "seed": result.seed,
                "global_batch": result.train_config.get("batch_size"),
                "train_step": result.train_step,
                "skipped": result.train_skipped,
                "checkpoint_sha256": result.checkpoint_sha256[:16],
                "results": 0,
            },
        )["results"] += 1
    parts.append("<h3>Runs</h3>")
    columns = [
        "run_id",
        "method",
        "backbone",
        "data_size",
        "seed",
        "global_batch",
        "train_step",
        "skipped",
        "checkpoint_sha256",
        "results",
    ]
    parts.append(_records_table(list(runs.values()), columns, "runs"))
    parts.append("</section>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------ the report
def build_report(
    notebooks: list[Path],
    out: Path,
    results_dir: Path | None = None,
    config: dict | None = None,
    data_dir: Path | None = None,
    workdir: Path = Path("."),
    hash_memo: Path | None = None,
    title: str = "RankCLIP reproduction: results beside the paper",
    max_hash_bytes: int = MAX_HASH_BYTES,
) -> Path:
    """Write the self-contained report to ``out`` (atomically) and return its path."""
    sections = [_notebook_section(Path(folder)) for folder in notebooks]
    results = (
        [r for _, r in results_with_paths(results_dir)]
        if results_dir is not None and Path(results_dir).is_dir()
        else []
    )
    versions = data_versions(workdir, data_dir, hash_memo, max_hash_bytes)
    name = (config or {}).get("name", "")
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = "<li><a href=\"#protocol-section\">Protocol: the paper's settings beside this run's</a></li>"
    nav += "".join(f'<li><a href="#{_esc(a)}">{_esc(t)}</a></li>' for a, t, _ in sections)
    nav += '<li><a href="#provenance">Provenance: code, config, data, runs</a></li>'
    body = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="meta">Config <code>{_esc(name or "?")}</code> · built {created} · rankclip '
        f"<code>{_esc(code_version())}</code>. Every table puts the paper's number (PAPER.md) beside "
        "ours, and the difference (ours - paper) where our benchmark is the paper's own (not for a "
        "stand-in); grey rows: the paper, italic rows: the difference.</p>",
        f"<nav><h2>Contents</h2><ul>{nav}</ul></nav>",
        _protocol(config, results),
        *(section for _, _, section in sections),
        _provenance(results_dir, config, versions),
        "</body></html>",
    ]
    return write_atomic_text(out, "\n".join(body) + "\n", per_process=True)
