"""What the workflow imports while parsing stays light: no torch, no webdataset (a dry-run in < 3 s)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "webdataset", "numpy", "PIL", "open_clip")


def workflow_imports() -> list[str]:
    """Every import statement of the Snakefile and the rule files (top level or in a function)."""
    files = [REPO / "workflow" / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    pattern = re.compile(r"^\s*((?:from\s+\S+\s+)?import\s+.+)$", re.M)
    return [match.strip() for file in files for match in pattern.findall(file.read_text())]


def test_the_workflow_imports_no_heavy_module():
    imports = workflow_imports()
    assert any("rankclip" in line for line in imports), imports  # the scan sees the package's imports
    script = "\n".join([*imports, "import sys", f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"])
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [], f"parsing the workflow imports {result.stdout.strip()}:\n{script}"
