"""The paper config against the paper's protocol (issue 9's table): one config or DAG fact per row."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from synthetic_results import BACKBONE, DATA_SIZE, PAPER_NAMES, PAPER_ROLES, write_synthetic_results

from rankclip import protocol, report
from rankclip.corpus import subsets as subsets_module

REPO = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> str:
    """`snakemake -n -p --configfile config/paper.yaml`: every job with its shell command."""
    workdir = tmp_path_factory.mktemp("paper")
    shutil.copytree(REPO / "config", workdir / "config")
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--directory", str(workdir), "--snakefile",
         str(REPO / "workflow" / "Snakefile"), "--configfile", str(workdir / "config" / "paper.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def shell_commands(output: str, prefix: str) -> list[str]:
    return [line.removeprefix("Shell command: ") for line in output.splitlines() if prefix in line]


def test_global_batch_is_the_configs_number_for_every_gpu_count(dry_run):
    assert PAPER["train"]["batch_size"] == 128  # the authors' main.py default, divided by the GPU count
    trains = shell_commands(dry_run, "-m rankclip.cli train ")
    assert len(trains) == 22 and all(" --batch-size 128 " in line for line in trains)
    assert all("--nproc_per_node 4" in line for line in trains)  # 4 GPUs, each 32: the same 128


def test_fig4_runs_on_rn50_from_500k_to_the_main_size(dry_run):
    assert PAPER["runs"]["data_size_backbone"] == "RN50"
    runs = set(re.findall(r"run_id=(\w+__RN50__n\w+?__\S+?)[,\s]", dry_run))
    sizes = {re.search(r"__n(\w+?)__", run)[1] for run in runs}
    assert sizes == {"500000", "750000", "1000000", PAPER["runs"]["data_size"]}


def test_fig4s_15m_point_is_an_explicit_not_run_entry():
    assert 15_000_000 not in PAPER["report"]["data_sizes"].values()
    roles = report.Roles.from_config(PAPER["report"])
    frame = report.prepare(
        report.pd.DataFrame(columns=["task", "dataset", "backbone", "data_size", "method"])
    )
    curve = report.data_size_curve(frame, "RN50", roles.zeroshot, roles.data_sizes, methods=["clip"])
    fifteen = curve[curve["paper_data_size"] == "15M"]
    assert list(fifteen["source"]) == ["paper"] and list(fifteen["data_size"]) == [report.NOT_RUN]


def test_table4_has_no_ours_minus_paper_rows_its_training_set_differs(tmp_path):
    """Results on the paper's own benchmarks (ImageNet, COCO): Table 4 shows the paper's numbers (probably
    trained on 15M pairs) beside ours, never their difference; Table 1 (the same CC3M) does."""
    write_synthetic_results(tmp_path, names=PAPER_NAMES)
    frame, roles = report.collect(tmp_path), report.Roles.from_config(PAPER_ROLES)
    table4 = report.table4(
        frame, DATA_SIZE, "imagenet1k", "mscoco_karpathy", list(roles.linear_probe), roles.backbones
    )
    assert {"ours", "paper"} <= set(table4["source"]) and "ours - paper" not in set(table4["source"])
    table1 = report.table1(frame, BACKBONE, DATA_SIZE, "imagenet1k", "mscoco_karpathy")
    assert "ours - paper" in set(table1["source"])


def test_alip_captioner_and_every_remaining_difference_is_listed_with_a_reason():
    rows = {row["key"]: row for row in protocol.protocol_rows(PAPER)}
    assert rows["captioner"]["differs"] and "BLIP" in rows["captioner"]["reason"]
    assert rows["fig4_backbone"]["differs"] is False and rows["global_batch"]["differs"] is False
    assert rows["linear_probe_protocol"]["differs"] is False
    for row in rows.values():
        assert not row["differs"] or row["reason"], row["key"]


def test_fig7_is_a_notebook_job_on_the_main_clip_and_rankclip_runs(dry_run):
    job = dry_run.split("wildcards: notebook=fig7_localisation")[0].rsplit("rule notebook:", 1)[1]
    for method in ("clip", "rankclip"):
        assert f"results/paper/runs/{method}__ViT-B-32__nall__lc1.0__li1.0__ls0.03125__s0/model.pt" in job
    assert "resources/paper/eval/mscoco_karpathy/dataset_type.txt" in job


def test_proposed_ablations_are_off_and_one_line_each():
    paper_text = (REPO / "config" / "paper.yaml").read_text()
    assert PAPER["runs"]["list_scales"] == [] and "[0.0625, 0.015625] adds the proposed" in paper_text
    assert "RN101" not in PAPER["runs"]["backbones"] and "[RN50, RN101] adds the proposed" in paper_text


def test_linear_probe_protocol_is_the_papers_and_selectable(dry_run):
    assert PAPER["eval"]["probe"] == "linear"
    probes = shell_commands(dry_run, " --linear-probe ")  # one process per main and RN50 run
    assert len(probes) == 6 + 2 and all(line.count("=resources/paper/") >= 10 for line in probes)
    assert all(" --probe linear " in line for line in probes)


def test_main_runs_train_on_all_that_downloaded_and_report_its_count(dry_run, tmp_path):
    """runs.data_size: all: one subset of every pair (`--sizes all`), the main runs' ids say `nall`; the
    count is the subset manifest's, and evaluations, tables and notebooks are given that number."""
    assert PAPER["runs"]["data_size"] == "all" and PAPER["report"]["data_sizes"]["all"] == 3_000_000
    assert len(shell_commands(dry_run, "rankclip data subsets ")) == 4
    assert any("--sizes all " in line for line in shell_commands(dry_run, "rankclip data subsets "))
    assert "(data_size all: 3,000,000 pairs per epoch, the paper's size until the download ran)" in dry_run
    mains = set(re.findall(r"run_id=(\w+__ViT-B-32__\w+?__lc1\.0__li1\.0__ls0\.03125__s0)", dry_run))
    assert len(mains) == 6 and all("__nall__" in run for run in mains)

    shutil.copytree(REPO / "config", tmp_path / "config")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    subsets = tmp_path / "resources" / "paper" / "subsets"
    subsets.mkdir(parents=True)
    every = subsets_module.make_subset({"00000.tar": [f"{i:09d}" for i in range(2_731)]}, "all", seed=0)
    subsets_module.write_manifest(every, subsets / "subset-all.json")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "all", "table1", "--directory", str(tmp_path),
         "--snakefile", str(REPO / "workflow" / "Snakefile"),
         "--configfile", str(tmp_path / "config" / "paper.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    evals = [line for line in shell_commands(result.stdout, "rankclip eval ") if "__nall__" in line]
    # the run's identity (data size included) comes from its checkpoint, not from flags
    flags = ("--data-size", "--method", "--run-id")
    assert evals and not any(flag in line for line in evals for flag in flags)
    tables = shell_commands(result.stdout, "rankclip report tables ")
    assert len(tables) == 2 and all("--data-size 2731 " in line for line in tables)
    notebooks = shell_commands(result.stdout, "papermill ")
    assert len(notebooks) == 6
    assert all('"data_size": 2731,' in line and '"2731": 3000000' in line for line in notebooks)
