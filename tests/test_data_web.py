"""rankclip.corpus.web end to end: img2dataset against a loopback server of good and bad images."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile

import numpy as np
import pytest
import webdataset as wds
from http_server import serve_directory
from PIL import Image

pytest.importorskip("img2dataset", reason="img2dataset is installed separately (pip install --no-deps)")

from rankclip.corpus.web import (  # noqa: E402
    ShardError,
    shards_from_url_list,
    train_data_url,
    verify_shard,
)

IMAGE_SIZE = 64
PER_SHARD = 8


def encode(size, fmt, mode="RGB", seed=0, **save):
    """A smooth image (small files even when large) with some noise, encoded in ``fmt``."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], -1)
    rgb = (rgb + rng.integers(0, 20, rgb.shape)).clip(0, 255).astype("uint8")
    image = Image.fromarray(rgb, "RGB")
    if mode == "RGBA":
        image.putalpha(Image.fromarray((x % 256).astype("uint8"), "L"))
    elif mode != "RGB":
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


JPEG = encode((640, 480), "JPEG", quality=90)
# (file name or None for a URL the test builds, its bytes, what happens to it)
FILES = [
    ("landscape.jpg", JPEG, "success"),
    ("square.jpg", encode((224, 224), "JPEG", seed=1), "success"),
    ("tiny.jpg", encode((50, 80), "JPEG", seed=2), "success"),  # upscaled
    ("grey.jpg", encode((320, 200), "JPEG", "L", seed=3), "success"),
    ("portrait.png", encode((300, 500), "PNG", seed=4), "success"),
    ("alpha.png", encode((256, 128), "PNG", "RGBA", seed=5), "success"),
    ("palette.png", encode((100, 100), "PNG", "P", seed=6), "success"),
    ("huge.jpg", encode((4000, 3000), "JPEG", seed=7, quality=70), "success"),
    ("wide.jpg", encode((1200, 300), "JPEG", seed=8), "success"),
    ("cmyk.jpg", encode((200, 150), "JPEG", "CMYK", seed=9), "success"),
    ("page.html", b"<!doctype html><html><body><img src='x.jpg'></body></html>", "Image decoding error"),
    ("notes.jpg", b"this is text, not a JPEG\n" * 20, "Image decoding error"),
    ("empty.jpg", b"", "empty response body"),
    ("head30.jpg", JPEG[: len(JPEG) * 3 // 10], "Image decoding error"),
    ("head70.jpg", JPEG[: len(JPEG) * 7 // 10], "Image decoding error"),
    ("cut.jpg", JPEG, "IncompleteRead"),  # the server closes the connection mid-body, every time
]
MISSING = ["gone.jpg", "deleted/photo.png"]  # 404


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    for name, body, _ in FILES:
        (root / name).write_bytes(body)
    with serve_directory(root) as server:
        server.cut_off("cut.jpg", after_bytes=2000, times=None)
        yield server


def url_rows(server, closed_port_url):
    """(url, caption, expected outcome): 20 rows, in file order."""
    rows = [(server.url(name), outcome) for name, _, outcome in FILES]
    rows += [(server.url(name), "HTTP Error 404: Not Found") for name in MISSING]
    rows += [(server.url("landscape.jpg") + "?again=1", "success")]  # the same image under another URL
    rows += [(closed_port_url, "refused")]
    captions = [
        f"row {index}: {word}"
        for index, word in enumerate(
            ["a photo", '"quoted" words', "café ünïcode 猫", "tab-free, comma, text"] * 5
        )
    ]
    return [(url, caption, outcome) for (url, outcome), caption in zip(rows, captions, strict=True)]


@pytest.fixture(scope="module")
def closed_port_url():
    with serve_directory(".") as server:
        url = server.url("x.jpg")
    return url  # nothing listens there any more: connection refused


@pytest.fixture(scope="module")
def rows(site, closed_port_url):
    rows = url_rows(site, closed_port_url)
    assert len(rows) == 20
    return rows


def write_tsv(path, rows, header=True, extra_lines=()):
    lines = (["url\tcaption"] if header else []) + [f"{url}\t{caption}" for url, caption, _ in rows]
    lines += list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_stage(url_list, out_dir, **kwargs):
    options = {
        "image_size": IMAGE_SIZE,
        "processes": 1,
        "threads": 4,
        "retries": 1,
        "timeout": 5,
        "number_sample_per_shard": PER_SHARD,
    }
    return shards_from_url_list(url_list, out_dir, **{**options, **kwargs})


@pytest.fixture(scope="module")
def finished(tmp_path_factory, site, rows):
    work = tmp_path_factory.mktemp("web")
    malformed = "http://127.0.0.1:9/three.jpg\tthree\tfields"  # skipped and counted, not a crash
    url_list = write_tsv(work / "urls.tsv", rows, extra_lines=[malformed])
    summary = run_stage(url_list, work / "shards")
    return url_list, work / "shards", summary


def expected_outcomes(rows):
    counts = {}
    for _, _, outcome in rows:
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


@pytest.mark.slow
def test_counts_and_failure_reasons(finished, rows):
    _, out_dir, summary = finished
    outcomes = expected_outcomes(rows)
    assert summary["total"] == 20
    assert summary["successes"] == outcomes["success"] == 11
    assert summary["failed_to_download"] == 4
    assert summary["failed_to_resize"] == 5
    assert summary["failures"]["failed_to_download"] == {
        "HTTP Error 404: Not Found": 2,
        "IncompleteRead": 1,
        "<urlopen error [Errno 111] Connection refused>": 1,
    }
    assert summary["failures"]["failed_to_resize"] == {"Image decoding error": 4, "empty response body": 1}
    assert summary["skipped_rows"] == 1
    assert json.loads((out_dir / "summary.json").read_text()) == {
        k: v for k, v in summary.items() if k != "train_data"
    }


@pytest.mark.slow
def test_shard_layout_and_pattern(finished):
    _, out_dir, summary = finished
    assert summary["shard_pattern"] == "{00000..00002}.tar"
    assert [shard["name"] for shard in summary["shards"]] == ["00000.tar", "00001.tar", "00002.tar"]
    assert [shard["count"] for shard in summary["shards"]] == [8, 8, 4]
    assert summary["train_data"] == train_data_url(out_dir) == str(out_dir.resolve() / "{00000..00002}.tar")
    assert wds.shardlists.expand_urls(summary["train_data"]) == [
        str(out_dir.resolve() / f"0000{i}.tar") for i in range(3)
    ]
    written = json.loads((out_dir / "summary.json").read_text())
    assert {**written, "train_data": summary["train_data"]} == summary  # summary.json: all but train_data
    for name in ("00000", "00001", "00002"):
        assert (out_dir / f"{name}.parquet").exists() and (out_dir / f"{name}_stats.json").exists()
    assert not (out_dir / "_tmp").exists()


@pytest.mark.slow
def test_every_sample_decodes_at_size_with_its_caption(finished, rows):
    _, _, summary = finished
    seen = {}
    for sample in wds.WebDataset(summary["train_data"], shardshuffle=False, empty_check=False):
        key = sample["__key__"]
        row = int(key[:5]) * PER_SHARD + int(key[5:])  # keys are shard number + index in the shard
        with Image.open(io.BytesIO(sample["jpg"])) as image:
            image.load()
            assert image.format == "JPEG"
            assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
        url, caption, outcome = rows[row]
        assert outcome == "success", (key, url)
        assert sample["txt"].decode("utf-8") == caption
        meta = json.loads(sample["json"])
        assert meta["url"] == url and meta["caption"] == caption and meta["status"] == "success"
        seen[row] = key
    assert sorted(seen) == [index for index, (_, _, outcome) in enumerate(rows) if outcome == "success"]


@pytest.mark.slow
def test_rerun_is_incremental_and_downloads_nothing(finished, site):
    url_list, out_dir, summary = finished
    requests_before = len(site.requests)
    again = run_stage(url_list, out_dir)
    assert len(site.requests) == requests_before
    assert again == summary


@pytest.mark.slow
def test_other_settings_for_an_existing_out_dir_are_refused(finished):
    url_list, out_dir, _ = finished
    with pytest.raises(ValueError, match=r"image_size: 64 -> 96.*overwrite=True"):
        run_stage(url_list, out_dir, image_size=96)
    assert len(list(out_dir.glob("*.tar"))) == 3  # refused before touching anything
    assert (out_dir / "summary.json").exists()


@pytest.mark.slow
def test_corrupt_shard_is_detected_named_and_redownloaded(finished, tmp_path, site):
    url_list, out_dir, summary = finished
    copy = tmp_path / "shards"
    shutil.copytree(out_dir, copy)
    shard = copy / "00001.tar"
    with tarfile.open(shard) as tar:
        members = [(member, tar.extractfile(member).read()) for member in tar.getmembers()]
    with tarfile.open(shard, "w") as tar:  # same members, the first image cut short
        for index, (member, data) in enumerate(members):
            if index == 0 and member.name.endswith(".jpg"):
                data = data[: len(data) // 2]
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    with pytest.raises(ShardError, match=r"00001\.tar: sample '00001\d'"):
        run_stage(url_list, copy)
    assert not shard.exists() and (copy / "00001.tar.corrupt").exists()
    assert not (copy / "00001_stats.json").exists()
    assert not (copy / "summary.json").exists()
    requests_before = len(site.requests)
    again = run_stage(url_list, copy)  # downloads shard 1 again, and only it
    assert {r.path.split("?")[0] for r in site.requests[requests_before:]} <= {
        name for name, _, _ in FILES[8:16]
    }
    assert {k: v for k, v in again.items() if k != "train_data"} == {
        k: v for k, v in summary.items() if k != "train_data"
    }


@pytest.mark.slow
def test_verify_shard_rejects_wrong_size_and_accepts_good(finished, tmp_path):
    _, out_dir, _ = finished
    assert verify_shard(out_dir / "00000.tar", image_size=IMAGE_SIZE, resize_mode="center_crop") > 0
    with pytest.raises(
        ShardError, match=r"00000\.tar: sample '\d+': .*resize_mode='center_crop' gives for 32"
    ):
        verify_shard(out_dir / "00000.tar", image_size=32, resize_mode="center_crop")


@pytest.mark.slow
def test_headerless_cc3m_style_list(tmp_path, site):
    rows = [(site.url("square.jpg"), "a square", "success"), (site.url("gone.jpg"), "gone", "404")]
    url_list = tmp_path / "Train_GCC-training.tsv"
    url_list.write_text("".join(f"{caption}\t{url}\n" for url, caption, _ in rows), encoding="utf-8")
    summary = run_stage(url_list, tmp_path / "shards", column_names=("caption", "url"))
    assert (summary["total"], summary["successes"], summary["failed_to_download"]) == (2, 1, 1)
    assert summary["shard_pattern"] == "{00000..00000}.tar"


def test_missing_column_names_the_columns_found(tmp_path):
    url_list = tmp_path / "urls.tsv"
    url_list.write_text("image_url\ttext\nhttp://127.0.0.1:9/a.jpg\ta\n", encoding="utf-8")
    with pytest.raises(
        ValueError, match=r"no column 'url', 'caption': its columns are \['image_url', 'text'\]"
    ):
        run_stage(url_list, tmp_path / "shards")
    with pytest.raises(ValueError, match="resize_mode must be one of"):
        run_stage(url_list, tmp_path / "shards", url_col="image_url", caption_col="text", resize_mode="x")
    assert not (tmp_path / "shards").exists()


def write_shard(path, samples):
    """A shard in img2dataset's layout from (key, image bytes, caption[, caption in the json]) tuples."""
    with wds.TarWriter(str(path)) as sink:
        for key, image, caption, *json_caption in samples:
            try:
                with Image.open(io.BytesIO(image)) as decoded:
                    width, height = decoded.size
            except OSError:  # a broken image: record the size it was meant to have
                width, height = 32, 32
            meta = {"caption": json_caption[0] if json_caption else caption, "width": width, "height": height}
            sink.write({"__key__": key, "jpg": image, "txt": caption, "json": json.dumps(meta)})
    return path


GOOD = encode((32, 32), "JPEG")
BAD_SECOND_SAMPLES = {  # problem: (the second sample, what the error says about the sample)
    "truncated_jpeg": (("0001", GOOD[: len(GOOD) // 2], "b"), "'0001': OSError: "),
    "png_as_jpg": (("0001", encode((32, 32), "PNG"), "b"), "'0001': ValueError: the image is PNG"),
    "wrong_size": (("0001", encode((32, 16), "JPEG"), "b"), r"'0001': ValueError: the image is \(32, 16\)"),
    "caption_mismatch": (("0001", GOOD, "b", "c"), "'0001': ValueError: the txt caption differs"),
}


@pytest.mark.parametrize("problem", sorted(BAD_SECOND_SAMPLES))
def test_verify_shard_names_the_shard_and_sample_at_fault(tmp_path, problem):
    second, message = BAD_SECOND_SAMPLES[problem]
    shard = write_shard(tmp_path / "00000.tar", [("0000", GOOD, "a"), second])
    with pytest.raises(ShardError, match=re.escape(f"{shard}: sample ") + message):
        verify_shard(shard, image_size=32, resize_mode="center_crop")


def test_verify_shard_names_a_key_seen_twice(tmp_path):
    # not adjacent: webdataset groups adjacent members only, so it does not notice
    samples = [("0000", GOOD, "a"), ("0001", GOOD, "b"), ("0000", GOOD, "c")]
    shard = write_shard(tmp_path / "00000.tar", samples)
    with pytest.raises(ShardError, match=re.escape(f"{shard}: sample '0000': ValueError: the key occurs")):
        verify_shard(shard, image_size=32, resize_mode="center_crop")


def test_verify_shard_names_a_torn_tar(tmp_path):
    shard = write_shard(tmp_path / "00000.tar", [("0000", GOOD, "a"), ("0001", GOOD, "b")])
    assert verify_shard(shard, image_size=32, resize_mode="center_crop") == 2
    with tarfile.open(shard) as tar:
        cut = next(member.offset_data for member in tar.getmembers() if member.name == "0001.json") + 10
    shard.write_bytes(shard.read_bytes()[:cut])  # sample 0000 whole, then a cut inside sample 0001
    with pytest.raises(ShardError, match=re.escape(f"{shard}: reading the tar after 1 good samples: ")):
        verify_shard(shard, image_size=32, resize_mode="center_crop")


def test_verify_shard_accepts_an_empty_shard(tmp_path):
    shard = write_shard(tmp_path / "00000.tar", [])
    assert verify_shard(shard, image_size=32, resize_mode="center_crop") == 0
