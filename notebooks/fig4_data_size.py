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
# # Fig. 4: training-set size and effective robustness
#
# Left: zero-shot top-1 (ImageNet's role) by the number of training pairs, for the methods trained at
# several sizes; our sizes map onto the paper's through the config (`roles["data_sizes"]`). Right: every
# run's top-1 on the shifted set (ImageNet-R's role) against its top-1 on the main set, with the y = x
# line: points above it are more robust than their in-distribution accuracy predicts.

# %% tags=["parameters"]
results_csv = "../results/demo/tables/results.csv"
results_dir = "../results/demo/eval"
out_dir = "../results/demo/report/fig4_data_size"
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
import numpy as np
import pandas as pd
import seaborn as sns

from rankclip import report

sns.set_theme(style="whitegrid", context="notebook")
roles = report.Roles.from_config(roles)
frame = report.read_frame(results_csv)
backbone, data_size = runs["backbone"], int(runs["data_size"])
curve_backbone = runs.get("data_size_backbone") or backbone  # the paper's Fig. 4: RN50
shift = roles.robustness
outputs = report.ReportOutputs(
    out_dir,
    "Fig. 4: data size and effective robustness",
    f"`{roles.zeroshot}` in ImageNet's role"
    + (f", `{shift}` in {report.PAPER_TABLE2_BENCHMARKS[roles.shift[shift]]}'s" if shift else ""),
)

# %% [markdown]
# ## Zero-shot top-1 by training-set size

# %%
hits = report.load_item_hits(results_dir)  # per-item hits: the 95% intervals of the error bars
curve = report.data_size_curve(frame, curve_backbone, roles.zeroshot, roles.data_sizes, hits=hits)
mapping = ", ".join(f"{ours} -> {paper}" for ours, paper in roles.data_sizes.items() if paper)
outputs.table(
    curve,
    "fig4_data_size",
    f"Fig. 4 (left): zero-shot top-1 (%) by training pairs, {curve_backbone}",
    f"Keys: method, our size, the paper's size it stands for ({mapping or 'none mapped'}). `top1 low`, "
    "`top1 high`: our bootstrap 95% interval over test items (seeds pooled); `seeds`: how many. Paper: "
    f"ImageNet top-1 read off Fig. 4 (approximate; RN50); our size is `{report.NOT_RUN}` at the paper's "
    "sizes without a counterpart here (15M needs a 15M-pair source). "
    + report.stand_in_note({roles.zeroshot: "imagenet1k"}),
)
curve

# %% [markdown]
# ## Effective robustness

# %%
points = report.robustness_points(frame, roles.zeroshot, shift) if shift else pd.DataFrame()
robust = (
    report.robustness_table(frame, backbone, data_size, roles.zeroshot, shift, roles.shift[shift])
    if shift
    else pd.DataFrame(columns=["method", "source"])
)
outputs.table(
    robust,
    "fig4_robustness",
    "Fig. 4 (right): main vs shifted zero-shot top-1 (%) of the main runs",
    f"zeroshot_top1: `{roles.zeroshot}`; shift_top1: `{shift}`; shift_minus_zeroshot > 0: above y = x. "
    "Paper: Table 1's ImageNet top-1 and Table 2's value for the same benchmark. "
    + report.stand_in_note({roles.zeroshot: "imagenet1k", shift: roles.shift.get(shift)}),
)
outputs.table(
    points.round(2),
    "fig4_robustness_points",
    "Fig. 4 (right): every run's point",
    "All runs (every backbone, data size and lambda) evaluated on both sets.",
)
robust

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
ours = curve[(curve["source"] == "ours")].astype({"data_size": int}) if len(curve) else curve
paper = curve[curve["source"] == "paper"].copy()
ax = axes[0]
if len(ours):
    report.plot_intervals(ax, ours, x="data_size", y="top1", by="method")
    ax.set_xscale("log", base=2)
    ax.legend(title=None)
else:
    ax.text(0.5, 0.5, "no data-size runs", ha="center", va="center", transform=ax.transAxes)
ax.set(title="ours", xlabel="training pairs", ylabel=f"zero-shot top-1, {roles.zeroshot} (%)")
ax = axes[1]
if len(paper):
    sizes = {report.size_label(size): size for size in report.PAPER_FIG4["clip"]}
    paper["pairs"] = paper["paper_data_size"].map(sizes)
    sns.lineplot(paper, x="pairs", y="top1", hue="method", marker="o", linestyle="--", ax=ax)
    for _, row in paper[paper["data_size"] == report.NOT_RUN].iterrows():  # e.g. 15M: no source here
        ax.annotate(report.NOT_RUN, (row["pairs"], row["top1"]), fontsize=8, xytext=(-40, 6),
                    textcoords="offset points", color="grey")  # fmt: skip
    ax.set_xscale("log")
ax.set(title="paper (read off Fig. 4)", xlabel="training pairs", ylabel="ImageNet top-1 (%)")
ax = axes[2]
paper_points = robust[robust["source"] == "paper"]
if len(points):
    sns.scatterplot(points, x="zeroshot_top1", y="shift_top1", hue="method", style="backbone", s=70, ax=ax)
both = pd.concat([points, paper_points]).reindex(columns=["zeroshot_top1", "shift_top1"])
if len(both):
    ends = np.array([both.min().min(), both.max().max()])
    ax.plot(ends, ends, color="grey", linestyle=":", label="y = x")
if len(paper_points):
    ax.scatter(
        paper_points["zeroshot_top1"],
        paper_points["shift_top1"],
        marker="*",
        s=150,
        color="black",
        label="paper",
    )
    for _, row in paper_points.iterrows():
        ax.annotate(
            row["method"],
            (row["zeroshot_top1"], row["shift_top1"]),
            fontsize=8,
            xytext=(3, 3),
            textcoords="offset points",
        )
ax.set(title="effective robustness", xlabel=f"top-1 on {roles.zeroshot} (%)", ylabel=f"top-1 on {shift} (%)")
ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
fig.tight_layout()
outputs.figure(
    fig,
    "fig4_data_size",
    "Fig. 4: zero-shot top-1 by training-set size (ours, paper) and shifted vs main top-1",
    "Left: ours, error bars the bootstrap 95% interval over test items (seeds pooled). Right: every run "
    "of ours (colour: method, marker: backbone) and the paper's four ViT-B/32 CC3M "
    "methods (stars; Tables 1 and 2), with y = x dotted.",
)
