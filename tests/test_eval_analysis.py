"""Fig. 5's retrieval examples: seeded caption queries, top-k images with thumbnails, the `gap` artifact."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rankclip.checkpoint import atomic_save
from rankclip.cli import build_parser
from rankclip.demo_data.shapes import make_demo
from rankclip.eval.analysis import (
    RETRIEVAL_EXAMPLE_COLUMNS,
    retrieval_examples,
    write_retrieval_examples,
)
from rankclip.eval.cli import run_eval
from rankclip.eval.datasets import WdsSplit
from rankclip.eval.embeddings import SplitEmbeddings
from rankclip.eval.results import read_result
from rankclip.models import create_model

NUM_EVAL = 24


@pytest.fixture(scope="module")
def retrieval_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    make_demo(root, seed=0, num_train=1, num_eval=NUM_EVAL, image_size=32, shard_size=10)
    return root / "eval" / "retrieval"


def embeddings_of(split: WdsSplit) -> SplitEmbeddings:
    """Image i is the basis vector e_i; every caption of image i is e_i plus a little of e_(i+1)."""
    index = split.index()
    count = len(index)
    owner = np.repeat(np.arange(count), [len(c) for c in index.captions])
    images = np.eye(count, dtype=np.float32)
    texts = images[owner] + 0.3 * images[(owner + 1) % count]
    return SplitEmbeddings(
        image_features=images,
        keys=np.asarray(index.keys),
        text_features=texts,
        text_image_index=owner,
        captions=np.asarray([c for captions in index.captions for c in captions]),
    )


def test_examples_rank_the_target_first_and_carry_thumbnails(retrieval_dir, tmp_path):
    split = WdsSplit(retrieval_dir)
    embeddings = embeddings_of(split)
    rows = retrieval_examples(embeddings, split, num_queries=3, k=10, seed=1, thumbnail_size=16)
    assert len(rows) == 3 * 10
    frame = pd.DataFrame(rows)
    assert list(frame.groupby("query")["rank"].apply(list)) == [list(range(10))] * 3
    first = frame[frame["rank"] == 0]
    assert first["hit"].all() and (first["image"] == first["target"]).all()
    assert (frame["target_rank"] == 0).all()
    second = frame[frame["rank"] == 1]
    assert ((second["image"] - second["target"]) % NUM_EVAL == 1).all()  # the runner-up: e_(i+1)
    assert frame.groupby("query")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    for _, group in frame.groupby("query"):
        target = group["target"].iloc[0]
        assert group["caption"].iloc[0] == split.index().captions[target][0]
        assert group["target_key"].iloc[0] == split.index().keys[target]
    with Image.open(io.BytesIO(base64.b64decode(frame["thumbnail"].iloc[0]))) as thumbnail:
        assert thumbnail.format == "PNG" and max(thumbnail.size) <= 16
    # the same seed draws the same queries (so CLIP and RankCLIP answer the same captions)
    again = retrieval_examples(embeddings, split, num_queries=3, k=10, seed=1, thumbnail_size=16)
    assert [r["target"] for r in again] == [r["target"] for r in rows]

    path = write_retrieval_examples(rows, tmp_path / "x.retrievals.csv")
    table = pd.read_csv(path)
    assert tuple(table.columns) == RETRIEVAL_EXAMPLE_COLUMNS
    assert len(table) == 30 and table["hit"].sum() == 3


def test_examples_reject_a_classification_split(retrieval_dir):
    split = WdsSplit(retrieval_dir)
    embeddings = embeddings_of(split)
    embeddings.text_features = None
    with pytest.raises(ValueError, match="retrieval split"):
        retrieval_examples(embeddings, split)


def test_gap_command_writes_the_examples_artifact(retrieval_dir, tmp_path):
    model, *_ = create_model("rankclip-tiny-vit")
    config = {"loss": "clip", "seed": 0, "output_dir": "results/runs/tiny-clip", "model": "rankclip-tiny-vit"}
    checkpoint = atomic_save(
        {"state_dict": model.state_dict(), "model_name": "rankclip-tiny-vit", "config": config, "step": 1},
        tmp_path / "model.pt",
    )
    out = tmp_path / "eval" / "gap-retrieval.json"
    args = build_parser().parse_args(
        [
            "eval", "gap", "--checkpoint", str(checkpoint), "--dataset", str(retrieval_dir),
            "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--workers", "0",
            "--no-umap", "--examples", "2", "--examples-seed", "3",
        ]
    )  # fmt: skip
    assert run_eval(args) == 0
    result = read_result(out)
    assert result.artifacts == {"retrievals": "gap-retrieval.retrievals.csv"}
    assert result.protocol["retrievals"]["queries"] == 2
    table = pd.read_csv(out.parent / result.artifacts["retrievals"])
    assert len(table) == 2 * 10 and set(table["query"]) == {0, 1}

    none = tmp_path / "none" / "gap-retrieval.json"
    args = build_parser().parse_args(
        [
            "eval", "gap", "--checkpoint", str(checkpoint), "--dataset", str(retrieval_dir),
            "--out", str(none), "--cache-dir", str(tmp_path / "cache"), "--no-progress", "--workers", "0",
            "--no-umap", "--examples", "0",
        ]
    )  # fmt: skip
    assert run_eval(args) == 0
    assert read_result(none).artifacts == {}


UMAP_IN_A_FRESH_PROCESS = """
import sys
import numpy as np
from rankclip.eval.analysis import umap_projection
from rankclip.eval.embeddings import SplitEmbeddings
rng = np.random.default_rng(0)
embeddings = SplitEmbeddings(
    image_features=rng.normal(size=(40, 16)).astype(np.float32),
    keys=np.asarray([f"{i:08d}" for i in range(40)]),
    text_features=rng.normal(size=(80, 16)).astype(np.float32),
    text_image_index=np.repeat(np.arange(40), 2),
)
np.save(sys.argv[1], umap_projection(embeddings, seed=3)["xy"])
"""


def test_umaps_numba_kernels_compile_once_per_machine_to_the_same_coordinates(tmp_path):
    """The layout kernel (no on-disk cache upstream) is cached by the first process, read by the next."""
    cache = tmp_path / "numba"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    run = [sys.executable, "-c", UMAP_IN_A_FRESH_PROCESS]
    subprocess.run([*run, tmp_path / "first.npy"], env=env, check=True)
    written = {path.name: path.stat().st_mtime_ns for path in cache.rglob("*.nb*")}
    assert any(name.startswith("layouts._optimize_layout_euclidean_single_epoch") for name in written)
    subprocess.run([*run, tmp_path / "second.npy"], env=env, check=True)
    rewritten = {path.name: path.stat().st_mtime_ns for path in cache.rglob("*.nb*")}
    assert rewritten == written  # read, not written again
    np.testing.assert_array_equal(np.load(tmp_path / "first.npy"), np.load(tmp_path / "second.npy"))
