"""The paper DAG rehearsed (config/rehearsal.yaml over config/paper.yaml) on a loopback mirror of miniature
files in the published formats (tests/rehearsal_mirror.py), on the CPU.

- ``test_data_rules``: every data rule of the paper DAG (URL list, img2dataset shards, ALIP's captions,
  the 20 evaluation-set downloads, ImageNet val / V2 / R, COCO Karpathy, the ten linear-probe sets, the
  subsets) runs, as Snakemake's summary shows; the broken web downloads are counted in the shards'
  summary.json, not fatal; the converted sets read back. Runs by default.
- ``test_whole_dag`` (slow): the rest of the paper DAG on the same workdir, every rule through report.html
  (93 jobs, ~9 minutes on 2 cores; README, "Rehearsal of the paper DAG").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import webdataset as wds
import yaml
from dvc_env import dvc, dvc_env
from http_server import serve_directory
from rehearsal_mirror import NUM_PAIRS, OVERSIZED, build_mirror, write_url_list
from test_slurm import ACCOUNT, PARTITION, slurm  # noqa: F401 (slurm: the single-node SLURM fixture)
from tiny_dag import drop_training_state, job_stats

from rankclip.eval.datasets import WdsSplit, dataset_type
from rankclip.evalsets.registry import REGISTRY

pytest.importorskip("img2dataset", reason="the web_shards rule needs img2dataset")

REPO = Path(__file__).resolve().parents[2]
CONFIGS = ["config/paper.yaml", "config/rehearsal.yaml", "config/mirror.yaml"]
DATA = Path("resources") / "rehearsal"
EVAL_RULES = {"evaluate_every_run", "evaluate_main_runs", "evaluate_backbone_runs"}
DATA_RULES = {
    "fetch_url_list",
    "web_shards",
    "captions",
    "fetch_eval_file",
    "imagenet_val",
    "imagenet_shift",
    "mscoco_karpathy",
    "linear_probe_set",
    "subset",
    "track_downloads",
}
SIZES = [64, 128, 192, "all"]  # Fig. 4's three, and the main runs' every pair that downloaded


def snakemake(workdir: Path, *args: str, configs=CONFIGS) -> list[str]:
    """A Snakemake command on the rehearsal configs (targets go in ``args``, before --configfile)."""
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "workflow" / "Snakefile"),
            "--directory", str(workdir), *args, "--configfile", *configs]  # fmt: skip


def run(
    workdir: Path, *args: str, timeout: int, env: dict[str, str] | None = None, configs=CONFIGS
) -> tuple[subprocess.CompletedProcess, float]:
    """Run Snakemake in ``workdir`` (on the rehearsal configs); return the process and its wall seconds."""
    env = {
        **os.environ,
        **(env or {}),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
    }
    start = time.monotonic()
    result = subprocess.run(
        snakemake(workdir, *args, configs=configs),
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return result, time.monotonic() - start


def summary_rules(workdir: Path, targets: list[str]) -> dict[str, int]:
    """Outputs per rule that Snakemake's --summary records as made by a finished job (status ok)."""
    result, _ = run(workdir, "--cores", "1", "--summary", *targets, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    counts: dict[str, int] = {}
    for line in result.stdout.splitlines()[1:]:
        fields = line.split("\t")
        if len(fields) >= 5 and fields[4] == "ok":
            counts[fields[2]] = counts.get(fields[2], 0) + 1
    return counts


def paper_rules(workdir: Path) -> set[str]:
    """The rules of config/paper.yaml's own DAG (a dry-run), the ones the rehearsal must all run."""
    result, _ = run(workdir, "-n", "--quiet", "rules", timeout=300, configs=["config/paper.yaml"])
    assert result.returncode == 0, result.stderr[-3000:]
    return set(job_stats(result.stdout)) - {"total"}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """The mirror, served on 127.0.0.1 for the whole module; its URL list points at the server."""
    mirror = build_mirror(tmp_path_factory.mktemp("mirror"))
    with serve_directory(tmp_path_factory.mktemp("closed")) as closed:
        refused = closed.url("x.jpg")  # nothing listens there once the block ends: connection refused
    with serve_directory(mirror.root) as server:
        write_url_list(mirror, server.url(""), refused)
        yield mirror, server


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mirror) -> Iterator[Path]:
    mirror, server = mirror
    workdir = tmp_path_factory.mktemp("rehearsal")
    subprocess.run(["cp", "-r", str(REPO / "config"), str(REPO / "profiles"), str(workdir)], check=True)
    (workdir / "config" / "mirror.yaml").write_text(yaml.safe_dump(mirror.config(server.url(""))))
    dvc("init", "--no-scm", "--quiet", cwd=workdir, env=dvc_env(workdir))  # track_downloads' repository
    yield workdir
    drop_training_state(workdir)


