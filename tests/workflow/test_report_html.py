"""The HTML report: self-contained, every table and figure, provenance; rendered by headless Chromium.
And the workflow's report rules on a fabricated results tree: they run, and editing one notebook reruns
only that notebook and the report."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import yaml
from PIL import Image, ImageStat
from synthetic_results import (
    BACKBONE,
    DATA_SIZE,
    OTHER_BACKBONE,
    PAPER_NAMES,
    PAPER_ROLES,
    ROLES,
    write_synthetic_results,
)
from test_snakemake_report import build_snakemake_report

from rankclip import report
from rankclip.hashing import code_version
from rankclip.report_html import build_report

REPO = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    for name in BROWSERS:
        if path := shutil.which(name):
            return path
    pytest.fail(
        "no headless Chromium on PATH: install it with `apt-get install -y chromium` "
        "(scripts/setup.sh does when run as root)"
    )


def screenshot(page: Path, out: Path) -> Image.Image:
    """Render ``page`` in headless Chromium (1280 x 4000) to ``out`` and return the image."""
    result = subprocess.run(
        [
            browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--screenshot={out}", "--window-size=1280,4000", page.resolve().as_uri(),
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0 and out.is_file(), result.stderr[-3000:]
    image = Image.open(out)
    image.load()
    return image


def assert_not_blank(image: Image.Image) -> None:
    assert image.format == "PNG" and image.size == (1280, 4000)
    rgb = image.convert("RGB")
    assert len(rgb.getcolors(maxcolors=1 << 20) or []) > 50, "the screenshot has almost no colours"
    assert max(ImageStat.Stat(rgb).stddev) > 20, "the screenshot is blank"
    top = rgb.crop((0, 0, 1280, 600))
    assert ImageStat.Stat(top).mean[0] < 250, "nothing drawn at the top of the page"


def assert_report_shows(page: str, notebook_dirs: list[Path]) -> None:
    """Every table and figure listed by the notebooks is in the page; images are inline; no fetches."""
    for folder in notebook_dirs:
        index = json.loads((folder / "index.json").read_text())
        assert index["title"] in page
        for item in index["items"]:
            ident = f"{item['kind']}-{folder.name}-{item['name']}"
            if item["kind"] == "table":
                assert f'<table id="{ident}">' in page, f"table {ident} missing"
            else:
                assert re.search(
                    rf'<figure id="{re.escape(ident)}"><img src="data:image/png;base64,', page
                ), ident
    assert page.count("<img ") == sum(
        item["kind"] == "figure"
        for folder in notebook_dirs
        for item in json.loads((folder / "index.json").read_text())["items"]
    )
    assert not re.search(r'(src|href)="(https?:|file:|//)', page), "the report must not fetch anything"
    assert "<script" not in page


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results") / "eval"
    write_synthetic_results(root)
    return root


def notebook_outputs(results_dir: Path, out: Path, roles: dict = ROLES) -> list[Path]:
    """Two notebook output folders made with ReportOutputs, as the notebooks make them (quickly)."""
    frame = report.collect(results_dir)
    roles = report.Roles.from_config(roles)
    tables = report.ReportOutputs(out / "tables", "Tables 1-4", "main runs")
    tables.table(
        report.table1(frame, BACKBONE, DATA_SIZE, roles.zeroshot, roles.retrieval), "table1", "Table 1"
    )
    tables.table(
        report.table3(frame, BACKBONE, DATA_SIZE, roles.linear_probe), "table3", "Table 3", "captioned"
    )
    figure, ax = plt.subplots(figsize=(6, 3))
    ax.bar(["clip", "rankclip"], [1, 2], color=["tab:blue", "tab:orange"])
    tables.figure(figure, "overview", "Overview")
    gap = report.ReportOutputs(out / "fig6_representation", "Fig. 6")
    gap.table(
        report.modality_gap_table(frame, BACKBONE, DATA_SIZE, roles.retrieval), "gap", "Gap", decimals=4
    )
    figure, ax = plt.subplots(figsize=(4, 4))
    ax.scatter([0, 1, 2], [2, 1, 0], c=["red", "green", "blue"])
    gap.figure(figure, "umap", "UMAP")
    plt.close("all")
    return [out / "tables", out / "fig6_representation"]


def test_report_is_self_contained_and_renders_in_chromium(results_dir, tmp_path):
    folders = notebook_outputs(results_dir, tmp_path / "report")
    work = tmp_path / "work"
    data = work / "resources" / "demo"
    (data / "shapes").mkdir(parents=True)
    (data / "shapes" / "0.tar").write_bytes(b"shard")
    (data / "web").mkdir()
    (data / "web" / "0.tar").write_bytes(b"tracked by dvc")
    pointer = {
        "outs": [{"md5": "0123456789abcdef0123456789abcdef.dir", "size": 14, "nfiles": 1, "path": "web"}]
    }
    (data / "web.dvc").write_text(json.dumps(pointer))  # JSON is YAML
    config = {
        "name": "demo",
        "train": {"epochs": 5},
        "runs": {"backbone": BACKBONE, "data_size": DATA_SIZE},
        "report": ROLES,
    }
    out = build_report(
        folders,
        tmp_path / "report.html",
        results_dir,
        config,
        data_dir=data,
        workdir=work,
        hash_memo=tmp_path / "m.json",
    )
    page = out.read_text()
    assert_report_shows(page, folders)
    # the paper's rows are marked and its numbers there; no difference: the demo's sets are stand-ins
    assert 'class="src-paper"' in page and ">9.06<" in page  # CLIP's ImageNet top-1 in the paper
    assert 'class="src-diff"' not in page and "<td>ours - paper</td>" not in page
    # the protocol table comes first, each difference highlighted with its reason
    assert page.index('<table id="protocol">') < page.index('<section id="nb-tables">')
    protocol = page.split('<table id="protocol">')[1].split("</table>")[0]
    epochs = re.search(r'<tr class="differs" data-key="epochs">(.*?)</tr>', protocol)[1]
    assert "<td>64</td><td>5</td>" in epochs and "CPU demo scale" in epochs  # paper, ours, the reason
    assert '<tr class="same" data-key="global_batch">' in protocol
    # provenance: code version, config, data versions (DVC where tracked, content hashes elsewhere)
    assert code_version() in page and "0.1.0+tree.0123456789ab" in page
    assert '<pre id="config">' in page and "shapes_sketch: imagenet_r" in page
    assert "md5:0123456789abcdef0123456789abcdef.dir" in page and "resources/demo/web.dvc" in page
    folders_table = page.split('id="data-folders"')[1].split("</table>")[0]
    assert "shapes" in folders_table and "/web<" not in folders_table  # DVC-tracked: not hashed again
    evaluated = page.split('id="data-evaluated"')[1].split("</table>")[0]
    assert evaluated.count("<tr") == 1 + 6  # header + the six datasets of the demo
    runs_table = page.split('id="runs"')[1].split("</table>")[0]
    assert runs_table.count("<tr") == 1 + 12
    # skipped training samples
    assert "<th>skipped</th>" in runs_table and re.search(r"<td[^>]*>3</td>", runs_table)
    image = screenshot(out, tmp_path / "report.png")
    assert_not_blank(image)


def test_report_shows_differences_on_the_papers_own_benchmarks(tmp_path):
    """Results on imagenet1k, mscoco_karpathy, ...: the tables show ours - paper; the protocol table
    still lists what differs (here: the demo's training scale)."""
    root = tmp_path / "eval"
    write_synthetic_results(root, names=PAPER_NAMES)
    folders = notebook_outputs(root, tmp_path / "report", PAPER_ROLES)
    config = {
        "name": "paper-like",
        "runs": {"backbone": BACKBONE, "data_size": DATA_SIZE},
        "report": PAPER_ROLES,
    }
    page = build_report(folders, tmp_path / "report.html", root, config, workdir=tmp_path).read_text()
    assert 'class="src-diff"' in page and "<td>ours - paper</td>" in page
    table1 = page.split('<table id="table-tables-table1">')[1].split("</table>")[0]
    assert table1.count('<tr class="src-diff">') == 4  # the paper's four methods
    protocol = page.split('<table id="protocol">')[1].split("</table>")[0]
    assert '<tr class="same" data-key="zeroshot_benchmark">' in protocol
    assert '<tr class="differs" data-key="main_backbone">' in protocol


def test_report_names_a_missing_index():
    with pytest.raises(ValueError, match="index.json"):
        build_report([Path("/nonexistent/notebook")], Path("/tmp/unused.html"))


# ------------------------------------------------------------------------------------------ the rules
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def job_counts(output: str) -> dict[str, int]:
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory):
    """A copy of the workflow run on a fabricated demo tree: every file up to the evaluations exists (the
    results synthetic), then the real tables, notebook and report jobs run."""
    root = tmp_path_factory.mktemp("report-workflow")
    repo, work = root / "repo", root / "work"
    for name in ("workflow", "notebooks", "config", "envs"):
        shutil.copytree(REPO / name, repo / name)
    for name in ("config", "profiles"):
        shutil.copytree(REPO / name, work / name)
    # the runs that tests/synthetic_results.py fabricates: one seed, the ViT as main backbone
    config = yaml.safe_load((work / "config" / "config.yaml").read_text())
    config["runs"] |= dict(backbone=BACKBONE, main_seeds=None, backbones=[OTHER_BACKBONE])
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = [*SNAKEMAKE, "--snakefile", str(repo / "workflow" / "Snakefile"), "--directory", str(work)]

    def snakemake(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*command, *args], cwd=root, env=env, capture_output=True, text=True, timeout=1200
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
        return result

    summary = snakemake("--cores", "1", "--summary").stdout.splitlines()
    evaluations = set()
    for line in summary[summary.index(next(s for s in summary if s.startswith("output_file"))) + 1 :]:
        output, _, rule = line.split("\t")[:3]
        if rule.startswith("evaluate_"):
            evaluations.add(output)
        elif rule not in ("tables", "notebook", "report"):
            (work / output).parent.mkdir(parents=True, exist_ok=True)
            (work / output).touch()
    written = write_synthetic_results(work / "results" / "demo" / "eval")
    assert {str(path.relative_to(work)) for path in written} == evaluations
    evaluate = ["evaluate_every_run", "evaluate_main_runs", "evaluate_backbone_runs"]
    snakemake("--cores", "1", "--touch", "--until", *evaluate)  # upstream mtimes in DAG order
    plan = snakemake("-n", "--quiet", "rules")
    assert job_counts(plan.stdout) == {"tables": 1, "notebook": 6, "report": 1, "all": 1, "total": 9}
    started = time.monotonic()
    snakemake("--cores", "2")
    return {"work": work, "repo": repo, "snakemake": snakemake, "seconds": time.monotonic() - started}


