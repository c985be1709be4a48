#!/usr/bin/env bash
# Create .venv with the project and its test tools. Torch is pinned to the build this machine class
# installs from local files; on a CUDA machine set TORCH_SPEC (see README, "Other torch builds").
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
# Real demo data shipped by Debian: emoji glyphs (captioned with CLDR names) and Fashion-MNIST;
# libfribidi0 lets Pillow's text layout (raqm) join emoji sequences into one glyph; headless chromium
# renders the HTML report in tests/workflow/test_report_html.py.
DEBIAN_DATA="fonts-noto-color-emoji dataset-fashion-mnist libfribidi0 chromium"
if ! dpkg -s $DEBIAN_DATA >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $DEBIAN_DATA >/dev/null
  else
    echo "note: install the demo's real data and chromium with: sudo apt-get install $DEBIAN_DATA" >&2
  fi
fi
python3 -m venv .venv
# shellcheck disable=SC2086
.venv/bin/pip install --quiet $TORCH_SPEC
.venv/bin/pip install --quiet -e '.[dev,web]'
.venv/bin/pip install --quiet --no-deps img2dataset==1.47.0  # pins webdataset<0.3, works with 1.x
.venv/bin/python -c "import rankclip, open_clip, torch; print('rankclip ready: torch', torch.__version__, 'open_clip', open_clip.__version__)"