def data_targets() -> list[str]:
    sets = [str(DATA / "eval" / name / "dataset_type.txt") for name in REGISTRY]
    subsets = [str(DATA / "subsets" / f"subset-{size}.json") for size in SIZES]
    return [str(DATA / "web" / "captioned" / "captions.json"), *sets, *subsets, "track_downloads"]


def test_rehearsal_dag_has_every_rule_of_the_paper_dag(tmp_path):
    """A dry-run: the rehearsal's DAG holds every rule of the paper's, as many evaluation-set jobs, and the
    same analyses cut down (lambda grids of two points: one extra run each; Fig. 4 with three sizes)."""
    subprocess.run(["cp", "-r", str(REPO / "config"), str(REPO / "profiles"), str(tmp_path)], check=True)
    result, _ = run(tmp_path, "-n", "--quiet", "rules", timeout=300, configs=CONFIGS[:2])
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_stats(result.stdout)
    assert set(counts) - {"total"} == paper_rules(tmp_path)
    paper, _ = run(tmp_path, "-n", "--quiet", "rules", timeout=300, configs=CONFIGS[:1])
    for rule in ("fetch_eval_file", "imagenet_shift", "linear_probe_set", "notebook"):
        assert counts[rule] == job_stats(paper.stdout)[rule], rule
    assert counts["train"] == 6 + 2 + 3 * 2 + 1 + 1 and counts["subset"] == 4


def test_data_rules(workdir, mirror, record_property):
    mirror, server = mirror
    targets = data_targets()
    result, seconds = run(workdir, "--cores", "2", *targets, timeout=1500, env=dvc_env(workdir))
    record_property("data_rules_wall_s", round(seconds))
    print(f"data rules of the rehearsal: {seconds:.0f} s wall")
    assert result.returncode == 0, result.stderr[-5000:]
    planned = job_stats(result.stdout + result.stderr)
    print("jobs per rule:", planned)
    assert set(planned) - {"total"} == DATA_RULES
    rest = {"train", *EVAL_RULES, "tables", "notebook", "report", "all"}
    assert paper_rules(workdir) - rest == DATA_RULES
    downloadable = [r for spec in REGISTRY.values() for r in spec.resources if r.url]
    assert planned["fetch_eval_file"] == len(downloadable) == 20
    made = summary_rules(workdir, targets)
    assert set(made) == DATA_RULES, made  # every data rule finished at least one job
    assert made["linear_probe_set"] == 10 and made["imagenet_shift"] == 4 and made["subset"] == len(SIZES)

    # the broken downloads were skipped and counted, not fatal
    summary = json.loads((workdir / DATA / "web" / "shards" / "summary.json").read_text())
    kinds = list(mirror.failures.values())
    downloads, decodes = sum(k in ("404", "refused") for k in kinds), kinds.count("decode")
    assert summary["total"] == NUM_PAIRS
    assert summary["failed_to_download"] == downloads and summary["failed_to_resize"] == decodes
    assert summary["successes"] == NUM_PAIRS - downloads - decodes
    reasons = summary["failures"]
    assert reasons["failed_to_download"].get("HTTP Error 404: Not Found") == kinds.count("404")
    assert reasons["failed_to_resize"] == {"Image decoding error": decodes}
    shard = workdir / DATA / "web" / "captioned" / "00000.tar"
    samples = list(wds.WebDataset(str(shard), shardshuffle=False).decode("pil"))
    assert len(samples) == summary["successes"] and all(s["syn.txt"].strip() for s in samples)
    oversized = [s for s in samples if s["json"]["url"].endswith(OVERSIZED)]
    assert len(oversized) == 1 and oversized[0]["jpg"].size == (32, 32)
    assert all(url not in {s["json"]["url"] for s in samples} for url in mirror.failures)
    assert {r.path for r in server.requests} >= {"cc3m_train.tsv", "cifar-10-python.tar.gz"}

    # every converted set reads back with the mirror's counts
    for name, counts in mirror.counts.items():
        folder = workdir / DATA / "eval" / name
        assert dataset_type(folder) in ("classification", "retrieval")
        for split, count in counts.items():
            assert len(WdsSplit(folder, split).index().keys) == count, (name, split)
    for size in SIZES:
        manifest = json.loads((workdir / DATA / "subsets" / f"subset-{size}.json").read_text())
        assert manifest["size"] == (summary["successes"] if size == "all" else size)
        assert manifest["source_num_samples"] == summary["successes"]

    # every download of record is DVC-tracked, its pointer naming where it came from, and clean
    pointers = sorted(workdir.glob("resources/rehearsal/**/*.dvc"))
    assert len(pointers) == 2 + 20  # the URL list, the shards folder, each evaluation-set download
    url_list = yaml.safe_load((workdir / DATA / "web" / "cc3m_train.tsv.dvc").read_text())["outs"][0]
    assert url_list["meta"]["source_url"] == server.url("cc3m_train.tsv")
    status = dvc("status", "--json", cwd=workdir, env=dvc_env(workdir))
    assert json.loads(status or "{}") == {}, status


