"""Downloads are DVC-tracked as part of the chain: fetch_url_list + web_shards + one evaluation file
(fetch_eval_file from a mirror) against a loopback server, then track_downloads; `dvc status` is clean,
each pointer names its source URL and tells a change."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_env import dvc, dvc_env, git, init_repository
from http_server import serve_directory
from PIL import Image
from tiny_dag import REPO, job_stats

pytest.importorskip("img2dataset", reason="img2dataset is installed separately (pip install --no-deps)")
pytestmark = pytest.mark.slow  # ~40 s: img2dataset and DVC processes

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


def jpeg(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_web_and_eval_downloads_are_tracked_with_their_urls(tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    for colour in COLOURS:
        (site / f"{colour}.jpg").write_bytes(jpeg(colour))
    work, env = tmp_path / "work", {**dvc_env(tmp_path), "NO_ALBUMENTATIONS_UPDATE": "1"}
    shutil.copytree(REPO / "config", work / "config")
    shutil.copytree(REPO / "profiles", work / "profiles")
    for name in (".gitignore", ".dvcignore"):
        shutil.copy2(REPO / name, work / name)
    init_repository(work, env)
    with serve_directory(site) as server:
        rows = [f"a {colour} picture\t{server.url(f'{colour}.jpg')}" for colour in COLOURS]
        (site / "list.tsv").write_text("\n".join(rows) + "\n")
        list_url = server.url("list.tsv")
        web = {
            "url_list": "resources/web/web/list.tsv",
            "url_list_url": list_url,
            "num_shards": 1,
            "image_size": 32,
        }
        # one evaluation set from a "mirror" (the loopback server): ImageNet-R's one file, pinned to its bytes
        (site / "imagenet-r.tar").write_bytes(b"a stand-in for imagenet-r.tar\n" * 64)
        pin = hashlib.sha256((site / "imagenet-r.tar").read_bytes()).hexdigest()
        eval_sets = {"base_url": server.url("").rstrip("/"), "sha256": {"imagenet-r.tar": pin}}
        demo = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        evals = {
            "datasets": {**demo["eval"]["datasets"], "imagenet_r": "eval/imagenet_r"},
            "every_run": [*demo["eval"]["every_run"], "zeroshot:imagenet_r"],
        }
        overrides = {
            "name": "web",
            "data": {"source": "web", "web": web, "eval_sets": eval_sets},
            "eval": evals,
        }
        (work / "web.yaml").write_text(yaml.safe_dump(overrides))
        command = [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
            "--directory", str(work), "--configfile", "web.yaml", "--cores", "2", "track_downloads",
        ]  # fmt: skip
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    stats = {"fetch_url_list": 1, "web_shards": 1, "fetch_eval_file": 1, "track_downloads": 1, "total": 4}
    assert job_stats(output) == stats

    pointers = [
        "resources/web/web/list.tsv.dvc",
        "resources/web/web/shards.dvc",
        "resources/web/downloads/imagenet_r/imagenet-r.tar.dvc",
    ]
    (url_list,), (shards,), (archive,) = (yaml.safe_load((work / p).read_text())["outs"] for p in pointers)
    assert archive["meta"]["source_url"] == eval_sets["base_url"] + "/imagenet-r.tar"
    assert archive["md5"] == hashlib.md5((site / "imagenet-r.tar").read_bytes()).hexdigest()
    for out in (url_list, shards):
        assert out["meta"]["source_url"] == list_url and out["desc"] == f"downloaded from {list_url}"
    assert url_list["md5"] == hashlib.md5((site / "list.tsv").read_bytes()).hexdigest()  # the served bytes
    assert shards["md5"].endswith(".dir") and shards["nfiles"] >= 2  # 00000.tar, summary.json, ...
    assert json.loads(dvc("status", "--json", cwd=work, env=env)) == {}
    untracked = git("status", "--porcelain", "--untracked-files=all", cwd=work, env=env).splitlines()
    assert {line[3:] for line in untracked if line.endswith(".dvc")} == set(pointers)  # git can commit them

    with open(work / "resources/web/web/shards/00000.tar", "ab") as shard:
        shard.write(b"\0" * 512)  # the data on disk is no longer what the pointer says
    status = json.loads(dvc("status", "--json", cwd=work, env=env))
    assert status == {
        "resources/web/web/shards.dvc": [{"changed outs": {"resources/web/web/shards": "modified"}}]
    }
