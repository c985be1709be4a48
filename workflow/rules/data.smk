# Data: the training corpus as webdataset shards (+ ALIP's synthetic captions), nested data-size subsets,
# and the paper's evaluation sets converted to clip_benchmark's wds layout.
include: "data_common.smk"


rule demo_corpus:
    """Render the seeded demo corpus (training shards + evaluation sets); no network."""
    output:
        manifest=DATA / "demo" / "manifest.json",
        shards=source_shards() if config["data"]["source"] == "demo" else [],
        eval_sets=expand(
            DATA / "demo" / "eval" / "{name}" / DATASET_TYPE_FILE,
            name=["zeroshot", "zeroshot_shift", "retrieval", "linear_probe"],
        ),
    log:
        LOGS / "data" / "demo_corpus.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        demo=config["data"]["demo"],
        out_dir=lambda wildcards, output: Path(output.manifest).parent,
        code=code_hash("demo"),
    shell:
        "rankclip data make-demo --out {params.out_dir} --seed {params.demo[seed]} "
        "--num-train {params.demo[num_train]} --num-eval {params.demo[num_eval]} "
        "--image-size {params.demo[image_size]} --shard-size {params.demo[shard_size]} > {log} 2>&1"


rule emoji_corpus:
    """Real image-caption pairs: Noto Color Emoji glyphs captioned with their CLDR names; no network."""
    output:
        manifest=DATA / "emoji" / "manifest.json",
        retrieval=DATA / "emoji" / "eval" / "retrieval" / DATASET_TYPE_FILE,
    log:
        LOGS / "data" / "emoji_corpus.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        emoji=config["data"].get("emoji", {}),
        out_dir=lambda wildcards, output: Path(output.manifest).parent,
        code=code_hash("emoji"),
    shell:
        "rankclip data make-emoji --out {params.out_dir} --seed {params.emoji[seed]} "
        "--image-size {params.emoji[image_size]} > {log} 2>&1"


rule fashion_mnist:
    """Debian's Fashion-MNIST as a classification set (zero-shot and linear probe)."""
    output:
        DATA / "fashion_mnist" / DATASET_TYPE_FILE,
    log:
        LOGS / "data" / "fashion_mnist.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        fmnist=config["data"].get("fashion_mnist", {}),
        out_dir=lambda wildcards, output: Path(output[0]).parent,
        code=code_hash("fashion_mnist"),
    shell:
        "rankclip data make-fashion-mnist --out {params.out_dir} --max-train {params.fmnist[max_train]} "
        "--max-test {params.fmnist[max_test]} --seed {params.fmnist[seed]} > {log} 2>&1"


rule subset:
    """A seeded subset manifest of `data_size` pairs; every size is a prefix of one permutation (nested)."""
    input:
        shards=training_shards(),
    output:
        DATA / "subsets" / "subset-{data_size}.json",
    log:
        LOGS / "data" / "subset-{data_size}.log",
    conda:
        "../../envs/data.yaml"
    params:
        url=lambda wildcards, input: shard_url(input.shards),
        seed=config["data"]["subset_seed"],
        out_dir=lambda wildcards, output: Path(output[0]).parent,
        code=code_hash("subsets"),
    shell:
        "rankclip data subsets --shards '{params.url}' --sizes {wildcards.data_size} --seed {params.seed} "
        "--out {params.out_dir} > {log} 2>&1"


rule fetch_url_list:
    """The web corpus' URL+caption list (resumable, sha256-verified when the config gives the hash)."""
    output:
        config["data"].get("web", {}).get("url_list", "resources/url_list.tsv"),
    log:
        LOGS / "data" / "fetch_url_list.log",
    retries: 3
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        url=config["data"].get("web", {}).get("url_list_url", ""),
        sha256=lambda wildcards: (
            f"--sha256 {config['data']['web']['url_list_sha256']}"
            if config["data"].get("web", {}).get("url_list_sha256")
            else ""
        ),
    shell:
        "rankclip data fetch --url '{params.url}' --out {output} {params.sha256} > {log} 2>&1"


