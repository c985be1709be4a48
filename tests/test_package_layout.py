"""The package's rooms: each stage imports only the stages before it and no module's private names.

Stage order: the foundation (helpers every stage shares: atomic writes, hashing, the device, the config,
the shard writer, the evaluation-set layout, downloads) -> the three data stages (``corpus``,
``evalsets``, ``demo_data``, which do not import each other) -> ``train`` -> ``eval`` -> ``report``.
``rankclip.cli`` is the entry point and may import anything. The imports are read from the source (every
``import`` statement, at the top or inside a function), so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rankclip.code_hash import STAGE_CODE, stage_files

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "rankclip"

FOUNDATION = 0
DATA = 1
STAGES: dict[str, int] = {
    "corpus": DATA, "evalsets": DATA, "demo_data": DATA, "train": 2, "eval": 3, "report": 4
}  # fmt: skip
TRAIN_MODULES = {"train", "models", "losses", "listmle", "optim", "checkpoint", "distributed"}
REPORT_MODULES = {"report", "report_html", "protocol", "localisation"}
ENTRY_POINTS = {"rankclip.cli", "rankclip.eval.__main__"}


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def stage_of(module: str) -> str:
    """The stage a module belongs to (``foundation`` for the shared helpers)."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in STAGES:
        return parts[1]
    if len(parts) == 2 and parts[1] in STAGES:  # a stage package itself
        return parts[1]
    name = parts[1] if len(parts) > 1 else ""
    if name in TRAIN_MODULES:
        return "train"
    if name in REPORT_MODULES:
        return "report"
    return "foundation"


def rank(stage: str) -> int:
    return FOUNDATION if stage == "foundation" else STAGES[stage]


def imports_of(path: Path, known: set[str]) -> list[tuple[str, str | None, int]]:
    """``(module, imported name or None, line)`` for every import of a ``rankclip`` module in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "rankclip"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rankclip":
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                if submodule in known:  # `from rankclip.evalsets import coco`: the module coco
                    found.append((submodule, None, node.lineno))
                else:
                    found.append((node.module, alias.name, node.lineno))
    return found


MODULES = module_names()


def test_the_scan_sees_every_stage():
    assert {stage_of(module) for module in MODULES} == {"foundation", *STAGES}
    assert stage_of("rankclip.corpus.loader") == "corpus" and stage_of("rankclip.losses") == "train"
    assert stage_of("rankclip.eval.metrics") == "eval" and stage_of("rankclip.hashing") == "foundation"


@pytest.mark.parametrize("module", sorted(set(MODULES) - ENTRY_POINTS))
def test_no_import_goes_back_up_or_across(module):
    here = stage_of(module)
    for imported, _, line in imports_of(MODULES[module], set(MODULES)):
        assert imported in MODULES, f"{module}:{line} imports {imported}, which is not a module of rankclip"
        there = stage_of(imported)
        assert imported not in ENTRY_POINTS, f"{module}:{line} imports the entry point {imported}"
        assert there == here or rank(there) < rank(here), (
            f"{module} ({here}) imports {imported} ({there}) at line {line}: "
            "a stage imports only the foundation and the stages before it"
        )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_another_modules_private_names(module):
    for imported, name, line in imports_of(MODULES[module], set(MODULES)):
        assert name is None or not name.startswith("_"), f"{module}:{line} imports {imported}.{name}"


def test_the_rules_flag_a_backwards_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "def f():\n    from rankclip.report import method_order\n    from rankclip.eval import _x\n"
    )
    found = imports_of(bad, set(MODULES))
    assert found == [("rankclip.report", "method_order", 2), ("rankclip.eval", "_x", 3)]
    assert rank(stage_of("rankclip.report")) > rank(stage_of("rankclip.corpus.web"))


def closure(start: str) -> set[str]:
    """``start`` and every ``rankclip`` module it imports, directly or not (the entry point excluded)."""
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module in seen or module in ENTRY_POINTS:
            continue
        seen.add(module)
        todo += [imported for imported, _, _ in imports_of(MODULES[module], set(MODULES))]
    return seen


# the module a stage's rule runs (`rankclip <command>` dispatches to it)
STAGE_ENTRY = {
    "demo": ["rankclip.demo_data.shapes"],
    "emoji": ["rankclip.demo_data.emoji"],
    "fashion_mnist": ["rankclip.demo_data.fashion_mnist"],
    "captions": ["rankclip.corpus.captions"],
    "subsets": ["rankclip.corpus.subsets"],
    "eval_sets": ["rankclip.evalsets.build"],
    "train": ["rankclip.train"],
    "eval": ["rankclip.eval.cli", "rankclip.eval.evaluator"],
    "report": ["rankclip.report", "rankclip.report_html", "rankclip.localisation"],
}


@pytest.mark.parametrize("stage", sorted(STAGE_CODE))
def test_each_stage_hash_covers_the_code_its_rule_imports(stage):
    """A library edit reruns every job whose code it changes: the stage's hash covers what it imports."""
    listed = set(stage_files(stage))
    wanted = set().union(*(closure(entry) for entry in STAGE_ENTRY[stage]))
    # package docstrings (`__init__.py` without code) and the hasher itself do not change what a job computes
    wanted -= {"rankclip.code_hash"}
    missing = sorted(
        str(MODULES[m].relative_to(REPO))
        for m in wanted
        if str(MODULES[m].relative_to(REPO)) not in listed and MODULES[m].name != "__init__.py"
    )
    assert not missing, f"stage {stage!r} imports {missing}, which rankclip/code_hash.py does not list"
