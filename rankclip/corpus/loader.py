"""Training batches from webdataset shards: deterministic under a seed, split by rank and worker, resumable.

Each rank's DataLoader workers take *roles*: role ``r`` produces the epoch's steps ``s`` with
``s % workers == r`` from its own slice of the (epoch-shuffled) shard list, cycling over it as long as the
epoch needs. Resuming at step ``k`` rotates the roles so that worker 0 produces step ``k`` and skips the raw
(undecoded) samples that the first ``k`` steps consumed: the batches after a resume are the same as in an
uninterrupted run.

Faults are counted, never slept on: a shard that cannot be opened or read and a sample that cannot be decoded
are skipped and counted (per worker, reported with every batch); the run stops with the counts when they
exceed its skip budget. Missing local shards stop the run before any work.

With a decode cache (in-process loading only), a sample decoded once is kept, up to a byte budget, as the
tensors it became: later epochs read the same shards in the same order and take those tensors instead of
decoding again, so the batches are the same as without the cache.
"""

from __future__ import annotations

import glob
import itertools
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

log = logging.getLogger(__name__)
REMOTE_PREFIXES = ("http://", "https://", "pipe:", "s3://", "gs://", "hf://", "ais://")
SHOWN_FAULTS = 5  # fault warnings printed per worker; the rest are only counted


class DataFaultError(RuntimeError):
    """Training data is missing or unreadable beyond the run's skip budget; the message gives the counts."""


def expand_shards(url: str) -> list[str]:
    """Brace-expand a shard URL (``a/{000..009}.tar``; ``::`` joins several) and glob local patterns.

    Every local shard must exist: a missing one stops here with the paths named, before any work.
    """
    shards = []
    for shard in wds.shardlists.expand_urls(url):
        if not shard.startswith(REMOTE_PREFIXES) and glob.has_magic(shard):
            matches = sorted(glob.glob(shard))
            if not matches:
                raise ValueError(f"train_data pattern {shard!r} matches no file")
            shards += matches
        else:
            shards.append(shard)
    if not shards:
        raise ValueError(f"train_data {url!r} expands to no shards")
    check_shards_exist(shards, url)
    return shards