rule web_shards:
    """Download the web corpus (CC3M ...) with img2dataset into verified shards; summary.json marks done."""
    input:
        url_list=config["data"].get("web", {}).get("url_list", []),
    output:
        summary=DATA / "web" / "shards" / "summary.json",
        shards=source_shards() if config["data"]["source"] == "web" else [],
    log:
        LOGS / "data" / "web_shards.log",
    benchmark:
        LOGS / "data" / "web_shards.benchmark.tsv"
    retries: 2
    conda:
        "../../envs/web.yaml"
    threads: workflow.cores
    resources:
        mem_mb=16000,
        runtime=24 * 60,
    params:
        image_size=config["data"].get("web", {}).get("image_size", 224),
        out_dir=lambda wildcards, output: Path(output.summary).parent,
    shell:
        "rankclip data web --url-list {input.url_list} --out {params.out_dir} --image-size {params.image_size} "
        "--processes {threads} --column-names caption url > {log} 2>&1"


rule captions:
    """ALIP's second caption (syn.txt) for every training sample: captioned copies of the web shards."""
    input:
        shards=ancient(source_shards()) if captions_enabled() else [],
    output:
        summary=DATA / "web" / "captioned" / "captions.json",
        shards=captioned_shards() if captions_enabled() else [],
    log:
        LOGS / "data" / "captions.log",
    benchmark:
        LOGS / "data" / "captions.benchmark.tsv"
    conda:
        "../../envs/captions.yaml"
    threads: 8
    resources:
        gpu=config["data"].get("web", {}).get("captions", {}).get("gpu", 1),
        mem_mb=32000,
        runtime=config["data"].get("web", {}).get("captions", {}).get("runtime", 24 * 60),
    params:
        url=lambda wildcards, input: shard_url(input.shards),
        flags=caption_flags(),
        out_dir=lambda wildcards, output: Path(output.summary).parent,
        code=code_hash("captions"),
    shell:
        "rankclip data captions --shards '{params.url}' --out {params.out_dir} {params.flags} --no-progress "
        "> {log} 2>&1"


rule fetch_eval_file:
    """One source file of an evaluation set: resumable, sha256-verified (md5 too where torchvision has one)."""
    output:
        DOWNLOADS / "{eval_set}" / "{filename}",
    log:
        LOGS / "data" / "fetch" / "{eval_set}" / "{filename}.log",
    wildcard_constraints:
        eval_set=eval_set_names("imagenet", "coco", "linear_probe"),
        filename=r"[^/]+(?<!\.dvc)",  # FILE.dvc is track_downloads' pointer of FILE
    retries: 3
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        flags=lambda wildcards: eval_set_flags(wildcards.eval_set),
        downloads=lambda wildcards, output: Path(output[0]).parent,
    shell:
        "rankclip data eval-fetch {wildcards.eval_set} --file {wildcards.filename} "
        "--downloads {params.downloads} {params.flags} --no-progress > {log} 2>&1"


rule track_downloads:
    """DVC-track every download of record (one `dvc add`: DVC locks the repository), its URL in the pointer."""
    input:
        track_inputs(),
    output:
        download_pointers(),
    log:
        LOGS / "data" / "track_downloads.log",
    localrule: True
    conda:
        "../../envs/data.yaml"
    params:
        sources=" ".join(f"--source '{path}={url}'" for path, url in downloads_of_record().items()),
    shell:
        "rankclip data track {params.sources} > {log} 2>&1"


