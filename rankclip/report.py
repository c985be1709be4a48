"""Tables from the results JSONs: every metric in one CSV, and the paper's Table 1 layout in Markdown."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rankclip.eval.results import results_frame

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
METHOD_ORDER = ["clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"]


def collect(results_dir: Path) -> pd.DataFrame:
    """One row per results file below ``results_dir``."""
    paths = sorted(Path(results_dir).rglob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no results JSON below {results_dir}")
    return results_frame(paths)


def table1(frame: pd.DataFrame, backbone: str, data_size: int, zeroshot: str, retrieval: str) -> pd.DataFrame:
    """Main runs: zero-shot top-1/3/5 on ``zeroshot`` and Recall@1/5/10 on ``retrieval``, in percent,
    averaged over seeds, with the paper's row beside each method it reports."""
    main = frame[(frame["backbone"] == backbone) & (frame["data_size"] == data_size)]
    main = main[(main.get("lambda_cross", 1.0) == 1.0) & (main.get("lambda_in", 1.0) == 1.0)]
    parts = [
        main[(main["task"] == "zeroshot") & (main["dataset"] == zeroshot)][
            ["method", "top1", "top3", "top5"]
        ],
        main[(main["task"] == "retrieval") & (main["dataset"] == retrieval)][["method", *TABLE1_COLUMNS[3:]]],
    ]
    ours = pd.concat([part.groupby("method").mean() for part in parts], axis=1) * 100
    ours = ours.reindex([m for m in METHOD_ORDER if m in ours.index])[TABLE1_COLUMNS]
    paper = pd.DataFrame.from_dict(PAPER_TABLE1, orient="index", columns=TABLE1_COLUMNS)
    rows = []
    for method, values in ours.iterrows():
        rows.append(pd.Series(values, name=f"{method} (ours)"))
        if method in paper.index:
            rows.append(pd.Series(paper.loc[method], name=f"{method} (paper)"))
    return pd.DataFrame(rows).round(2)


def write_tables(
    results_dir: Path,
    out_dir: Path,
    backbone: str,
    data_size: int,
    zeroshot: str = "shapes",
    retrieval: str = "shapes_captions",
) -> list[Path]:
    """Write ``results.csv`` (every metric) and ``table1.md``; return the paths (written atomically)."""
    frame = collect(results_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("results.csv", frame.to_csv(index=False)),
        ("table1.md", table1(frame, backbone, data_size, zeroshot, retrieval).to_markdown() + "\n"),
    ):
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out_dir / name)
        written.append(out_dir / name)
    return written
