"""The notebooks (jupytext py:percent) run under papermill on tiny synthetic results and write their
tables and figures; their parameter defaults match the demo config."""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import jupytext
import pandas as pd
import papermill
import pytest
import yaml
from synthetic_results import BACKBONE, DATA_SIZE, ROLES, RUNS, run_id, write_synthetic_results

from rankclip.eval.results import read_result, write_result
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
            "uncertainty": {
                "method": ["clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"]
            },
            "table1_uncertainty": {
                "method": ["clip", "cyclip", "alip", "rankclip", "rankclip_cross", "rankclip_in"],
                "row": ["mean ± sd", "delta vs clip [95%]"],
            },
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
    "fig7_localisation": {
        "tables": {
            "fig7_runs": {"method": ["clip", "rankclip"], "status": ["ok"], "same_as_evaluated": [True]},
            "fig7_words": {"method": ["clip", "rankclip"], "map": ["patch_cosine"], "grid": ["4x4"]},
        },
        "figures": ["fig7_localisation"],
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


def notebook_defaults(path: Path) -> dict:
    """The parameters cell's values (it holds only literal assignments)."""
    defaults = {}
    for node in ast.parse(parameters_cell(path)[1][0].source).body:
        assert isinstance(node, ast.Assign), f"{path.name}: the parameters cell holds only assignments"
        defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_has_one_parameters_cell_with_the_demo_defaults(path: Path):
    notebook, cells = parameters_cell(path)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.metadata["jupytext"]["text_representation"]["format_name"] == "percent"
    assert len(cells) == 1, f"{path.name}: {len(cells)} cells tagged 'parameters' (want exactly one)"
    defaults = notebook_defaults(path)
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
    write_tables(root / "eval", root / "tables", BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    return {"results_csv": root / "tables" / "results.csv", "results_dir": root / "eval"}


@pytest.fixture(scope="module")
def localisation_inputs(results) -> dict[str, Path]:
    """Fig. 7 reads checkpoints and images: tiny random ViTs for the main CLIP and RankCLIP runs and a
    tiny retrieval set, where the synthetic results JSONs record them (relative to the results' root),
    the JSONs rewritten with the checkpoints' sha256."""
    import torch  # only here: the other notebooks' tests need no torch

    from rankclip.checkpoint import atomic_save
    from rankclip.demo_data.shapes import make_demo
    from rankclip.hashing import sha256_file
    from rankclip.models import create_model

    root = results["results_dir"].parent
    make_demo(root / "demo", seed=0, num_train=1, num_eval=6, image_size=32, shard_size=6)
    for path in sorted(results["results_dir"].rglob("*.json")):
        result = read_result(path)
        if result.run_id not in (run_id("clip"), run_id("rankclip")):
            continue
        checkpoint = root / result.checkpoint_path
        if not checkpoint.exists():
            torch.manual_seed({"clip": 0, "rankclip": 1}[result.method])
            model = create_model(BACKBONE)[0]
            atomic_save({"state_dict": model.state_dict(), "model_name": BACKBONE, "step": 1}, checkpoint)
        if result.dataset == ROLES["retrieval"] and not (root / result.dataset_path).exists():
            shutil.copytree(root / "demo" / "eval" / "retrieval", root / result.dataset_path)
        write_result(result.model_copy(update={"checkpoint_sha256": sha256_file(checkpoint)}), path)
    return results


def run_notebook(name: str, results: dict[str, Path], tmp_path: Path) -> Path:
    """Execute notebooks/<name>.py under papermill on ``results``; return its out_dir."""
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
    return out_dir


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_under_papermill_and_writes_its_outputs(name, results, tmp_path, request):
    if name == "fig7_localisation":
        results = request.getfixturevalue("localisation_inputs")
    out_dir = run_notebook(name, results, tmp_path)
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
    if name == "fig7_localisation":  # every drawn image: one row per kept word of its first caption
        from rankclip.localisation import caption_words  # torch: only here

        defaults = notebook_defaults(REPO / "notebooks" / f"{name}.py")
        words = pd.read_csv(out_dir / "fig7_words.csv", keep_default_na=False)
        assert words.groupby("method")["image"].nunique().to_dict() == {"clip": 3, "rankclip": 3}
        for (method, image), part in words.groupby(["method", "image"]):
            kept = [w for w in caption_words(part["caption"].iloc[0]) if w not in defaults["skip_words"]]
            assert list(part["word"]) == kept[: defaults["max_words"]], (method, image)
        clip, rankclip = (words[words["method"] == m].reset_index() for m in ("clip", "rankclip"))
        assert list(clip["word"]) == list(rankclip["word"])  # the same images and words for both
        assert not clip["image_word_cosine"].equals(rankclip["image_word_cosine"])  # two models


@pytest.mark.parametrize("touched", [False, True], ids=["missing", "empty-files"])
def test_fig7_without_checkpoints_says_so_in_its_figure(touched, results, tmp_path, monkeypatch):
    """The synthetic results' checkpoints do not exist (or are empty files, the retrieval set a bare
    folder, as tests/workflow/test_report_html.py's touched DAG has them): the figure and table say so,
    no failure. (Run in this process, not under papermill: the kernel's start would double its time.)"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    for path in write_synthetic_results(tmp_path / "eval") if touched else []:
        result = read_result(path)
        for name in (result.checkpoint_path, f"{result.dataset_path}/dataset_type.txt"):
            (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name).touch()
    write_synthetic_results(tmp_path / "eval")
    out_dir = tmp_path / "out"
    parameters = {"results_dir": str(tmp_path / "eval"), "out_dir": str(out_dir), "runs": RUNS}
    parameters |= {"results_csv": str(results["results_csv"]), "roles": json.loads(json.dumps(ROLES))}
    namespace: dict = {}
    for cell in jupytext.read(REPO / "notebooks" / "fig7_localisation.py").cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, "fig7_localisation.py", "exec"), namespace)
            if "parameters" in cell.metadata.get("tags", []):
                namespace |= parameters
    plt.close("all")
    runs = pd.read_csv(out_dir / "fig7_runs.csv")
    assert list(runs["method"]) == ["clip", "rankclip"]
    assert runs["status"].str.contains("cannot load" if touched else "not found").all()
    assert pd.read_csv(out_dir / "fig7_words.csv").empty
    assert (out_dir / "fig7_localisation.png").read_bytes().startswith(PNG)
