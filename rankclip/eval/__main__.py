"""``python -m rankclip.eval TASK ...``: the same as ``rankclip eval TASK ...``."""

import sys

from rankclip.eval.cli import main

sys.exit(main())
