#!/usr/bin/env bash
# The demo on a CPU, no network: the whole workflow DAG (data -> subsets -> 24 training runs -> 24
# evaluation jobs -> tables) with config/config.yaml, then the Table 1 analogue.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
source .venv/bin/activate
snakemake --cores all "$@"
cat results/demo/tables/table1.md
