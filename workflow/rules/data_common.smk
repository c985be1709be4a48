# Helpers of data.smk: ALIP's caption stage and the evaluation sets' downloads and flags.
from rankclip.evalsets.registry import REGISTRY as EVAL_SETS
from rankclip.dvc_track import pointer_path

EVAL_DATA = DATA / "eval"
DOWNLOADS = DATA / "downloads"


def captions_enabled():
    """ALIP's second caption is synthesised when ALIP is trained on web data and data.web.captions asks."""
    runs = config["runs"]
    methods = {*runs["methods"], *runs.get("backbone_methods", []), *runs.get("data_size_methods", [])}
    captions = config["data"].get("web", {}).get("captions", {})
    return (
        config["data"]["source"] == "web" and "alip" in methods and captions.get("source", "none") != "none"
    )


def captioned_shards():
    return [str(DATA / "web" / "captioned" / Path(shard).name) for shard in source_shards()]


def training_shards():
    """The shards every run trains on: the captioned copies when the caption stage is on (same samples)."""
    return captioned_shards() if captions_enabled() else source_shards()


def caption_flags():
    captions = config["data"].get("web", {}).get("captions", {})
    key = config["train"].get("synthetic_caption_key", "syn.txt")
    if captions.get("source") == "file":
        return f"--source file --captions-file {captions['file']} --key {key}"
    flags = (
        f"--source model --model {captions.get('model', 'Salesforce/blip-image-captioning-base')} "
        f"--batch-size {captions.get('batch_size', 64)} --max-new-tokens {captions.get('max_new_tokens', 30)} "
        f"--num-beams {captions.get('num_beams', 1)} --key {key}"
    )
    return flags + (f" --prompt '{captions['prompt']}'" if captions.get("prompt") else "")


def eval_set_names(*families):
    """Wildcard pattern of the registered evaluation sets of these families that have public downloads."""
    return "|".join(
        name
        for name, spec in EVAL_SETS.items()
        if spec.family in families and all(r.url for r in spec.resources)
    )


def eval_downloads(name):
    """The verified source files of evaluation set `name`, as the download rule writes them."""
    return [ancient(str(DOWNLOADS / name / r.filename)) for r in EVAL_SETS[name].resources if r.url]


def eval_set_flags(name):
    """--base-url (a mirror), --sha256 pins and --md5 overrides from data.eval_sets for evaluation set `name`."""
    settings = config["data"].get("eval_sets", {})
    files = {r.filename for r in EVAL_SETS[name].resources}
    flags = [f"--base-url '{settings['base_url']}'"] if settings.get("base_url") else []
    for kind in ("sha256", "md5"):
        flags += [f"--{kind} {f}={h}" for f, h in settings.get(kind, {}).items() if f in files]
    return " ".join(flags)


def eval_convert_flags(name):
    """eval_set_flags plus --expected-count from data.eval_sets.expected_counts (a miniature mirror)."""
    counts = config["data"].get("eval_sets", {}).get("expected_counts", {}).get(name, {})
    flags = [f"--expected-count {split}={count}" for split, count in counts.items()]
    return " ".join([eval_set_flags(name), *flags])


def imagenet_sources():
    """--archive/--labels flags for ImageNet-1K val: the user's files (no public download)."""
    imagenet = config["data"].get("eval_sets", {}).get("imagenet", {})
    flags = [f"--archive {imagenet['val_archive']}"] if imagenet.get("val_archive") else []
    if imagenet.get("labels"):
        flags.append(f"--labels {imagenet['labels']}")
    elif imagenet.get("devkit"):
        flags.append(f"--archive {imagenet['devkit']}")
    return " ".join(flags)


def used_datasets():
    """The evaluation datasets some benchmark of the config runs on."""
    evals = config["eval"]
    pairs = [*evals["every_run"], *evals["main_runs"], *evals.get("backbone_runs", [])]
    return list(dict.fromkeys(pair.split(":")[1] for pair in pairs))


def downloads_of_record():
    """Every file or folder the DAG downloads -> the URL it came from: the web corpus' URL list and its
    shards (img2dataset's download of that list), and each evaluation set's verified source files; {} when
    nothing is downloaded (the demo). Rule track_downloads DVC-tracks them."""
    sources = {}
    if config["data"]["source"] == "web":
        web = config["data"]["web"]
        sources[web["url_list"]] = web["url_list_url"]
        sources[str(DATA / "web" / "shards")] = web["url_list_url"]
    base_url = config["data"].get("eval_sets", {}).get("base_url")
    for name in used_datasets():
        if name in EVAL_SETS and config["eval"]["datasets"][name] == f"eval/{name}":
            for resource in EVAL_SETS[name].resources:
                if resource.url:
                    sources[str(DOWNLOADS / name / resource.filename)] = resource.source_url(base_url)
    return sources


def track_inputs():
    """The files whose jobs make the downloads of record: the shards folder is complete with its summary."""
    shards = str(DATA / "web" / "shards")
    return [str(Path(path) / "summary.json") if path == shards else path for path in downloads_of_record()]


def download_pointers():
    """The DVC pointer files rule track_downloads writes, one beside each download of record."""
    return [str(pointer_path(path)) for path in downloads_of_record()]
