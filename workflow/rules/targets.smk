# Partial targets: `snakemake table1` (table1-4, fig3-7; fig3 with the list-scale ablation) trains and
# evaluates only the runs that table or figure shows, then writes their tables to
# results/<name>/targets/<target>/. Each target's message (shown by a dry-run too) estimates its training
# cost from resources.train.samples_per_s.


def target_plan():
    """Per table or figure: (the runs it shows, the task:dataset pairs it reports)."""
    roles, analyses = config["report"], analysis_runs()
    main, runs = analyses["main"], config["runs"]
    zeroshot = f"zeroshot:{roles['zeroshot']}"
    retrieval = f"retrieval:{roles['retrieval']}"
    shift = [f"zeroshot:{name}" for name in roles.get("shift", {})]
    robustness = roles.get("robustness") or next(iter(roles.get("shift", {})), None)
    gap = [pair for pair in config["eval"]["main_runs"] if pair.startswith("gap:")]

    def of(methods):
        return [run for run in main if run["method"] in methods]

    return {
        "table1": (main, [zeroshot, retrieval]),
        "table2": (main, [zeroshot, *shift]),
        "table3": (main, [f"linear_probe:{name}" for name in roles.get("linear_probe", {})]),
        "table4": (
            of(runs["backbone_methods"]) + analyses["backbones"],
            [zeroshot, retrieval, *config["eval"].get("backbone_runs", [])],
        ),
        "fig3": (of(["rankclip"]) + analyses["lambdas"] + analyses["list_scales"], [zeroshot, retrieval]),
        "fig4": (
            of(runs["data_size_methods"]) + analyses["data_sizes"],
            [zeroshot, *([f"zeroshot:{robustness}"] if robustness else [])],
        ),
        "fig5": (of(["clip", "rankclip"]), gap),
        "fig6": (main, gap),
        "fig7": (of(["clip", "rankclip"]), [retrieval]),
    }


def target_results(runs, pairs):
    """The results JSONs of `runs` on those of `pairs` that the DAG evaluates them on."""
    wanted = set(pairs)
    ids = dict.fromkeys(RUN_ID.format(**run) for run in runs)
    return [
        str(RESULTS / "eval" / run_id / f"{task}-{dataset}.json")
        for run_id in ids
        for task, dataset in benchmarks(run_id)
        if f"{task}:{dataset}" in wanted
    ]


def training_cost(runs):
    """'N training runs, M samples seen, ~H GPU-hours' at resources.train.samples_per_s (per GPU; per job
    on CPU), the same rate for every method (ALIP encodes a second caption: slower)."""
    ids = dict.fromkeys(RUN_ID.format(**run) for run in runs)
    epochs = config["train"].get("epochs", TrainConfig.model_fields["epochs"].default)
    rates = config["resources"]["train"].get("samples_per_s", {})
    samples, hours, unrated = 0, 0.0, set()
    for run_id in ids:
        run = parse_run_id(run_id)
        seen = planned_pairs(run["data_size"]) * epochs
        samples += seen
        if run["backbone"] in rates:
            hours += seen / rates[run["backbone"]] / 3600
        else:
            unrated.add(run["backbone"])
    unit = "GPU-hours" if config["resources"]["train"]["gpu"] else "CPU job-hours"
    cost = f"{len(ids)} training runs, {samples:,} samples seen, ~{hours:,.1f} {unit}"
    if unrated:
        cost += f" (+ runs on {', '.join(sorted(unrated))}: no resources.train.samples_per_s)"
    return cost


def planned_pairs(data_size):
    """A run's training pairs for the estimate: `all` is the download's count once it ran, until then
    the paper's size it stands for (report.data_sizes), else 0."""
    if data_size != ALL_PAIRS:
        return data_size
    downloaded = downloaded_pairs(config, DATA / "web" / "shards" / "summary.json")
    return downloaded or config["report"].get("data_sizes", {}).get(ALL_PAIRS) or 0


TARGETS = target_plan()


def plan_message():
    """The whole DAG's training cost, then each target's (the targets share runs)."""
    every_run = [run for runs in analysis_runs().values() for run in runs]
    lines = [f"all: {training_cost(every_run)}, {len(eval_results())} evaluations"]
    if config["runs"]["data_size"] == ALL_PAIRS:
        known = downloaded_pairs(config, DATA / "web" / "shards" / "summary.json")
        basis = "the download's count" if known else "the paper's size until the download ran"
        lines.append(f"  (data_size all: {planned_pairs(ALL_PAIRS):,} pairs per epoch, {basis})")
    lines += [f"  {target}: {training_cost(runs)}" for target, (runs, _) in TARGETS.items()]
    return "\n".join(lines)


for target, (runs, pairs) in TARGETS.items():
    evaluations = target_results(runs, pairs)

    rule:
        name:
            target
        input:
            evaluations,
            subset=main_subset(),
        output:
            directory(RESULTS / "targets" / target),
        log:
            LOGS / "targets" / f"{target}.log",
        localrule: True
        conda:
            "../../envs/report.yaml"
        params:
            command=tables_command(RESULTS / "targets" / target),
            code=code_hash("report"),
        message:
            f"{target}: {training_cost(runs)}, {len(evaluations)} evaluations"
        shell:
            "{params.command} > {log} 2>&1"
