# Data: the training corpus as webdataset shards, then nested data-size subsets.


rule demo_corpus:
    """Render the seeded demo corpus (training shards + evaluation sets); no network."""
    output:
        manifest=DATA / "demo" / "manifest.json",
        shards=train_shards() if config["data"]["source"] == "demo" else [],
    params:
        demo=config["data"]["demo"],
        out_dir=lambda wildcards, output: Path(output.manifest).parent,
        code=code_version(),
    log:
        LOGS / "data" / "demo_corpus.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    shell:
        "rankclip data make-demo --out {params.out_dir} --seed {params.demo[seed]} "
        "--num-train {params.demo[num_train]} --num-eval {params.demo[num_eval]} "
        "--image-size {params.demo[image_size]} --shard-size {params.demo[shard_size]} > {log} 2>&1"


rule subset:
    """A seeded subset manifest of `data_size` pairs; every size is a prefix of one permutation (nested)."""
    input:
        shards=train_shards(),
    output:
        DATA / "subsets" / "subset-{data_size}.json",
    params:
        url=lambda wildcards, input: shard_url(input.shards),
        seed=config["data"]["subset_seed"],
        out_dir=lambda wildcards, output: Path(output[0]).parent,
    log:
        LOGS / "data" / "subset-{data_size}.log",
    conda:
        "../../envs/data.yaml"
    shell:
        "rankclip data subsets --shards '{params.url}' --sizes {wildcards.data_size} --seed {params.seed} "
        "--out {params.out_dir} > {log} 2>&1"
