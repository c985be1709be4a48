# Evaluation: one job per run x benchmark; embeddings are cached by content (checkpoint, dataset). The
# checkpoint is the one source of the run's identity (id, method, data size, seed, lambdas): no flags repeat it.


rule evaluate:
    """One benchmark (task on dataset) of one run, as a validated results JSON."""
    input:
        model=RESULTS / "runs" / "{run_id}" / "model.pt",
        dataset=lambda wildcards: dataset_marker(wildcards.dataset),
    output:
        result=RESULTS / "eval" / "{run_id}" / "{task}-{dataset}.json",
    log:
        LOGS / "eval" / "{run_id}" / "{task}-{dataset}.log",
    benchmark:
        LOGS / "eval" / "{run_id}" / "{task}-{dataset}.benchmark.tsv"
    wildcard_constraints:
        task="zeroshot|retrieval|linear_probe|gap",
    group:
        "eval"
    conda:
        "../../envs/eval.yaml"
    resources:
        gpu=config["resources"]["eval"]["gpu"],
        mem_mb=config["resources"]["eval"]["mem_mb"],
        runtime=config["resources"]["eval"]["runtime"],
        cpus_per_task=config["resources"]["eval"]["cpus"],
    params:
        probe=lambda wildcards: (
            f"--probe {config['eval']['probe']}" if wildcards.task == "linear_probe" else ""
        ),
        dataset_dir=lambda wildcards, input: Path(input.dataset).parent,
        cache=RESULTS / "embeddings",
        code=code_hash("eval"),
    shell:
        "rankclip eval {wildcards.task} --checkpoint {input.model} --dataset {params.dataset_dir} "
        "--dataset-name {wildcards.dataset} --out {output.result} --cache-dir {params.cache} --no-progress "
        "--workers {resources.cpus_per_task} {params.probe} > {log} 2>&1"


rule tables:
    """Every result in one CSV, plus the paper's tables as Markdown (demo values beside the paper's)."""
    input:
        eval_results(),
        subset=main_subset(),
    output:
        results=report(
            RESULTS / "tables" / "results.csv", caption="../report/results_csv.rst", category="Results"
        ),
        table1=RESULTS / "tables" / "table1.md",
    log:
        LOGS / "tables.log",
    localrule: True
    conda:
        "../../envs/report.yaml"
    params:
        command=tables_command(RESULTS / "tables"),
        code=code_hash("report"),
    shell:
        "{params.command} > {log} 2>&1"
