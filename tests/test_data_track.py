"""rankclip.dvc_track: one `dvc add` for every download, the source URL kept in each pointer."""

from __future__ import annotations

import json

import pytest
import yaml
from dvc_env import dvc, dvc_env, init_repository

from rankclip.cli import main
from rankclip.dvc_run import DvcError
from rankclip.dvc_track import pointer_path, track_downloads


@pytest.fixture
def repo(tmp_path, monkeypatch):
    env = dvc_env(tmp_path)
    for key, value in env.items():
        if key.startswith(("DVC_", "GIT_")):
            monkeypatch.setenv(key, value)
    root = tmp_path / "repo"
    init_repository(root, env)
    (root / "downloads" / "set").mkdir(parents=True)
    (root / "downloads" / "set" / "a.tar.gz").write_bytes(b"archive")
    (root / "downloads" / "shards").mkdir()
    (root / "downloads" / "shards" / "00000.tar").write_bytes(b"shard")
    return root, env


@pytest.mark.slow  # ~5 s: DVC processes
def test_track_adds_every_path_and_records_its_url_again_after_a_new_download(repo, capsys):
    root, env = repo
    argv = ["data", "track", "--directory", str(root)]
    argv += ["--source", "downloads/set/a.tar.gz=http://mirror.example/a.tar.gz?x=1"]
    argv += ["--source", "downloads/shards=http://example.org/list.tsv"]
    assert main(argv) == 0
    assert capsys.readouterr().out.split() == [
        str(root / "downloads/set/a.tar.gz.dvc"),
        str(root / "downloads/shards.dvc"),
    ]
    (out,) = yaml.safe_load((root / "downloads/set/a.tar.gz.dvc").read_text())["outs"]
    assert out["meta"] == {"source_url": "http://mirror.example/a.tar.gz?x=1"} and out["path"] == "a.tar.gz"
    assert json.loads(dvc("status", "--json", cwd=root, env=env)) == {}
    (root / "downloads" / "shards" / "00001.tar").write_bytes(b"another shard")
    track_downloads({"downloads/shards": "http://example.org/list2.tsv"}, root)
    (out,) = yaml.safe_load((root / "downloads/shards.dvc").read_text())["outs"]
    assert out["nfiles"] == 2 and out["meta"]["source_url"] == "http://example.org/list2.tsv"
    assert not list(root.glob("downloads/.*.tmp*"))


def test_track_names_what_is_wrong(repo, tmp_path):
    root, _ = repo
    with pytest.raises(DvcError, match=r"cannot track downloads that do not exist: downloads/gone.zip"):
        track_downloads({"downloads/gone.zip": "http://x/gone.zip"}, root)
    with pytest.raises(DvcError, match=r"no source URL given for downloads/shards"):
        track_downloads({"downloads/shards": ""}, root)
    (tmp_path / "plain" / "f").mkdir(parents=True)
    with pytest.raises(DvcError, match=r"plain is not a DVC repository \(no \.dvc/ folder\): run `dvc init`"):
        track_downloads({"f": "http://x/f"}, tmp_path / "plain")
    assert pointer_path(root / "d" / "x.tsv") == root / "d" / "x.tsv.dvc"
