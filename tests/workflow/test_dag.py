"""Dry-runs of the workflow: the DAG each config asks for, and config validation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tiny_dag import venv_env

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


def shell_commands(workdir: Path) -> list[str]:
    """The shell command of every job of the workdir's DAG (a dry-run with --printshellcmds)."""
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "--printshellcmds", "--directory", str(workdir), "--snakefile",
         str(REPO / "workflow" / "Snakefile")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [line.removeprefix("Shell command: ") for line in result.stdout.splitlines()]


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
    # 6 methods x 3 seeds + 2 backbone runs + 2 data-size runs + 1+1 extra lambda runs (lambda 1 and the
    # data-size curve's main size are main runs)
    runs = 6 * 3 + 2 + 2 + 2
    # one evaluation process per run (eval.jobs per_run): the 18 main runs (3 every-run benchmarks and 5
    # more), the 2 backbone runs (3 and 2 linear probes), the 4 sweep runs (the 3 every-run benchmarks)
    assert counts == {
        "demo_corpus": 1,
        "emoji_corpus": 1,
        "fashion_mnist": 1,
        "subset": 2,  # 4096 (main) and 2048
        "train": runs,
        "evaluate_every_run": runs - 6 * 3 - 2,
        "evaluate_main_runs": 6 * 3,
        "evaluate_backbone_runs": 2,
        "tables": 1,
        "notebook": 6,  # notebooks/*.py: tables, Figs. 3, 4, 5, 6, 7
        "report": 1,
        "all": 1,
        "total": 5 + runs + runs + 1 + 6 + 1 + 1,
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
    # one job DVC-tracks the 22 downloads of record (URL list, shards, the 20 files): DVC locks the repo
    assert counts["track_downloads"] == 1
    # one evaluation process per run and list: every run (ImageNet, ImageNet-R, COCO); the 6 main runs
    # (V2 x 3, 10 linear probes, the gap); the 2 RN50 runs (the 10 linear probes of Table 4's average)
    assert counts["evaluate_every_run"] == counts["train"]
    assert counts["evaluate_main_runs"] == 6 and counts["evaluate_backbone_runs"] == 2


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
        (
            lambda c: c["eval"]["main_runs"].append("zeroshot:shapes"),
            "eval.main_runs: zeroshot:shapes already in eval.every_run",
        ),
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


def scheduled_runs(output: str) -> set[str]:
    """The run ids of the train jobs a dry-run lists."""
    return set(re.findall(r"rule train:\n(?:.*\n)*?\s+wildcards: run_id=(\S+)", output))


def test_paper_table1_target_trains_and_evaluates_only_table1s_runs(workdir):
    result = dry_run(workdir, "table1", "--configfile", str(workdir / "config" / "paper.yaml"))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    # the 6 main runs on the every-run benchmarks (ImageNet-1K, ImageNet-R, COCO: one process each), and
    # the data they need (no V2, no linear-probe sets)
    assert counts["train"] == 6 and counts["evaluate_every_run"] == 6 and counts["table1"] == 1
    assert counts["subset"] == 1 and counts["imagenet_val"] == counts["mscoco_karpathy"] == 1
    assert counts["imagenet_shift"] == 1  # ImageNet-R
    for absent in ("notebook", "report", "tables", "linear_probe_set", "evaluate_main_runs", "all"):
        assert absent not in counts


def test_target_lists_exactly_its_runs_and_prints_its_cost(workdir):
    snakefile = str(REPO / "workflow" / "Snakefile")
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "fig4", "--directory", str(workdir), "--snakefile", snakefile,
         "--configfile", str(workdir / "config" / "paper.yaml")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    # the curve on RN50 as in the paper (its 3M point: the main size, all that downloaded), and the main
    # ViT-B/32 runs of the same methods (the robustness table beside it)
    sizes, methods = [500000, 750000, 1000000, "all"], ("clip", "rankclip")
    assert scheduled_runs(result.stdout) == {
        f"{method}__RN50__n{size}__lc1.0__li1.0__ls0.03125__s0" for method in methods for size in sizes
    } | {f"{method}__ViT-B-32__nall__lc1.0__li1.0__ls0.03125__s0" for method in methods}
    # x 64 epochs, at 800 (RN50) and 1500 (ViT-B-32) samples/s per GPU (paper.yaml); before the download
    # "all" is costed at the paper's 3M it stands for (report.data_sizes)
    rn50, vit = 2 * 64 * (500000 + 750000 + 1000000 + 3000000), 2 * 64 * 3000000
    hours = rn50 / 800 / 3600 + vit / 1500 / 3600
    assert f"fig4: 10 training runs, {rn50 + vit:,} samples seen, ~{hours:,.1f} GPU-hours" in result.stdout


def test_every_target_builds_in_both_configs(workdir):
    targets = ["table1", "table2", "table3", "table4", "fig3", "fig4", "fig5", "fig6", "fig7"]
    for config in ("config.yaml", "paper.yaml"):
        result = dry_run(workdir, *targets, "--configfile", str(workdir / "config" / config))
        assert result.returncode == 0, (config, result.stderr)
        counts = job_counts(result.stdout)
        assert all(counts[target] == 1 for target in targets), (config, counts)
        assert "all" not in counts and "report" not in counts


def test_linear_probe_protocol_comes_from_the_config(workdir):
    path = workdir / "config" / "config.yaml"
    commands = {}
    for probe in ("linear", "logistic"):
        config = yaml.safe_load(path.read_text())
        config["eval"]["probe"] = probe
        path.write_text(yaml.safe_dump(config))
        commands[probe] = [line for line in shell_commands(workdir) if line.startswith("rankclip eval ")]
    for probe, lines in commands.items():
        probes = [line for line in lines if " --linear-probe " in line]
        assert len(probes) == 6 * 3 + 2 and all(f" --probe {probe} " in line for line in probes)
        assert not any("--probe" in line for line in lines if line not in probes)


def test_task_names_agree_across_schema_workflow_cli_and_results():
    """One name per evaluation task: config pattern, the eval rule's wildcard, the CLI, the results JSON."""
    from rankclip.cli import build_parser
    from rankclip.eval.results import TASKS

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    patterns = {
        schema["properties"]["eval"]["properties"][key]["items"]["pattern"]
        for key in ("every_run", "main_runs", "backbone_runs")
    }
    assert patterns == {f"^({'|'.join(TASKS)}):[A-Za-z0-9_-]+$"}
    for task in TASKS:
        args = ["eval", task, "--checkpoint", "m.pt", "--dataset", "d", "--out", "o"]
        assert build_parser().parse_args(args).eval_command == task
        # the workflow's one process per list: `eval all --<task>` (dashed) NAME=DIR ...
        args = ["eval", "all", "--checkpoint", "m.pt", f"--{task.replace('_', '-')}", "x=d", "--out-dir", "o"]
        assert getattr(build_parser().parse_args(args), task) == [("x", Path("d"))]


def test_probe_names_agree_across_schema_cli_and_library(capsys):
    from rankclip.cli import build_parser
    from rankclip.eval.linear_probe import PROBE_METHODS

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    assert tuple(schema["properties"]["eval"]["properties"]["probe"]["enum"]) == PROBE_METHODS
    args = ["eval", "linear_probe", "--checkpoint", "m.pt", "--dataset", "d", "--out", "o"]
    assert build_parser().parse_args(args).probe == PROBE_METHODS[0]
    with pytest.raises(SystemExit):
        build_parser().parse_args([*args, "--probe", "other"])
    assert f"(choose from {', '.join(map(repr, PROBE_METHODS))})" in capsys.readouterr().err


def test_the_proposed_ablations_are_one_config_line_each(workdir):
    """runs.list_scales (1/16, 1/64) and RN101 in runs.backbones: off in paper.yaml, on as it says."""
    path = workdir / "config" / "paper.yaml"
    config = yaml.safe_load(path.read_text())
    assert config["runs"]["list_scales"] == [] and "RN101" not in config["runs"]["backbones"]
    config["runs"]["list_scales"] = [0.0625, 0.015625]
    config["runs"]["backbones"] = ["RN50", "RN101"]
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "--directory", str(workdir), "--snakefile", str(REPO / "workflow" / "Snakefile"),
         "--configfile", str(path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = scheduled_runs(result.stdout)
    assert len(runs) == 22 + 2 + 2
    assert {f"rankclip__ViT-B-32__nall__lc1.0__li1.0__ls{scale}__s0" for scale in (0.0625, 0.015625)} <= runs
    assert {f"{method}__RN101__nall__lc1.0__li1.0__ls0.03125__s0" for method in ("clip", "rankclip")} <= runs
    # a list-scale run is no main run: the every-run benchmarks only (RN101: Table 4's linear probes too)
    counts = job_counts(result.stdout)
    assert counts["evaluate_every_run"] == len(runs) and counts["evaluate_main_runs"] == 6
    assert counts["evaluate_backbone_runs"] == 2 + 2
    assert "--list-scale 0.0625" in result.stdout


def test_a_download_smaller_than_a_requested_size_stops_the_dag_naming_both(workdir):
    """Once the web download's summary.json exists, every training-set size must fit in what downloaded."""
    summary = workdir / "resources" / "paper" / "web" / "shards" / "summary.json"
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"successes": 800_000, "total": 3_318_333}))
    result = dry_run(workdir, "--configfile", str(workdir / "config" / "paper.yaml"))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "runs.data_sizes: 1,000,000 pairs requested, but 800,000 pairs downloaded" in output
    assert "runs.data_size:" not in output  # all: every pair that downloaded, whatever their count
    assert "runs.data_sizes: 750,000" not in output  # fits
    summary.write_text(json.dumps({"successes": 2_600_000, "total": 3_318_333}))
    assert dry_run(workdir, "--configfile", str(workdir / "config" / "paper.yaml")).returncode == 0


