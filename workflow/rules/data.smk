# Data: the training corpus as webdataset shards, then nested data-size subsets.


rule demo_corpus:
    """Render the seeded demo corpus (training shards + evaluation sets); no network."""
    output:
        manifest=DATA / "demo" / "manifest.json",
        shards=train_shards() if config["data"]["source"] == "demo" else [],
        eval_sets=expand(
            DATA / "demo" / "eval" / "{name}" / "dataset_type.txt",
            name=["zeroshot", "zeroshot_shift", "retrieval", "linear_probe"],
        ),
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


rule emoji_corpus:
    """Real image-caption pairs: Noto Color Emoji glyphs captioned with their CLDR names; no network."""
    output:
        manifest=DATA / "emoji" / "manifest.json",
        retrieval=DATA / "emoji" / "eval" / "retrieval" / "dataset_type.txt",
    params:
        emoji=config["data"].get("emoji", {}),
        out_dir=lambda wildcards, output: Path(output.manifest).parent,
        code=code_version(),
    log:
        LOGS / "data" / "emoji_corpus.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    shell:
        "rankclip data make-emoji --out {params.out_dir} --seed {params.emoji[seed]} "
        "--image-size {params.emoji[image_size]} > {log} 2>&1"


rule fashion_mnist:
    """Debian's Fashion-MNIST as a classification set (zero-shot and linear probe)."""
    output:
        DATA / "fashion_mnist" / "dataset_type.txt",
    params:
        fmnist=config["data"].get("fashion_mnist", {}),
        out_dir=lambda wildcards, output: Path(output[0]).parent,
        code=code_version(),
    log:
        LOGS / "data" / "fashion_mnist.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    shell:
        "rankclip data make-fashion-mnist --out {params.out_dir} --max-train {params.fmnist[max_train]} "
        "--max-test {params.fmnist[max_test]} --seed {params.fmnist[seed]} > {log} 2>&1"


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


rule fetch_url_list:
    """The web corpus' URL+caption list (resumable, sha256-verified when the config gives the hash)."""
    output:
        config["data"].get("web", {}).get("url_list", "resources/url_list.tsv"),
    params:
        url=config["data"].get("web", {}).get("url_list_url", ""),
        sha256=lambda wildcards: (
            f"--sha256 {config['data']['web']['url_list_sha256']}"
            if config["data"].get("web", {}).get("url_list_sha256")
            else ""
        ),
    retries: 3
    log:
        LOGS / "data" / "fetch_url_list.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    shell:
        "rankclip data fetch --url '{params.url}' --out {output} {params.sha256} > {log} 2>&1"


rule web_shards:
    """Download the web corpus (CC3M ...) with img2dataset into verified shards; summary.json marks done."""
    input:
        url_list=config["data"].get("web", {}).get("url_list", []),
    output:
        summary=DATA / "web" / "shards" / "summary.json",
        shards=train_shards() if config["data"]["source"] == "web" else [],
    params:
        image_size=config["data"].get("web", {}).get("image_size", 224),
        out_dir=lambda wildcards, output: Path(output.summary).parent,
    threads: workflow.cores
    resources:
        mem_mb=16000,
        runtime=24 * 60,
    retries: 2
    log:
        LOGS / "data" / "web_shards.log",
    benchmark:
        LOGS / "data" / "web_shards.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    shell:
        "rankclip data web --url-list {input.url_list} --out {params.out_dir} --image-size {params.image_size} "
        "--processes {threads} --column-names caption url > {log} 2>&1"
