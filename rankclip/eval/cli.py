"""``rankclip eval ...``: the evaluation stage's command line.

    rankclip eval zeroshot     --checkpoint run/model.pt --dataset data/eval/imagenet1k --out r/in1k.json
    rankclip eval retrieval    --checkpoint run/model.pt --dataset data/eval/mscoco --out r/coco.json
    rankclip eval linear_probe --checkpoint run/model.pt --dataset data/eval/cifar10 --out r/c10.json
    rankclip eval gap          --checkpoint run/model.pt --dataset data/eval/mscoco --out r/gap.json
    rankclip eval all          --checkpoint run/model.pt --zeroshot D1 in1k=D2 --retrieval D3 \\
                               --linear-probe D4 --out-dir r/

``all`` loads the model once and writes the same files as the one-task commands (``<task>-<name>.json``;
``NAME=DIR`` names a dataset, else its folder's name does): the workflow runs one such process per run
and benchmark list.

The main ``rankclip`` command wires it with ``add_eval_parser(subcommands)`` and ``run_eval(args)``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_eval_parser", "run_eval"]


def named_dataset(value: str) -> tuple[str | None, Path]:
    """``NAME=DIR`` or ``DIR`` (a dataset folder, named in the results by ``NAME`` or by default)."""
    name, sep, folder = value.partition("=")
    if not sep or "/" in name:
        return None, Path(value)
    if not name or not folder:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR or DIR, got {value!r}")
    return name, Path(folder)


def _common_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("checkpoint and encoding")
    group.add_argument(
        "--checkpoint", type=Path, required=True, help="checkpoint written by `rankclip train`"
    )
    group.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="embedding cache (default: $RANKCLIP_EMBEDDING_CACHE or ~/.cache/rankclip/embeddings)",
    )
    group.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda, cuda:1, ...")
    group.add_argument("--precision", choices=("fp32", "amp"), default="fp32", help="encoder precision")
    group.add_argument("--batch-size", type=int, default=256, help="images or texts per encoder batch")
    group.add_argument("--workers", type=int, default=2, help="image-decoding DataLoader workers")
    group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    run = common.add_argument_group("run metadata (default: from the checkpoint's training config)")
    run.add_argument("--run-id", default=None)
    run.add_argument("--method", default=None, help="training loss name")
    run.add_argument("--data-size", type=int, default=None, help="training pairs per epoch")
    run.add_argument("--train-seed", type=int, default=None, help="training seed")
    return common


def _dataset_args(parser: argparse.ArgumentParser, split: bool = True) -> None:
    parser.add_argument(
        "--dataset", type=Path, required=True, help="dataset folder (clip_benchmark wds layout)"
    )
    if split:
        parser.add_argument("--split", default="test")
    parser.add_argument("--dataset-name", default=None, help="name in the results (default: folder name)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON to write")


def _zeroshot_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top-k", type=int, nargs="+", default=[1, 3, 5], metavar="K")
    parser.add_argument(
        "--templates",
        default=None,
        help="'dataset' (zeroshot_classification_templates.txt), 'openai_imagenet' (open_clip's 80) or a "
        "file; default: the dataset's file if present, else openai_imagenet",
    )
    parser.add_argument(
        "--class-subset",
        default=None,
        help="'imagenet-r' or a file of class indices/names; default: the dataset's class_subset.txt if any",
    )


def _ties_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ties",
        choices=("pessimistic", "optimistic"),
        default="pessimistic",
        help="equal scores rank the positive after (pessimistic) or before (optimistic) the negatives",
    )


def _probe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probe",
        choices=("linear", "logistic"),  # rankclip.eval.linear_probe.PROBE_METHODS (torch-free here)
        default="linear",
        help="probe protocol: linear (the paper's: one nn.Linear, AdamW) or logistic (L-BFGS, C search)",
    )
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--probe-batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0, help="probe seed (init, shuffling, validation split)")
    parser.add_argument("--normalize-features", action="store_true", help="L2-normalise features first")


def _gap_args(parser: argparse.ArgumentParser, umap_out: bool = True) -> None:
    if umap_out:
        parser.add_argument(
            "--umap-out", type=Path, default=None, help="UMAP table (default: OUT, .umap.csv)"
        )
    parser.add_argument("--no-umap", dest="umap", action="store_false", help="skip the UMAP projection")
    parser.add_argument("--umap-max-pairs", type=int, default=5000)
    parser.add_argument("--umap-seed", type=int, default=0)
    parser.add_argument(
        "--examples",
        type=int,
        default=4,
        metavar="N",
        help="Fig. 5: top-10 images of N caption queries (0: none)",
    )
    parser.add_argument("--examples-seed", type=int, default=0, help="seed drawing the example queries")


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` command (with one sub-command per task) to an argparse sub-parser set."""
    common = _common_parser()
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint (zero-shot, retrieval, linear probe, modality gap)",
        description="Evaluate a checkpoint; writes one validated results JSON per benchmark.",
    )
    tasks = parser.add_subparsers(dest="eval_command", required=True, metavar="TASK")

    zeroshot = tasks.add_parser("zeroshot", parents=[common], help="zero-shot classification top-k")
    _dataset_args(zeroshot)
    _zeroshot_args(zeroshot)
    _ties_arg(zeroshot)

    retrieval = tasks.add_parser("retrieval", parents=[common], help="image<->text Recall@k")
    _dataset_args(retrieval)
    retrieval.add_argument("--recall-k", type=int, nargs="+", default=[1, 5, 10], metavar="K")
    _ties_arg(retrieval)

    probe = tasks.add_parser("linear_probe", parents=[common], help="linear probe on frozen image features")
    _dataset_args(probe, split=False)
    probe.add_argument("--train-split", default="train")
    probe.add_argument("--test-split", default="test")
    _probe_args(probe)

    gap = tasks.add_parser("gap", parents=[common], help="modality gap and UMAP of paired embeddings")
    _dataset_args(gap)
    _gap_args(gap)

    every = tasks.add_parser("all", parents=[common], help="every task on the given datasets")
    for task in ("zeroshot", "retrieval", "linear-probe"):
        every.add_argument(f"--{task}", type=named_dataset, nargs="*", default=[], metavar="[NAME=]DIR")
    every.add_argument(
        "--gap",
        type=named_dataset,
        nargs="*",
        default=None,
        metavar="[NAME=]DIR",
        help="default: --retrieval",
    )
    every.add_argument("--out-dir", type=Path, required=True, help="writes <task>-<dataset>.json here")
    _zeroshot_args(every)
    every.add_argument("--recall-k", type=int, nargs="+", default=[1, 5, 10], metavar="K")
    _ties_arg(every)
    _probe_args(every)
    _gap_args(every, umap_out=False)
    return parser


