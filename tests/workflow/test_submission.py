"""What the SLURM profile submits for the paper's DAG, read from a dry-run (no cluster needed).

The dry-run prints every job's resources as the profile and config/paper.yaml make them; the sbatch and
srun options are then built from them with the SLURM plugin's own functions, so the test sees what a
cluster would get: GPUs only for training and evaluation, one node and one task for multi-GPU training.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string
from snakemake_executor_plugin_slurm.validation import validate_slurm_extra
from snakemake_executor_plugin_slurm_jobstep import get_cpu_setting, get_gpu_setting, get_node_setting

REPO = Path(__file__).resolve().parents[2]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
# The rules that may ask for GPUs: training, evaluation (embeddings) and ALIP's neural captioner.
EVAL_RULES = {"evaluate_every_run", "evaluate_main_runs", "evaluate_backbone_runs"}
GPU_RULES = {"train", "captions", *EVAL_RULES}


def paper_runs() -> tuple[int, int, int]:
    """(training runs, main runs, backbone runs) of config/paper.yaml: 6 methods + RN50 x 2 + 3 sizes x 2
    + 4 + 4 lambda values (lambda 1 is the main run); the main runs are the methods at the main backbone
    and size, the backbone runs those on the other backbones."""
    runs = PAPER["runs"]
    sweep = [value for value in runs["lambda_cross"] + runs["lambda_in"] if value != 1.0]
    total = len(runs["methods"]) + len(runs["backbones"]) * len(runs["backbone_methods"])
    total += len(runs["data_sizes"]) * len(runs["data_size_methods"]) + len(sweep)
    backbone_runs = len(runs["backbones"]) * len(runs["backbone_methods"])
    seeds = len(runs["seeds"])
    return total * seeds, len(runs["methods"]) * seeds, backbone_runs * seeds


class Resources(dict):
    """A job's resources as the plugin reads them: ``resources.get("gpu")`` and ``resources.gpu``."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def parse_value(text: str):
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def dry_run_jobs(output: str) -> list[SimpleNamespace]:
    """Each job of a dry-run (group members included): rule name, threads, resources, shell command."""
    jobs = []
    for line in output.splitlines():
        # a job with a `message:` (the targets, `all`) is printed as "Job N: <its message>": "<rule>: ..."
        if rule := re.fullmatch(r"\s*(?:local)?rule (\w+):", line) or re.match(r"Job \d+: (\w+): ", line):
            jobs.append(SimpleNamespace(name=rule[1], threads=1, resources=Resources(), shell=""))
        elif not jobs:
            continue
        elif threads := re.fullmatch(r"\s+threads: (\d+)", line):
            jobs[-1].threads = int(threads[1])
        elif resources := re.fullmatch(r"\s+resources: (.*)", line):
            items = (item.split("=", 1) for item in resources[1].split(", "))
            jobs[-1].resources.update((key, parse_value(value)) for key, value in items)
        elif line.startswith("Shell command: "):
            jobs[-1].shell = line.removeprefix("Shell command: ")
    return jobs


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1].split("\n\n")[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def sbatch_call(job) -> str:
    """The sbatch command line the plugin would submit for this job (without the wrapped command)."""
    validate_slurm_extra(job)
    params = dict(
        run_uuid="run",
        slurm_logfile="logs/slurm/%j.log",
        comment_str=f"rule_{job.name}",
        account="-A acct",
        partition="-p gpu",
        workdir="/work",
    )
    return get_submit_command(job, params) + set_gres_string(job)


def srun_options(job) -> str:
    """What the job step inside the allocation passes to `srun -n1` around the rule's command."""
    gpu_job = bool(job.resources.get("gpu"))
    return " ".join([get_cpu_setting(job, gpu_job), get_gpu_setting(job), get_node_setting(job)])


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory) -> tuple[str, float]:
    """The paper DAG through profiles/slurm: (dry-run output, seconds it took)."""
    workdir = tmp_path_factory.mktemp("paper")
    shutil.copytree(REPO / "config", workdir / "config")
    shutil.copytree(REPO / "profiles", workdir / "profiles")
    env = {**os.environ, "SBATCH_ACCOUNT": "acct", "SBATCH_PARTITION": "gpu"}
    start = time.monotonic()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "snakemake", "-n"),
            *("--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir)),
            *("--workflow-profile", str(workdir / "profiles" / "slurm")),
            *("--configfile", str(workdir / "config" / "paper.yaml")),
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stderr[-5000:]
    return result.stdout, seconds


def test_paper_dag_dry_run_is_quick_and_lists_every_job(paper_dry_run):
    output, seconds = paper_dry_run
    assert seconds < 60, f"the paper DAG's dry-run took {seconds:.0f} s"
    counts = job_counts(output)
    print(f"paper DAG through profiles/slurm in {seconds:.1f} s: {counts}")
    runs, main_runs, backbone_runs = paper_runs()
    assert counts["train"] == runs
    # one evaluation process per run and benchmark list
    assert counts["evaluate_every_run"] == runs and counts["evaluate_main_runs"] == main_runs
    assert counts["evaluate_backbone_runs"] == backbone_runs
    assert counts["subset"] == 1 + len(PAPER["runs"]["data_sizes"])
    assert counts["web_shards"] == counts["fetch_url_list"] == counts["tables"] == counts["all"] == 1
    assert counts["total"] == sum(count for rule, count in counts.items() if rule != "total")
    assert len(dry_run_jobs(output)) == counts["total"]


def test_gpus_go_to_training_and_evaluation_only(paper_dry_run):
    # `all` runs nothing and is never submitted (its message, the DAG's cost, replaces its resources lines)
    jobs = [job for job in dry_run_jobs(paper_dry_run[0]) if job.name != "all"]
    for job in jobs:
        call = sbatch_call(job)
        # the profile reads the account and partition from $SBATCH_ACCOUNT and $SBATCH_PARTITION
        assert job.resources["slurm_account"] == "acct" and job.resources["slurm_partition"] == "gpu"
        assert job.resources["runtime"] > 0 and job.resources["mem_mb"] > 0, job.name
        if job.resources.get("gpu"):
            assert job.name in GPU_RULES, f"rule {job.name} asks for GPUs"
            assert f"--gpus={job.resources['gpu']}" in call, call
        else:
            assert "gpu" not in str(job.resources.get("gres", "")), job.name
            assert "--gpus" not in call and "--gres" not in call, call
    gpu_rules = {job.name for job in jobs if job.resources.get("gpu")}
    assert {"train", *EVAL_RULES} <= gpu_rules <= GPU_RULES
    assert PAPER["resources"]["eval"]["gpu"] == 1


def test_multi_gpu_training_is_one_task_on_one_node_running_torchrun(paper_dry_run):
    resources = PAPER["resources"]["train"]
    gpus, cpus = resources["gpu"], resources["cpus"]
    assert gpus > 1
    train = [job for job in dry_run_jobs(paper_dry_run[0]) if job.name == "train"]
    assert len(train) == paper_runs()[0]
    for job in train:
        call = sbatch_call(job)
        # all GPUs and CPUs in one task on one node (no --ntasks-per-gpu: that would be a task per GPU,
        # each with all the CPUs, possibly spread over nodes)
        assert f"--gpus={gpus}" in call and "--nodes=1" in call and f"--cpus-per-task={cpus}" in call, call
        assert job.threads == cpus  # OMP_NUM_THREADS: the job's CPUs, its data workers among them
        assert "--ntasks" not in call, call
        assert f"-t {resources['runtime']}" in call and f"--mem {resources['mem_mb']}" in call, call
        # the job step runs the rule once (srun -n1) with every GPU; torchrun starts one worker per GPU
        assert srun_options(job) == f"--cpus-per-task={cpus} --gpus={gpus} --nodes=1"
        assert job.shell.startswith(f"torchrun --standalone --nproc_per_node {gpus} -m rankclip.cli train ")


def test_evaluation_jobs_get_the_configured_cpus_as_threads_and_the_rest_as_decoding_workers(paper_dry_run):
    cpus = PAPER["resources"]["eval"]["cpus"]
    assert cpus > 1
    evaluations = [job for job in dry_run_jobs(paper_dry_run[0]) if job.name in EVAL_RULES]
    assert evaluations
    for job in evaluations:
        assert f"--cpus-per-task={cpus}" in sbatch_call(job), sbatch_call(job)
        assert job.threads == cpus  # OMP_NUM_THREADS: the encoding process, its decoding workers beside it
        assert f" --workers {cpus - 1} " in job.shell, job.shell


def rule_blocks() -> dict[str, str]:
    """Every rule of the workflow's sources: name -> its text."""
    blocks = {}
    for path in [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        for match in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", path.read_text(), flags=re.M):
            blocks[match[1]] = match[2]
    return blocks


def test_light_rules_stay_on_the_submitting_host():
    """Single-file downloads, the small data builders, tables, notebooks and the report are local rules."""
    blocks = rule_blocks()
    must_be_local = {"demo_corpus", "emoji_corpus", "fashion_mnist", "tables"}
    must_be_local |= {
        name for name in blocks if re.match("fetch_", name) or re.search("notebook|report", name)
    }
    assert {"fetch_url_list", "tables"} <= must_be_local <= set(blocks)
    for name in sorted(must_be_local):
        assert re.search(r"^\s+localrule: True$", blocks[name], flags=re.M), (
            f"rule {name} lacks localrule: True"
        )
    for name in GPU_RULES & set(blocks):
        assert "localrule" not in blocks[name], f"rule {name} needs a GPU node but is a local rule"


def test_profile_keeps_gpus_and_limits_out_of_slurm_extra():
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "profile.yaml").read_text())
    assert profile["executor"] == "slurm"
    defaults = profile["default-resources"]
    assert {"slurm_account", "slurm_partition", "runtime", "mem_mb", "cpus_per_task"} <= set(defaults)
    assert "gpu" not in defaults and "gpu_model" not in defaults  # GPUs only where a rule asks for them
    extras = [defaults.get("slurm_extra", "")] + [
        rule.get("slurm_extra", "") for rule in profile.get("set-resources", {}).values()
    ]
    for extra in extras:
        assert not re.search(r"--(gres|gpus|time|mem|partition|account)\b", extra), extra
