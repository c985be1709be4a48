"""The evaluation stage end to end on the demo eval sets: every task, the embedding cache (encoder calls
counted), the CLI, class subsets, and the cross-check against clip_benchmark 1.6.2 used as a library."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from rankclip.checkpoint import atomic_save
from rankclip.cli import build_parser
from rankclip.demo_data.shapes import make_demo
from rankclip.eval.cli import run_eval
from rankclip.eval.datasets import WdsImages, WdsSplit
from rankclip.eval.evaluator import Evaluator, RunInfo
from rankclip.eval.results import read_result, write_result
from rankclip.eval.uncertainty import unpack_hits
from rankclip.models import create_model, write_local_dir

MODEL = "rankclip-tiny-vit"
NUM_EVAL = 96  # 3 shards of 40, 40, 16 per split


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo(root, seed=0, num_train=1, num_eval=NUM_EVAL, image_size=32, shard_size=40)
    return root / "eval"


def centred_model(retrieval_dir: Path, seed: int = 0):
    """A seeded tiny ViT whose two projections remove the mean direction of its pooled features.

    A randomly initialised transformer maps every input to nearly the same embedding (cosine ~0.9999
    between any two images), so rankings would hinge on 1e-6 differences: a poor basis for comparing two
    implementations to 1e-6. Projecting out the shared direction gives spread-out embeddings; the result
    is still just a state_dict of the tiny architecture.
    """
    torch.manual_seed(seed)
    model, _, preprocess, tokenizer = create_model(MODEL)
    model.eval()
    split = WdsSplit(retrieval_dir)
    images = torch.stack([WdsImages(split.index(), preprocess)[i] for i in range(32)])
    captions = [c for captions in split.index().captions[:32] for c in captions]
    with torch.no_grad():
        for name, encode, inputs in (
            ("visual.proj", model.encode_image, images),
            ("text_projection", model.encode_text, tokenizer(captions)),
        ):
            projection = model.get_parameter(name)
            original = projection.clone()
            projection.copy_(torch.eye(projection.shape[0]))
            direction = encode(inputs).mean(dim=0)
            direction /= direction.norm()
            projection.copy_((torch.eye(len(direction)) - torch.outer(direction, direction)) @ original)
    return model


def save_checkpoint(model, path: Path, loss: str = "rankclip") -> Path:
    config = {"loss": loss, "seed": 0, "output_dir": "results/runs/tiny-rankclip", "train_num_samples": 4096}
    config |= {"lambda_cross": 1.0, "lambda_in": 0.5, "model": MODEL}
    return atomic_save(
        {"state_dict": model.state_dict(), "model_name": MODEL, "config": config, "step": 64}, path
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, demo) -> Path:
    return save_checkpoint(centred_model(demo / "retrieval"), tmp_path_factory.mktemp("run") / "model.pt")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


class EncoderCalls:
    """Counts open_clip CLIP.encode_image / encode_text calls (the model class the tiny configs build)."""

    def __init__(self, monkeypatch):
        self.images = self.texts = 0
        image, text = open_clip.model.CLIP.encode_image, open_clip.model.CLIP.encode_text

        def encode_image(model, *args, **kwargs):
            self.images += 1
            return image(model, *args, **kwargs)

        def encode_text(model, *args, **kwargs):
            self.texts += 1
            return text(model, *args, **kwargs)

        monkeypatch.setattr(open_clip.model.CLIP, "encode_image", encode_image)
        monkeypatch.setattr(open_clip.model.CLIP, "encode_text", encode_text)

    def reset(self) -> tuple[int, int]:
        counts = (self.images, self.texts)
        self.images = self.texts = 0
        return counts


def every_task(evaluator: Evaluator, demo: Path) -> list:
    return [
        evaluator.zeroshot(demo / "zeroshot", ks=(1, 3, 5, 100)),
        evaluator.retrieval(demo / "retrieval"),
        evaluator.linear_probe(demo / "linear_probe"),
        evaluator.gap(demo / "retrieval"),
    ]


# ------------------------------------------------------------------------------------------ caching
def test_second_run_reads_the_cache_without_encoding(checkpoint, demo, tmp_path, monkeypatch):
    calls = EncoderCalls(monkeypatch)
    first = every_task(Evaluator(checkpoint, cache_dir=tmp_path / "cache", progress=False), demo)
    images, texts = calls.reset()
    assert images == 4  # zero-shot, retrieval, probe train, probe test: one batch of 96 each
    assert texts == 2 + 2  # 480 captions and 384 class prompts, 256 per batch

    second = Evaluator(checkpoint, cache_dir=tmp_path / "cache", progress=False)
    again = every_task(second, demo)
    assert calls.reset() == (0, 0)
    assert second.encoder._model is None  # the model was not even built
    for a, b in zip(first, again, strict=True):
        assert a.metrics == b.metrics
        assert a.checkpoint_sha256 == b.checkpoint_sha256 and a.dataset_sha256 == b.dataset_sha256

    # A new metric on cached embeddings: no encoding. A new dataset with the same classes and templates:
    # its images are encoded, the class prompts come from the cache.
    second.zeroshot(demo / "zeroshot", ks=(2, 64))
    assert calls.reset() == (0, 0)
    second.zeroshot(demo / "zeroshot_shift")
    assert calls.reset() == (1, 0)


def test_cache_follows_content_and_survives_corruption(checkpoint, demo, tmp_path, monkeypatch, caplog):
    calls = EncoderCalls(monkeypatch)
    cache = tmp_path / "cache"
    reference = Evaluator(checkpoint, cache_dir=cache, progress=False).retrieval(demo / "retrieval")
    calls.reset()
    entry = next(cache.glob("*/split-*.npz"))
    entry.write_bytes(entry.read_bytes()[:100])  # truncated by a crash before atomic writes existed
    again = Evaluator(checkpoint, cache_dir=cache, progress=False).retrieval(demo / "retrieval")
    assert again.metrics == reference.metrics
    assert calls.reset() == (1, 2) and "unreadable" in caplog.text

    other = save_checkpoint(centred_model(demo / "retrieval", seed=1), tmp_path / "other.pt")
    calls.reset()  # centring encodes a few inputs
    changed = Evaluator(other, cache_dir=cache, progress=False).retrieval(demo / "retrieval")
    assert calls.reset() == (1, 2)  # other weights, other key: encoded again
    assert changed.checkpoint_sha256 != reference.checkpoint_sha256
    assert len(list(cache.glob("*/split-*.npz"))) == 2


# -------------------------------------------------------------------------------------------- tasks
def test_results_carry_the_run_and_validate(checkpoint, demo, shared_cache, tmp_path):
    zeroshot, retrieval, probe, gap = every_task(Evaluator(checkpoint, cache_dir=shared_cache), demo)
    assert (zeroshot.run_id, zeroshot.method, zeroshot.backbone) == ("tiny-rankclip", "rankclip", MODEL)
    assert (zeroshot.data_size, zeroshot.seed, zeroshot.train_step) == (4096, 0, 64)
    assert zeroshot.train_config["lambda_in"] == 0.5
    assert zeroshot.metrics["top100"] == 1.0  # k above the 64 classes
    assert zeroshot.num_samples == NUM_EVAL and zeroshot.num_classes == 64
    assert sum(row.num_samples for row in zeroshot.per_class) == NUM_EVAL
    assert zeroshot.per_class[0].name == "red circle"
    assert retrieval.num_texts == 5 * NUM_EVAL
    assert 0 <= retrieval.metrics["image_to_text_R@1"] <= retrieval.metrics["image_to_text_R@10"] <= 1
    assert probe.protocol["epochs"] == 32 and probe.protocol["num_train"] == NUM_EVAL
    assert gap.metrics["modality_gap"] > 0
    for index, result in enumerate((zeroshot, retrieval, probe, gap)):
        assert read_result(write_result(result, tmp_path / f"{index}.json")) == result


def test_the_run_identity_is_read_from_the_checkpoint():
    """The workflow passes only the checkpoint: id, method, seed and data size come from it."""
    config = {"loss": "clip", "seed": 3, "output_dir": "results/runs/r1", "train_num_samples": 8192}
    state = {"model_name": MODEL, "config": config, "step": 5, "data_size": 2731}
    info = RunInfo.from_checkpoint(state, Path("elsewhere/model.pt"))
    identity = (info.run_id, info.method, info.seed, info.data_size, info.train_step)
    assert identity == ("r1", "clip", 3, 2731, 5)
    older = RunInfo.from_checkpoint({k: v for k, v in state.items() if k != "data_size"}, Path("m.pt"))
    assert older.data_size == 8192  # a checkpoint from before `data_size`: its samples per epoch
    assert RunInfo.from_checkpoint(state, Path("m.pt"), data_size=7, seed=1).data_size == 7  # overrides win


def test_every_hit_rate_has_a_seeded_interval_over_its_items(checkpoint, demo, shared_cache):
    """Bootstrap intervals in the results (eval/uncertainty.py), from the per-item hits stored beside
    them: each hit rate is the mean of its stored hits and lies inside its interval; reruns are equal."""
    zeroshot, retrieval, probe, gap = every_task(Evaluator(checkpoint, cache_dir=shared_cache), demo)
    assert set(zeroshot.intervals) == {"top1", "top3", "top5", "top100"} == set(zeroshot.item_hits)
    assert set(retrieval.intervals) == {
        f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)
    }
    assert set(probe.intervals) == {f"top{k}" for k in probe.protocol["ks"]} and gap.intervals == {}
    for result in (zeroshot, retrieval, probe):
        assert result.protocol["bootstrap"] | {"items": None} == {
            "resamples": 1000, "level": 0.95, "seed": 0, "items": None
        }  # fmt: skip
        for name, (low, high) in result.intervals.items():
            hits = unpack_hits(result.item_hits[name])
            assert hits.mean() == pytest.approx(result.metrics[name]) and low <= result.metrics[name] <= high
    assert len(unpack_hits(retrieval.item_hits["text_to_image_R@1"])) == retrieval.num_texts
    assert len(unpack_hits(retrieval.item_hits["image_to_text_R@1"])) == retrieval.num_samples
    assert zeroshot.intervals["top100"] == (1.0, 1.0)
    again = Evaluator(checkpoint, cache_dir=shared_cache).zeroshot(demo / "zeroshot", ks=(1, 3, 5, 100))
    assert again.intervals == zeroshot.intervals


def write_subset_dataset(source: Path, out: Path, subset: list[str]) -> None:
    """Copy the samples of ``subset``'s classes into a new wds folder with class_subset.txt."""
    classnames = (source / "classnames.txt").read_text().splitlines()
    keep = {str(classnames.index(name)) for name in subset}
    (out / "test").mkdir(parents=True)
    with tarfile.open(out / "test" / "0.tar", "w") as sink:
        for shard in sorted((source / "test").glob("*.tar")):
            with tarfile.open(shard) as tar:
                members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
            for name, data in members.items():
                key = name.split(".", 1)[0]
                if members[f"{key}.cls"].decode() in keep:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    sink.addfile(info, io.BytesIO(data))
    (out / "test" / "nshards.txt").write_text("1\n")
    for name in ("classnames.txt", "zeroshot_classification_templates.txt"):
        (out / name).write_text((source / name).read_text())
    (out / "class_subset.txt").write_text("\n".join(subset) + "\n")


