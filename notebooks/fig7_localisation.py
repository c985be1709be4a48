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
# # Fig. 7: word-level localisation heatmaps, CLIP vs RankCLIP
#
# For a few images of the retrieval set (MS-COCO's role; `num_images` drawn with `seed`, the same for
# every model) and each word of the image's first caption, a heatmap over the image
# (`rankclip.localisation`). Each word is encoded alone, as `template.format(word)` (default: the bare
# word). ViT: cosine similarity of each patch feature (last block's patch tokens through `ln_post` and
# `proj`, as the class token becomes the image embedding) with the word's text feature. ResNet: a
# gradient map, Grad-CAM on the last residual stage with at least a 4x4 grid. Maps are min-max
# normalised per word and drawn bilinearly upsampled over the model's view of the image (resized,
# centre-cropped). The checkpoints and the images come from the results JSONs of the main runs on the
# retrieval set (`checkpoint_path`, `dataset_path`). The paper shows images only: no numbers beside ours.

# %% tags=["parameters"]
results_csv = "../results/demo/tables/results.csv"
results_dir = "../results/demo/eval"
out_dir = "../results/demo/report/fig7_localisation"
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
num_images = 3
seed = 0
max_words = 8
skip_words = ["a", "an", "the", "of", "on", "in", "at", "to", "with", "and", "is", "are", "its"]
template = "{}"

# %%
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from rankclip import localisation, report
from rankclip.hashing import sha256_file

torch.manual_seed(0)  # nothing here is random; kept for any model code that might draw
roles = report.Roles.from_config(roles)
backbone, data_size = runs["backbone"], int(runs["data_size"])
outputs = report.ReportOutputs(
    out_dir,
    "Fig. 7: word-level localisation heatmaps",
    f"Per-word heatmaps on `{roles.retrieval}` (MS-COCO's role), main runs of {', '.join(methods)}.",
)
found = localisation.localisation_runs(results_dir, roles.retrieval, backbone, data_size, methods)

# %%
models, statuses = {}, []
for run in found.itertuples():
    status, same = "ok", None
    if run.checkpoint is None:
        status = f"checkpoint {run.checkpoint_path} not found"
    else:
        same = sha256_file(run.checkpoint) == run.checkpoint_sha256
        try:
            models[run.method] = localisation.load_checkpoint_model(run.checkpoint)
        except Exception as error:  # shown in the table and the figure rather than stopping the report
            status = f"cannot load the checkpoint: {str(error).splitlines()[0]}"
    statuses.append({"same_as_evaluated": same, "status": status})
run_table = pd.concat([found, pd.DataFrame(statuses, index=found.index)], axis=1)
run_table = run_table.reindex(
    columns=["method", "run_id", "seed", "backbone", "checkpoint_path", "same_as_evaluated", "status"]
)

examples, problem = [], None
datasets = found.dropna(subset=["dataset_dir"]) if len(found) else found
if not len(found):
    problem = f"no results of the main runs on {roles.retrieval} (run the evaluation)"
elif not len(datasets):
    problem = f"the retrieval set {found['dataset_path'].iloc[0]} was not found"
else:
    try:
        first = datasets.iloc[0]
        examples = localisation.retrieval_images(first["dataset_dir"], first["split"], num_images, seed)
    except Exception as error:  # e.g. an unreadable shard: said in the figure
        problem = f"cannot read the retrieval set: {str(error).splitlines()[0]}"
outputs.table(
    run_table,
    "fig7_runs",
    "Fig. 7: the checkpoints drawn",
    "One run per method (lowest seed); same_as_evaluated: the checkpoint's sha256 is the one its results "
    "JSON records.",
)
run_table

# %%
rows, drawn = [], []
for example in examples:
    words = [w for w in localisation.caption_words(example["caption"]) if w not in set(skip_words)]
    words = words[:max_words]
    for method in report.method_order(models):
        model, preprocess, tokenizer = models[method]
        image = preprocess(example["image"])
        heatmaps = localisation.word_heatmaps(model, tokenizer, image, words, template=template)
        drawn.append((example, method, localisation.display_image(image, preprocess), heatmaps))
        for word, values, score in zip(heatmaps.words, heatmaps.maps, heatmaps.scores, strict=True):
            peak = np.unravel_index(int(np.argmax(values)), values.shape)
            rows.append(
                {
                    "method": method,
                    "image": example["index"],
                    "key": example["key"],
                    "caption": example["caption"],
                    "word": word,
                    "image_word_cosine": float(score),
                    "map": heatmaps.method
                    if heatmaps.layer is None
                    else f"{heatmaps.method} {heatmaps.layer}",
                    "grid": "x".join(map(str, heatmaps.grid)),
                    "map_min": float(values.min()),
                    "map_max": float(values.max()),
                    "peak_row": int(peak[0]),
                    "peak_col": int(peak[1]),
                }
            )
words_table = pd.DataFrame(
    rows,
    columns=[
        "method", "image", "key", "caption", "word", "image_word_cosine",
        "map", "grid", "map_min", "map_max", "peak_row", "peak_col",
    ],
)  # fmt: skip
outputs.table(
    words_table,
    "fig7_words",
    "Fig. 7: per word, its similarity with the image and where its map peaks",
    "image_word_cosine: cosine of the image embedding with the word's text feature; map_min/max: the "
    "map's range before normalisation (patch_cosine: cosines; gradcam: ReLU'd Grad-CAM); peak_row/col: "
    "the cell of its maximum on the grid (0, 0 = top left).",
    decimals=4,
)
words_table

# %%
columns = 1 + max((len(h.words) for *_, h in drawn), default=0)
size = (1.9 * columns, 2.0 * len(drawn)) if drawn else (8, 1.5)
fig, axes = plt.subplots(max(1, len(drawn)), columns, figsize=size, squeeze=False)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_frame_on(False)
if not drawn:
    missing = "; ".join(f"{r.method}: {r.status}" for r in run_table.itertuples() if r.status != "ok")
    message = problem or missing or "nothing to draw"
    axes[0, 0].text(0, 0.5, "\n".join(textwrap.wrap(message, 60)), transform=axes[0, 0].transAxes)
for row, (example, method, pixels, heatmaps) in enumerate(drawn):
    axes[row, 0].imshow(pixels)
    axes[row, 0].set_ylabel(
        f"{method}\n" + "\n".join(textwrap.wrap(example["caption"], 22)[:5]),
        fontsize=8,
        rotation=0,
        ha="right",
        va="center",
    )
    shown = localisation.upsample(localisation.normalise_maps(heatmaps.maps), pixels.shape[:2])
    for col, (word, values, score) in enumerate(zip(heatmaps.words, shown, heatmaps.scores, strict=True), 1):
        ax = axes[row, col]
        ax.imshow(pixels)
        ax.imshow(values, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        ax.set_title(f"{word} ({score:.2f})", fontsize=8)
if drawn:
    kind = drawn[0][3]
    how = "patch-text cosine" if kind.method == "patch_cosine" else f"Grad-CAM on {kind.layer}"
    fig.suptitle(f"Word heatmaps on {roles.retrieval} ({how}, {'x'.join(map(str, kind.grid))} grid)")
fig.tight_layout()
outputs.figure(
    fig,
    "fig7_localisation",
    "Fig. 7: word-level localisation heatmaps, CLIP vs RankCLIP",
    "Rows: image and method (the first caption beside it); columns: the caption's words (stop words "
    "dropped) with the cosine of the image embedding and the word; colour: the word's map, min-max "
    "normalised per word (red: most similar region).",
)
