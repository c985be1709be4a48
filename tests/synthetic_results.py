"""Synthetic results folders shaped like the demo's (results/<name>/eval/<run id>/<task>-<dataset>.json),
written with rankclip.eval.results' writer, for the report, notebook and HTML report tests."""

from __future__ import annotations

import base64
import io
import re
import zlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from rankclip.code_hash import stage_code_hash
from rankclip.eval.analysis import write_retrieval_examples
from rankclip.eval.results import EvalResult, write_result
from rankclip.eval.uncertainty import pack_hits

BACKBONE, OTHER_BACKBONE, DATA_SIZE = "rankclip-tiny-vit", "rankclip-tiny-rn", 4096
METHODS = ["clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"]
# The demo config's report section (config/config.yaml).
ROLES = {
    "zeroshot": "shapes",
    "retrieval": "shapes_captions",
    "shift": {"shapes_sketch": "imagenet_r"},
    "linear_probe": {"shapes_texture": "dtd", "fashion_mnist": None},
    "backbones": {BACKBONE: "ViT-B/32", OTHER_BACKBONE: "RN50"},
    "data_sizes": {2048: 1000000, 4096: 3000000},
}
RUNS = {"backbone": BACKBONE, "data_size": DATA_SIZE, "data_size_backbone": OTHER_BACKBONE}
# The demo's stand-ins renamed to the paper's own benchmarks (rankclip.report.BENCHMARK_SETS): results
# shaped like the demo's but on the same benchmarks as the paper, so the tables show ``ours - paper``.
PAPER_NAMES = {
    "shapes": "imagenet1k",
    "shapes_captions": "mscoco_karpathy",
    "shapes_sketch": "imagenet_r",
    "shapes_texture": "dtd",
}
PAPER_ROLES = {
    **ROLES,
    "zeroshot": "imagenet1k",
    "retrieval": "mscoco_karpathy",
    "shift": {"imagenet_r": "imagenet_r"},
    "linear_probe": {"dtd": "dtd", "fashion_mnist": None},
}
EVERY_RUN = [("zeroshot", "shapes"), ("zeroshot", "shapes_sketch"), ("retrieval", "shapes_captions")]
BACKBONE_RUNS = [("linear_probe", "shapes_texture"), ("linear_probe", "fashion_mnist")]
MAIN_RUNS = [
    ("linear_probe", "shapes_texture"),
    ("linear_probe", "fashion_mnist"),
    ("zeroshot", "fashion_mnist"),
    ("retrieval", "emoji"),
    ("gap", "shapes_captions"),
]


def run_id(
    method, backbone=BACKBONE, data_size=DATA_SIZE, lambda_cross=1.0, lambda_in=1.0, list_scale=1 / 32, seed=0
) -> str:
    return f"{method}__{backbone}__n{data_size}__lc{lambda_cross}__li{lambda_in}__ls{list_scale}__s{seed}"


def demo_runs(methods=METHODS) -> list[dict]:
    """The demo config's runs (Tables 1-4, Figs. 3-4), ``methods`` at the main backbone and size."""
    main = dict(backbone=BACKBONE, data_size=DATA_SIZE, lambda_cross=1.0, lambda_in=1.0, seed=0)
    runs = [main | dict(method=m) for m in methods]
    runs += [main | dict(method=m, backbone=OTHER_BACKBONE) for m in ("clip", "rankclip")]
    # Fig. 4 on the ResNet (its main-size point: the backbone runs above)
    runs += [main | dict(method=m, backbone=OTHER_BACKBONE, data_size=2048) for m in ("clip", "rankclip")]
    runs += [main | dict(method="rankclip", lambda_cross=v) for v in (3.0,)]
    runs += [main | dict(method="rankclip", lambda_in=v) for v in (3.0,)]
    return runs


