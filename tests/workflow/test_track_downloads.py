"""Downloads are DVC-tracked as part of the chain: fetch_url_list + web_shards against a loopback server,
then track_downloads; `dvc status` is clean, each pointer names its source URL and tells a change."""

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
from demo_dag import REPO, job_stats
from dvc_env import dvc, dvc_env, git, init_repository
from http_server import serve_directory
from PIL import Image

pytest.importorskip("img2dataset", reason="img2dataset is installed separately (pip install --no-deps)")
pytestmark = pytest.mark.slow  # ~40 s: img2dataset and DVC processes

COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


def jpeg(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_web_downloads_are_tracked_with_their_url(tmp_path: Path):
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
        (work / "web.yaml").write_text(yaml.safe_dump({"name": "web", "data": {"source": "web", "web": web}}))
        command = [
            sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
            "--directory", str(work), "--configfile", "web.yaml", "--cores", "2", "track_downloads",
        ]  # fmt: skip
        result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    assert job_stats(output) == {"fetch_url_list": 1, "web_shards": 1, "track_downloads": 1, "total": 3}

    pointers = ["resources/web/web/list.tsv.dvc", "resources/web/web/shards.dvc"]
    (url_list,), (shards,) = (yaml.safe_load((work / pointer).read_text())["outs"] for pointer in pointers)
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
