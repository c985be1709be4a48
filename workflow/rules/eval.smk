# Evaluation: one process per run and benchmark list of the config (eval.every_run, eval.main_runs,
# eval.backbone_runs), writing one results JSON per benchmark, so that a partial target (`snakemake table1`)
# evaluates only the lists it needs; or, with eval.jobs per_run (the demo), one process per run on all its
# lists, which loads the model and the libraries once per run. Embeddings are cached by content (checkpoint,
# dataset). The checkpoint is the one source of the run's identity (id, method, data size, seed, lambdas):
# no flags repeat it.


rule evaluate_every_run:
    """The benchmarks of one list (here eval.every_run) on one run, in one process: one validated results
    JSON per benchmark. The other lists' rules are this one with their own benchmarks and runs (per_run:
    every_run's benchmarks too)."""
    input:
        model=RESULTS / "runs" / "{run_id}" / "model.pt",
        datasets=eval_list_datasets("every_run"),
    output:
        eval_list_results("every_run"),
    log:
        LOGS / "eval" / "{run_id}" / "every_run.log",
    benchmark:
        LOGS / "eval" / "{run_id}" / "every_run.benchmark.tsv"
    wildcard_constraints:
        run_id=eval_list_runs("every_run"),
    group:
        "eval"
    conda:
        "../../envs/eval.yaml"
    threads: config["resources"]["eval"]["cpus"]
    resources:
        gpu=config["resources"]["eval"]["gpu"],
        mem_mb=config["resources"]["eval"]["mem_mb"],
        runtime=config["resources"]["eval"]["runtime"],
        cpus_per_task=config["resources"]["eval"]["cpus"],
    params:
        benchmarks=eval_list_flags("every_run"),
        out_dir=lambda wildcards: RESULTS / "eval" / wildcards.run_id,
        cache=RESULTS / "embeddings",
        code=code_hash("eval"),
        workers=lambda wildcards, threads: threads - 1,  # the job's other CPUs decode images
    shell:
        "rankclip eval all --checkpoint {input.model} {params.benchmarks} --out-dir {params.out_dir} "
        "--cache-dir {params.cache} --no-progress --workers {params.workers} > {log} 2>&1"


if "main_runs" in eval_lists():

    use rule evaluate_every_run as evaluate_main_runs with:
        input:
            model=RESULTS / "runs" / "{run_id}" / "model.pt",
            datasets=eval_list_datasets("main_runs"),
        output:
            eval_list_results("main_runs"),
        log:
            LOGS / "eval" / "{run_id}" / "main_runs.log",
        benchmark:
            LOGS / "eval" / "{run_id}" / "main_runs.benchmark.tsv"
        wildcard_constraints:
            run_id=eval_list_runs("main_runs"),
        params:
            benchmarks=eval_list_flags("main_runs"),


if "backbone_runs" in eval_lists():

    use rule evaluate_every_run as evaluate_backbone_runs with:
        input:
            model=RESULTS / "runs" / "{run_id}" / "model.pt",
            datasets=eval_list_datasets("backbone_runs"),
        output:
            eval_list_results("backbone_runs"),
        log:
            LOGS / "eval" / "{run_id}" / "backbone_runs.log",
        benchmark:
            LOGS / "eval" / "{run_id}" / "backbone_runs.benchmark.tsv"
        wildcard_constraints:
            run_id=eval_list_runs("backbone_runs"),
        params:
            benchmarks=eval_list_flags("backbone_runs"),


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
