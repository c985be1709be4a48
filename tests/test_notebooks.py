"""The notebooks (jupytext py:percent) run under papermill on tiny synthetic results and write their
tables and figures; their parameter defaults match the demo config."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import jupytext
import pandas as pd
import papermill
import pytest
import yaml
from synthetic_results import BACKBONE, DATA_SIZE, ROLES, RUNS, write_synthetic_results

from rankclip.report import write_tables

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))
PNG = b"\x89PNG\r\n\x1a\n"

# notebook -> {table name: what its rows must show} and the figures it saves
EXPECTED = {
    "tables": {
        "tables": {
            "table1": {"method": ["clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"]},
            "table2": {"method": ["clip", "rankclip"]},
            "table3": {"method": ["clip", "rankclip_in"]},
            "table4": {"backbone": [BACKBONE, "rankclip-tiny-rn"], "method": ["clip", "rankclip"]},
        },
        "figures": ["tables_overview", "table4_backbones"],
    },
    "fig3_lambda_sweep": {
        "tables": {"fig3_lambda_sweep": {"swept": ["lambda_cross", "lambda_in"], "lambda": [1.0, 3.0]}},
        "figures": ["fig3_lambda_sweep"],
    },
    "fig4_data_size": {
        "tables": {
            "fig4_data_size": {
                "method": ["clip", "rankclip"],
                "paper_data_size": ["500K", "1M", "3M", "15M"],
            },
            "fig4_robustness": {"method": ["clip", "rankclip"]},
            "fig4_robustness_points": {"backbone": [BACKBONE, "rankclip-tiny-rn"]},
        },
        "figures": ["fig4_data_size"],
    },
    "fig5_retrievals": {
        "tables": {"fig5_retrievals": {"method": ["clip", "rankclip"], "query": [0, 1, 2]}},
        "figures": ["fig5_retrievals"],
    },
    "fig6_representation": {
        "tables": {"fig6_modality_gap": {"method": ["clip", "rankclip", "rankclip_in"]}},
        "figures": ["fig6_umap", "fig6_modality_gap"],
    },
}


def parameters_cell(path: Path):
    notebook = jupytext.read(path)
    cells = [cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", [])]
    return notebook, cells


def test_every_notebook_is_listed_here_and_in_the_workflow():
    names = {path.stem for path in NOTEBOOKS}
    assert names == set(EXPECTED)
    report_rules = (REPO / "workflow" / "rules" / "report.smk").read_text()
    for name in names:
        assert f'"{name}"' in report_rules, f"workflow/rules/report.smk does not run notebooks/{name}.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_has_one_parameters_cell_with_the_demo_defaults(path: Path):
    notebook, cells = parameters_cell(path)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters' (want exactly one)"
    defaults = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: the parameters cell holds only assignments"
        defaults[node.targets[0].id] = ast.literal_eval(node.value)
    assert {"results_csv", "results_dir", "out_dir", "runs", "roles"} <= set(defaults)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert defaults["roles"] == config["report"], f"{path.name}: default roles differ from config/config.yaml"
    runs = config["runs"]  # as workflow/rules/report.smk passes them
    assert defaults["runs"] == {key: runs[key] for key in ("backbone", "data_size", "data_size_backbone")}
    assert defaults["out_dir"].endswith(f"/report/{path.stem}")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("results")
    write_synthetic_results(root / "eval")
    write_tables(root / "eval", root / "tables", BACKBONE, DATA_SIZE)
    return {"results_csv": root / "tables" / "results.csv", "results_dir": root / "eval"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_under_papermill_and_writes_its_outputs(name, results, tmp_path):
    source = tmp_path / f"{name}.ipynb"
    jupytext.write(jupytext.read(REPO / "notebooks" / f"{name}.py"), source)
    out_dir = tmp_path / "out"
    papermill.execute_notebook(
        str(source),
        str(tmp_path / f"{name}.executed.ipynb"),
        parameters={
            "results_csv": str(results["results_csv"]),
            "results_dir": str(results["results_dir"]),
            "out_dir": str(out_dir),
            "runs": RUNS,
            "roles": json.loads(json.dumps(ROLES)),  # as papermill -y passes it: integer keys as strings
        },
        kernel_name="python3",
        cwd=str(tmp_path),
        progress_bar=False,
    )
    expected = EXPECTED[name]
    index = json.loads((out_dir / "index.json").read_text())
    listed = {(item["kind"], item["name"]): item for item in index["items"]}
    assert set(listed) == {("table", t) for t in expected["tables"]} | {
        ("figure", f) for f in expected["figures"]
    }
    for table, wanted in expected["tables"].items():
        frame = pd.read_csv(out_dir / f"{table}.csv")
        assert len(frame), f"{table}.csv is empty"
        for column, values in wanted.items():
            assert set(values) <= set(frame[column]), (
                f"{table}.csv: {column} lacks {set(values) - set(frame[column])}"
            )
        markdown = (out_dir / f"{table}.md").read_text()
        assert listed[("table", table)]["title"] in markdown
        if "source" in frame.columns:
            assert {"ours"} <= set(frame["source"])
    for figure in expected["figures"]:
        data = (out_dir / f"{figure}.png").read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, f"{figure}.png is not a drawn PNG"
    for table in ("table1", "table2", "table3", "table4", "fig4_data_size", "fig4_robustness"):
        if table in expected["tables"]:  # tables with paper numbers show them, but on the demo's stand-ins
            frame = pd.read_csv(out_dir / f"{table}.csv")  # no difference, and the caption says why
            assert {"ours", "paper"} <= set(frame["source"]) and "ours - paper" not in set(frame["source"])
            assert "Stand-ins, not the paper's benchmark" in listed[("table", table)]["caption"]
