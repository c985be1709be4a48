# Training: one job per run id (method x backbone x data size x lambdas x seed); resumes after a kill.


rule train:
    """Train one run; re-running after a kill or preemption resumes from its latest checkpoint."""
    input:
        subset=lambda wildcards: subset_manifest(parse_run_id(wildcards.run_id)["data_size"]),
    output:
        model=RESULTS / "runs" / "{run_id}" / "model.pt",
    log:
        LOGS / "train" / "{run_id}.log",
    benchmark:
        LOGS / "train" / "{run_id}.benchmark.tsv"
    conda:
        "../../envs/train.yaml"
    threads: config["resources"]["train"]["cpus"]
    resources:
        gpu=config["resources"]["train"]["gpu"],
        mem_mb=config["resources"]["train"]["mem_mb"],
        runtime=config["resources"]["train"]["runtime"],
        cpus_per_task=config["resources"]["train"]["cpus"],
    params:
        flags=train_flags,
        out_dir=lambda wildcards, output: Path(output.model).parent,
        launcher=train_launcher(),
        code=code_hash("train"),
    shell:
        "{params.launcher} {params.flags} --train-data {input.subset} --output-dir {params.out_dir} > {log} 2>&1"