def test_class_subset_restricts_logits(checkpoint, demo, shared_cache, tmp_path):
    subset = ["red circle", "red square", "blue star", "green heart", "pink cross", "cyan hexagon"]
    write_subset_dataset(demo / "zeroshot", tmp_path / "subset", subset)
    evaluator = Evaluator(checkpoint, cache_dir=shared_cache, progress=False)
    restricted = evaluator.zeroshot(tmp_path / "subset", ks=(1, 3))
    everything = evaluator.zeroshot(tmp_path / "subset", ks=(1, 3), class_subset=list(range(64)))
    assert restricted.num_classes == 6 and everything.num_classes == 64
    assert {row.name for row in restricted.per_class} <= set(subset)
    assert restricted.protocol["class_subset"].endswith("class_subset.txt")
    for k in ("top1", "top3"):  # fewer candidate classes can only improve the rank of the true class
        assert restricted.metrics[k] >= everything.metrics[k]
    with pytest.raises(ValueError, match="not in class_subset"):
        evaluator.zeroshot(demo / "zeroshot", class_subset=subset)


# ---------------------------------------------------------------------------------------------- CLI
def cli(*argv: str) -> int:
    return run_eval(build_parser().parse_args(["eval", *argv]))


def test_cli_writes_valid_json_for_every_task(checkpoint, demo, shared_cache, tmp_path, capsys):
    common = [
        "--checkpoint",
        str(checkpoint),
        "--cache-dir",
        str(shared_cache),
        "--no-progress",
        "--workers",
        "0",
    ]
    out = tmp_path / "results"
    zeroshot_args = ["--dataset", str(demo / "zeroshot"), "--dataset-name", "shapes"]
    zeroshot_args += ["--out", str(out / "zs.json")]
    assert cli("zeroshot", *common, *zeroshot_args) == 0
    assert (
        cli("retrieval", *common, "--dataset", str(demo / "retrieval"), "--out", str(out / "ret.json")) == 0
    )
    probe_args = ["--dataset", str(demo / "linear_probe"), "--out", str(out / "lp.json"), "--epochs", "2"]
    assert cli("linear_probe", *common, *probe_args, "--run-id", "renamed") == 0
    gap_args = [
        "--dataset",
        str(demo / "retrieval"),
        "--out",
        str(out / "gap.json"),
        "--umap-max-pairs",
        "60",
    ]
    assert cli("gap", *common, *gap_args) == 0
    assert read_result(out / "zs.json").metrics.keys() >= {"top1", "top3", "top5"}
    assert read_result(out / "ret.json").metrics.keys() >= {"image_to_text_R@10", "text_to_image_R@5"}
    assert read_result(out / "lp.json").run_id == "renamed"
    gap = read_result(out / "gap.json")
    table = out / gap.artifacts["umap"]
    assert table == out / "gap.umap.csv"
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 2 * 60 and {r["modality"] for r in rows} == {"image", "text"}
    assert all(np.isfinite(float(r["x"])) and np.isfinite(float(r["y"])) for r in rows)
    assert "zeroshot on shapes" in capsys.readouterr().out

    every = [
        "--zeroshot", f"shapes={demo / 'zeroshot'}", str(demo / "zeroshot_shift"),
        "--retrieval", str(demo / "retrieval"),
        "--linear-probe", str(demo / "linear_probe"),
        "--epochs", "2", "--umap-max-pairs", "60",
    ]  # fmt: skip
    assert cli("all", *common, *every, "--out-dir", str(out / "all")) == 0
    written = sorted(p.name for p in (out / "all").glob("*.json"))
    assert written == [
        "gap-retrieval.json",
        "linear_probe-linear_probe.json",
        "retrieval-retrieval.json",
        "zeroshot-shapes.json",
        "zeroshot-zeroshot_shift.json",
    ]
    assert all(read_result(out / "all" / name) for name in written)
    # one process for several benchmarks writes what one process per benchmark writes (all but the clock)
    for name, alone in (("zeroshot-shapes.json", "zs.json"), ("retrieval-retrieval.json", "ret.json")):
        together, single = (json.loads(path.read_text()) for path in (out / "all" / name, out / alone))
        assert together.pop("created_at") != single.pop("created_at")
        assert together.pop("duration_s") > 0 and single.pop("duration_s") > 0
        assert together == single
    # the UMAP projection is seeded: the same table from `gap` and from `all`
    assert (out / "all" / "gap-retrieval.umap.csv").read_text() == table.read_text()


