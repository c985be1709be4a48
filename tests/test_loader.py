from dataclasses import replace

import pytest
import torch

from rankclip.corpus.loader import (
    BatchSpec,
    FaultCounter,
    ShardStream,
    expand_shards,
    make_loader,
    steps_of_role,
)
from rankclip.models import create_model


@pytest.fixture(scope="module")
def spec():
    _, _, preprocess, tokenizer = create_model("rankclip-tiny-vit")
    return BatchSpec(
        batch_size=16, image_transform=preprocess, tokenizer=tokenizer, synthetic_caption_key="syn.txt"
    )


def batches(colour_shards, spec, *, epoch=0, start=0, workers=0, rank=0, world_size=1, seed=0, steps=12):
    stream = stream_of(
        colour_shards, spec, workers=workers, rank=rank, world_size=world_size, seed=seed, steps=steps
    )
    return epoch_batches(stream, epoch, start, workers)


def stream_of(colour_shards, spec, *, workers=0, rank=0, world_size=1, seed=0, steps=12, cache=0):
    return ShardStream(
        expand_shards(colour_shards),
        spec,
        steps_per_epoch=steps,
        seed=seed,
        rank=rank,
        world_size=world_size,
        workers=workers,
        shuffle_buffer=64,
        decode_cache_bytes=cache,
    )


def epoch_batches(stream, epoch=0, start=0, workers=0):
    stream.set_epoch(epoch, start)
    return list(make_loader(stream, workers))


def same(a, b):
    return len(a) == len(b) and all(
        torch.equal(x["image"], y["image"]) and torch.equal(x["text"], y["text"])
        for x, y in zip(a, b, strict=True)
    )


def test_steps_of_role_partition_the_epoch():
    for workers in (1, 2, 3):
        for steps in (0, 1, 5, 12):
            assert sum(steps_of_role(r, workers, steps) for r in range(workers)) == steps


def test_batch_shapes_and_keys(colour_shards, spec):
    out = batches(colour_shards, spec, steps=3)
    assert len(out) == 3
    assert out[0]["image"].shape == (16, 3, 32, 32)
    assert out[0]["text"].shape == out[0]["synthetic_text"].shape == (16, 32)


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_batches_other_seed_or_epoch_differs(colour_shards, spec, workers):
    first = batches(colour_shards, spec, workers=workers)
    assert same(first, batches(colour_shards, spec, workers=workers))
    assert not same(first, batches(colour_shards, spec, workers=workers, seed=1))
    assert not same(first, batches(colour_shards, spec, workers=workers, epoch=1))


@pytest.mark.parametrize("workers", [0, 2, 3])
@pytest.mark.parametrize("start", [1, 5, 7])
def test_resuming_mid_epoch_gives_the_remaining_batches(colour_shards, spec, workers, start):
    full = batches(colour_shards, spec, workers=workers)
    assert same(full[start:], batches(colour_shards, spec, workers=workers, start=start))


def test_ranks_read_disjoint_shards(colour_shards, spec):
    keys = []
    for rank in range(2):
        stream = ShardStream(
            expand_shards(colour_shards),
            spec,
            steps_per_epoch=4,
            seed=0,
            rank=rank,
            world_size=2,
            workers=2,
            shuffle_buffer=0,
        )
        keys.append(
            {url["url"] for role in range(2) for url in _take(stream._shard_urls(role, FaultCounter(0)), 2)}
        )
    assert keys[0] and keys[1] and not keys[0] & keys[1]


def _take(iterator, n):
    for _, item in zip(range(n), iterator, strict=False):
        yield item


def test_too_few_shards_is_a_clear_error(colour_shards, spec):
    with pytest.raises(ValueError, match="8 shards"):
        ShardStream(expand_shards(colour_shards), spec, steps_per_epoch=2, seed=0, world_size=4, workers=4)


def test_subset_manifest_selects_exactly_its_samples(tmp_path):
    import io

    import webdataset as wds
    from PIL import Image

    from rankclip.corpus.loader import open_train_data
    from rankclip.corpus.subsets import index_shards, make_subset, write_manifest

    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    for shard in range(4):
        with wds.TarWriter(str(tmp_path / f"s-{shard}.tar")) as sink:
            for i in range(shard * 50, shard * 50 + 50):
                sink.write({"__key__": f"{i:05d}", "png": png.getvalue(), "txt": str(i)})
    manifest = make_subset(index_shards(str(tmp_path / "s-{0..3}.tar")), size=64, seed=3)
    write_manifest(manifest, tmp_path / "subset-64.json")
    data = open_train_data(str(tmp_path / "subset-64.json"))
    assert data.num_samples == 64

    spec = BatchSpec(
        batch_size=16,
        image_transform=lambda image: torch.zeros(1),
        tokenizer=lambda texts: torch.tensor([[int(t)] for t in texts]),
    )
    expected = sorted(int(key) for keys in manifest["shards"].values() for key in keys)
    for shuffle_buffer in (0, 8):  # with a buffer, the epoch's tail may mix in the next pass's first samples
        stream = ShardStream(
            data.shards, spec, steps_per_epoch=4, seed=0, shuffle_buffer=shuffle_buffer, select=data.select
        )
        stream.set_epoch(0)
        seen = sorted(int(t) for batch in make_loader(stream, 0) for t in batch["text"][:, 0])
        assert set(seen) <= set(expected) and len(seen) == 64
        assert seen == expected or shuffle_buffer


class CountingTransform:
    """The model's image transform, counting its calls (one per decoded sample)."""

    def __init__(self, transform):
        self.transform, self.calls = transform, 0

    def __call__(self, image):
        self.calls += 1
        return self.transform(image)


@pytest.mark.parametrize("start", [0, 5])
def test_the_decode_cache_gives_the_same_batches_and_decodes_each_sample_once(colour_shards, spec, start):
    counting = CountingTransform(spec.image_transform)
    cached = stream_of(colour_shards, replace(spec, image_transform=counting), steps=20, cache=2**30)
    plain = stream_of(colour_shards, spec, steps=20)
    for epoch in range(3):  # 20 steps of 16 from 1,024 samples: later epochs reread some of the same
        first = start if epoch == 0 else 0
        assert same(epoch_batches(cached, epoch, first), epoch_batches(plain, epoch, first))
    seen = len(cached.decoded.items)
    assert counting.calls == seen < (60 - start) * 16  # every sample decoded once, and some seen again
    assert cached.decoded.used == seen * (3 * 32 * 32 * 4 + 2 * 32 * 8)  # image float32, two token rows int64


def test_the_decode_cache_keeps_what_fits_its_budget(colour_shards, spec):
    item_bytes = 3 * 32 * 32 * 4 + 2 * 32 * 8
    cached = stream_of(colour_shards, spec, steps=4, cache=10 * item_bytes + item_bytes // 2)
    plain = stream_of(colour_shards, spec, steps=4)
    for epoch in range(2):
        assert same(epoch_batches(cached, epoch), epoch_batches(plain, epoch))
    assert len(cached.decoded.items) == 10 and cached.decoded.used == 10 * item_bytes


def test_the_decode_cache_needs_in_process_loading(colour_shards, spec):
    with pytest.raises(ValueError, match=r"decode cache needs in-process loading \(workers 0\)"):
        stream_of(colour_shards, spec, workers=2, cache=2**20)
