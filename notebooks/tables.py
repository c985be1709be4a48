# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Tables 1-4: our numbers beside the paper's
#
# Each table has, per method, our value (mean over seeds, percent), the paper's (PAPER.md) and, where our
# dataset is the paper's own benchmark, the difference (none for a stand-in such as the demo's shapes).
# Which of our datasets plays which of the paper's benchmarks is the config's `report` section (`roles`
# below). Table logic: `rankclip.report`; this notebook only draws and saves.

# %% tags=["parameters"]
results_csv = "../results/demo/tables/results.csv"
results_dir = "../results/demo/eval"
out_dir = "../results/demo/report/tables"
runs = {"backbone": "rankclip-tiny-rn", "data_size": 4096, "data_size_backbone": "rankclip-tiny-rn"}
roles = {
    "zeroshot": "shapes",
    "retrieval": "shapes_captions",
    "shift": {"shapes_sketch": "imagenet_r"},
    "linear_probe": {"shapes_texture": "dtd", "fashion_mnist": None},
    "backbones": {"rankclip-tiny-rn": "RN50", "rankclip-tiny-vit": "ViT-B/32"},
    "data_sizes": {2048: 1000000, 4096: 3000000},
}

# %%
import matplotlib.pyplot as plt
import seaborn as sns

from rankclip import report

sns.set_theme(style="whitegrid", context="notebook")
roles = report.Roles.from_config(roles)
frame = report.read_frame(results_csv)
backbone, data_size = runs["backbone"], int(runs["data_size"])
outputs = report.ReportOutputs(
    out_dir,
    "Tables 1-4: zero-shot, retrieval, distribution shift, linear probe, backbones",
    f"Main runs: backbone {backbone}, {data_size} training pairs, lambda_cross = lambda_in = 1.",
)


def shift_names():
    return ", ".join(
        f"`{ours}` for {report.PAPER_TABLE2_BENCHMARKS[paper]}" for ours, paper in roles.shift.items()
    )


def probe_names():
    return ", ".join(
        f"`{ours}` for {report.PAPER_TABLE3_DATASETS[paper]}" if paper else f"`{ours}` (no counterpart)"
        for ours, paper in roles.linear_probe.items()
    )


def stand_ins(mapping):
    """The caption sentence naming the stand-ins among ``mapping`` (ours -> the paper's benchmark; no
    `ours - paper` for them), or ""."""
    note = report.stand_in_note(mapping)
    return f" {note}" if note else ""


