"""Dry-runs of the workflow: the DAG each config asks for, and config validation."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            *SNAKEMAKE,
            "-n",
            "--quiet",
            "rules",
            "--directory",
            str(workdir),
            "--snakefile",
            str(REPO / "workflow" / "Snakefile"),
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    return tmp_path


def test_demo_dag(workdir):
    result = dry_run(workdir)
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # 6 methods + 2 backbone runs + 2 data-size runs + 1+1 extra lambda runs (lambda 1 is the main run)
    runs = 6 + 2 + 2 + 2
    # every run: 3 benchmarks; the 6 main runs: 5 more; the 2 backbone runs: 2 linear probes more
    evaluations = runs * 3 + 6 * 5 + 2 * 2
    assert counts == {
        "demo_corpus": 1,
        "emoji_corpus": 1,
        "fashion_mnist": 1,
        "subset": 2,  # 4096 (main) and 2048
        "train": runs,
        "evaluate": evaluations,
        "tables": 1,
        "notebook": 6,  # notebooks/*.py: tables, Figs. 3, 4, 5, 6, 7
        "report": 1,
        "all": 1,
        "total": 5 + runs + evaluations + 2 + 7,
    }


def test_paper_dag(workdir):
    result = dry_run(workdir, "--configfile", str(workdir / "config" / "paper.yaml"))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train"] == 6 + 2 + 3 * 2 + 4 + 4
    assert counts["subset"] == 4
    assert counts["web_shards"] == counts["fetch_url_list"] == 1
    assert counts["notebook"] == 6 and counts["report"] == counts["tables"] == 1
    # ALIP's captions; the evaluation sets: ImageNet-1K from the user's archive, V2 x 3 + ImageNet-R, COCO,
    # ten linear-probe sets, from 20 verified downloads (V2 3, R 1, COCO 2, linear probes 14)
    assert counts["captions"] == counts["imagenet_val"] == counts["mscoco_karpathy"] == 1
    assert counts["imagenet_shift"] == 4 and counts["linear_probe_set"] == 10
    assert counts["fetch_eval_file"] == 20
    # every run: ImageNet, ImageNet-R, COCO; the 6 main runs also V2 x 3, 10 linear probes, the gap;
    # the 2 RN50 runs also the 10 linear probes (Table 4's average)
    assert counts["evaluate"] == counts["train"] * 3 + 6 * 14 + 2 * 10


def test_paper_dag_without_captions_trains_on_the_web_shards(workdir):
    path = workdir / "config" / "paper.yaml"
    config = yaml.safe_load(path.read_text())
    config["data"]["web"]["captions"]["source"] = "none"
    path.write_text(yaml.safe_dump(config))
    result = dry_run(workdir, "--configfile", str(path))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert "captions" not in counts and counts["subset"] == 4


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["runs"].update(methods=["clip", "siglip"]), "siglip"),
        (lambda c: c["train"].update(loss="clip"), "loss"),
        (lambda c: c.update(extra_key=1), "extra_key"),
        (lambda c: c["resources"]["train"].update(gpu=-1), "gpu"),
    ],
)
def test_bad_config_is_rejected_with_the_field_named(workdir, edit, message):
    path = workdir / "config" / "config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))
    result = dry_run(workdir)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout


def test_snakefmt_is_clean():
    snakefmt = Path(sys.executable).with_name("snakefmt")
    result = subprocess.run(
        [str(snakefmt), "--check", "workflow"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lint_is_clean():
    result = subprocess.run(
        [*SNAKEMAKE, "--lint", "--snakefile", "workflow/Snakefile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
