"""Shared fixtures: small webdataset shard sets written in the test's tmp dir."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 60),
    "blue": (30, 60, 220),
    "yellow": (230, 220, 40),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "purple": (140, 40, 170),
    "orange": (240, 140, 20),
}
SHAPES = ("left", "right", "top", "bottom")


def write_colour_shards(out_dir: Path, num_samples: int, num_shards: int, seed: int = 0) -> str:
    """Images with a coloured half on a grey ground, captioned with the colour and side; returns the URL."""
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_shard = -(-num_samples // num_shards)
    names = list(COLOURS)
    for shard in range(num_shards):
        with wds.TarWriter(str(out_dir / f"shard-{shard:06d}.tar")) as sink:
            for index in range(shard * per_shard, min(num_samples, (shard + 1) * per_shard)):
                colour, side = rng.choice(names), rng.choice(SHAPES)
                image = Image.new("RGB", (32, 32), (128, 128, 128))
                box = {
                    "left": (0, 0, 16, 32),
                    "right": (16, 0, 32, 32),
                    "top": (0, 0, 32, 16),
                    "bottom": (0, 16, 32, 32),
                }[side]
                image.paste(COLOURS[colour], box)
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                sink.write(
                    {
                        "__key__": f"{index:08d}",
                        "png": buffer.getvalue(),
                        "txt": f"a {colour} {side} half",
                        "syn.txt": f"the {side} side is {colour}",
                    }
                )
    return str(out_dir / f"shard-{{000000..{num_shards - 1:06d}}}.tar")


@pytest.fixture(scope="session")
def colour_shards(tmp_path_factory) -> str:
    return write_colour_shards(tmp_path_factory.mktemp("shards"), num_samples=1024, num_shards=8)