@pytest.mark.slow
def test_whole_dag(workdir, mirror, record_property):
    """Every rule of the paper DAG at least once, through report.html (after test_data_rules: the rest)."""
    result, seconds = run(workdir, "--cores", "2", timeout=7200, env=dvc_env(workdir))
    record_property("whole_dag_wall_s", round(seconds))
    print(f"whole rehearsal DAG: {seconds:.0f} s wall")
    assert result.returncode == 0, result.stderr[-5000:]
    made = summary_rules(workdir, [])
    print("outputs per rule:", made)
    missing = paper_rules(workdir) - {"all"} - set(made)  # `all` has no output of its own
    assert not missing, missing
    report = workdir / "results" / "rehearsal" / "report.html"
    assert report.is_file() and "<table" in report.read_text()


# One job of every data rule besides table1's own (which needs the URL list, the shards, the captions, a
# subset, ImageNet val, COCO and their downloads): an ImageNet shift set and a linear-probe set.
SLURM_EXTRA = [
    str(DATA / "eval" / "imagenet_r" / "dataset_type.txt"),
    str(DATA / "eval" / "cifar10" / "dataset_type.txt"),
]


@pytest.mark.slow
@pytest.mark.usefixtures("slurm")
def test_slurm_table1_and_every_data_rule(mirror, tmp_path, record_property):
    """config/rehearsal.yaml's table1 target plus one job of every data rule through profiles/slurm on the
    single-node SLURM (tests/workflow/test_slurm.py): the non-local rules become SLURM jobs, and SLURM holds
    each with the rehearsal's resources and no GPU (the rehearsal's gpu: 0; the paper's GPU options are
    test_submission.py's)."""
    mirror, server = mirror
    workdir = tmp_path / "slurm"
    workdir.mkdir()
    subprocess.run(["cp", "-r", str(REPO / "config"), str(REPO / "profiles"), str(workdir)], check=True)
    (workdir / "config" / "mirror.yaml").write_text(yaml.safe_dump(mirror.config(server.url(""))))
    profile = ["--workflow-profile", str(workdir / "profiles" / "slurm"), "--slurm-status-command",
               "squeue", "--slurm-init-seconds-before-status-checks", "1",
               "--seconds-between-status-checks", "2"]  # fmt: skip
    # The single node has 2 CPUs: jobs asking for more (img2dataset's 16, the captioner's 8 threads) would
    # never be scheduled. The CLI's --set-resources replaces the profile's whole list: train's is repeated.
    profile += ["--set-threads", "web_shards=2", "captions=2", "--set-resources",
                "web_shards:cpus_per_task=2", "web_shards:runtime=60", "captions:mem_mb=4000",
                "train:tasks_per_gpu=0", "train:nodes=1"]  # fmt: skip
    account = {"SBATCH_ACCOUNT": ACCOUNT, "SBATCH_PARTITION": PARTITION}
    result, seconds = run(workdir, "table1", *SLURM_EXTRA, *profile, timeout=1500, env=account)
    record_property("slurm_wall_s", round(seconds))
    print(f"SLURM rehearsal (table1 + one job of every data rule): {seconds:.0f} s wall")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    planned = job_stats(output)
    print("jobs per rule:", planned)
    # track_downloads is a local rule that needs every download, rehearsed by test_data_rules
    assert set(planned) >= DATA_RULES - {"track_downloads"}
    assert {"train", "evaluate_every_run", "table1"} <= set(planned)
    assert planned["train"] == 6  # Table 1: the six methods' main runs

    logs = sorted((workdir / "logs" / "slurm").rglob("*.log"))
    submitted = {log.relative_to(workdir / "logs" / "slurm").parts[0] for log in logs}
    local = {"fetch_url_list", "fetch_eval_file", "table1"}  # localrule: True
    expected = {f"rule_{rule}" for rule in set(planned) - local - {"total", "evaluate_every_run"}} | {
        "group_eval_evaluate_every_run"
    }
    assert submitted == expected, (submitted, expected)
    job_ids = [log.stem for log in logs]
    fields = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i|%T|%C|%b", "--jobs", ",".join(job_ids)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    jobs = {f.split("|")[0]: f.split("|")[1:] for f in fields}
    assert set(jobs) == set(job_ids)
    for job_id, (state, cpus, gres) in jobs.items():
        assert state == "COMPLETED" and "gpu" not in gres, (job_id, state, gres)
        assert int(cpus) >= 1
    assert (workdir / "results" / "rehearsal" / "targets" / "table1" / "table1.md").is_file()