rule imagenet_val:
    """ImageNet-1K val from the user's ILSVRC2012_img_val.tar and devkit (or labels file); no public URL."""
    output:
        EVAL_DATA / "imagenet1k" / DATASET_TYPE_FILE,
    log:
        LOGS / "data" / "eval_sets" / "imagenet1k.log",
    benchmark:
        LOGS / "data" / "eval_sets" / "imagenet1k.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=8000,
        runtime=180,
    params:
        sources=imagenet_sources(),
        flags=eval_convert_flags("imagenet1k"),
        out_dir=lambda wildcards, output: Path(output[0]).parent,
        downloads=DOWNLOADS / "imagenet1k",
        shard_size=config["data"].get("eval_sets", {}).get("shard_size", 10000),
        code=code_hash("eval_sets"),
    shell:
        "rankclip data eval-set imagenet1k --out {params.out_dir} {params.sources} --downloads {params.downloads} "
        "{params.flags} --shard-size {params.shard_size} --no-progress > {log} 2>&1"


rule imagenet_shift:
    """ImageNetV2 (matched-frequency, threshold-0.7, top-images) and ImageNet-R, from verified downloads."""
    input:
        lambda wildcards: eval_downloads(wildcards.eval_set),
    output:
        EVAL_DATA / "{eval_set}" / DATASET_TYPE_FILE,
    log:
        LOGS / "data" / "eval_sets" / "{eval_set}.log",
    benchmark:
        LOGS / "data" / "eval_sets" / "{eval_set}.benchmark.tsv"
    wildcard_constraints:
        eval_set="imagenetv2_matched|imagenetv2_threshold|imagenetv2_top|imagenet_r",
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        flags=lambda wildcards: eval_convert_flags(wildcards.eval_set),
        out_dir=lambda wildcards, output: Path(output[0]).parent,
        downloads=lambda wildcards: DOWNLOADS / wildcards.eval_set,
        shard_size=config["data"].get("eval_sets", {}).get("shard_size", 10000),
        code=code_hash("eval_sets"),
    shell:
        "rankclip data eval-set {wildcards.eval_set} --out {params.out_dir} --downloads {params.downloads} "
        "{params.flags} --shard-size {params.shard_size} --no-progress > {log} 2>&1"


rule mscoco_karpathy:
    """MS-COCO Karpathy 5k test split with 5 captions per image (retrieval), from verified downloads."""
    input:
        eval_downloads("mscoco_karpathy"),
    output:
        EVAL_DATA / "mscoco_karpathy" / DATASET_TYPE_FILE,
    log:
        LOGS / "data" / "eval_sets" / "mscoco_karpathy.log",
    benchmark:
        LOGS / "data" / "eval_sets" / "mscoco_karpathy.benchmark.tsv"
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        flags=eval_convert_flags("mscoco_karpathy"),
        out_dir=lambda wildcards, output: Path(output[0]).parent,
        downloads=DOWNLOADS / "mscoco_karpathy",
        shard_size=config["data"].get("eval_sets", {}).get("shard_size", 10000),
        code=code_hash("eval_sets"),
    shell:
        "rankclip data eval-set mscoco_karpathy --out {params.out_dir} --downloads {params.downloads} "
        "{params.flags} --shard-size {params.shard_size} --no-progress > {log} 2>&1"


rule linear_probe_set:
    """One of the ten linear-probe sets, read with its torchvision class from verified downloads."""
    input:
        lambda wildcards: eval_downloads(wildcards.eval_set),
    output:
        EVAL_DATA / "{eval_set}" / DATASET_TYPE_FILE,
    log:
        LOGS / "data" / "eval_sets" / "{eval_set}.log",
    benchmark:
        LOGS / "data" / "eval_sets" / "{eval_set}.benchmark.tsv"
    wildcard_constraints:
        eval_set=eval_set_names("linear_probe"),
    conda:
        "../../envs/data.yaml"
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        flags=lambda wildcards: eval_convert_flags(wildcards.eval_set),
        out_dir=lambda wildcards, output: Path(output[0]).parent,
        downloads=lambda wildcards: DOWNLOADS / wildcards.eval_set,
        shard_size=config["data"].get("eval_sets", {}).get("shard_size", 10000),
        code=code_hash("eval_sets"),
    shell:
        "rankclip data eval-set {wildcards.eval_set} --out {params.out_dir} --downloads {params.downloads} "
        "{params.flags} --shard-size {params.shard_size} --no-progress > {log} 2>&1"
