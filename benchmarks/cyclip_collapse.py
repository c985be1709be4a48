"""Why CyCLIP collapses in the demo: the demo's CyCLIP run with one setting changed at a time.

    python benchmarks/cyclip_collapse.py                   # the demo's numbers (~15 min on 2 cores)
    python benchmarks/cyclip_collapse.py --epochs 1 --num-train 1024 --variants baseline clip

Renders the demo corpus (``rankclip data make-demo``, config/config.yaml's sizes), trains each variant with
``rankclip train`` (the demo's flags: tiny ViT, global batch 128, lr 1e-3, 20 warm-up steps, 5 epochs,
CyCLIP's λ_in = λ_cross = 0.25) and prints, per variant: the CLIP term at its last log line beside ln B
(chance: every pair equally likely), the two CyCLIP terms, and how collapsed the embeddings are: the mean
off-diagonal cosine between the image features (and between the text features) of the demo's retrieval
set, for the initial weights and the trained ones (1.0 = every input maps to one direction); then the same
for the paper's backbones at their initial weights.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

BASE = {  # the demo's training flags (config/config.yaml) and CyCLIP's λs (PAPER.md)
    "model": "rankclip-tiny-vit",
    "loss": "cyclip",
    "batch-size": "128",
    "lr": "0.001",
    "warmup-steps": "20",
    "cyclip-lambda-in": "0.25",
    "cyclip-lambda-cross": "0.25",
}
COLUMNS = ["variant", "CLIP term (ln B)", "CyCLIP in", "CyCLIP cross", "image cos init -> end"]
COLUMNS += ["text cos init -> end"]
VARIANTS = {  # one change each against BASE
    "baseline": {},
    "clip": {"loss": "clip"},
    "lambda 0.05": {"cyclip-lambda-in": "0.05", "cyclip-lambda-cross": "0.05"},
    "lambda 0.01": {"cyclip-lambda-in": "0.01", "cyclip-lambda-cross": "0.01"},
    "in-modal only": {"cyclip-lambda-cross": "0"},
    "cross-modal only": {"cyclip-lambda-in": "0"},
    "warm-up 80": {"warmup-steps": "80"},
    "lr 1e-4": {"lr": "0.0001"},
    "batch 32": {"batch-size": "32"},
    "tiny ResNet": {"model": "rankclip-tiny-rn"},
}


def rankclip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "rankclip.cli", *args], check=True, capture_output=True, text=True)


def mean_offdiagonal_cosine(features) -> float:
    import torch.nn.functional as F

    unit = F.normalize(features.float(), dim=-1)
    gram, n = unit @ unit.T, len(unit)
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


def collapse(checkpoint: Path, retrieval: Path, cache: Path) -> tuple[float, float]:
    """Mean off-diagonal cosine of the image and of the text features of the retrieval set's test split."""
    from rankclip.eval.datasets import WdsSplit
    from rankclip.eval.embeddings import Encoder

    split = Encoder(checkpoint, cache=cache, progress=False).split_embeddings(WdsSplit(retrieval, "test"))
    return mean_offdiagonal_cosine(split.images(False)), mean_offdiagonal_cosine(split.texts(False))


def initial_checkpoint(model_name: str, seed: int, path: Path) -> Path:
    """The weights ``rankclip train --seed`` starts from (same seed, same constructor), written once."""
    if path.is_file():
        return path
    import torch

    from rankclip.checkpoint import atomic_save
    from rankclip.models import create_model

    torch.manual_seed(seed)
    model = create_model(model_name)[0]
    return atomic_save({"state_dict": model.state_dict(), "model_name": model_name, "step": 0}, path)


def last_terms(metrics: Path) -> dict:
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return lines[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--work-dir", type=Path, help="keep data and runs here (default: temporary)")
    parser.add_argument("--num-train", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--init-models", nargs="*", default=["ViT-B-32", "RN50"], help="also: initial collapse of these"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work_dir or Path(scratch)
        data = work / "demo"
        if not (data / "train").is_dir():
            sizes = ["--num-train", str(args.num_train), "--shard-size", str(args.num_train // 8)]
            rankclip(
                "data", "make-demo", "--out", str(data), "--num-eval", "500", "--image-size", "64", *sizes
            )
        stems = sorted(path.stem for path in (data / "train").glob("shard-*.tar"))
        shards = f"{data / 'train'}/shard-{{{stems[0][6:]}..{stems[-1][6:]}}}.tar"
        retrieval, cache = data / "eval" / "retrieval", work / "embeddings"
        print(f"| {' | '.join(COLUMNS)} |\n| {' | '.join('---' for _ in COLUMNS)} |")
        for name in args.variants:
            flags = BASE | VARIANTS[name]
            out = work / "runs" / name.replace(" ", "_")
            if not (out / "model.pt").is_file():
                command = ["train", "--train-data", shards, "--train-num-samples", str(args.num_train)]
                command += ["--output-dir", str(out), "--epochs", str(args.epochs), "--seed", str(args.seed)]
                command += ["--workers", "2", "--progress", "False", "--log-every-steps", "8"]
                rankclip(*command, *(item for key, value in flags.items() for item in (f"--{key}", value)))
            terms = last_terms(out / "metrics.jsonl")
            start = initial_checkpoint(flags["model"], args.seed, work / "init" / f"{flags['model']}.pt")
            init, end = (collapse(path, retrieval, cache) for path in (start, out / "model.pt"))
            cells = [name, f"{terms['clip']:.3f} ({math.log(int(flags['batch-size'])):.3f})"]
            cells += [f"{terms.get(term, 0.0):.4f}" for term in ("cyclip_in", "cyclip_cross")]
            cells += [f"{init[i]:.3f} -> {end[i]:.3f}" for i in (0, 1)]
            print(f"| {' | '.join(cells)} |", flush=True)
        for model in args.init_models:  # the paper's backbones at their initial weights, on the same images
            start = initial_checkpoint(model, args.seed, work / "init" / f"{model}.pt")
            image, text = collapse(start, retrieval, cache)
            print(f"{model} at its initial weights: image cos {image:.3f}, text cos {text:.3f}", flush=True)


if __name__ == "__main__":
    main()