def check_shards_exist(shards: list[str], source: str) -> None:
    """Raise naming the local shards of ``source`` that are not files (remote URLs are not checked)."""
    missing = [
        s for s in shards if not s.startswith(REMOTE_PREFIXES) and not Path(s.removeprefix("file:")).is_file()
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(
            f"train_data {source!r}: {len(missing)} of {len(shards)} shards do not exist: {shown}"
        )


class FaultCounter:
    """A webdataset handler that counts read/decode faults (no sleep) and stops beyond ``budget``."""

    def __init__(self, budget: int):
        self.budget, self.total, self.unreported, self.samples = budget, 0, 0, 0

    def count_sample(self, sample: dict) -> dict:
        """A pipeline stage after tar reading: counts the raw samples read."""
        self.samples += 1
        return sample

    def __call__(self, error: Exception) -> bool:
        self.total += 1
        self.unreported += 1
        if self.total <= SHOWN_FAULTS:
            log.warning("skipped unreadable training data (%d so far): %r", self.total, error)
        if self.total > self.budget:
            raise DataFaultError(
                f"{self.total} unreadable training samples or shards, over the run's skip budget of "
                f"{self.budget} (max_skipped_fraction); last: {error!r}"
            )
        return True

    def take(self) -> int:
        """Faults since the last call (reported with each batch)."""
        count, self.unreported = self.unreported, 0
        return count


@dataclass
class TrainData:
    """The shards to read and, for a subset manifest, which samples of them to keep."""

    shards: list[str]
    num_samples: int | None
    select: Callable[[dict], bool] | None = None


def open_train_data(train_data: str) -> TrainData:
    """A brace-expanded shard URL, or a data-size subset manifest (``subset-N.json``, see subsets.py)."""
    if train_data.endswith(".json"):
        from rankclip.corpus.subsets import manifest_filter, read_manifest

        manifest = read_manifest(Path(train_data))
        shards = [shard for shard, keys in manifest["shards"].items() if keys]
        check_shards_exist(shards, train_data)
        return TrainData(shards, manifest["size"], manifest_filter(manifest))
    return TrainData(expand_shards(train_data), None)


def steps_of_role(role: int, workers: int, steps: int) -> int:
    """How many of the steps ``0..steps-1`` fall to ``role`` (those with ``step % workers == role``)."""
    return max(0, (steps - role + workers - 1) // workers)


@dataclass
class BatchSpec:
    """What one batch holds and how samples become tensors."""

    batch_size: int
    image_transform: Callable
    tokenizer: Callable
    caption_key: str = "txt"
    synthetic_caption_key: str | None = None


class ShardStream(IterableDataset):
    """An epoch of batches for one rank, as ``{"image", "text"[, "synthetic_text"]}`` dicts."""

    def __init__(
        self,
        shards: list[str],
        spec: BatchSpec,
        *,
        steps_per_epoch: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        shuffle_buffer: int = 1000,
        select: Callable[[dict], bool] | None = None,
        skip_budget: int = 0,
        decode_cache_bytes: int = 0,
    ):
        if decode_cache_bytes and workers:
            raise ValueError("a decode cache needs in-process loading (workers 0)")
        streams = world_size * max(workers, 1)
        if len(shards) < streams:
            raise ValueError(
                f"train_data has {len(shards)} shards but world_size x workers = {streams} readers need one "
                "each; write more (smaller) shards or lower `workers`"
            )
        self.shards, self.spec = shards, spec
        self.steps_per_epoch, self.seed = steps_per_epoch, seed
        self.rank, self.world_size, self.workers = rank, world_size, max(workers, 1)
        self.shuffle_buffer, self.select, self.skip_budget = shuffle_buffer, select, skip_budget
        self.epoch, self.start_step = 0, 0
        self.decoded = DecodeCache(decode_cache_bytes)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch (0-indexed) and the step within it to start from (resume)."""
        if not 0 <= start_step < self.steps_per_epoch:
            raise ValueError(f"start step {start_step} outside the epoch's {self.steps_per_epoch} steps")
        self.epoch, self.start_step = epoch, start_step

    def _shard_urls(self, role: int, faults: FaultCounter) -> Iterator[dict]:
        order = list(self.shards)
        random.Random(f"shards-{self.seed}-{self.epoch}").shuffle(order)
        mine = order[self.rank * self.workers + role :: self.world_size * self.workers]
        for cycle in itertools.count():
            if cycle > 0 and faults.samples == 0:
                raise DataFaultError(f"no readable sample in the shards {', '.join(mine)}")
            random.Random(f"cycle-{self.seed}-{self.epoch}-{self.rank}-{role}-{cycle}").shuffle(mine)
            yield from ({"url": url} for url in mine)

    def _to_tensors(self, sample: dict) -> dict:
        """A raw sample's tensors: decoded, transformed and tokenised, or the decode cache's copy."""
        key = (sample.get("__url__"), sample["__key__"])
        if (item := self.decoded.get(key)) is not None:
            return item
        sample = _DECODE(sample)
        spec = self.spec
        item = {
            "image": spec.image_transform(wds.filters.getfirst(sample, IMAGE_KEYS)),
            "text": spec.tokenizer([sample[spec.caption_key]])[0],
        }
        if spec.synthetic_caption_key:
            item["synthetic_text"] = spec.tokenizer([sample[spec.synthetic_caption_key]])[0]
        self.decoded.put(key, item)
        return item

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        role = (worker + self.start_step) % self.workers
        done = steps_of_role(role, self.workers, self.start_step)
        todo = steps_of_role(role, self.workers, self.steps_per_epoch) - done
        batch_size = self.spec.batch_size
        faults = FaultCounter(self.skip_budget)
        stages = [wds.tarfile_to_samples(handler=faults), wds.map(faults.count_sample)]
        if self.select is not None:
            stages.append(wds.select(self.select))
        if self.shuffle_buffer > 0:
            rng = random.Random(f"samples-{self.seed}-{self.epoch}-{self.rank}-{role}")
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        stages += [
            wds.slice(done * batch_size, None),
            wds.map(self._to_tensors, handler=faults),
            wds.batched(batch_size, collation_fn=torch.utils.data.default_collate, partial=False),
            wds.slice(todo),
        ]
        for batch in wds.DataPipeline(lambda: self._shard_urls(role, faults), *stages):
            batch["skipped"] = torch.tensor(faults.take())
            yield batch


_DECODE = wds.autodecode.Decoder([wds.autodecode.imagehandler("pilrgb")])  # what wds.decode("pilrgb") uses
IMAGE_KEYS = "jpg;jpeg;png;webp"  # the first of these a sample has is its image


class DecodeCache:
    """Decoded samples' tensors by (shard, key), up to ``budget`` bytes (0: none kept)."""

    def __init__(self, budget: int):
        self.budget, self.used, self.items = budget, 0, {}

    def get(self, key: tuple) -> dict | None:
        return self.items.get(key)

    def put(self, key: tuple, item: dict) -> None:
        size = sum(tensor.nbytes for tensor in item.values())
        if self.used + size <= self.budget:
            self.items[key] = item
            self.used += size


def make_loader(stream: ShardStream, workers: int) -> DataLoader:
    """A DataLoader that yields the stream's batches in step order (workers in round robin)."""
    return DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=False)
