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
# # Fig. 5: the top-10 images retrieved for a few captions, CLIP vs RankCLIP
#
# The `gap` evaluation of each main run on the retrieval set (MS-COCO's role) saves, for a few captions
# drawn with a fixed seed (the same captions for every run), the ten most similar images with their
# cosine similarity and a thumbnail (`artifacts.retrievals` of the results JSON). A green frame marks the
# caption's own image. The paper shows images only, so the table has our numbers alone.

# %% tags=["parameters"]
results_csv = "../results/demo/tables/results.csv"
results_dir = "../results/demo/eval"
out_dir = "../results/demo/report/fig5_retrievals"
runs = {"backbone": "rankclip-tiny-rn", "data_size": 4096, "data_size_backbone": "rankclip-tiny-rn"}
roles = {
    "zeroshot": "shapes",
    "retrieval": "shapes_captions",
    "shift": {"shapes_sketch": "imagenet_r"},
    "linear_probe": {"shapes_texture": "dtd", "fashion_mnist": None},
    "backbones": {"rankclip-tiny-rn": "RN50", "rankclip-tiny-vit": "ViT-B/32"},
    "data_sizes": {2048: 1000000, 4096: 3000000},
}
methods = ["clip", "rankclip"]

# %%
import base64
import io
import textwrap

import matplotlib.pyplot as plt
from PIL import Image

from rankclip import report

roles = report.Roles.from_config(roles)
backbone, data_size = runs["backbone"], int(runs["data_size"])
outputs = report.ReportOutputs(
    out_dir,
    "Fig. 5: top-10 retrievals per caption",
    f"Text-to-image retrieval on `{roles.retrieval}` (MS-COCO's role), main runs of {', '.join(methods)}.",
)
examples = report.artifact_frame(
    results_dir,
    "retrievals",
    dataset=roles.retrieval,
    backbone=backbone,
    data_size=data_size,
    methods=methods,
)
if len(examples):  # one seed per method: the lowest
    examples = examples[examples["seed"] == examples.groupby("method")["seed"].transform("min")]

# %%
summary = report.retrieval_summary(examples)
outputs.table(
    summary,
    "fig5_retrievals",
    "Fig. 5: rank of each caption's own image (1 = first)",
    "target_rank: position of the caption's image among all images of the split; in_top10: shown in the "
    "figure; top1_score: cosine similarity of the first image.",
    decimals=4,
)
summary


# %%
def thumbnail(encoded: str):
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        return image.convert("RGB")


queries = sorted(examples["query"].unique()) if len(examples) else []
shown = [m for m in report.method_order(examples["method"].unique())] if len(examples) else []
rows = [(query, method) for query in queries for method in shown]
k = int(examples["rank"].max()) + 1 if len(examples) else 10
fig, axes = plt.subplots(max(1, len(rows)), k, figsize=(1.5 * k, 1.75 * max(1, len(rows))), squeeze=False)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
if not rows:
    axes[0, 0].text(
        0,
        0.5,
        "no retrieval examples in the results (rerun the gap evaluation)",
        transform=axes[0, 0].transAxes,
    )
for row, (query, method) in enumerate(rows):
    part = examples[(examples["query"] == query) & (examples["method"] == method)].sort_values("rank")
    caption = part["caption"].iloc[0]
    axes[row, 0].set_ylabel(
        f"{method}\n" + "\n".join(textwrap.wrap(caption, 24)[:5]),
        fontsize=8,
        rotation=0,
        ha="right",
        va="center",
    )
    for _, item in part.iterrows():
        ax = axes[row, int(item["rank"])]
        ax.imshow(thumbnail(item["thumbnail"]))
        ax.set_title(f"{float(item['score']):.3f}", fontsize=7)
        hit = str(item["hit"]).lower() in ("1", "true")
        for spine in ax.spines.values():
            spine.set_edgecolor("limegreen" if hit else "lightgrey")
            spine.set_linewidth(4 if hit else 1)
fig.suptitle(f"Top-{k} images per caption on {roles.retrieval} (score: cosine similarity)")
fig.tight_layout()
outputs.figure(
    fig,
    "fig5_retrievals",
    "Fig. 5: top-10 images retrieved per caption, CLIP vs RankCLIP",
    "Rows: caption and method; columns: rank 1-10 with the cosine similarity; green frame: the caption's "
    "own image.",
)