def bars(table, column, ax, title):
    """Ours and the paper's value of one column, side by side per key."""
    rows = table[table["source"].isin(["ours", "paper"])].copy()
    keys = report.key_columns(table)
    rows["key"] = rows[keys].astype(str).agg(" ".join, axis=1)
    if rows.empty or column not in rows:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
    else:
        sns.barplot(rows, x="key", y=column, hue="source", hue_order=["ours", "paper"], ax=ax)
        ax.set_ylim(top=ax.get_ylim()[1] * 1.2)  # room for the legend
        ax.legend(title=None, ncols=2, loc="upper left")
        ax.tick_params(axis="x", rotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set(title=title, xlabel="", ylabel=f"{column} (%)")


# %% [markdown]
# ## Table 1: zero-shot classification and retrieval

# %%
table1 = report.table1(frame, backbone, data_size, roles.zeroshot, roles.retrieval)
outputs.table(
    table1,
    "table1",
    "Table 1: zero-shot top-1/3/5 and retrieval Recall@1/5/10 (%)",
    f"Ours: `{roles.zeroshot}` in ImageNet1K's role, `{roles.retrieval}` in MS-COCO's (image->text and "
    "text->image). Paper: CC3M, ViT-B/32. Ties: an exact score tie with a wrong class or caption counts "
    "as a miss (pessimistic; clip_benchmark's top-k breaks it by index instead)."
    + stand_ins({roles.zeroshot: "imagenet1k", roles.retrieval: "mscoco"}),
)
table1

# %% [markdown]
# ## How sure: Table 1 over seeds, and each method against CLIP

# %%
benchmarks = [(report.ZEROSHOT, roles.zeroshot, metric) for metric in report.TABLE1_COLUMNS[:3]] + [
    (report.RETRIEVAL, roles.retrieval, metric) for metric in report.TABLE1_COLUMNS[3:]
]
uncertainty = report.uncertainty_table(results_dir, backbone, data_size, benchmarks)
table1_uncertainty = report.table1_uncertainty(uncertainty)
seeds = sorted(set(uncertainty["seeds"])) if len(uncertainty) else []
outputs.table(
    table1_uncertainty,
    "table1_uncertainty",
    "Table 1 with its uncertainty (%): mean ± sd over seeds, and each method minus CLIP with a 95% interval",
    f"Seeds per method: {', '.join(map(str, seeds)) or '-'}. mean ± sd: over the seeds' values. delta vs "
    "clip: the paired difference to CLIP on the same test items and seeds, with a bootstrap 95% interval "
    "(1,000 resamples of the items, seeds pooled, seeded); `*` where the interval excludes 0. With one "
    "seed, sd is 0 and the interval covers test-set noise only, not training noise.",
)
outputs.table(
    uncertainty,
    "uncertainty",
    "Table 1's metrics one per row (%): spread over seeds, 95% intervals, each method minus CLIP",
    "Mean and standard deviation over seeds; the 95% interval is a bootstrap over test items (1,000 "
    "resamples, seeds pooled); delta vs clip is paired on the same items and seeds, `*` where its interval "
    "excludes 0.",
)
table1_uncertainty

# %% [markdown]
# ## Table 2: distribution shift

# %%
table2 = report.table2(frame, backbone, data_size, roles.shift)
outputs.table(
    table2,
    "table2",
    "Table 2: zero-shot top-1/3/5 under distribution shift (%)",
    f"Ours: {shift_names()}." + stand_ins(roles.shift),
)
table2

# %% [markdown]
# ## Table 3: linear probe

# %%
table3 = report.table3(frame, backbone, data_size, roles.linear_probe)
outputs.table(
    table3,
    "table3",
    "Table 3: linear-probe top-1 (%)",
    f"Ours: {probe_names()}; `avg` is the mean over our datasets, the paper's over its ten (a difference "
    "only when ours are the paper's ten)." + stand_ins(roles.linear_probe),
)
table3

# %% [markdown]
# ## Table 4: backbones

# %%
table4 = report.table4(
    frame, data_size, roles.zeroshot, roles.retrieval, list(roles.linear_probe), roles.backbones
)
backbone_names = ", ".join(f"`{ours}` as {paper}" for ours, paper in roles.backbones.items() if paper)
outputs.table(
    table4,
    "table4",
    "Table 4: backbones (zero-shot, retrieval, linear-probe average, %)",
    f"Ours: {backbone_names or 'no backbone mapped'}; linear-probe average over `report.linear_probe`. "
    "Paper: probably the 15M set (its RN50 CLIP top-1, 21.6, is Fig. 4's 15M point), ours the main data: "
    "no `ours - paper` rows." + stand_ins({roles.zeroshot: "imagenet1k", roles.retrieval: "mscoco"}),
)
table4

# %%
fig, axes = plt.subplots(2, 2, figsize=(13, 9))
bars(table1, "top1", axes[0, 0], f"Table 1: zero-shot top-1 ({roles.zeroshot})")
bars(table1, "image_to_text_R@1", axes[0, 1], f"Table 1: image->text R@1 ({roles.retrieval})")
first_shift = next(iter(roles.shift), None)
bars(table2, f"{first_shift} top1", axes[1, 0], f"Table 2: top-1 on {first_shift}")
bars(table3, "avg", axes[1, 1], "Table 3: linear-probe average")
fig.tight_layout()
outputs.figure(
    fig,
    "tables_overview",
    "Tables 1-3 at a glance: ours beside the paper",
    "One column of each table, per method; the paper's bars are PAPER.md's numbers.",
)

# %%
fig, ax = plt.subplots(figsize=(10, 4.5))
bars(table4, "top1", ax, "Table 4: zero-shot top-1 by backbone")
fig.tight_layout()
outputs.figure(fig, "table4_backbones", "Table 4: zero-shot top-1 by backbone, ours beside the paper")
