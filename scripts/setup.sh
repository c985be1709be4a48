#!/usr/bin/env bash
# Create .venv with the project and its test tools. Torch is pinned to the build this machine class
# installs from local files; on a CUDA machine set TORCH_SPEC (see README, "Other torch builds").
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
# shellcheck disable=SC2086
.venv/bin/pip install --quiet $TORCH_SPEC
.venv/bin/pip install --quiet -e '.[dev]'
.venv/bin/python -c "import rankclip, open_clip, torch; print('rankclip ready: torch', torch.__version__, 'open_clip', open_clip.__version__)"