def test_cli_errors_name_the_problem(checkpoint, demo, tmp_path, capsys):
    base = ["--checkpoint", str(checkpoint), "--cache-dir", str(tmp_path), "--out", str(tmp_path / "x.json")]
    assert cli("zeroshot", *base, "--dataset", str(tmp_path / "absent")) == 2
    assert f"{tmp_path / 'absent' / 'test'} does not exist" in capsys.readouterr().err
    assert cli("zeroshot", *base, "--dataset", str(demo / "retrieval")) == 2
    assert "classnames.txt does not exist" in capsys.readouterr().err
    bad = ["--checkpoint", str(tmp_path / "none.pt"), "--cache-dir", str(tmp_path), "--out", "x.json"]
    assert cli("retrieval", *bad, "--dataset", str(demo / "retrieval")) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


# ----------------------------------------------------------------------------- clip_benchmark check
@pytest.mark.filterwarnings("ignore:WebDataset\\(shardshuffle:UserWarning")
# clip_benchmark's float() of a 1-element array: deprecated in numpy 1.25, an error from numpy 2.4
@pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
def test_agrees_with_clip_benchmark(checkpoint, demo, shared_cache, tmp_path):
    """Same checkpoint (loaded by clip_benchmark through ``local-dir:``), same shards: same numbers.

    Protocol differences, none of which changes a number here: clip_benchmark multiplies logits by a
    fixed 100 (ranks are unchanged), reports acc1/acc5 and ``mean_per_class_recall`` (= our
    ``mean_per_class_top1``), breaks ties by ``torch.topk`` order (ours: pessimistic; no exact ties occur
    with real-valued embeddings), and names image->text recall ``text_retrieval_recall@k``.
    """
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    local = write_local_dir(MODEL, checkpoint, tmp_path / "local")
    model, _, transform = open_clip.create_model_and_transforms(f"local-dir:{local}", pretrained="none")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{local}")
    model.eval()

    def loader(name: str, task: str):
        dataset = build_dataset(
            f"wds/{name}", root=str(demo / name), transform=transform, split="test", task=task
        )
        batches = torch.utils.data.DataLoader(dataset.batched(32), batch_size=None, num_workers=0)
        return dataset, batches

    dataset, batches = loader("zeroshot", "zeroshot_classification")
    theirs = zeroshot_classification.evaluate(
        model, batches, tokenizer, dataset.classes, dataset.templates, device="cpu", amp=False
    )
    dataset, batches = loader("retrieval", "zeroshot_retrieval")
    theirs |= zeroshot_retrieval.evaluate(
        model, batches, tokenizer, device="cpu", amp=False, recall_k_list=[1, 5, 10]
    )

    evaluator = Evaluator(checkpoint, cache_dir=shared_cache, progress=False, batch_size=32)
    ours = evaluator.zeroshot(demo / "zeroshot").metrics | evaluator.retrieval(demo / "retrieval").metrics
    pairs = {
        "acc1": "top1",
        "acc5": "top5",
        "mean_per_class_recall": "mean_per_class_top1",
        **{f"text_retrieval_recall@{k}": f"image_to_text_R@{k}" for k in (1, 5, 10)},
        **{f"image_retrieval_recall@{k}": f"text_to_image_R@{k}" for k in (1, 5, 10)},
    }
    for their_name, our_name in pairs.items():
        assert ours[our_name] == pytest.approx(theirs[their_name], abs=1e-6), (our_name, ours, theirs)
    spread = evaluator.gap(demo / "retrieval").metrics  # embeddings not collapsed to a point
    assert spread["image_centroid_norm"] < 0.5 and spread["text_centroid_norm"] < 0.5