def test_one_evaluation_process_per_run_with_the_umap_for_the_lowest_seed_only(workdir):
    commands = [line for line in shell_commands(workdir) if line.startswith("rankclip eval all ")]
    assert len(commands) == 24  # eval.jobs per_run: one process per run, on all the lists that apply to it
    every_run = "--zeroshot shapes=resources/demo/demo/eval/zeroshot shapes_sketch=resources/demo/demo/eval/"
    assert all(line.split(" --checkpoint ")[1].split(" ", 1)[1].startswith(every_run) for line in commands)
    gaps = [line for line in commands if "--gap shapes_captions=" in line]
    assert len(gaps) == 6 * 3 and all(" --linear-probe shapes_texture=" in line for line in gaps)  # main runs
    for line in gaps:  # Fig. 6 draws the lowest seed's UMAP: the others skip the projection
        assert ("--no-umap" in line) == (re.search(r"__s(\d+)/model.pt", line)[1] != "0")
    others = [line for line in commands if line not in gaps]  # every_run's benchmarks and no modality gap
    assert len(others) == 6 and all(
        line.split(" --gap")[1].split(" --out-dir")[0] in ("", " --probe linear") for line in others
    )


def test_per_run_evaluation_refuses_a_run_that_is_both_main_and_backbone_run(workdir):
    overlay = workdir / "config" / "both.yaml"
    configs = ["--configfile", str(workdir / "config" / "config.yaml"), str(overlay)]
    backbone_runs = ["zeroshot:shapes_texture"]  # none of main_runs' pairs: those are refused twice
    both = {"runs": {"backbones": ["rankclip-tiny-rn"]}, "eval": {"backbone_runs": backbone_runs}}
    overlay.write_text(yaml.safe_dump(both))
    result = dry_run(workdir, *configs)
    assert result.returncode != 0
    assert "repeats the main backbone 'rankclip-tiny-rn': with eval.jobs per_run" in result.stdout
    overlay.write_text(yaml.safe_dump(both | {"eval": {**both["eval"], "jobs": "per_list"}}))
    assert dry_run(workdir, *configs).returncode == 0


