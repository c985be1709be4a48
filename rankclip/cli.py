"""The ``rankclip`` command: one sub-command per workflow stage."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from rankclip.config import ConfigError, TrainConfig


def _add_config_flags(parser: argparse.ArgumentParser, model: type[TrainConfig]) -> None:
    """One ``--field-name VALUE`` flag per config field (values parsed as YAML scalars)."""
    for name, field in model.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=argparse.SUPPRESS,
            metavar="VALUE",
            help=field.description,
        )


def _overrides(args: argparse.Namespace, model: type[TrainConfig]) -> dict:
    return {name: yaml.safe_load(value) for name, value in vars(args).items() if name in model.model_fields}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rankclip", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one run (torchrun-aware)")
    train.add_argument("--config", type=Path, help="YAML file of TrainConfig fields; flags override it")
    _add_config_flags(train, TrainConfig)

    data = commands.add_parser("data", help="data stage").add_subparsers(dest="data_command", required=True)
    demo = data.add_parser("make-demo", help="render the seeded demo corpus and eval sets as shards")
    demo.add_argument("--out", type=Path, required=True)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--num-train", type=int, default=8192)
    demo.add_argument("--num-eval", type=int, default=1000)
    demo.add_argument("--image-size", type=int, default=64)
    demo.add_argument("--shard-size", type=int, default=1024)
    report = commands.add_parser("report", help="tables and report from results JSONs")
    report_commands = report.add_subparsers(dest="report_command", required=True)
    tables = report_commands.add_parser("tables", help="results.csv (every metric) and table1.md")
    tables.add_argument("--results-dir", type=Path, required=True)
    tables.add_argument("--out-dir", type=Path, required=True)
    tables.add_argument("--backbone", required=True, help="main backbone of Table 1")
    tables.add_argument("--data-size", type=int, required=True, help="main data size of Table 1")
    tables.add_argument("--zeroshot", default="shapes", help="zero-shot dataset of Table 1")
    tables.add_argument("--retrieval", default="shapes_captions", help="retrieval dataset of Table 1")

    from rankclip.eval.cli import add_eval_parser

    add_eval_parser(commands)

    subsets = data.add_parser(
        "subsets", help="write nested, seeded data-size subset manifests of a shard set"
    )
    subsets.add_argument("--shards", required=True, help="brace-expanded shard URL")
    subsets.add_argument("--sizes", type=int, nargs="+", required=True)
    subsets.add_argument("--seed", type=int, default=0)
    subsets.add_argument("--out", type=Path, required=True)
    subsets.add_argument("--workers", type=int, default=1, help="processes that index the shards")
    web = data.add_parser("web", help="download a URL+caption list (CC3M, CC12M, YFCC) into verified shards")
    web.add_argument("--url-list", type=Path, required=True)
    web.add_argument("--out", type=Path, required=True)
    web.add_argument("--image-size", type=int, default=224)
    web.add_argument("--processes", type=int, default=None)
    web.add_argument("--threads", type=int, default=64)
    web.add_argument("--samples-per-shard", type=int, default=10_000)
    web.add_argument("--input-format", default="tsv")
    web.add_argument("--column-names", nargs="+", default=None, help="for a list without header: caption url")
    emoji = data.add_parser("make-emoji", help="real image-caption pairs: Noto emoji glyphs + CLDR names")
    emoji.add_argument("--out", type=Path, required=True)
    emoji.add_argument("--seed", type=int, default=0)
    emoji.add_argument("--image-size", type=int, default=64)
    emoji.add_argument("--no-skin-tones", action="store_true")
    fmnist = data.add_parser("make-fashion-mnist", help="Debian's Fashion-MNIST as a wds classification set")
    fmnist.add_argument("--out", type=Path, required=True)
    fmnist.add_argument("--max-train", type=int, default=None)
    fmnist.add_argument("--max-test", type=int, default=None)
    fmnist.add_argument("--seed", type=int, default=0)
    fmnist.add_argument("--image-size", type=int, default=None)
    fetch = data.add_parser("fetch", help="download one file: resumable, sha256-verified, atomic")
    fetch.add_argument("--url", required=True)
    fetch.add_argument("--out", type=Path, required=True)
    fetch.add_argument("--sha256", default=None, help="expected hex digest (recommended)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "eval":
        from rankclip.eval.cli import run_eval

        return run_eval(args)
    try:
        if args.command == "train":
            from rankclip.config import load_config

            config = load_config(args.config, _overrides(args, TrainConfig))
            from rankclip.train import train

            print(train(config))
        elif args.command == "data" and args.data_command == "make-demo":
            from rankclip.data.demo import make_demo

            manifest = make_demo(
                args.out,
                seed=args.seed,
                num_train=args.num_train,
                num_eval=args.num_eval,
                image_size=args.image_size,
                shard_size=args.shard_size,
            )
            print(f"wrote {manifest['train']['num_samples']} training pairs and the eval sets to {args.out}")
        elif args.command == "data" and args.data_command == "subsets":
            from rankclip.data.subsets import make_subsets

            for path in make_subsets(args.shards, args.sizes, args.seed, args.out, workers=args.workers):
                print(path)
        elif args.command == "report" and args.report_command == "tables":
            from rankclip.report import write_tables

            for path in write_tables(
                args.results_dir, args.out_dir, args.backbone, args.data_size, args.zeroshot, args.retrieval
            ):
                print(path)
        elif args.command == "data" and args.data_command == "make-emoji":
            from rankclip.data.emoji import make_emoji_corpus

            manifest = make_emoji_corpus(
                args.out,
                seed=args.seed,
                image_size=args.image_size,
                include_skin_tones=not args.no_skin_tones,
            )
            print(f"wrote the emoji corpus to {args.out}: {json.dumps(manifest.get('counts', {}))}")
        elif args.command == "data" and args.data_command == "make-fashion-mnist":
            from rankclip.data.fashion_mnist import make_fashion_mnist

            make_fashion_mnist(
                args.out,
                max_train=args.max_train,
                max_test=args.max_test,
                seed=args.seed,
                image_size=args.image_size,
            )
            print(f"wrote Fashion-MNIST to {args.out}")
        elif args.command == "data" and args.data_command == "fetch":
            from rankclip.data.download import download

            print(download(args.url, args.out, args.sha256))
        elif args.command == "data" and args.data_command == "web":
            from rankclip.data.web import shards_from_url_list

            summary = shards_from_url_list(
                args.url_list,
                args.out,
                image_size=args.image_size,
                processes=args.processes,
                threads=args.threads,
                number_sample_per_shard=args.samples_per_shard,
                input_format=args.input_format,
                column_names=args.column_names,
            )
            print(f"{summary['successes']} of {summary['total']} samples in {summary['train_data']}")
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"rankclip: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
