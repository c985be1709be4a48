"""One checkpoint against the benchmarks: embeddings from the cache, metrics, results with provenance.

evaluator = Evaluator("results/runs/rankclip-3m-s0/model.pt", cache_dir="results/embeddings")
write_result(evaluator.zeroshot("data/eval/imagenet1k"), "results/eval/rankclip-3m-s0/imagenet1k.json")
write_result(evaluator.retrieval("data/eval/mscoco"), ...)
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankclip.code_hash import stage_code_hash
from rankclip.eval.datasets import WdsSplit, read_classnames, read_templates
from rankclip.eval.embeddings import EmbeddingCache, Encoder
from rankclip.eval.linear_probe import LinearProbeConfig, probe_ranks
from rankclip.eval.metrics import (
    check_ks,
    hits_at_k,
    modality_gap,
    retrieval_ranks,
    retrieval_recall,
    topk_accuracy,
    zeroshot_ranks,
)
from rankclip.eval.results import EvalResult, PerClassResult, now_utc
from rankclip.eval.uncertainty import LEVEL, RESAMPLES, SEED, mean_interval, pack_hits
from rankclip.evalset_layout import CLASS_SUBSET_FILE, CLASSNAMES_FILE, TEMPLATES_FILE
from rankclip.evalsets.imagenet_facts import CLASS_SUBSETS, openai_imagenet_templates
from rankclip.hashing import code_version, sha256_json

__all__ = ["Evaluator", "RunInfo", "resolve_class_subset", "resolve_templates"]


def resolve_templates(templates, dataset_dir: Path) -> tuple[list[str], str]:
    """(templates, source): None -> the dataset's file if present, else OpenAI's 80; "dataset";
    "openai_imagenet"; a path to a file of templates; or a list of ``{c}`` strings."""
    dataset_dir = Path(dataset_dir)
    if templates is None:
        exists = (dataset_dir / TEMPLATES_FILE).is_file()
        templates = "dataset" if exists else "openai_imagenet"
    if isinstance(templates, str) and templates in ("dataset", "openai_imagenet"):
        if templates == "dataset":
            return read_templates(dataset_dir), "dataset"
        return openai_imagenet_templates(), "openai_imagenet"
    if isinstance(templates, str | Path):
        path = Path(templates)
        if not path.is_file():
            raise ValueError(
                f"templates {str(templates)!r}: not 'dataset', 'openai_imagenet' or an existing file"
            )
        return read_templates(path), str(path)
    templates = list(templates)
    if not templates or any("{c}" not in t for t in templates):
        raise ValueError("every template must contain '{c}'")
    return templates, "custom"


def resolve_class_subset(subset, classnames: Sequence[str]) -> tuple[list[int] | None, str | None]:
    """(indices, description) for None, a named subset ("imagenet-r"), a list of indices or class names,
    or a file with one index or class name per line."""
    if subset is None:
        return None, None
    description = None
    if isinstance(subset, str) and subset in CLASS_SUBSETS:
        if len(classnames) != 1000:
            raise ValueError(
                f"class subset {subset!r} indexes ImageNet's 1000 classes; the dataset has {len(classnames)}"
            )
        return list(CLASS_SUBSETS[subset]), subset
    if isinstance(subset, str | Path):
        path = Path(subset)
        if not path.is_file():
            raise ValueError(f"class subset {str(subset)!r}: not one of {sorted(CLASS_SUBSETS)} nor a file")
        description = str(path)
        subset = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    position = {name: i for i, name in enumerate(classnames)}
    indices = []
    for item in subset:
        if isinstance(item, str) and not item.lstrip("-").isdigit():
            if item not in position:
                raise ValueError(f"class subset names {item!r}, which is not in {CLASSNAMES_FILE}")
            indices.append(position[item])
        else:
            indices.append(int(item))
    return indices, description or f"{len(indices)} classes"


@dataclass
class RunInfo:
    """Who produced the checkpoint: read from the checkpoint (its training config and data size),
    overridable."""

    run_id: str
    method: str
    backbone: str
    data_size: int | None = None
    seed: int | None = None
    train_step: int | None = None
    train_skipped: int | None = None
    train_config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, path: Path, **overrides) -> RunInfo:
        config = checkpoint.get("config") or {}
        if not isinstance(config, dict):
            config = {}
        run_id = overrides.get("run_id")
        if run_id is None:
            run_id = Path(config["output_dir"]).name if config.get("output_dir") else _run_id_from_path(path)
        method = overrides.get("method") or config.get("loss")
        if not method:
            raise ValueError(
                f"checkpoint {path} has no config['loss']; pass the method explicitly (--method)"
            )
        data_size = overrides.get("data_size")
        if data_size is None:
            data_size = checkpoint.get("data_size") or config.get("train_num_samples")
            match = re.search(r"subset-(\d+)\.json$", str(config.get("train_data", "")))
            if data_size is None and match:
                data_size = int(match.group(1))
        seed = overrides.get("seed")
        return cls(
            run_id=run_id,
            method=method,
            backbone=checkpoint["model_name"],
            data_size=data_size,
            seed=config.get("seed") if seed is None else seed,
            train_step=checkpoint.get("step"),
            train_skipped=checkpoint.get("skipped"),
            train_config=_json_scalars(config),
        )


def _run_id_from_path(path: Path) -> str:
    path = Path(path).resolve()
    parent = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return parent.name or path.stem


def _json_scalars(config: dict) -> dict[str, Any]:
    return {k: v for k, v in config.items() if isinstance(v, str | int | float | bool) or v is None}


class Evaluator:
    """Evaluate one checkpoint; every task reads embeddings through the cache (see embeddings.py).

    ``run_id``, ``method``, ``data_size``, ``seed`` override what the checkpoint's config says.
    """

    def __init__(
        self,
        checkpoint: Path,
        cache_dir: Path | None = None,
        device: str | None = None,
        precision: str = "fp32",
        batch_size: int = 256,
        workers: int = 0,
        progress: bool = True,
        **run_overrides,
    ):
        unknown = set(run_overrides) - {"run_id", "method", "data_size", "seed"}
        if unknown:
            raise TypeError(f"unknown arguments {sorted(unknown)}")
        self.encoder = Encoder(
            checkpoint,
            cache=EmbeddingCache(cache_dir),
            device=device,
            precision=precision,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
        )
        self._overrides = {k: v for k, v in run_overrides.items() if v is not None}
        self._run: RunInfo | None = None

    @property
    def run(self) -> RunInfo:
        if self._run is None:
            self._run = RunInfo.from_checkpoint(
                self.encoder.checkpoint, self.encoder.checkpoint_path, **self._overrides
            )
        return self._run

    def _result(self, started: float, **fields) -> EvalResult:
        run = self.run
        return EvalResult(
            run_id=run.run_id,
            method=run.method,
            backbone=run.backbone,
            data_size=run.data_size,
            seed=run.seed,
            train_step=run.train_step,
            train_skipped=run.train_skipped,
            train_config=run.train_config,
            checkpoint_path=str(self.encoder.checkpoint_path),
            checkpoint_sha256=self.encoder.checkpoint_sha256,
            code_version=code_version(),
            code_hash=stage_code_hash("eval"),
            created_at=now_utc(),
            duration_s=time.perf_counter() - started,
            **fields,
        )

    def _common(self, dataset_dir: Path, dataset_name: str | None) -> dict[str, str]:
        dataset_dir = Path(dataset_dir)
        return {"dataset": dataset_name or dataset_dir.resolve().name, "dataset_path": str(dataset_dir)}

    # ------------------------------------------------------------------------------------------ tasks
    def zeroshot(
        self,
        dataset_dir: Path,
        split: str = "test",
        ks: Sequence[int] = (1, 3, 5),
        templates=None,
        class_subset=None,
        ties: str = "pessimistic",
        dataset_name: str | None = None,
    ) -> EvalResult:
        """Zero-shot classification: top-k (k larger than the class count is 100%), per-class accuracy.

        ``templates``: see ``resolve_templates``. ``class_subset``: see ``resolve_class_subset``; when
        None, the dataset folder's class subset (ImageNet-R: 200 of 1000 classes) is used if it has one.
        """
        started = time.perf_counter()
        ks = check_ks(ks)
        data = WdsSplit(dataset_dir, split)
        classnames = read_classnames(dataset_dir)
        template_list, template_source = resolve_templates(templates, dataset_dir)
        if class_subset is None and (Path(dataset_dir) / CLASS_SUBSET_FILE).is_file():
            class_subset = Path(dataset_dir) / CLASS_SUBSET_FILE
        subset, subset_description = resolve_class_subset(class_subset, classnames)
        embeddings = self.encoder.split_embeddings(data)
        if embeddings.labels is None:
            raise ValueError(f"{data.directory}: samples have no 'cls' label; not a classification split")
        prompts = self.encoder.prompt_embeddings(classnames, template_list)
        ranks, labels = zeroshot_ranks(
            embeddings.images(), embeddings.labels, prompts.classifier(), ties, subset
        )
        class_ids = list(range(len(classnames))) if subset is None else subset
        metrics, per_class = topk_accuracy(ranks, labels, ks, len(class_ids))
        uncertainty = _uncertainty({f"top{k}": hit for k, hit in hits_at_k(ranks, ks).items()}, "test images")
        return self._result(
            started,
            intervals=uncertainty["intervals"],
            item_hits=uncertainty["item_hits"],
            task="zeroshot",
            split=split,
            dataset_sha256=sha256_json(
                {
                    "split": data.fingerprint(self.encoder.cache.hash_memo),
                    "classnames": classnames,
                    "templates": template_list,
                    "class_subset": subset,
                }
            ),
            num_samples=len(labels),
            num_classes=len(class_ids),
            metrics=metrics,
            per_class=_per_class(per_class, class_ids, classnames),
            protocol={
                "ks": list(ks),
                "ties": ties,
                "templates": template_source,
                "num_templates": len(template_list),
                "class_subset": subset_description,
                "precision": self.encoder.precision,
                "bootstrap": uncertainty["bootstrap"],
            },
            **self._common(dataset_dir, dataset_name),
        )

    def retrieval(
        self,
        dataset_dir: Path,
        split: str = "test",
        ks: Sequence[int] = (1, 5, 10),
        ties: str = "pessimistic",
        dataset_name: str | None = None,
    ) -> EvalResult:
        """Image->text and text->image Recall@k over all captions of every image."""
        started = time.perf_counter()
        ks = check_ks(ks)
        data = WdsSplit(dataset_dir, split)
        embeddings = self.encoder.split_embeddings(data)
        if embeddings.text_features is None:
            raise ValueError(f"{data.directory}: samples have no 'txt' captions; not a retrieval split")
        image_ranks, text_ranks = retrieval_ranks(
            embeddings.images(), embeddings.texts(), embeddings.text_image_index, ties
        )
        hits = {f"image_to_text_R@{k}": hit for k, hit in hits_at_k(image_ranks, ks).items()}
        hits |= {f"text_to_image_R@{k}": hit for k, hit in hits_at_k(text_ranks, ks).items()}
        uncertainty = _uncertainty(hits, "images (image_to_text), captions (text_to_image)")
        return self._result(
            started,
            intervals=uncertainty["intervals"],
            item_hits=uncertainty["item_hits"],
            task="retrieval",
            split=split,
            dataset_sha256=data.fingerprint(self.encoder.cache.hash_memo),
            num_samples=len(image_ranks),
            num_texts=len(text_ranks),
            metrics=retrieval_recall(image_ranks, text_ranks, ks),
            protocol={
                "ks": list(ks),
                "ties": ties,
                "precision": self.encoder.precision,
                "bootstrap": uncertainty["bootstrap"],
            },
            **self._common(dataset_dir, dataset_name),
        )

    def linear_probe(
        self,
        dataset_dir: Path,
        train_split: str = "train",
        test_split: str = "test",
        config: LinearProbeConfig | None = None,
        dataset_name: str | None = None,
    ) -> EvalResult:
        """A linear classifier on frozen image features of ``train_split``, scored on ``test_split``."""
        started = time.perf_counter()
        config = config or LinearProbeConfig()
        train, test = WdsSplit(dataset_dir, train_split), WdsSplit(dataset_dir, test_split)
        train_embeddings = self.encoder.split_embeddings(train)
        test_embeddings = self.encoder.split_embeddings(test)
        for data, embeddings in ((train, train_embeddings), (test, test_embeddings)):
            if embeddings.labels is None:
                raise ValueError(f"{data.directory}: samples have no 'cls' label; not a classification split")
        if (Path(dataset_dir) / CLASSNAMES_FILE).is_file():
            classnames = read_classnames(dataset_dir)
        else:
            top = int(max(train_embeddings.labels.max(), test_embeddings.labels.max()))
            classnames = [str(i) for i in range(top + 1)]
        ranks, info = probe_ranks(
            train_embeddings.image_features,
            train_embeddings.labels,
            test_embeddings.image_features,
            test_embeddings.labels,
            len(classnames),
            config,
        )
        metrics, per_class = topk_accuracy(ranks, test_embeddings.labels, config.ks, len(classnames))
        hits = {f"top{k}": hit for k, hit in hits_at_k(ranks, config.ks).items()}
        memo = self.encoder.cache.hash_memo
        uncertainty = _uncertainty(hits, "test images")
        return self._result(
            started,
            intervals=uncertainty["intervals"],
            item_hits=uncertainty["item_hits"],
            task="linear_probe",
            split=test_split,
            dataset_sha256=sha256_json({"train": train.fingerprint(memo), "test": test.fingerprint(memo)}),
            num_samples=len(test_embeddings.labels),
            num_classes=len(classnames),
            metrics=metrics,
            per_class=_per_class(per_class, list(range(len(classnames))), classnames),
            protocol=config.protocol()
            | {"train_split": train_split, "num_train": len(train_embeddings.labels), "fit": info}
            | {"precision": self.encoder.precision, "bootstrap": uncertainty["bootstrap"]},
            **self._common(dataset_dir, dataset_name),
        )

    def gap(
        self,
        dataset_dir: Path,
        split: str = "test",
        umap_path: Path | None = None,
        artifacts_dir: Path | None = None,
        max_pairs: int | None = 5000,
        seed: int = 0,
        dataset_name: str | None = None,
        examples_path: Path | None = None,
        num_examples: int = 4,
        examples_seed: int = 0,
    ) -> EvalResult:
        """Modality gap over all paired embeddings; with ``umap_path``, the Fig. 6 UMAP table too; with
        ``examples_path``, the top-10 images of ``num_examples`` caption queries (Fig. 5).

        ``artifacts_dir`` (default: the artifact's folder) is the folder the result JSON will live in;
        artifact paths are stored relative to it.
        """
        started = time.perf_counter()
        data = WdsSplit(dataset_dir, split)
        embeddings = self.encoder.split_embeddings(data)
        if embeddings.text_features is None:
            raise ValueError(f"{data.directory}: samples have no 'txt' captions; the gap needs paired data")
        metrics = modality_gap(
            embeddings.images(normalize=False), embeddings.texts(normalize=False), embeddings.text_image_index
        )
        artifacts: dict[str, str] = {}
        protocol: dict[str, Any] = {
            "precision": self.encoder.precision,
            "gap_over": "all images, all captions",
        }
        if umap_path is not None:
            from rankclip.eval.analysis import umap_projection, write_umap_table

            projection = umap_projection(embeddings, max_pairs=max_pairs, seed=seed)
            write_umap_table(projection, Path(umap_path))
            base = Path(artifacts_dir) if artifacts_dir is not None else Path(umap_path).parent
            artifacts["umap"] = os.path.relpath(Path(umap_path).resolve(), base.resolve())
            protocol["umap"] = {
                "pairs": int(len(projection["pair"]) // 2),
                "max_pairs": max_pairs,
                "seed": seed,
                "metric": "cosine",
                "caption": "first caption of each image",
            }
        if examples_path is not None:
            from rankclip.eval.analysis import retrieval_examples, write_retrieval_examples

            rows = retrieval_examples(embeddings, data, num_queries=num_examples, seed=examples_seed)
            write_retrieval_examples(rows, Path(examples_path))
            base = Path(artifacts_dir) if artifacts_dir is not None else Path(examples_path).parent
            artifacts["retrievals"] = os.path.relpath(Path(examples_path).resolve(), base.resolve())
            protocol["retrievals"] = {
                "queries": num_examples,
                "k": 10,
                "seed": examples_seed,
                "query": "first caption of each drawn image",
            }
        return self._result(
            started,
            task="gap",
            split=split,
            dataset_sha256=data.fingerprint(self.encoder.cache.hash_memo),
            num_samples=len(embeddings.image_features),
            num_texts=len(embeddings.text_features),
            metrics=metrics,
            protocol=protocol,
            artifacts=artifacts,
            **self._common(dataset_dir, dataset_name),
        )


def _per_class(
    per_class: list[dict], class_ids: Sequence[int], classnames: Sequence[str]
) -> list[PerClassResult]:
    """Attach dataset class indices and names (``index`` in ``per_class`` is a position in ``class_ids``)."""
    rows = []
    for row in per_class:
        original = int(class_ids[row["index"]])
        rows.append(
            PerClassResult(
                index=original,
                name=classnames[original],
                num_samples=row["num_samples"],
                accuracy=row["accuracy"],
            )
        )
    return rows


def _uncertainty(hits: dict[str, Any], items: str) -> dict[str, Any]:
    """Bootstrap intervals over test items of the hit-rate metrics, and the per-item hits behind them."""
    return {
        "intervals": {name: mean_interval(hit) for name, hit in hits.items()},
        "item_hits": {name: pack_hits(hit) for name, hit in hits.items()},
        "bootstrap": {"resamples": RESAMPLES, "level": LEVEL, "seed": SEED, "items": items},
    }
