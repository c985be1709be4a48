# Config validation, run ids and paths: the one place where names are made.
import json
import re
from pathlib import Path

from snakemake.utils import validate

from rankclip.code_hash import stage_code_hash
from rankclip.config import ALL_PAIRS, MAIN_RUN, TrainConfig, has_main_settings
from rankclip.evalset_layout import DATASET_TYPE_FILE
from rankclip.workflow_config import check_names, check_sizes, downloaded_pairs

validate(config, workflow.source_path("../../config/schema.yaml"))
check_names(config)  # every method, backbone and dataset name the config uses exists

RUN_ID = "{method}__{backbone}__n{data_size}__lc{lambda_cross}__li{lambda_in}__ls{list_scale}__s{seed}"
DATA = Path("resources") / config["name"]
RESULTS = Path("results") / config["name"]
LOGS = Path("logs") / config["name"]
check_sizes(config, DATA / "web" / "shards" / "summary.json")  # once downloaded: no size above its count


def code_hash(stage):
    """Hash of the files `stage` runs (rankclip/code_hash.py), in this workflow's repository (else in the
    installed package's): a rule with it in `params` reruns when that code changes."""
    repo = Path(workflow.basedir).parent
    return stage_code_hash(stage, root=repo if (repo / "rankclip").is_dir() else None)


def analysis_runs():
    """The runs of each analysis: "main" (Tables 1-3, Figs. 5-6; runs.main_seeds), "backbones" (Table 4),
    "data_sizes" (Fig. 4), "lambdas" (Fig. 3) and "list_scales" (the proposed list-scale ablation), as
    dicts of RUN_ID's fields."""
    runs = config["runs"]
    main = dict(backbone=runs["backbone"], data_size=runs["data_size"], **MAIN_RUN)
    analyses = dict(main=[], backbones=[], data_sizes=[], lambdas=[], list_scales=[])
    for seed in main_seeds():
        analyses["main"] += [main | dict(method=method, seed=seed) for method in runs["methods"]]
    for seed in runs["seeds"]:
        for backbone in runs["backbones"]:
            analyses["backbones"] += [
                main | dict(method=method, backbone=backbone, seed=seed)
                for method in runs["backbone_methods"]
            ]
        curve = [*runs["data_sizes"], runs["data_size"]] if runs["data_sizes"] else []
        for data_size in curve:  # Fig. 4's curve ends at the main size
            analyses["data_sizes"] += [
                main | dict(method=method, backbone=data_size_backbone(), data_size=data_size, seed=seed)
                for method in runs["data_size_methods"]
            ]
        for lambda_cross in runs["lambda_cross"]:  # swept with lambda_in = 1
            analyses["lambdas"].append(
                main | dict(method="rankclip", lambda_cross=float(lambda_cross), seed=seed)
            )
        for lambda_in in runs["lambda_in"]:  # swept with lambda_cross = 1
            analyses["lambdas"].append(main | dict(method="rankclip", lambda_in=float(lambda_in), seed=seed))
        for list_scale in runs["list_scales"]:  # RankCLIP at the main point, another list scale
            analyses["list_scales"].append(
                main | dict(method="rankclip", list_scale=float(list_scale), seed=seed)
            )
    return analyses


def main_seeds():
    """The main runs' seeds: runs.main_seeds, else runs.seeds."""
    return config["runs"].get("main_seeds") or config["runs"]["seeds"]


def data_size_backbone():
    """Fig. 4's backbone: runs.data_size_backbone, else the main one."""
    return config["runs"].get("data_size_backbone") or config["runs"]["backbone"]


def run_ids(analyses=("main", "backbones", "data_sizes", "lambdas", "list_scales")):
    """The training runs of the given analyses (default: every run the config asks for), without duplicates."""
    wanted = [run for name in analyses for run in analysis_runs()[name]]
    return list(dict.fromkeys(RUN_ID.format(**run) for run in wanted))


def parse_run_id(run_id):
    method, backbone, size, lambda_cross, lambda_in, list_scale, seed = run_id.split("__")
    return dict(
        method=method,
        backbone=backbone,
        data_size=ALL_PAIRS if size[1:] == ALL_PAIRS else int(size[1:]),
        lambda_cross=float(lambda_cross[2:]),
        lambda_in=float(lambda_in[2:]),
        list_scale=float(list_scale[2:]),
        seed=int(seed[1:]),
    )


def subset_manifest(data_size):
    """The subset manifest of `data_size` pairs (`all`: every pair; its `size` field holds the count)."""
    return DATA / "subsets" / f"subset-{data_size}.json"


def main_subset():
    return subset_manifest(config["runs"]["data_size"])


def pairs_in(wildcards, input):
    """The count of training pairs of the job's input `subset` manifest: the number in its name, or for
    `all` the manifest's `size`. Before that manifest is written (a dry-run) `all`: Snakemake evaluates
    params again, inputs present, before it runs a job."""
    from rankclip.corpus.subsets import manifest_size  # imported when a job asks: parsing stays light

    subset = Path(input.subset)
    size = subset.stem.removeprefix("subset-")
    if size.isdigit():
        return int(size)
    try:
        return manifest_size(subset)
    except ValueError:  # not written yet (or an empty file of `snakemake --touch`)
        return size