def _evaluator(args):
    from rankclip.eval.evaluator import Evaluator

    return Evaluator(
        args.checkpoint,
        cache_dir=args.cache_dir,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=args.progress,
        run_id=args.run_id,
        method=args.method,
        data_size=args.data_size,
        seed=args.train_seed,
    )


def _probe_config(args):
    from rankclip.eval.linear_probe import LinearProbeConfig

    return LinearProbeConfig(
        method=args.probe,
        epochs=args.epochs,
        batch_size=args.probe_batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        seed=args.seed,
        normalize=args.normalize_features,
    )


def _umap_path(args, out: Path) -> Path | None:
    if not args.umap:
        return None
    return args.umap_out if getattr(args, "umap_out", None) else out.with_suffix(".umap.csv")


def _examples_path(args, out: Path) -> Path | None:
    return out.with_suffix(".retrievals.csv") if args.examples > 0 else None


def _write(result, out: Path) -> Path:
    from rankclip.eval.results import write_result

    path = write_result(result, out)
    shown = {k: round(v, 4) for k, v in result.metrics.items() if not k.startswith("mean_per_class")}
    print(f"{path}: {result.task} on {result.dataset}: {shown}")
    return path


def _run_all(args, evaluator) -> None:
    if not (args.zeroshot or args.retrieval or args.linear_probe or args.gap):
        raise ValueError("eval all: give at least one of --zeroshot, --retrieval, --linear-probe, --gap")
    out_dir: Path = args.out_dir
    for name, dataset in args.zeroshot:
        result = evaluator.zeroshot(
            dataset,
            ks=args.top_k,
            templates=args.templates,
            class_subset=args.class_subset,
            ties=args.ties,
            dataset_name=name,
        )
        _write(result, out_dir / f"zeroshot-{result.dataset}.json")
    for name, dataset in args.retrieval:
        result = evaluator.retrieval(dataset, ks=args.recall_k, ties=args.ties, dataset_name=name)
        _write(result, out_dir / f"retrieval-{result.dataset}.json")
    for name, dataset in args.linear_probe:
        result = evaluator.linear_probe(dataset, config=_probe_config(args), dataset_name=name)
        _write(result, out_dir / f"linear_probe-{result.dataset}.json")
    for name, dataset in args.retrieval if args.gap is None else args.gap:
        out = out_dir / f"gap-{name or Path(dataset).resolve().name}.json"
        result = evaluator.gap(
            dataset,
            umap_path=out.with_suffix(".umap.csv") if args.umap else None,
            artifacts_dir=out_dir,
            max_pairs=args.umap_max_pairs,
            seed=args.umap_seed,
            dataset_name=name,
            examples_path=_examples_path(args, out),
            num_examples=args.examples,
            examples_seed=args.examples_seed,
        )
        _write(result, out)


def run_eval(args: argparse.Namespace) -> int:
    """Run the parsed ``eval`` command; returns the exit status (2 with a one-line error on bad input)."""
    from rankclip.checkpoint import CheckpointError
    from rankclip.eval.datasets import DatasetError
    from rankclip.eval.results import ResultsError

    try:
        evaluator = _evaluator(args)
        command = args.eval_command
        if command == "zeroshot":
            result = evaluator.zeroshot(
                args.dataset,
                split=args.split,
                ks=args.top_k,
                templates=args.templates,
                class_subset=args.class_subset,
                ties=args.ties,
                dataset_name=args.dataset_name,
            )
        elif command == "retrieval":
            result = evaluator.retrieval(
                args.dataset,
                split=args.split,
                ks=args.recall_k,
                ties=args.ties,
                dataset_name=args.dataset_name,
            )
        elif command == "linear_probe":
            result = evaluator.linear_probe(
                args.dataset,
                train_split=args.train_split,
                test_split=args.test_split,
                config=_probe_config(args),
                dataset_name=args.dataset_name,
            )
        elif command == "gap":
            result = evaluator.gap(
                args.dataset,
                split=args.split,
                umap_path=_umap_path(args, args.out),
                artifacts_dir=args.out.parent,
                max_pairs=args.umap_max_pairs,
                seed=args.umap_seed,
                dataset_name=args.dataset_name,
                examples_path=_examples_path(args, args.out),
                num_examples=args.examples,
                examples_seed=args.examples_seed,
            )
        elif command == "all":
            _run_all(args, evaluator)
            return 0
        else:  # argparse's required sub-command makes this unreachable
            raise ValueError(f"unknown eval command {command!r}")
        _write(result, args.out)
    except (CheckpointError, DatasetError, ResultsError, ValueError, FileNotFoundError) as error:
        print(f"rankclip eval: error: {error}", file=sys.stderr)
        return 2
    return 0