@pytest.mark.slow
def test_workflow_report_shows_every_notebook_output(workflow_run, tmp_path):
    work = workflow_run["work"]
    out = work / "results" / "demo"
    page = (out / "report.html").read_text()
    folders = [out / "report" / name for name in report_notebooks(workflow_run["repo"])]
    assert_report_shows(page, folders)
    for name in report_notebooks(workflow_run["repo"]):
        executed = json.loads((out / "report" / "notebooks" / f"{name}.ipynb").read_text())
        assert executed["metadata"]["kernelspec"]["name"] == "python3"
        assert executed["metadata"]["papermill"]["parameters"]["out_dir"] == f"results/demo/report/{name}"
        html = (out / "report" / "notebooks" / f"{name}.html").read_text()
        assert "<img" in html and "report.ReportOutputs" not in html  # rendered without the code
    assert_not_blank(screenshot(out / "report.html", tmp_path / "workflow-report.png"))


def report_notebooks(repo: Path) -> list[str]:
    text = (repo / "workflow" / "rules" / "report.smk").read_text()
    return ast.literal_eval(re.search(r"^NOTEBOOKS = (\[.*?\])", text, flags=re.M | re.S)[1])


@pytest.mark.slow
def test_snakemake_report_has_every_notebook_output(workflow_run, tmp_path):
    """`snakemake --report` after the run: each notebook's figures and tables as its index.json lists them
    (titled as there), its rendered page, our report.html; the jobs that made them are recorded."""
    work, repo = workflow_run["work"], workflow_run["repo"]
    built = build_snakemake_report(work, repo / "workflow" / "Snakefile", tmp_path / "snakemake-report.zip")
    categories, results = built["categories"], built["results"]
    wanted = {"report.html", "results.csv"}
    for name in report_notebooks(repo):
        index = json.loads((work / "results" / "demo" / "report" / name / "index.json").read_text())
        files = [item.get("png") or item["csv"] for item in index["items"]]
        listed = categories["Figures and tables"][name]
        assert sorted(listed) == sorted(f"results/demo/report/{name}/{file}" for file in files)
        for item, file in zip(index["items"], files, strict=True):
            assert results[f"results/demo/report/{name}/{file}"]["labels"]["title"] == item["title"]
        assert f"results/demo/report/notebooks/{name}.html" in categories["Notebooks"]["Other"]
        wanted |= {*files, f"{name}.html"}
    assert "fig6_modality_gap.png" in wanted and "table1.csv" in wanted
    assert built["files"] == wanted
    assert categories["Report"] == {"Other": ["results/demo/report.html"]}
    for path in results:
        assert f"Missing metadata for file {path}" not in built["log"]


@pytest.mark.slow
def test_editing_a_notebook_reruns_only_it_and_the_report(workflow_run):
    snakemake, repo = workflow_run["snakemake"], workflow_run["repo"]
    assert "Nothing to be done" in snakemake("-n").stdout
    notebook = repo / "notebooks" / "fig3_lambda_sweep.py"
    # a touch alone changes nothing: Snakemake 9 compares the content (checksum) of a newer input
    later = time.time() + 5
    os.utime(notebook, (later, later))
    assert "Nothing to be done" in snakemake("-n").stdout
    # an edit reruns that notebook and the report, nothing upstream and no other notebook
    notebook.write_text(notebook.read_text() + "\n# %%\nprint('edited')\n")
    plan = snakemake("-n", "--quiet", "rules")
    assert job_counts(plan.stdout) == {"notebook": 1, "report": 1, "all": 1, "total": 3}
    listed = snakemake("-n").stdout
    assert "fig3_lambda_sweep.ipynb" in listed and "tables.ipynb" not in listed
