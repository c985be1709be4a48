"""Wall time of our evaluation of one checkpoint against clip_benchmark 1.6.2 on the same tasks.

    python benchmarks/eval.py                                   # tiny ViT, demo eval sets of 1000 images
    python benchmarks/eval.py --model ViT-B-32 --num-eval 5000 --workers 8     # on a GPU machine

Tasks timed on both sides: zero-shot classification on ``eval/zeroshot`` and ``eval/zeroshot_shift``
(64 classes x 6 templates) and retrieval on ``eval/retrieval`` (5 captions per image). Both load the
checkpoint (clip_benchmark through ``local-dir:``), read the same shards with the same batch size and
workers, fp32. "ours (cold)" starts from an empty embedding cache; "ours (warm)" is a second run
reading the cache (what every metric added later costs). Each side runs ``--repeats`` times,
alternating, and keeps its best time. The linear probe and the modality gap are timed for us only:
clip_benchmark's linear probe refuses a CPU (``assert device == 'cuda'``) and it has no modality gap.
The metrics of both sides are compared and the largest difference is printed (0 up to float32
rounding of clip_benchmark's recalls).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def make_inputs(work: Path, model_name: str, num_eval: int, seed: int) -> tuple[Path, Path]:
    import torch

    from rankclip.checkpoint import atomic_save
    from rankclip.demo_data.shapes import make_demo
    from rankclip.models import create_model

    demo = work / "demo"
    shard_size = max(1, num_eval // 8)  # 8 shards: enough for clip_benchmark's wds workers
    make_demo(demo, seed=seed, num_train=1, num_eval=num_eval, image_size=64, shard_size=shard_size)
    torch.manual_seed(seed)
    model, _, _, _ = create_model(model_name)
    config = {"loss": "clip", "seed": seed, "output_dir": str(work / "bench-run"), "model": model_name}
    checkpoint = atomic_save(
        {"state_dict": model.state_dict(), "model_name": model_name, "config": config, "step": 0},
        work / "model.pt",
    )
    return demo / "eval", checkpoint


def run_ours(checkpoint: Path, eval_dir: Path, cache: Path, args) -> tuple[dict, dict[str, float]]:
    from rankclip.eval.evaluator import Evaluator

    start = time.perf_counter()
    evaluator = Evaluator(
        checkpoint,
        cache_dir=cache,
        device=args.device,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=False,
    )
    metrics = {
        "zeroshot": evaluator.zeroshot(eval_dir / "zeroshot", ks=(1, 5)).metrics,
        "zeroshot_shift": evaluator.zeroshot(eval_dir / "zeroshot_shift", ks=(1, 5)).metrics,
        "retrieval": evaluator.retrieval(eval_dir / "retrieval").metrics,
    }
    times = {"shared tasks": time.perf_counter() - start}
    start = time.perf_counter()
    evaluator.linear_probe(eval_dir / "linear_probe")
    times["linear probe"] = time.perf_counter() - start
    start = time.perf_counter()
    evaluator.gap(eval_dir / "retrieval")
    times["modality gap"] = time.perf_counter() - start
    return metrics, times


def run_clip_benchmark(checkpoint: Path, eval_dir: Path, work: Path, args) -> tuple[dict, float]:
    import open_clip
    import torch
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    from rankclip.checkpoint import load
    from rankclip.models import write_local_dir

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    start = time.perf_counter()
    local = write_local_dir(load(checkpoint)["model_name"], checkpoint, work / "local-dir")
    model, _, transform = open_clip.create_model_and_transforms(f"local-dir:{local}", pretrained="none")
    model = model.to(device).eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{local}")

    def loader(name: str, task: str):
        dataset = build_dataset(f"wds/{name}", root=str(eval_dir / name), transform=transform, task=task)
        batches = torch.utils.data.DataLoader(
            dataset.batched(args.batch_size), batch_size=None, num_workers=args.workers
        )
        return dataset, batches

    metrics = {}
    for name in ("zeroshot", "zeroshot_shift"):
        dataset, batches = loader(name, "zeroshot_classification")
        metrics[name] = zeroshot_classification.evaluate(
            model, batches, tokenizer, dataset.classes, dataset.templates, device=device, amp=False
        )
    _, batches = loader("retrieval", "zeroshot_retrieval")
    metrics["retrieval"] = zeroshot_retrieval.evaluate(
        model, batches, tokenizer, device=device, amp=False, recall_k_list=[1, 5, 10]
    )
    return metrics, time.perf_counter() - start


def largest_difference(ours: dict, theirs: dict) -> float:
    names = {"acc1": "top1", "acc5": "top5", "mean_per_class_recall": "mean_per_class_top1"}
    for k in (1, 5, 10):
        names[f"text_retrieval_recall@{k}"] = f"image_to_text_R@{k}"
        names[f"image_retrieval_recall@{k}"] = f"text_to_image_R@{k}"
    return max(
        abs(ours[task][names[name]] - value)
        for task, values in theirs.items()
        for name, value in values.items()
        if name in names
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="rankclip-tiny-vit")
    parser.add_argument("--num-eval", type=int, default=1000, help="images per demo eval set")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side (best one kept)")
    args = parser.parse_args()

    import logging
    import warnings

    import torch

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    theirs, cold, warm = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        eval_dir, checkpoint = make_inputs(work, args.model, args.num_eval, args.seed)
        for repeat in range(args.repeats):  # alternate the sides; keep each side's best time
            their_metrics, seconds = run_clip_benchmark(checkpoint, eval_dir, work, args)
            theirs.append(seconds)
            our_metrics, times = run_ours(checkpoint, eval_dir, work / f"cache-{repeat}", args)
            cold.append(times)
            warm.append(run_ours(checkpoint, eval_dir, work / f"cache-{repeat}", args)[1])
    best_theirs = min(theirs)
    best_cold = {task: min(times[task] for times in cold) for task in cold[0]}
    best_warm = {task: min(times[task] for times in warm) for task in warm[0]}

    device = "cuda" if torch.cuda.is_available() and args.device in ("auto", "cuda") else "cpu"
    print(
        f"model {args.model}, {args.num_eval} images per set, batch {args.batch_size}, "
        f"{args.workers} workers, {device}, torch threads {torch.get_num_threads()}, best of {args.repeats}"
    )
    print("zero-shot x2 (64 classes x 6 templates) + retrieval (5 captions per image), fp32:")
    shared_cold, shared_warm = best_cold["shared tasks"], best_warm["shared tasks"]
    print(f"  clip_benchmark 1.6.2  {best_theirs:8.2f} s")
    print(
        f"  ours (cold cache)     {shared_cold:8.2f} s   clip_benchmark/ours {best_theirs / shared_cold:.2f}"
    )
    print(
        f"  ours (warm cache)     {shared_warm:8.2f} s   clip_benchmark/ours {best_theirs / shared_warm:.2f}"
    )
    print("ours only (clip_benchmark: linear probe needs CUDA, no gap):")
    for task in ("linear probe", "modality gap"):
        print(f"  {task:20s}  cold {best_cold[task]:6.2f} s   warm {best_warm[task]:6.2f} s")
    difference = largest_difference(our_metrics, their_metrics)
    print(f"largest metric difference ours vs clip_benchmark: {difference:.2e}")


if __name__ == "__main__":
    main()
