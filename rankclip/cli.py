"""The ``rankclip`` command: one sub-command per workflow stage."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from rankclip.checkpoint import CheckpointError
from rankclip.config import ALL_PAIRS, ConfigError, TrainConfig
from rankclip.corpus.loader import DataFaultError
from rankclip.download import DownloadError
from rankclip.dvc_run import DvcError
from rankclip.run_lock import OutputDirBusyError


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that takes only whole flag names (``--epoch`` is not ``--epochs``), as do its
    sub-command parsers."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class _Once(argparse.Action):
    """Store a flag's value; the same flag twice is an error, not "the last one wins"."""

    def __call__(self, parser, namespace, values, option_string=None):
        if hasattr(namespace, self.dest):
            parser.error(f"{option_string} given twice ({getattr(namespace, self.dest)!r} and {values!r})")
        setattr(namespace, self.dest, values)


def _add_config_flags(parser: argparse.ArgumentParser, model: type[TrainConfig]) -> None:
    """One ``--field-name VALUE`` flag per config field (values parsed as YAML scalars)."""
    for name, field in model.model_fields.items():
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            default=argparse.SUPPRESS,
            action=_Once,
            metavar="VALUE",
            help=field.description,
        )


def _overrides(args: argparse.Namespace, model: type[TrainConfig]) -> dict:
    return {name: yaml.safe_load(value) for name, value in vars(args).items() if name in model.model_fields}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rankclip", description=__doc__)
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
    tables.add_argument("--zeroshot", required=True, help="zero-shot dataset of Table 1 (report.zeroshot)")
    tables.add_argument("--retrieval", required=True, help="retrieval dataset of Table 1 (report.retrieval)")
    page = report_commands.add_parser(
        "html", help="one self-contained report.html from the notebooks' outputs"
    )
    page.add_argument("--notebooks", type=Path, nargs="+", required=True, help="notebook output folders")
    page.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    page.add_argument("--results-dir", type=Path, default=None, help="results JSONs (provenance)")
    page.add_argument("--config", type=Path, default=None, help="the workflow config (YAML or JSON)")
    page.add_argument("--config-json", default=None, help="the workflow config as a JSON string")
    page.add_argument("--data-dir", type=Path, default=None, help="data folder whose subfolders are hashed")
    page.add_argument("--workdir", type=Path, default=Path("."), help="where to look for .dvc files")
    page.add_argument("--hash-memo", type=Path, default=None, help="JSON memo of file hashes")

    from rankclip.eval.cli import add_eval_parser

    add_eval_parser(commands)

    subsets = data.add_parser(
        "subsets", help="write nested, seeded data-size subset manifests of a shard set"
    )
    subsets.add_argument("--shards", required=True, help="brace-expanded shard URL")
    subsets.add_argument(
        "--sizes", type=subset_size, nargs="+", required=True, help="pairs per subset, or 'all' (every pair)"
    )
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
    track = data.add_parser("track", help="DVC-track downloads (dvc add), each pointer naming its source URL")
    track.add_argument(
        "--source", action="append", required=True, metavar="PATH=URL", help="a downloaded file or folder"
    )
    track.add_argument("--directory", type=Path, default=Path("."), help="the DVC repository's root")
    _add_eval_set_parsers(data)
    _add_cache_parser(commands)
    return parser