def test_study_config_trains_the_six_methods_over_its_seeds_and_one_run_trains(workdir):
    """config/study.yaml (an overlay on the demo): Table 1's six methods x 12 seeds, nothing else; and one
    of its runs trains a few steps (its flags, on a 512-pair corpus for one epoch: 2 steps of 256)."""
    shutil.copy(REPO / "config" / "study.yaml", workdir / "config" / "study.yaml")
    study = ["--configfile", str(workdir / "config" / "study.yaml")]
    result = dry_run(workdir, *study)
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["train"] == counts["evaluate_main_runs"] == 6 * 12  # per_run: one evaluation each
    assert {"evaluate_every_run", "evaluate_backbone_runs"}.isdisjoint(counts) and counts["subset"] == 1
    small = workdir / "config" / "small.yaml"
    sizes = {"demo": {"num_train": 512, "num_eval": 32, "shard_size": 128}}  # a shard per reader
    small.write_text(yaml.safe_dump({"data": sizes, "train": {"epochs": 1}, "runs": {"data_size": 512}}))
    run_dir = "results/study/runs/rankclip__rankclip-tiny-rn__n512__lc1.0__li1.0__ls0.03125__s11"
    snakefile = str(REPO / "workflow" / "Snakefile")
    result = subprocess.run(
        [*SNAKEMAKE, f"{run_dir}/model.pt", "--cores", "2", "--directory", str(workdir), "--snakefile",
         snakefile, *study, str(small)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env=venv_env(),
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    checkpoint = torch.load(workdir / run_dir / "model.pt", map_location="cpu", weights_only=True)
    assert checkpoint["step"] == 2 and checkpoint["data_size"] == 512
    config = checkpoint["config"]
    assert (config["batch_size"], config["seed"], config["warmup_steps"]) == (256, 11, 200)
