"""Which demo setting makes the models learn: a CLIP run of the demo with one setting changed at a time.

    python benchmarks/demo_sweep.py                          # every variant, seed 0 (~15 min on 2 cores)
    python benchmarks/demo_sweep.py --variants baseline "tiny ResNet" --seeds 0 1 2
    python benchmarks/demo_sweep.py --variants "32 px" --num-train 512 --epochs 1     # a quick look

Renders the demo corpus (``rankclip data make-demo``, config/config.yaml's sizes; a second one for the
variants at another image size), trains each variant with ``rankclip train`` (the baseline: the demo's flags
until 2026-12-06, tiny ViT, 64 px, global batch 128, lr 1e-3, 20 warm-up steps, 5 epochs, CLIP's loss; the
variant "tiny ResNet, 32 px, 3 epochs" is the demo's setting since) and prints, per variant and seed:
training seconds, zero-shot top-1 on the demo's 64-class set (chance 1.6%) and image->text / text->image
R@1 on its 500-image retrieval set (chance 0.2%), then, per variant over seeds, their mean and standard
deviation: the seed-to-seed spread that a method's difference must exceed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEMO = {"seed": "0", "num-train": "4096", "num-eval": "500", "image-size": "64", "shard-size": "512"}
BASE = {  # the demo's training flags until 2026-12-06 (config/config.yaml's now: the last variant)
    "model": "rankclip-tiny-vit",
    "loss": "clip",
    "batch-size": "128",
    "lr": "0.001",
    "warmup-steps": "20",
    "epochs": "5",
    "shuffle-buffer": "1000",
}
VARIANTS: dict[str, dict[str, str]] = {  # one change each against BASE ("image-size": the corpus's)
    "baseline": {},
    "tiny ResNet": {"model": "rankclip-tiny-rn"},
    "lr 3e-3": {"lr": "0.003"},
    "10 epochs": {"epochs": "10"},
    "32 px": {"image-size": "32"},
    "tiny ResNet, 32 px": {"model": "rankclip-tiny-rn", "image-size": "32"},
    "batch 64": {"batch-size": "64"},
    "tiny ResNet, 32 px, 3 epochs": {"model": "rankclip-tiny-rn", "image-size": "32", "epochs": "3"},
}
COLUMNS = ["variant", "seed", "train s", "zero-shot top-1", "I->T R@1", "T->I R@1"]


def rankclip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "rankclip.cli", *args], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"rankclip {' '.join(args)} failed:\n{result.stderr[-2000:]}")


def corpus(work: Path, image_size: str, num_train: int) -> Path:
    """The demo corpus at ``image_size`` with ``num_train`` training pairs, rendered once."""
    root = work / f"demo-{num_train}x{image_size}px"
    if not (root / "manifest.json").is_file():
        flags = [f"--{k}={v}" for k, v in (DEMO | {"image-size": image_size, "num-train": num_train}).items()]
        rankclip("data", "make-demo", "--out", str(root), *flags)
    return root


def evaluate(checkpoint: Path, root: Path, cache: Path) -> dict[str, float]:
    from rankclip.eval.evaluator import Evaluator

    evaluator = Evaluator(checkpoint, cache_dir=cache, progress=False, workers=0)
    zeroshot = evaluator.zeroshot(root / "eval" / "zeroshot").metrics
    retrieval = evaluator.retrieval(root / "eval" / "retrieval").metrics
    return {
        "zero-shot top-1": 100 * zeroshot["top1"],
        "I->T R@1": 100 * retrieval["image_to_text_R@1"],
        "T->I R@1": 100 * retrieval["text_to_image_R@1"],
    }


def run(name: str, seed: int, work: Path, num_train: int, epochs: int | None) -> dict[str, float | str]:
    """Train variant ``name`` with ``seed`` (``epochs``: instead of the variant's) and evaluate it."""
    flags = BASE | {k: v for k, v in VARIANTS[name].items() if k != "image-size"} | {"seed": str(seed)}
    flags |= {"epochs": str(epochs)} if epochs else {}
    root = corpus(work, VARIANTS[name].get("image-size", DEMO["image-size"]), num_train)
    slug = name.replace(" ", "_").replace(",", "")
    out = work / "runs" / f"{slug}-n{num_train}-e{flags['epochs']}-s{seed}"
    started = time.perf_counter()
    shards = sorted((root / "train").glob("shard-*.tar"))
    rankclip(
        "train", *[f"--{k}={v}" for k, v in flags.items()], "--train-data", "::".join(map(str, shards)),
        "--train-num-samples", str(num_train), "--output-dir", str(out), "--workers", "2",
        "--progress", "false", "--tensorboard", "false",
    )  # fmt: skip
    seconds = time.perf_counter() - started
    return {
        "variant": name,
        "seed": seed,
        "train s": seconds,
        **evaluate(out / "model.pt", root, work / "cache"),
    }


def table(rows: list[dict], columns: list[str]) -> str:
    def cell(value) -> str:
        return f"{value:.1f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    return "\n".join(lines + ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows])


def summary(rows: list[dict]) -> list[dict]:
    """Per variant: mean ± sd over seeds of every metric (sd needs two seeds)."""
    out = []
    for name in dict.fromkeys(row["variant"] for row in rows):
        mine = [row for row in rows if row["variant"] == name]
        entry: dict[str, str | int] = {"variant": name, "seeds": len(mine)}
        for metric in COLUMNS[2:]:
            values = [float(row[metric]) for row in mine]
            sd = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            entry[metric] = f"{statistics.mean(values):.1f}{sd}"
        out.append(entry)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--work", type=Path, default=None, help="keep corpora and runs here (default: temp)")
    parser.add_argument("--num-train", type=int, default=int(DEMO["num-train"]), help="training pairs")
    parser.add_argument("--epochs", type=int, default=None, help="every variant's epochs (default: theirs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="demo-sweep-") as temporary:
        work = args.work or Path(temporary)
        rows = []
        for name in args.variants:
            for seed in args.seeds:
                rows.append(run(name, seed, work, args.num_train, args.epochs))
                print(table(rows[-1:], COLUMNS).splitlines()[-1], flush=True)
    print()
    print(table(rows, COLUMNS))
    if len(args.seeds) > 1:
        print()
        print(table(summary(rows), ["variant", "seeds", *COLUMNS[2:]]))


if __name__ == "__main__":
    main()