def _thumbnail(rng) -> str:
    image = Image.new("RGB", (16, 16), tuple(int(c) for c in rng.integers(0, 255, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _metrics(task: str, rng, quality: float) -> dict[str, float]:
    def frac(scale: float) -> float:
        return float(np.clip(quality * scale + rng.uniform(0, 0.05), 0, 1))

    if task == "zeroshot":
        top1 = frac(0.4)
        return {
            "top1": top1,
            "top3": min(1.0, top1 + 0.1),
            "top5": min(1.0, top1 + 0.2),
            "mean_per_class_top1": top1,
        }
    if task == "retrieval":
        metrics = {}
        for k, scale in ((1, 0.2), (5, 0.5), (10, 0.7)):
            i2t, t2i = frac(scale), frac(scale * 0.8)
            metrics |= {
                f"image_to_text_R@{k}": i2t,
                f"text_to_image_R@{k}": t2i,
                f"mean_R@{k}": (i2t + t2i) / 2,
            }
        return metrics
    if task == "linear_probe":
        top1 = frac(0.8)
        return {"top1": top1, "mean_per_class_top1": top1}
    return {
        "modality_gap": float(0.8 - 0.3 * quality),
        "image_centroid_norm": 0.6,
        "text_centroid_norm": 0.5,
        "mean_paired_cosine": float(0.2 + 0.3 * quality),
    }


def write_synthetic_results(
    results_dir: Path,
    runs: list[dict] | None = None,
    points: int = 20,
    code_hash: str | None = None,
    names: dict[str, str] | None = None,
) -> list[Path]:
    """Results JSONs (and the gap task's UMAP and retrieval-example CSVs) for ``runs`` (default: the
    demo config), one per (run, benchmark) as the workflow asks; RankCLIP scores a little above CLIP.
    ``code_hash``: the evaluation code hash they carry (default: the current one); ``names``: datasets
    renamed (``PAPER_NAMES``: the paper's benchmarks instead of the demo's stand-ins)."""
    runs = demo_runs() if runs is None else runs
    written = []
    for run in runs:
        rid = run_id(**run)
        list_scale = run.get("list_scale", 1 / 32)
        at_main_point = (
            run["data_size"] == DATA_SIZE
            and run["lambda_cross"] == run["lambda_in"] == 1.0
            and list_scale == 1 / 32
        )
        is_main = at_main_point and run["backbone"] == BACKBONE
        is_backbone = at_main_point and run["backbone"] != BACKBONE
        rng = np.random.default_rng(zlib.crc32(rid.encode()))
        quality = 0.5 + 0.1 * ("rank" in run["method"]) + 0.05 * np.log2(run["data_size"] / 1024)
        extra = MAIN_RUNS if is_main else BACKBONE_RUNS if is_backbone else []
        for task, dataset in EVERY_RUN + extra:
            dataset = (names or {}).get(dataset, dataset)
            out = Path(results_dir) / rid / f"{task}-{dataset}.json"
            artifacts = {}
            if task == "gap":
                artifacts = _gap_artifacts(out, rng, points)
            result = EvalResult(
                run_id=rid,
                method=run["method"],
                backbone=run["backbone"],
                data_size=run["data_size"],
                seed=run["seed"],
                train_step=32,
                train_skipped=3 if run["method"] == "alip" else 0,
                train_config={
                    "loss": run["method"],
                    "lambda_cross": run["lambda_cross"],
                    "lambda_in": run["lambda_in"],
                    "list_scale": list_scale,
                },
                checkpoint_path=f"results/demo/runs/{rid}/model.pt",
                checkpoint_sha256=f"{zlib.crc32(rid.encode()):08x}" * 8,
                task=task,
                dataset=dataset,
                dataset_path=f"resources/demo/demo/eval/{dataset}",
                split="test",
                dataset_sha256=f"{zlib.crc32(dataset.encode()):08x}" * 8,
                num_samples=100,
                num_texts=500 if task in ("retrieval", "gap") else None,
                num_classes=64 if task in ("zeroshot", "linear_probe") else None,
                metrics=(metrics := _metrics(task, rng, quality)),
                item_hits=_item_hits(metrics, f"{rid}/{dataset}"),
                artifacts=artifacts,
                code_version="0.1.0+tree.0123456789ab",
                code_hash=stage_code_hash("eval") if code_hash is None else code_hash,
                created_at=datetime(2026, 1, 1, tzinfo=UTC),
                duration_s=1.0,
            )
            written.append(write_result(result, out))
    return written


def _item_hits(metrics: dict[str, float], key: str) -> dict[str, str]:
    """Per-item hits behind the hit-rate metrics (100 images, 500 captions), nested in k, each with its
    metric's rate (to 1 / items), from their own generator (the metrics' draws stay as they were)."""
    order = {"images": np.random.default_rng(zlib.crc32(key.encode())).permutation(100)}
    order["captions"] = np.random.default_rng(zlib.crc32(key.encode()) + 1).permutation(500)
    packed = {}
    for name, value in metrics.items():
        if re.fullmatch(r"top\d+|image_to_text_R@\d+|text_to_image_R@\d+", name):
            items = order["captions" if name.startswith("text_to_image") else "images"]
            hits = np.zeros(len(items), dtype=bool)
            hits[items[: round(value * len(items))]] = True
            packed[name] = pack_hits(hits)
    return packed


def _gap_artifacts(out: Path, rng, points: int) -> dict[str, str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    umap = out.with_suffix(".umap.csv")
    lines = ["x,y,modality,pair,key"]
    for modality, shift in (("image", 0.0), ("text", 3.0)):
        for pair in range(points):
            x, y = (float(v) for v in rng.normal(shift, 1.0, 2))
            lines.append(f"{x!r},{y!r},{modality},{pair},{pair:08d}")
    umap.write_text("\n".join(lines) + "\n")
    rows = []
    for query in range(3):
        target = query * 7
        for rank in range(10):
            image = target if rank == query else 50 + rank
            rows.append(
                {
                    "query": query,
                    "caption": f"a red {['circle', 'square', 'star'][query]}",
                    "target": target,
                    "target_key": f"{target:08d}",
                    "target_rank": query,
                    "rank": rank,
                    "image": image,
                    "key": f"{image:08d}",
                    "score": 0.9 - 0.05 * rank,
                    "hit": image == target,
                    "thumbnail": _thumbnail(rng),
                }
            )
    retrievals = write_retrieval_examples(rows, out.with_suffix(".retrievals.csv"))
    return {"umap": umap.name, "retrievals": retrievals.name}
