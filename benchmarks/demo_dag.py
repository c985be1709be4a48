"""Where a workflow run's time goes: per rule, jobs, wall and CPU time; for training, achieved samples/s
against the compute-only rate of benchmarks/train_step.py; and the DAG overhead ratio (the DAG's wall time
divided by its training compute: training samples / compute-only samples/s).

    python benchmarks/demo_dag.py                                        # the demo, all cores (~8 min on 2)
    python benchmarks/demo_dag.py --configfile .test/config/config.yaml  # the demo at test scale (~3 min)
    python benchmarks/demo_dag.py --directory W --log W/.snakemake/log/<run>.snakemake.log  # a finished run

The DAG runs from scratch in a fresh --directory (a copy of config/ and profiles/). Per-job wall time comes
from Snakemake's log (1 s resolution), CPU time from the jobs' `benchmark:` files where a rule has one.
The compute-only rate is measured per (backbone, method) with train_step.py on random inputs at the
config's batch size, one process using every core: the DAG's training jobs share the cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
FINISH = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


@dataclass
class Job:
    rule: str
    jobid: int
    start: datetime
    finish: datetime | None = None
    benchmark: Path | None = None
    wildcards: dict[str, str] = field(default_factory=dict)

    @property
    def wall_s(self) -> float:
        return (self.finish - self.start).total_seconds() if self.finish else 0.0


def parse_log(text: str) -> list[Job]:
    """The jobs of one Snakemake log: rule, start and finish time, benchmark file, wildcards."""
    jobs: dict[int, Job] = {}
    stamp, current = None, None
    for line in text.splitlines():
        if match := STAMP.match(line.strip()):
            stamp, current = datetime.strptime(match[1], "%a %b %d %H:%M:%S %Y"), None
        elif (match := START.match(line.strip())) and stamp:
            current = Job(match[1], -1, stamp)
        elif current and line.strip().startswith("jobid: "):
            current.jobid = int(line.split(":", 1)[1])
            jobs[current.jobid] = current
        elif current and line.strip().startswith("benchmark: "):
            current.benchmark = Path(line.split(":", 1)[1].strip())
        elif current and line.strip().startswith("wildcards: "):
            pairs = (item.split("=", 1) for item in line.split(":", 1)[1].split(", ") if "=" in item)
            current.wildcards = {key.strip(): value.strip() for key, value in pairs}
        elif (match := FINISH.match(line.strip())) and stamp and int(match[1]) in jobs:
            jobs[int(match[1])].finish = stamp
    return [job for job in jobs.values() if job.finish]


def benchmark_seconds(path: Path) -> tuple[float, float] | None:
    """(wall s, CPU s) of a Snakemake benchmark file, None if there is none."""
    if not path.is_file():
        return None
    rows = list(csv.DictReader(path.open(), delimiter="\t"))
    return (float(rows[-1]["s"]), float(rows[-1]["cpu_time"])) if rows else None


def compute_rate(backbone: str, method: str, batch: int, steps: int) -> float:
    """samples/s of one training step of (backbone, method) on random inputs (train_step.py --one)."""
    script = str(REPO / "benchmarks" / "train_step.py")
    command = [sys.executable, script, "--one", "--models", backbone, "--batches", str(batch),
               "--losses", method, "--steps", str(steps), "--device", "cpu"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(result.stdout.strip().splitlines()[-1])["samples_per_s"]


def merged_config(configfile: Path | None) -> dict:
    """config/config.yaml with --configfile on top, merged as Snakemake does (rankclip.cache's loader)."""
    from rankclip.cache import load_workflow_config

    return load_workflow_config(REPO, [configfile.resolve()] if configfile else [])


def run_dag(directory: Path, configfile: Path | None, cores: str) -> tuple[float, Path]:
    """Run the whole DAG in ``directory``; its wall time and log file."""
    shutil.copytree(REPO / "config", directory / "config", dirs_exist_ok=True)
    shutil.copytree(REPO / "profiles", directory / "profiles", dirs_exist_ok=True)
    command = [sys.executable, "-m", "snakemake", "--cores", cores, "--directory", str(directory),
               "--snakefile", str(REPO / "workflow" / "Snakefile")]  # fmt: skip
    if configfile:
        command += ["--configfile", str(configfile.resolve())]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    subprocess.run(
        command, cwd=REPO, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wall = time.perf_counter() - start
    return wall, max(
        (directory / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime
    )


def training_samples(directory: Path, config: dict, run_id: str) -> int:
    """Samples one run trains on: its subset's pairs x epochs."""
    from rankclip.corpus.subsets import manifest_size

    size = run_id.split("__")[2].removeprefix("n")
    subset = directory / "resources" / config["name"] / "subsets" / f"subset-{size}.json"
    return manifest_size(subset) * int(config["train"].get("epochs", 1))


def report(jobs: list[Job], directory: Path, config: dict, dag_wall: float, steps: int) -> str:
    """The per-rule table, training's samples/s beside the compute-only rate, and the overhead ratio."""
    per_rule: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
    for job in jobs:
        measured = benchmark_seconds(directory / job.benchmark) if job.benchmark else None
        per_rule[job.rule].append((measured[0], measured[1]) if measured else (job.wall_s, None))
    lines = [
        "| rule | jobs | wall s (sum) | CPU s (sum) | wall s / job |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for rule, rows in sorted(per_rule.items(), key=lambda item: -sum(w for w, _ in item[1])):
        walls = sum(wall for wall, _ in rows)
        cpus = [cpu for _, cpu in rows if cpu is not None]
        cpu = f"{sum(cpus):.0f}" if len(cpus) == len(rows) else "-"
        lines.append(f"| {rule} | {len(rows)} | {walls:.0f} | {cpu} | {walls / len(rows):.1f} |")

    batch = int(config["train"].get("batch_size", 128))
    rates: dict[tuple[str, str], float] = {}
    compute, achieved = 0.0, []
    train_lines = [
        "",
        "| run | samples | wall s | samples/s | compute-only samples/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for job in (job for job in jobs if job.rule == "train"):
        run_id = job.wildcards["run_id"]
        method, backbone = run_id.split("__")[:2]
        if (backbone, method) not in rates:
            rates[backbone, method] = compute_rate(backbone, method, batch, steps)
        samples = training_samples(directory, config, run_id)
        measured = benchmark_seconds(directory / job.benchmark) if job.benchmark else None
        wall = measured[0] if measured else job.wall_s
        compute += samples / rates[backbone, method]
        achieved.append(samples / wall)
        train_lines.append(
            f"| {run_id} | {samples:,} | {wall:.0f} | {samples / wall:.0f} | {rates[backbone, method]:.0f} |"
        )
    summary = [
        "",
        f"DAG wall: {dag_wall:.0f} s ({len(jobs)} jobs); training compute: {compute:.0f} s "
        f"(samples / compute-only rate, summed over {len(achieved)} runs)",
        f"DAG overhead ratio: {dag_wall / compute:.2f}"
        if compute
        else "DAG overhead ratio: - (no training job)",
    ]
    return "\n".join(lines + train_lines + summary)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configfile", type=Path, default=None, help="on top of config/config.yaml")
    parser.add_argument("--cores", default="all")
    parser.add_argument("--directory", type=Path, default=None, help="workdir (default: a new temporary one)")
    parser.add_argument("--log", type=Path, default=None, help="analyse this finished run's log, run nothing")
    parser.add_argument("--dag-wall", type=float, default=None, help="with --log: the run's wall time, s")
    parser.add_argument("--steps", type=int, default=5, help="timed train_step.py steps per compute rate")
    args = parser.parse_args()
    config = merged_config(args.configfile)
    directory = args.directory or Path(tempfile.mkdtemp(prefix="rankclip-dag-"))
    if args.log:
        log = args.log
        jobs = parse_log(log.read_text())
        dag_wall = args.dag_wall or (max(j.finish for j in jobs) - min(j.start for j in jobs)).total_seconds()
    else:
        print(f"running the DAG in {directory} ...", file=sys.stderr, flush=True)
        dag_wall, log = run_dag(directory, args.configfile, args.cores)
        jobs = parse_log(log.read_text())
    print(report(jobs, directory, config, dag_wall, args.steps))


if __name__ == "__main__":
    main()
