"""``rankclip cache push|pull`` on a tiny fake results tree: the round trip, the mtimes, the errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from dvc_env import dvc, dvc_env, git, init_repository

from rankclip.cache import CacheError, load_workflow_config, outputs_of_record, pull, push
from rankclip.cli import main
from rankclip.dvc_run import DvcError

CONFIG = {
    "name": "tiny",
    "report": {"retrieval": "captions"},
    "eval": {"datasets": {"captions": "demo/eval/retrieval", "shapes": "demo/eval/zeroshot"}},
}
POINTERS = [
    "results/tiny/runs.dvc",
    "results/tiny/eval.dvc",
    "results/tiny/embeddings.dvc",
    "resources/tiny/subsets.dvc",
    "resources/tiny/demo/eval/retrieval.dvc",
]


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_outputs(root: Path) -> None:
    """What a finished run of CONFIG leaves, a few bytes a file, plus what the cache must leave out."""
    write(root / "config" / "config.yaml", yaml.safe_dump(CONFIG))
    run = root / "results" / "tiny" / "runs" / "clip__s0"
    write(run / "model.pt", "weights")
    write(run / "metrics.jsonl", '{"step": 1}\n')
    write(run / "checkpoints" / "latest.pt", "intermediate")  # .dvcignore: not of record
    write(root / "results" / "tiny" / "eval" / "clip__s0" / "zeroshot-shapes.json", "{}")
    write(root / "results" / "tiny" / "embeddings" / "ab" / "emb.npy", "vectors")
    write(root / "results" / "tiny" / "embeddings" / "file-hashes.json", "{}")  # machine-specific memo
    write(root / "resources" / "tiny" / "subsets" / "subset-8.json", "{}")
    write(root / "resources" / "tiny" / "demo" / "eval" / "retrieval" / "dataset_type.txt", "wds")
    write(root / "resources" / "tiny" / "demo" / "train" / "shard-000000.tar", "not of record")


@pytest.fixture
def repo(tmp_path, monkeypatch) -> tuple[Path, dict[str, str]]:
    """A repository with this checkout's .gitignore and .dvcignore committed, the fake outputs, no remote
    yet; DVC and git, also when rankclip.cache runs them, keep their state in tmp."""
    root, env = tmp_path / "first", dvc_env(tmp_path)
    init_repository(root, env)
    checkout = Path(__file__).resolve().parents[1]
    for name in (".gitignore", ".dvcignore"):
        (root / name).write_text((checkout / name).read_text())
    fake_outputs(root)
    git("add", "-A", cwd=root, env=env)
    git("commit", "--quiet", "-m", "checkout", cwd=root, env=env)
    for key, value in env.items():
        if key.startswith(("DVC_", "GIT_")):
            monkeypatch.setenv(key, value)
    return root, env


@pytest.mark.slow  # ~5 s: DVC add, push, clone, pull
def test_push_then_pull_in_a_clone_restores_the_outputs_with_one_mtime(repo, tmp_path, capsys):
    root, env = repo
    dvc("remote", "add", "--default", "storage", str(tmp_path / "remote"), cwd=root, env=env)
    assert main(["cache", "push", "--directory", str(root)]) == 0
    assert "git add " + " ".join(POINTERS) in capsys.readouterr().out
    untracked = git("status", "--porcelain", "--untracked-files=all", cwd=root, env=env).split("\n")
    assert {line[3:] for line in untracked if line.startswith("??")} == set(POINTERS)
    runs = yaml.safe_load((root / POINTERS[0]).read_text())["outs"][0]
    assert runs["nfiles"] == 2  # model.pt and metrics.jsonl, not checkpoints/latest.pt
    assert yaml.safe_load((root / POINTERS[2]).read_text())["outs"][0]["nfiles"] == 1  # no file-hashes.json
    git("add", "-A", cwd=root, env=env)
    git("commit", "--quiet", "-m", "outputs of record", cwd=root, env=env)
    assert json.loads(dvc("status", "--cloud", "--json", cwd=root, env=env)) == {}

    clone = tmp_path / "clone"
    git("clone", "--quiet", str(root), str(clone), cwd=tmp_path, env=env)
    assert not (clone / "results" / "tiny" / "eval").exists()  # the pointers only
    restored = pull(clone)
    assert [str(path) for path in restored] == [p.removesuffix(".dvc") for p in POINTERS]
    model = clone / "results" / "tiny" / "runs" / "clip__s0" / "model.pt"
    assert model.read_text() == "weights"
    assert not (clone / "results" / "tiny" / "runs" / "clip__s0" / "checkpoints").exists()
    assert not (clone / "resources" / "tiny" / "demo" / "train").exists()
    files = [p for folder in restored for p in (clone / folder).rglob("*") if p.is_file()]
    assert len(files) == 6 and len({p.stat().st_mtime_ns for p in files}) == 1
    assert json.loads(dvc("status", "--json", cwd=clone, env=env)) == {}


def test_push_without_a_remote_names_the_fix(repo):
    root, _ = repo
    with pytest.raises(
        CacheError, match=r"no default DVC remote in .*\.dvc/config: add one with `dvc remote add"
    ):
        push(root)
    with pytest.raises(CacheError, match="DVC remote 'elsewhere' is not configured"):
        push(root, remote="elsewhere")


def test_push_names_missing_and_unfinished_outputs(repo, tmp_path):
    root, env = repo
    dvc("remote", "add", "--default", "storage", str(tmp_path / "remote"), cwd=root, env=env)
    (root / "other.yaml").write_text(yaml.safe_dump({"name": "other"}))
    with pytest.raises(CacheError, match=r"nothing to push: none of results/other/runs, results/other/eval"):
        push(root, [Path("other.yaml")])
    (root / "results" / "tiny" / "runs" / "rankclip__s0" / "checkpoints").mkdir(parents=True)
    with pytest.raises(
        CacheError, match=r"1 training runs are unfinished, no results/tiny/runs/rankclip__s0/model.pt"
    ):
        push(root)
    (root / "results" / "tiny" / "runs" / "rankclip__s0" / "checkpoints").rmdir()
    (root / "results" / "tiny" / "runs" / "rankclip__s0").rmdir()
    for path in (root / "results" / "tiny" / "eval").rglob("*"):
        if path.is_file():
            path.unlink()
    with pytest.raises(
        CacheError, match=r"missing outputs of record in .*: results/tiny/eval \(results JSONs\)"
    ):
        push(root)
    assert not [path for path in root.rglob("*.dvc") if path.is_file()]  # refused before any dvc add


def test_pull_without_pointers_and_bad_configs_are_named(repo):
    root, _ = repo
    with pytest.raises(
        CacheError,
        match=r"no DVC pointer results/tiny/runs.dvc, results/tiny/eval.dvc, .*rankclip cache push",
    ):
        pull(root)
    with pytest.raises(CacheError, match=r"config file .*missing.yaml does not exist"):
        load_workflow_config(root, [Path("missing.yaml")])
    with pytest.raises(CacheError, match=r"workflow config lacks 'report'"):
        outputs_of_record({"name": "x"})
    (root / ".dvc").rename(root / "dvc-gone")
    (root / "results" / "tiny" / "runs.dvc").write_text("outs: []\n")
    for pointer in POINTERS[1:]:
        (root / pointer).write_text("outs: []\n")
    with pytest.raises(DvcError, match=r"is not a DVC repository \(no \.dvc/ folder\)"):
        pull(root)


def test_the_cli_prints_one_error_line(repo, capsys):
    root, _ = repo
    assert main(["cache", "pull", "--directory", str(root)]) == 2
    assert capsys.readouterr().err.startswith("rankclip: error: no DVC pointer results/tiny/runs.dvc")
