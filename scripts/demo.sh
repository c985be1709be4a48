#!/usr/bin/env bash
# The demo on a CPU: render the seeded demo corpus, then train the tiny model with RankCLIP and CLIP.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-results/demo}
.venv/bin/rankclip data make-demo --out "$RUN/data" --seed 0
for loss in clip rankclip; do
  .venv/bin/rankclip train --config config/demo-train.yaml \
    --train-data "$RUN/data/train/shard-{000000..000007}.tar" --loss "$loss" --output-dir "$RUN/runs/$loss"
done
grep -h '"step": 512,' "$RUN"/runs/*/metrics.jsonl | cut -c1-200