def source_shards():
    """The shard files of the configured source as made or downloaded (before ALIP's captions; the runs
    train on `training_shards()`)."""
    if config["data"]["source"] == "demo":
        demo = config["data"]["demo"]
        count = -(-demo["num_train"] // demo["shard_size"])
        return [str(DATA / "demo" / "train" / f"shard-{i:06d}.tar") for i in range(count)]
    count = config["data"]["web"]["num_shards"]
    return [str(DATA / "web" / "shards" / f"{i:05d}.tar") for i in range(count)]


def shard_url(shards):
    """The shard list as one webdataset URL (`::` joins paths)."""
    return "::".join(shards)


def train_flags(wildcards):
    """Command-line flags of `rankclip train` for one run id: config['train'] plus the run's own values."""
    run = parse_run_id(wildcards.run_id)
    values = dict(config["train"])
    values |= dict(
        model=run["backbone"],
        loss=run["method"],
        seed=run["seed"],
        lambda_cross=run["lambda_cross"],
        lambda_in=run["lambda_in"],
        list_scale=run["list_scale"],
        progress=False,
        on_config_change="restart",  # a params change reruns the job: train afresh, old outputs kept
    )
    return " ".join(f"--{key.replace('_', '-')} {value}" for key, value in values.items())


def tables_command(out_dir):
    """`rankclip report tables` over every result on disk: results.csv and Table 1 into `out_dir`; a job
    running it has the main runs' manifest as input `subset` (their size: `pairs_in`)."""

    def command(wildcards, input):
        runs, roles = config["runs"], config["report"]
        return (
            f"rankclip report tables --results-dir {RESULTS / 'eval'} --out-dir {out_dir} "
            f"--backbone {runs['backbone']} --data-size {pairs_in(wildcards, input)} "
            f"--zeroshot {roles['zeroshot']} --retrieval {roles['retrieval']}"
        )

    return command


def trained_models():
    return [str(RESULTS / "runs" / run_id / "model.pt") for run_id in run_ids()]


def train_launcher():
    """`rankclip train`, or torchrun over the GPUs of one node when a training job asks for several."""
    gpus = config["resources"]["train"]["gpu"]
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node {gpus} -m rankclip.cli train"
    return "rankclip train"


def dataset_marker(name):
    """The dataset-type file of an evaluation dataset: the file its producing rule declares."""
    datasets = config["eval"]["datasets"]
    if name not in datasets:
        raise ValueError(f"eval dataset {name!r} is not in config eval.datasets ({', '.join(datasets)})")
    return str(DATA / datasets[name] / DATASET_TYPE_FILE)


def at_main_size_and_lambdas(run):
    return run["data_size"] == config["runs"]["data_size"] and has_main_settings(run)


def is_main_run(run):
    runs = config["runs"]
    return (
        run["backbone"] == runs["backbone"]
        and run["method"] in runs["methods"]
        and at_main_size_and_lambdas(run)
    )


def is_backbone_run(run):
    runs = config["runs"]
    return (
        run["backbone"] in runs["backbones"]
        and run["method"] in runs["backbone_methods"]
        and at_main_size_and_lambdas(run)
    )


# config eval.<list> -> the runs it applies to. eval.jobs: per_list, one process per run and list that
# applies to it (rule evaluate_<list>); per_run, one process per run on the benchmarks of all its lists (the
# job of evaluate_<list>, named by the last list that applies: every_run, main_runs or backbone_runs).
EVAL_LISTS = dict(every_run=lambda run: True, main_runs=is_main_run, backbone_runs=is_backbone_run)


def applied_lists(run_id):
    """The evaluation lists that apply to a run (with benchmarks in the config), every_run first."""
    run = parse_run_id(run_id)
    return [name for name, applies in EVAL_LISTS.items() if config["eval"].get(name) and applies(run)]


def per_run_evaluation():
    return config["eval"]["jobs"] == "per_run"


def list_pairs(names):
    """The task:dataset pairs of the config's evaluation lists `names`, in order, each pair once."""
    pairs = dict.fromkeys(pair for name in names for pair in config["eval"].get(name) or [])
    return [tuple(pair.split(":")) for pair in pairs]


def eval_list_pairs(name):
    """The task:dataset pairs that evaluate_<name> evaluates: list `name`'s (per_run: every_run's first)."""
    return list_pairs(["every_run", name] if per_run_evaluation() else [name])


def benchmarks(run_id):
    """The task:dataset pairs a run is evaluated on: those of every list that applies to it."""
    return list_pairs(applied_lists(run_id))


def eval_list_run_ids(name):
    """The runs that evaluate_<name> evaluates: those list `name` applies to (per_run: as the last)."""
    lists = {run_id: applied_lists(run_id) for run_id in run_ids()}
    if not per_run_evaluation():
        return [run_id for run_id, names in lists.items() if name in names]
    both = [run_id for run_id, names in lists.items() if len(names) > 2]
    if both:
        raise ValueError(
            f"runs.backbones repeats the main backbone {config['runs']['backbone']!r}: with eval.jobs per_run "
            f"a run is evaluated by one job, but {both} would be both main and backbone runs"
        )
    return [run_id for run_id, names in lists.items() if names[-1] == name]


def eval_lists():
    """The evaluation rules' lists (evaluate_<list>) with runs to evaluate."""
    return [name for name in EVAL_LISTS if eval_list_run_ids(name)]


def eval_list_runs(name):
    """Wildcard pattern matching exactly the run ids of evaluate_<name> (none: a pattern matching nothing)."""
    return "|".join(re.escape(run_id) for run_id in eval_list_run_ids(name)) or "(?!)"


def eval_list_datasets(name):
    return list(dict.fromkeys(dataset_marker(dataset) for _, dataset in eval_list_pairs(name)))


def eval_list_results(name):
    """The results JSONs list `name` writes for a run (wildcard run_id)."""
    return [
        str(RESULTS / "eval" / "{run_id}" / f"{task}-{dataset}.json")
        for task, dataset in eval_list_pairs(name)
    ]


def eval_list_flags(name):
    """The params function of list `name`'s rule: `rankclip eval all`'s benchmark flags for a run,
    --<task> NAME=DIR ... per task (an empty --gap: no modality gap unless listed), the config's probe
    protocol where the list has linear probes, and --no-umap but for the lowest main seed (Fig. 6 draws
    that seed's UMAP; the projection is most of a gap benchmark's time)."""
    by_task = {"zeroshot": [], "retrieval": [], "linear-probe": [], "gap": []}
    for task, dataset in eval_list_pairs(name):
        folder = Path(dataset_marker(dataset)).parent
        by_task[task.replace("_", "-")].append(f"{dataset}={folder}")
    flags = [
        f"--{task} {' '.join(values)}".rstrip() for task, values in by_task.items() if values or task == "gap"
    ]
    if by_task["linear-probe"]:
        flags.append(f"--probe {config['eval']['probe']}")

    def run_flags(wildcards):
        drawn = parse_run_id(wildcards.run_id)["seed"] == min(main_seeds())
        return " ".join(flags + ([] if drawn or not by_task["gap"] else ["--no-umap"]))

    return run_flags


def eval_results():
    return [
        str(RESULTS / "eval" / run_id / f"{task}-{dataset}.json")
        for run_id in run_ids()
        for task, dataset in benchmarks(run_id)
    ]


def notebook_index(out_dir) -> dict:
    """A notebook's index.json (rankclip.report.ReportOutputs: title, items), {} if it has none."""
    index = Path(out_dir) / "index.json"
    return json.loads(index.read_text()) if index.is_file() else {}


def notebook_page_labels(wildcards, output) -> dict[str, str]:
    """Labels of a rendered notebook in Snakemake's report: its name and the title it gave itself."""
    title = notebook_index(output.out_dir).get("title", wildcards.notebook)
    return {"notebook": wildcards.notebook, "title": without_braces(title)}


def notebook_item_labels(wildcards, output) -> dict[str, str]:
    """Labels of one figure (.png) or table (.csv) of a notebook in Snakemake's report: its title, file."""
    kind = {"png": "figure", "csv": "table"}[wildcards.ext]
    items = notebook_index(output.out_dir).get("items", [])
    titles = {(item["kind"], item["name"]): item["title"] for item in items}
    title = titles.get((kind, wildcards.name), wildcards.name)
    return {"title": without_braces(title), "file": f"{wildcards.name}.{wildcards.ext}"}


def without_braces(text: str) -> str:
    """``text`` with {} made (): Snakemake expands wildcards in report labels, "{x}" would fail there."""
    return text.replace("{", "(").replace("}", ")")


def localisation_inputs(wildcards):
    """What Fig. 7 reads besides the results: the main CLIP and RankCLIP checkpoints, the retrieval set."""
    if wildcards.notebook != "fig7_localisation":
        return []
    seed = min(main_seeds())
    models = [
        str(RESULTS / "runs" / RUN_ID.format(**run) / "model.pt")
        for run in analysis_runs()["main"]
        if run["method"] in ("clip", "rankclip") and run["seed"] == seed
    ]
    return models + [dataset_marker(config["report"]["retrieval"])]


def notebook_parameters(wildcards, input):
    """papermill -y (JSON is YAML): the main runs, their size counted (`all` resolved from the main
    subset manifest, also as a key of report.data_sizes), and the config's report roles."""
    pairs = pairs_in(wildcards, input)
    roles = dict(config["report"])
    roles["data_sizes"] = {
        (pairs if size == ALL_PAIRS else size): paper for size, paper in roles.get("data_sizes", {}).items()
    }
    runs = dict(backbone=config["runs"]["backbone"], data_size=pairs, data_size_backbone=data_size_backbone())
    return json.dumps(dict(runs=runs, roles=roles))
