# Helpers of data.smk: ALIP's caption stage and the evaluation sets' downloads and flags.
from rankclip.data.evalset_registry import REGISTRY as EVAL_SETS

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
    return [str(DATA / "web" / "captioned" / Path(shard).name) for shard in train_shards()]


def training_shards():
    """The shards every run trains on: the captioned copies when the caption stage is on (same samples)."""
    return captioned_shards() if captions_enabled() else train_shards()


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
