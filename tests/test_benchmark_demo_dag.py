"""benchmarks/demo_dag.py's accounting: jobs and times read from a Snakemake log and benchmark files, the
training rows and the DAG overhead ratio (DAG wall / (samples / compute-only rate))."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from rankclip.corpus.subsets import make_subset, write_manifest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("benchmark_demo_dag", REPO / "benchmarks" / "demo_dag.py")
demo_dag = sys.modules["benchmark_demo_dag"] = importlib.util.module_from_spec(spec)  # dataclasses look it up
spec.loader.exec_module(demo_dag)

RUN = "clip__rankclip-tiny-vit__n8__lc1.0__li1.0__ls0.03125__s0"
LOG = f"""Building DAG of jobs...
[Fri Dec  4 18:40:17 2026]
localrule subset:
    output: resources/demo/subsets/subset-8.json
    jobid: 3
    wildcards: data_size=8
    resources: tmpdir=/tmp
[Fri Dec  4 18:40:19 2026]
Finished jobid: 3 (Rule: subset)
1 of 4 steps (25%) done
[Fri Dec  4 18:40:19 2026]
rule train:
    input: resources/demo/subsets/subset-8.json
    jobid: 2
    benchmark: logs/demo/train/{RUN}.benchmark.tsv
    wildcards: run_id={RUN}
[Fri Dec  4 18:40:19 2026]
rule evaluate:
    jobid: 1
    wildcards: run_id={RUN}, task=zeroshot, dataset=shapes
[Fri Dec  4 18:40:50 2026]
Finished jobid: 2 (Rule: train)
[Fri Dec  4 18:41:00 2026]
Finished jobid: 1 (Rule: evaluate)
[Fri Dec  4 18:41:00 2026]
localrule all:
    jobid: 0
"""


def test_jobs_times_and_the_overhead_ratio(tmp_path, monkeypatch):
    jobs = demo_dag.parse_log(LOG)
    assert [(job.rule, job.jobid, job.wall_s) for job in jobs] == [
        ("subset", 3, 2.0),
        ("train", 2, 31.0),
        ("evaluate", 1, 41.0),
    ]  # fmt: skip; "all" never finished in this log: not counted
    assert jobs[1].wildcards == {"run_id": RUN} and jobs[2].wildcards["dataset"] == "shapes"
    bench = tmp_path / "logs" / "demo" / "train" / f"{RUN}.benchmark.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\tcpu_time\n20.00\t0:00:20\t100\t35.5\n")
    subsets = tmp_path / "resources" / "demo" / "subsets"
    subsets.mkdir(parents=True)
    write_manifest(
        make_subset({"a.tar": [f"{i:03d}" for i in range(12)]}, 8, seed=0), subsets / "subset-8.json"
    )
    rates = []
    monkeypatch.setattr(demo_dag, "compute_rate", lambda *args: rates.append(args) or 2.0)
    config = {"name": "demo", "train": {"epochs": 5, "batch_size": 4}}
    text = demo_dag.report(jobs, tmp_path, config, dag_wall=100.0, steps=3)
    assert rates == [("rankclip-tiny-vit", "clip", 4, 3)]
    assert "| train | 1 | 20 | 36 | 20.0 |" in text  # the benchmark file's wall and CPU, not the log's
    assert "| evaluate | 1 | 41 | - | 41.0 |" in text  # no benchmark file: the log's wall, CPU unknown
    assert f"| {RUN} | 40 | 20 | 2 | 2 |" in text  # 8 pairs x 5 epochs in 20 s; compute-only 2 samples/s
    assert "DAG overhead ratio: 5.00" in text  # 100 s / (40 samples / 2 samples/s)
