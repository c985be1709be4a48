"""Training batches from webdataset shards: deterministic under a seed, split by rank and worker, resumable.

Each rank's DataLoader workers take *roles*: role ``r`` produces the epoch's steps ``s`` with
``s % workers == r`` from its own slice of the (epoch-shuffled) shard list, cycling over it as long as the
epoch needs. Resuming at step ``k`` rotates the roles so that worker 0 produces step ``k`` and skips the raw
(undecoded) samples that the first ``k`` steps consumed: the batches after a resume are the same as in an
uninterrupted run.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def expand_shards(url: str) -> list[str]:
    """Brace-expand a shard URL (``a/{000..009}.tar``; ``::`` joins several)."""
    shards = wds.shardlists.expand_urls(url)
    if not shards:
        raise ValueError(f"train_data {url!r} expands to no shards")
    return shards


@dataclass
class TrainData:
    """The shards to read and, for a subset manifest, which samples of them to keep."""

    shards: list[str]
    num_samples: int | None
    select: Callable[[dict], bool] | None = None


def open_train_data(train_data: str) -> TrainData:
    """A brace-expanded shard URL, or a data-size subset manifest (``subset-N.json``, see subsets.py)."""
    if train_data.endswith(".json"):
        from rankclip.data.subsets import manifest_filter, read_manifest

        manifest = read_manifest(Path(train_data))
        shards = [shard for shard, keys in manifest["shards"].items() if keys]
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
    ):
        streams = world_size * max(workers, 1)
        if len(shards) < streams:
            raise ValueError(
                f"train_data has {len(shards)} shards but world_size x workers = {streams} readers need one "
                "each; write more (smaller) shards or lower `workers`"
            )
        self.shards, self.spec = shards, spec
        self.steps_per_epoch, self.seed = steps_per_epoch, seed
        self.rank, self.world_size, self.workers = rank, world_size, max(workers, 1)
        self.shuffle_buffer, self.select = shuffle_buffer, select
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch (0-indexed) and the step within it to start from (resume)."""
        if not 0 <= start_step < self.steps_per_epoch:
            raise ValueError(f"start step {start_step} outside the epoch's {self.steps_per_epoch} steps")
        self.epoch, self.start_step = epoch, start_step

    def _shard_urls(self, role: int) -> Iterator[dict]:
        order = list(self.shards)
        random.Random(f"shards-{self.seed}-{self.epoch}").shuffle(order)
        mine = order[self.rank * self.workers + role :: self.world_size * self.workers]
        for cycle in itertools.count():
            random.Random(f"cycle-{self.seed}-{self.epoch}-{self.rank}-{role}-{cycle}").shuffle(mine)
            yield from ({"url": url} for url in mine)

    def _to_tensors(self, sample: dict) -> dict:
        spec = self.spec
        item = {
            "image": spec.image_transform(sample["image"]),
            "text": spec.tokenizer([sample[spec.caption_key]])[0],
        }
        if spec.synthetic_caption_key:
            item["synthetic_text"] = spec.tokenizer([sample[spec.synthetic_caption_key]])[0]
        return item

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker = info.id if info is not None else 0
        role = (worker + self.start_step) % self.workers
        done = steps_of_role(role, self.workers, self.start_step)
        todo = steps_of_role(role, self.workers, self.steps_per_epoch) - done
        batch_size = self.spec.batch_size
        stages = [wds.tarfile_to_samples(handler=wds.warn_and_continue)]
        if self.select is not None:
            stages.append(wds.select(self.select))
        if self.shuffle_buffer > 0:
            rng = random.Random(f"samples-{self.seed}-{self.epoch}-{self.rank}-{role}")
            stages.append(wds.shuffle(self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng))
        stages += [
            wds.slice(done * batch_size, None),
            wds.decode("pilrgb", handler=wds.warn_and_continue),
            wds.rename(image="jpg;jpeg;png;webp", keep=True),
            wds.map(self._to_tensors, handler=wds.warn_and_continue),
            wds.batched(batch_size, collation_fn=torch.utils.data.default_collate, partial=False),
            wds.slice(todo),
        ]
        yield from wds.DataPipeline(lambda: self._shard_urls(role), *stages)


def make_loader(stream: ShardStream, workers: int) -> DataLoader:
    """A DataLoader that yields the stream's batches in step order (workers in round robin)."""
    return DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=False)