def _add_cache_parser(commands) -> None:
    """``cache push`` / ``cache pull``: the stage outputs of record through DVC (rankclip/cache.py)."""
    cache = commands.add_parser("cache", help="push or pull the stage outputs of record (DVC)")
    actions = cache.add_subparsers(dest="cache_command", required=True)
    for name, text in (
        ("push", "dvc add + dvc push the runs, results, embeddings, subsets and Fig. 7's retrieval set"),
        ("pull", "dvc pull them into a fresh clone, with one mtime, so snakemake reruns only the report"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument(
            "--directory", "-d", type=Path, default=Path("."), help="the workflow's working dir"
        )
        action.add_argument(
            "--configfile",
            type=Path,
            nargs="+",
            default=[],
            help="as given to snakemake (over config/config.yaml)",
        )
        action.add_argument("--remote", "-r", default=None, help="DVC remote (default: the default remote)")


def _add_eval_set_parsers(data) -> None:
    """``data eval-set``, ``data eval-fetch``, ``data captions`` (rankclip/evalsets/build.py, captions.py)."""
    from rankclip.evalsets.build import EVAL_SETS

    def sources(parser):
        parser.add_argument("name", choices=list(EVAL_SETS), metavar="NAME", help=", ".join(EVAL_SETS))
        parser.add_argument(
            "--archive",
            action="append",
            default=[],
            metavar="PATH",
            help="a source file you have (matched by file name, or FILE=PATH); ImageNet needs it",
        )
        parser.add_argument("--downloads", type=Path, default=None, help="where downloads are kept")
        parser.add_argument("--base-url", default=None, help="a mirror holding the files by name")
        parser.add_argument(
            "--sha256", action="append", default=[], metavar="FILE=HEX", help="pin or override a file's hash"
        )
        parser.add_argument(
            "--md5",
            action="append",
            default=[],
            metavar="FILE=HEX",
            help="replace torchvision's published md5 of a file (a mirror of other files; logged)",
        )
        parser.add_argument("--no-progress", action="store_true")

    evalset = data.add_parser("eval-set", help="fetch, verify and convert an evaluation set (wds layout)")
    sources(evalset)
    evalset.add_argument("--out", type=Path, required=True)
    evalset.add_argument("--labels", type=Path, default=None, help="imagenet1k: labels file, not the devkit")
    evalset.add_argument("--shard-size", type=int, default=10_000)
    evalset.add_argument("--no-check-counts", action="store_true", help="accept any number of samples")
    evalset.add_argument(
        "--expected-count", action="append", default=[], metavar="SPLIT=N", help="replace a published count"
    )
    fetch = data.add_parser("eval-fetch", help="download (or check) the source files of an evaluation set")
    sources(fetch)
    fetch.add_argument("--file", default=None, help="only this file of the set")

    captions = data.add_parser("captions", help="copies of training shards with ALIP's second caption")
    captions.add_argument("--shards", required=True, help="brace-expanded shard URL (or paths joined by ::)")
    captions.add_argument("--out", type=Path, required=True)
    captions.add_argument("--source", choices=["model", "file"], default="model")
    captions.add_argument("--model", default=None, help="transformers captioning model (name or folder)")
    captions.add_argument("--captions-file", type=Path, default=None, help="TSV: key<TAB>caption")
    captions.add_argument("--key", default="syn.txt", help="member extension of the new caption")
    captions.add_argument("--batch-size", type=int, default=64)
    captions.add_argument("--device", default="auto")
    captions.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    captions.add_argument("--max-new-tokens", type=int, default=30)
    captions.add_argument("--num-beams", type=int, default=1)
    captions.add_argument("--prompt", default=None, help="conditional captioning prefix ('a picture of')")
    captions.add_argument("--no-progress", action="store_true")


def subset_size(text: str) -> int | str:
    """``--sizes`` of `rankclip data subsets`: a positive integer or ``all``."""
    if text == ALL_PAIRS:
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")


def _pairs(values: list[str], flag: str, convert=str) -> dict:
    """``KEY=VALUE`` flags as a dict; a malformed one raises ValueError naming the flag."""
    pairs = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key or not item:
            raise ValueError(f"{flag} {value!r}: expected KEY=VALUE")
        try:
            pairs[key] = convert(item)
        except ValueError:
            raise ValueError(f"{flag} {value!r}: bad value {item!r}") from None
    return pairs


def _run_eval_set_command(args: argparse.Namespace) -> None:
    if args.data_command == "eval-set":
        from rankclip.evalsets.build import make_eval_set

        manifest = make_eval_set(
            args.name,
            args.out,
            archives=args.archive,
            downloads=args.downloads,
            base_url=args.base_url,
            sha256=_pairs(args.sha256, "--sha256"),
            md5=_pairs(args.md5, "--md5"),
            labels=args.labels,
            shard_size=args.shard_size,
            check_counts=not args.no_check_counts,
            expected_counts=_pairs(args.expected_count, "--expected-count", int) or None,
            progress=not args.no_progress,
        )
        counts = ", ".join(f"{split} {info['num_samples']}" for split, info in manifest["splits"].items())
        print(f"wrote {args.name} to {args.out}: {counts}")
    elif args.data_command == "eval-fetch":
        from rankclip.evalsets.build import fetch_eval_files

        downloads = args.downloads or Path("downloads") / args.name
        files, _ = fetch_eval_files(
            args.name,
            downloads,
            archives=args.archive,
            base_url=args.base_url,
            sha256=_pairs(args.sha256, "--sha256"),
            md5=_pairs(args.md5, "--md5"),
            only=args.file,
            progress=not args.no_progress,
        )
        for path in files.values():
            print(path)
    elif args.data_command == "captions":
        from rankclip.corpus.captions import DEFAULT_MODEL, caption_shards

        summary = caption_shards(
            args.shards,
            args.out,
            source=args.source,
            model=args.model or DEFAULT_MODEL,
            captions_file=args.captions_file,
            key=args.key,
            batch_size=args.batch_size,
            device=args.device,
            precision=args.precision,
            max_new_tokens=args.max_new_tokens,
            num_beams=args.num_beams,
            prompt=args.prompt,
            progress=not args.no_progress,
        )
        shards = len(summary["shards"])
        print(f"captioned {summary['num_samples']} samples in {shards} shards into {args.out}")


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
            from rankclip.demo_data.shapes import make_demo

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
            from rankclip.corpus.subsets import make_subsets

            for path in make_subsets(args.shards, args.sizes, args.seed, args.out, workers=args.workers):
                print(path)
        elif args.command == "report" and args.report_command == "tables":
            from rankclip.report import write_tables

            for path in write_tables(
                args.results_dir, args.out_dir, args.backbone, args.data_size, args.zeroshot, args.retrieval
            ):
                print(path)
        elif args.command == "report" and args.report_command == "html":
            from rankclip.report_html import build_report

            config = json.loads(args.config_json) if args.config_json else None
            if args.config is not None:
                config = yaml.safe_load(args.config.read_text(encoding="utf-8"))
            print(
                build_report(
                    args.notebooks,
                    args.out,
                    results_dir=args.results_dir,
                    config=config,
                    data_dir=args.data_dir,
                    workdir=args.workdir,
                    hash_memo=args.hash_memo,
                )
            )
        elif args.command == "data" and args.data_command == "make-emoji":
            from rankclip.demo_data.emoji import make_emoji_corpus

            manifest = make_emoji_corpus(
                args.out,
                seed=args.seed,
                image_size=args.image_size,
                include_skin_tones=not args.no_skin_tones,
            )
            print(f"wrote the emoji corpus to {args.out}: {json.dumps(manifest.get('counts', {}))}")
        elif args.command == "data" and args.data_command == "make-fashion-mnist":
            from rankclip.demo_data.fashion_mnist import make_fashion_mnist

            make_fashion_mnist(
                args.out,
                max_train=args.max_train,
                max_test=args.max_test,
                seed=args.seed,
                image_size=args.image_size,
            )
            print(f"wrote Fashion-MNIST to {args.out}")
        elif args.command == "data" and args.data_command == "fetch":
            from rankclip.download import download

            print(download(args.url, args.out, args.sha256))
        elif args.command == "data" and args.data_command in ("eval-set", "eval-fetch", "captions"):
            _run_eval_set_command(args)
        elif args.command == "data" and args.data_command == "track":
            from rankclip.dvc_track import track_downloads

            for pointer in track_downloads(_pairs(args.source, "--source"), args.directory):
                print(pointer)
        elif args.command == "cache":
            from rankclip import cache

            run = cache.push if args.cache_command == "push" else cache.pull
            paths = run(args.directory, args.configfile, remote=args.remote)
            if args.cache_command == "push":
                print("pointer files to commit: git add " + " ".join(map(str, paths)) + " && git commit")
            else:
                print(
                    "restored "
                    + ", ".join(map(str, paths))
                    + "; now: snakemake --cores all (same --configfile)"
                )
        elif args.command == "data" and args.data_command == "web":
            from rankclip.corpus.web import shards_from_url_list

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
    except (
        ConfigError,
        DvcError,
        ValueError,
        FileNotFoundError,
        DownloadError,
        CheckpointError,
        DataFaultError,
        OutputDirBusyError,
    ) as error:
        print(f"rankclip: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
