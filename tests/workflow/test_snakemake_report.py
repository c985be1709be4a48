"""Snakemake's own report (`snakemake --report`): the outputs marked with report() are in the zip, under
their categories, with their captions and labels. The marked outputs are written here (as the notebooks
write them, with rankclip.report.ReportOutputs); the real notebook runs are tested in test_report_html.py."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest

from rankclip.report import ReportOutputs

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def notebook_names(repo: Path) -> list[str]:
    """NOTEBOOKS of workflow/rules/report.smk, in report order."""
    text = (repo / "workflow" / "rules" / "report.smk").read_text()
    return ast.literal_eval(re.search(r"^NOTEBOOKS = (\[.*?\])", text, flags=re.M | re.S)[1])


def report_data(page: str, name: str) -> dict:
    """The JSON value (object or string) a Snakemake report page assigns to ``var <name>``."""
    start = re.search(rf'var {name} = (?=[{{"])', page).end()
    return json.JSONDecoder().raw_decode(page, start)[0]


def build_snakemake_report(work: Path, snakefile: Path, out: Path) -> dict:
    """Run ``snakemake --report out`` in ``work``; return the zip's members and its page's data."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [*SNAKEMAKE, "--cores", "1", "--snakefile", str(snakefile), "--report", str(out)],
        cwd=work, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0 and out.is_file(), (result.stdout + result.stderr)[-5000:]
    with zipfile.ZipFile(out) as archive:
        members = archive.namelist()
        page = archive.read(f"{out.stem}/report.html").decode()
    return {
        "files": {Path(m).name for m in members if "/data/raw/" in m},
        "categories": report_data(page, "categories"),
        "results": report_data(page, "results"),
        "description": report_data(page, "workflow_desc"),
        "log": result.stderr,
    }


def fabricate_report_outputs(results: Path, notebooks: list[str]) -> None:
    """What the notebook, tables and report rules write, with one table and one figure per notebook."""
    for name in notebooks:
        outputs = ReportOutputs(results / "report" / name, f"Notebook {name}")
        table = pd.DataFrame({"method": ["clip", "rankclip"], "top1": [1.0, 2.0]})
        outputs.table(table, f"{name}_table", f"{name}: a table")
        figure, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [1, 0])
        outputs.figure(figure, f"{name}_figure", f"{name}: a figure, $x_{{i}}$")  # braces: not wildcards
        plt.close(figure)
        pages = results / "report" / "notebooks"
        pages.mkdir(parents=True, exist_ok=True)
        (pages / f"{name}.html").write_text(f"<html><body><h1>{name}</h1></body></html>\n")
        (pages / f"{name}.ipynb").write_text("{}\n")
    (results / "report.html").write_text("<html><body>our report</body></html>\n")
    (results / "tables").mkdir()
    (results / "tables" / "results.csv").write_text("run_id,task,value\nclip,zeroshot,1.0\n")
    (results / "tables" / "table1.md").write_text("| method |\n")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("snakemake-report")
    repo, work = root / "repo", root / "work"
    for name in ("workflow", "notebooks", "config", "envs"):
        shutil.copytree(REPO / name, repo / name)
    for name in ("config", "profiles"):
        shutil.copytree(REPO / name, work / name)
    notebooks = notebook_names(repo)
    fabricate_report_outputs(work / "results" / "demo", notebooks)
    report = build_snakemake_report(work, repo / "workflow" / "Snakefile", root / "snakemake-report.zip")
    return report | {"notebooks": notebooks}


def test_every_notebook_figure_table_and_page_is_in_the_zip(built):
    notebooks = built["notebooks"]
    assert len(notebooks) == 6  # Tables 1-4, Figs. 3-7
    wanted = {"report.html", "results.csv"}
    for name in notebooks:
        wanted |= {f"{name}.html", f"{name}_table.csv", f"{name}_figure.png"}
    assert built["files"] == wanted  # no index.json, Markdown or .ipynb


def test_categories_and_subcategories(built):
    categories, notebooks = built["categories"], built["notebooks"]
    assert set(categories) == {"Report", "Notebooks", "Figures and tables", "Results"}
    assert categories["Report"] == {"Other": ["results/demo/report.html"]}
    assert sorted(categories["Notebooks"]["Other"]) == sorted(
        f"results/demo/report/notebooks/{name}.html" for name in notebooks
    )
    assert list(categories["Figures and tables"]) == notebooks  # one subcategory per notebook, in order
    for name in notebooks:
        assert sorted(categories["Figures and tables"][name]) == [
            f"results/demo/report/{name}/{name}_figure.png",
            f"results/demo/report/{name}/{name}_table.csv",
        ]


def test_captions_and_labels(built):
    results = built["results"]
    figure = results["results/demo/report/fig3_lambda_sweep/fig3_lambda_sweep_figure.png"]
    assert figure["labels"] == {
        "title": "fig3_lambda_sweep: a figure, $x_(i)$",
        "file": "fig3_lambda_sweep_figure.png",
    }
    assert "notebooks/fig3_lambda_sweep.py" in figure["caption"] and "A figure" in figure["caption"]
    assert figure["mime_type"] == "image/png"
    table = results["results/demo/report/tables/tables_table.csv"]
    assert table["labels"] == {"title": "tables: a table", "file": "tables_table.csv"}
    assert "A table" in table["caption"] and "tables_table.md" in table["caption"]
    page = results["results/demo/report/notebooks/fig6_representation.html"]
    assert page["labels"] == {"notebook": "fig6_representation", "title": "Notebook fig6_representation"}
    assert "executed by papermill" in page["caption"]
    assert "self-contained" in results["results/demo/report.html"]["caption"]
    assert "results/demo/eval/" in results["results/demo/tables/results.csv"]["caption"]
    assert "RankCLIP reproduction" in built["description"] and "demo" in built["description"]
