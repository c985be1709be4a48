#!/usr/bin/env bash
# Create .venv with the project, every stage's packages and the test tools, all from envs/lock.txt (the
# versions and hashes the conda envs in envs/ install too). The lock's torch is the build this machine
# class installs from local files; for another build set TORCH_SPEC (see README, "Other torch builds"):
# it replaces the lock's torch, torchvision, triton and nvidia-* / cuda-* packages.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_SPEC=${TORCH_SPEC:-}
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
# envs/lock.txt is resolved for CPython 3.11.5 or later 3.11 (some of its releases need 3.11.5): say so
# before pip fails deep in the lock (Debian 12's python3 is 3.11.2: PYTHON=/path/to/python3.11 picks another)
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(not (3, 11, 5) <= sys.version_info[:3] < (3, 12))' 2>/dev/null; then
  echo "scripts/setup.sh: envs/lock.txt needs CPython 3.11.5 or a later 3.11; $PYTHON is" \
    "$("$PYTHON" -V 2>&1 || echo missing): set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
"$PYTHON" -m venv .venv
LOCK=envs/lock.txt
if [ -n "$TORCH_SPEC" ]; then
  # shellcheck disable=SC2086
  .venv/bin/pip install --quiet $TORCH_SPEC
  LOCK=$(mktemp)
  grep -vE '^(torch|torchvision|triton|nvidia-[a-z0-9-]+|cuda-[a-z-]+)==' envs/lock.txt > "$LOCK"
fi
# --no-deps: the lock is complete, and img2dataset's own pin (webdataset<0.3) is knowingly overridden
.venv/bin/pip install --quiet --no-deps --require-hashes -r "$LOCK"
.venv/bin/pip install --quiet --no-deps -e .
.venv/bin/python -c "import rankclip, open_clip, torch; print('rankclip ready: torch', torch.__version__, 'open_clip', open_clip.__version__)"
