"""rankclip.report: the paper's tables from results JSONs, ours beside the paper's and the difference."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import yaml
from synthetic_results import (
    BACKBONE,
    DATA_SIZE,
    OTHER_BACKBONE,
    PAPER_NAMES,
    PAPER_ROLES,
    ROLES,
    demo_runs,
    run_id,
    write_synthetic_results,
)

from rankclip import report
from rankclip.eval.results import read_result

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("results") / "eval"
    write_synthetic_results(root)
    return root


@pytest.fixture(scope="module")
def frame(results_dir) -> pd.DataFrame:
    return report.collect(results_dir)


@pytest.fixture(scope="module")
def roles() -> report.Roles:
    return report.Roles.from_config(ROLES)


@pytest.fixture(scope="module")
def paper_dir(tmp_path_factory) -> Path:
    """The same synthetic results, on the paper's own benchmarks (imagenet1k, mscoco_karpathy, ...)."""
    root = tmp_path_factory.mktemp("paper-results") / "eval"
    write_synthetic_results(root, names=PAPER_NAMES)
    return root


@pytest.fixture(scope="module")
def paper_frame(paper_dir) -> pd.DataFrame:
    return report.collect(paper_dir)


@pytest.fixture(scope="module")
def paper_roles() -> report.Roles:
    return report.Roles.from_config(PAPER_ROLES)


def ours_value(results_dir: Path, method: str, name: str, metric: str, **run) -> float:
    """One metric of one result file, in percent (what the tables should show)."""
    return 100 * read_result(results_dir / run_id(method, **run) / f"{name}.json").metrics[metric]


def rows(table: pd.DataFrame, **keys) -> pd.DataFrame:
    mask = pd.Series(True, index=table.index)
    for key, value in keys.items():
        mask &= table[key] == value
    return table[mask]


def test_table1_puts_the_paper_and_the_difference_beside_ours(paper_dir, paper_frame):
    table = report.table1(paper_frame, BACKBONE, DATA_SIZE, "imagenet1k", "mscoco_karpathy")
    assert list(table.columns) == ["method", "source", *report.TABLE1_COLUMNS]
    clip = rows(table, method="clip").set_index("source")
    assert list(clip.index) == ["ours", "paper", "ours - paper"]
    assert clip.loc["ours", "top1"] == pytest.approx(
        ours_value(paper_dir, "clip", "zeroshot-imagenet1k", "top1"), abs=0.005
    )
    assert clip.loc["ours", "text_to_image_R@5"] == pytest.approx(
        ours_value(paper_dir, "clip", "retrieval-mscoco_karpathy", "text_to_image_R@5"), abs=0.005
    )
    assert list(clip.loc["paper", report.TABLE1_COLUMNS]) == list(report.PAPER_TABLE1["clip"])
    diff = clip.loc["ours", report.TABLE1_COLUMNS] - clip.loc["paper", report.TABLE1_COLUMNS]
    assert list(clip.loc["ours - paper", report.TABLE1_COLUMNS]) == pytest.approx(list(diff), abs=0.011)
    # the ablations are ours only (the paper has no row for them); methods in the paper's order
    assert list(rows(table, method="rankclip_in")["source"]) == ["ours"]
    assert list(dict.fromkeys(table["method"])) == report.METHOD_ORDER
    markdown = report.to_markdown(table)
    for label in ("clip (ours)", "clip (paper)", "clip (ours - paper)", "rankclip_in (ours)"):
        assert label in markdown
    assert "rankclip_in (paper)" not in markdown


def test_table1_has_no_difference_for_stand_ins(frame, tmp_path):
    """The demo's shapes are not ImageNet: the paper's number stays beside ours, with no difference."""
    table = report.table1(frame, BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    clip = rows(table, method="clip").set_index("source")
    assert list(clip.index) == ["ours", "paper"]
    assert list(clip.loc["paper", report.TABLE1_COLUMNS]) == list(report.PAPER_TABLE1["clip"])
    assert "ours - paper" not in set(table["source"]) and "(ours - paper)" not in report.to_markdown(table)
    # one role the paper's own benchmark, the other a stand-in: a difference for its columns only
    write_synthetic_results(tmp_path / "eval", demo_runs(methods=["clip"]), names={"shapes": "imagenet1k"})
    mixed = report.table1(
        report.collect(tmp_path / "eval"), BACKBONE, DATA_SIZE, "imagenet1k", "shapes_captions"
    )
    clip = rows(mixed, method="clip").set_index("source")
    assert clip.loc["ours", report.TABLE1_COLUMNS].notna().all()
    assert clip.loc["ours - paper", ["top1", "top3", "top5"]].notna().all()
    assert clip.loc["ours - paper", report.TABLE1_COLUMNS[3:]].isna().all()


def test_same_benchmark_is_the_papers_evaluation_set_by_name():
    from rankclip.evalsets.registry import REGISTRY

    assert set(report.BENCHMARK_SETS.values()) == set(REGISTRY)
    assert set(report.BENCHMARK_SETS) == {"imagenet1k", "mscoco"} | set(report.PAPER_TABLE2_BENCHMARKS) | set(
        report.PAPER_TABLE3_DATASETS
    )
    assert report.same_benchmark("imagenet1k", "imagenet1k") and report.same_benchmark("renderedsst2", "sst2")
    assert not report.same_benchmark("shapes", "imagenet1k") and not report.same_benchmark("dtd", None)
    assert not report.same_benchmark("imagenet1k", "imagenet_r")
    # the paper config's roles are all the paper's benchmarks; the demo's none
    paper = report.Roles.from_config(yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["report"])
    assert report.same_benchmark(paper.zeroshot, "imagenet1k") and report.same_benchmark(
        paper.retrieval, "mscoco"
    )
    assert all(
        report.same_benchmark(ours, theirs) for ours, theirs in {**paper.shift, **paper.linear_probe}.items()
    )
    assert set(paper.linear_probe) == report.paper_probe_sets()
    demo = report.Roles.from_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["report"])
    pairs = {demo.zeroshot: "imagenet1k", demo.retrieval: "mscoco", **demo.shift, **demo.linear_probe}
    assert not any(report.same_benchmark(ours, theirs) for ours, theirs in pairs.items())
    assert "`shapes` for ImageNet1K" in report.stand_in_note(pairs)
    assert report.stand_in_note({paper.zeroshot: "imagenet1k", **paper.shift}) == ""


def test_methods_we_did_not_run_keep_the_papers_row(tmp_path):
    runs = [run for run in demo_runs(methods=["clip", "rankclip"])]
    write_synthetic_results(tmp_path / "eval", runs)
    table = report.table1(report.collect(tmp_path / "eval"), BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    assert list(rows(table, method="alip")["source"]) == ["paper"]
    assert list(rows(table, method="cyclip")["source"]) == ["paper"]
    assert list(rows(table, method="clip")["source"]) == ["ours", "paper"]  # shapes: a stand-in
    # a table with no results at all is the paper's rows alone
    empty = report.table1(report.collect(tmp_path / "eval"), "no-such-backbone", DATA_SIZE, "shapes", "x")
    assert set(empty["source"]) == {"paper"} and len(empty) == len(report.PAPER_TABLE1)


def test_table2_maps_our_shifted_set_onto_the_papers_benchmark(results_dir, frame, roles, paper_frame):
    table = report.table2(frame, BACKBONE, DATA_SIZE, roles.shift)
    assert list(table.columns) == [
        "method",
        "source",
        "shapes_sketch top1",
        "shapes_sketch top3",
        "shapes_sketch top5",
    ]
    rankclip = rows(table, method="rankclip").set_index("source")
    assert tuple(rankclip.loc["paper"].iloc[1:]) == report.PAPER_TABLE2["rankclip"]["imagenet_r"]
    assert rankclip.loc["ours", "shapes_sketch top1"] == pytest.approx(
        ours_value(results_dir, "rankclip", "zeroshot-shapes_sketch", "top1"), abs=0.005
    )
    assert "ours - paper" not in set(table["source"])  # shapes_sketch stands in for ImageNet-R
    same = report.table2(paper_frame, BACKBONE, DATA_SIZE, {"imagenet_r": "imagenet_r"})
    rankclip = rows(same, method="rankclip").set_index("source")
    assert rankclip.loc["ours - paper", "imagenet_r top1"] == pytest.approx(
        rankclip.loc["ours", "imagenet_r top1"] - rankclip.loc["paper", "imagenet_r top1"], abs=0.011
    )


def test_table3_averages_our_linear_probes_beside_the_papers_average(
    results_dir, frame, roles, paper_frame, paper_roles
):
    table = report.table3(frame, BACKBONE, DATA_SIZE, roles.linear_probe)
    assert list(table.columns) == ["method", "source", "shapes_texture", "fashion_mnist", "avg"]
    cyclip = rows(table, method="cyclip").set_index("source")
    texture = ours_value(results_dir, "cyclip", "linear_probe-shapes_texture", "top1")
    fashion = ours_value(results_dir, "cyclip", "linear_probe-fashion_mnist", "top1")
    assert cyclip.loc["ours", "avg"] == pytest.approx((texture + fashion) / 2, abs=0.005)
    # shapes_texture stands for DTD; fashion_mnist has no counterpart; avg beside the paper's ten-set mean
    assert cyclip.loc["paper", "shapes_texture"] == report.PAPER_TABLE3["cyclip"][2]
    assert pd.isna(cyclip.loc["paper", "fashion_mnist"]) and "ours - paper" not in cyclip.index
    assert cyclip.loc["paper", "avg"] == report.PAPER_TABLE3["cyclip"][-1]
    # on DTD itself: a difference for DTD, none for the average (ours is not over the paper's ten)
    same = report.table3(paper_frame, BACKBONE, DATA_SIZE, paper_roles.linear_probe)
    diff = rows(same, method="cyclip", source="ours - paper").iloc[0]
    assert not pd.isna(diff["dtd"]) and pd.isna(diff["fashion_mnist"]) and pd.isna(diff["avg"])
    assert "| cyclip (paper)" in report.to_markdown(table) and "|               - |" in report.to_markdown(
        table
    )


def test_table4_compares_the_methods_run_on_every_backbone(
    results_dir, frame, roles, paper_frame, paper_roles
):
    table = report.table4(
        frame, DATA_SIZE, "shapes", "shapes_captions", list(roles.linear_probe), roles.backbones
    )
    assert list(table.columns) == ["backbone", "method", "source", *report.TABLE4_COLUMNS]
    assert set(table["method"]) == {"clip", "rankclip"}  # the backbone ablation's methods only
    assert list(dict.fromkeys(table["backbone"])) == [BACKBONE, OTHER_BACKBONE]
    rn = rows(table, backbone=OTHER_BACKBONE, method="rankclip").set_index("source")
    assert tuple(rn.loc["paper", report.TABLE4_COLUMNS]) == report.PAPER_TABLE4[("RN50", "rankclip")]
    assert rn.loc["ours", "top1"] == pytest.approx(
        ours_value(results_dir, "rankclip", "zeroshot-shapes", "top1", backbone=OTHER_BACKBONE), abs=0.005
    )
    probes = [
        ours_value(results_dir, "rankclip", f"linear_probe-{name}", "top1", backbone=OTHER_BACKBONE)
        for name in roles.linear_probe
    ]
    assert rn.loc["ours", "linear_probe_avg"] == pytest.approx(sum(probes) / len(probes), abs=0.005)
    vit = rows(table, backbone=BACKBONE, method="clip").set_index("source")
    assert vit.loc["paper", "top1"] == report.PAPER_TABLE4[("ViT-B/32", "clip")][0]
    assert not pd.isna(vit.loc["ours", "linear_probe_avg"])
    assert "ours - paper" not in set(table["source"])
    args = (paper_frame, DATA_SIZE, "imagenet1k", "mscoco_karpathy", list(paper_roles.linear_probe))
    # the paper's benchmarks, but its Table 4 probably trained on 15M pairs: no difference by default
    assert "ours - paper" not in set(report.table4(*args, roles.backbones)["source"])
    same = report.table4(*args, roles.backbones, same_training_data=True)
    diff = rows(same, backbone=OTHER_BACKBONE, method="rankclip", source="ours - paper").iloc[0]
    assert diff[report.TABLE1_COLUMNS].notna().all() and pd.isna(diff["linear_probe_avg"])


def test_lambda_sweep_has_both_axes_and_the_papers_lambda_one_point(results_dir, frame, paper_frame):
    table = report.lambda_sweep(frame, BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    ours = table[table["source"] == "ours"]
    assert sorted(zip(ours["swept"], ours["lambda"], strict=True)) == [
        ("lambda_cross", 1.0), ("lambda_cross", 3.0),
        ("lambda_in", 1.0), ("lambda_in", 3.0),
    ]  # fmt: skip
    point = rows(table, swept="lambda_in", **{"lambda": 3.0}, source="ours")
    assert point["top1"].item() == pytest.approx(
        ours_value(results_dir, "rankclip", "zeroshot-shapes", "top1", lambda_in=3.0), abs=0.005
    )
    paper = table[table["source"] == "paper"]
    assert set(paper["lambda"]) == {1.0}
    assert paper["top1"].tolist() == [10.16, 10.16]
    assert paper["mean_R@1"].tolist() == pytest.approx([(7.18 + 3.74) / 2] * 2, abs=0.005)
    assert "ours - paper" not in set(table["source"])
    same = report.lambda_sweep(paper_frame, BACKBONE, DATA_SIZE, "imagenet1k", "mscoco_karpathy")
    diff = rows(same, swept="lambda_in", **{"lambda": 1.0}, source="ours - paper")
    assert diff[["top1", "mean_R@1"]].notna().all(axis=None)


def test_sweep_and_curve_rows_count_the_seeds_they_pool(frame, roles):
    """Fig. 3 and 4's tables say how many seeds each of our points pools (an integer; the paper's: -)."""
    main = frame[(frame["method"] == "rankclip") & (frame["lambda_cross"] == 1) & (frame["lambda_in"] == 1)]
    frame = pd.concat([frame, main.assign(seed=1, run_id=main["run_id"] + "-seed1")])
    table = report.lambda_sweep(frame, BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    seeds = table[table["source"] == "ours"].set_index(["swept", "lambda"])["seeds"]
    assert seeds.to_dict() == {
        ("lambda_cross", 1.0): 2, ("lambda_cross", 3.0): 1, ("lambda_in", 1.0): 2, ("lambda_in", 3.0): 1
    }  # fmt: skip
    assert table.loc[table["source"] == "paper", "seeds"].isna().all()
    markdown = report.to_markdown(table)
    assert markdown.splitlines()[0].split("|")[-2].strip() == "seeds"
    column = [line.split("|")[-2].strip() for line in markdown.splitlines()[2:]]
    assert column == ["2", "-", "1", "2", "-", "1"]  # ours (lambda 1), paper, ours (lambda 3); both axes
    curve = report.data_size_curve(frame, OTHER_BACKBONE, "shapes", roles.data_sizes)
    assert rows(curve, method="rankclip", data_size=DATA_SIZE, source="ours")["seeds"].item() == 2
    assert rows(curve, method="clip", data_size=DATA_SIZE, source="ours")["seeds"].item() == 1


def test_data_size_curve_pairs_our_sizes_with_the_papers(frame, roles, paper_frame):
    table = report.data_size_curve(frame, OTHER_BACKBONE, "shapes", roles.data_sizes)
    assert set(table["method"]) == {"clip", "rankclip"}
    small = rows(table, method="rankclip", data_size=2048).set_index("source")
    assert small.loc["paper", "top1"] == report.PAPER_FIG4["rankclip"][1_000_000]
    assert small["paper_data_size"].iloc[0] == "1M"
    # the paper's sizes without a counterpart are kept as paper-only rows, ours marked "not run"
    unmatched = rows(table, method="clip", paper_data_size="15M")
    assert list(unmatched["source"]) == ["paper"] and unmatched["data_size"].item() == "not run"
    assert "ours - paper" not in set(table["source"])
    same = report.data_size_curve(paper_frame, OTHER_BACKBONE, "imagenet1k", roles.data_sizes)
    assert list(rows(same, method="rankclip", data_size=2048)["source"]) == ["ours", "paper", "ours - paper"]


def test_robustness_points_and_table(frame, paper_frame):
    points = report.robustness_points(frame, "shapes", "shapes_sketch")
    assert len(points) == len(demo_runs())  # every run is evaluated on both sets
    table = report.robustness_table(frame, BACKBONE, DATA_SIZE, "shapes", "shapes_sketch", "imagenet_r")
    clip = rows(table, method="clip").set_index("source")
    assert clip.loc["paper", "zeroshot_top1"] == report.PAPER_TABLE1["clip"][0]
    assert clip.loc["paper", "shift_top1"] == report.PAPER_TABLE2["clip"]["imagenet_r"][0]
    ours = clip.loc["ours"]
    assert ours["shift_minus_zeroshot"] == pytest.approx(
        ours["shift_top1"] - ours["zeroshot_top1"], abs=0.011
    )
    assert "ours - paper" not in set(table["source"])
    same = report.robustness_table(paper_frame, BACKBONE, DATA_SIZE, "imagenet1k", "imagenet_r", "imagenet_r")
    assert list(rows(same, method="clip")["source"]) == ["ours", "paper", "ours - paper"]


def test_modality_gap_and_artifacts(results_dir, frame):
    gap = report.modality_gap_table(frame, BACKBONE, DATA_SIZE, "shapes_captions")
    assert set(gap["source"]) == {"ours"} and len(gap) == 6  # the paper prints no gap
    clip = read_result(results_dir / run_id("clip") / "gap-shapes_captions.json")
    assert rows(gap, method="clip")["modality_gap"].item() == pytest.approx(
        clip.metrics["modality_gap"], abs=1e-4
    )
    umap = report.artifact_frame(results_dir, "umap", dataset="shapes_captions", methods=["clip", "rankclip"])
    assert set(umap["method"]) == {"clip", "rankclip"} and {"x", "y", "modality"} <= set(umap.columns)
    assert umap["key"].str.fullmatch(r"\d{8}").all()  # sample keys stay strings
    examples = report.artifact_frame(results_dir, "retrievals", dataset="shapes_captions")
    summary = report.retrieval_summary(examples)
    assert len(summary) == 6 * 3 and summary["target_rank"].between(1, 10).all()
    assert report.retrieval_summary(examples.iloc[0:0]).empty


def test_roles_from_config_names_the_bad_field():
    roles = report.Roles.from_config({**ROLES, "data_sizes": {"1024": 500000}})
    assert roles.data_sizes == {1024: 500000} and roles.robustness == "shapes_sketch"
    with pytest.raises(ValueError, match=r"report.shift.shapes_sketch: 'imagenet_a'"):
        report.Roles.from_config({**ROLES, "shift": {"shapes_sketch": "imagenet_a"}})
    with pytest.raises(ValueError, match="report.zeroshot"):
        report.Roles.from_config({"retrieval": "x"})
    with pytest.raises(ValueError, match="unknown keys"):
        report.Roles.from_config({**ROLES, "tables": 1})
    with pytest.raises(ValueError, match="report.robustness"):
        report.Roles.from_config({**ROLES, "robustness": "shapes"})
    assert report.Roles.from_config({**ROLES, "reasons": {"epochs": "short"}}).reasons == {"epochs": "short"}
    with pytest.raises(ValueError, match="report.reasons"):
        report.Roles.from_config({**ROLES, "reasons": {"epochs": 5}})


def test_report_outputs_list_tables_and_figures_in_order(tmp_path, frame):
    outputs = report.ReportOutputs(tmp_path / "out", "Title", "Description")
    table = report.table1(frame, BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    outputs.table(table, "table1", "Table 1", "caption")
    figure, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    outputs.figure(figure, "fig", "A figure")
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["title"] == "Title" and [item["name"] for item in index["items"]] == ["table1", "fig"]
    assert pd.read_csv(tmp_path / "out" / "table1.csv").shape == table.shape
    assert "clip (paper)" in (tmp_path / "out" / "table1.md").read_text()
    assert (tmp_path / "out" / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a second run of the notebook starts a fresh index
    report.ReportOutputs(tmp_path / "out", "Title")
    assert json.loads((tmp_path / "out" / "index.json").read_text())["items"] == []


def test_write_tables_keeps_the_tables_rule_outputs(results_dir, tmp_path):
    written = report.write_tables(results_dir, tmp_path, BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    assert [path.name for path in written] == ["results.csv", "table1.md"]
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(list(results_dir.rglob("*.json")))
    assert "rankclip (paper)" in (tmp_path / "table1.md").read_text()


def test_write_tables_takes_a_partial_target_s_results(tmp_path):
    """`snakemake fig5` has only the gap results of two runs: the tables are written, Table 1's empty."""
    written = write_synthetic_results(tmp_path / "eval", demo_runs(["clip", "rankclip"]))
    for path in written:
        if not path.name.startswith("gap-"):
            path.unlink()
    report.write_tables(tmp_path / "eval", tmp_path / "out", BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    assert set(pd.read_csv(tmp_path / "out" / "results.csv")["task"]) == {"gap"}
    table1 = (tmp_path / "out" / "table1.md").read_text()
    assert "clip (paper)" in table1 and "clip (ours)" not in table1


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml"])
def test_each_configs_report_section_names_its_evaluated_datasets(name):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    roles = report.Roles.from_config(config["report"])
    evaluated = {pair.split(":")[1] for pair in config["eval"]["every_run"] + config["eval"]["main_runs"]}
    named = {roles.zeroshot, roles.retrieval, *roles.shift, *roles.linear_probe}
    assert named <= evaluated, f"config/{name}: report names datasets no run is evaluated on"
    # every trained backbone has a role (paper.yaml maps the proposed RN101 to null before it is trained)
    assert {config["runs"]["backbone"], *config["runs"]["backbones"]} <= set(roles.backbones)
    sizes = {config["runs"]["data_size"], *config["runs"]["data_sizes"]}
    assert set(roles.data_sizes) == sizes


def test_schema_lists_the_papers_keys():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["properties"]["report"]
    values = {key: set(schema["properties"][key]["additionalProperties"]["enum"]) - {None} for key in
              ("shift", "linear_probe", "backbones", "data_sizes")}  # fmt: skip
    assert values["shift"] == set(report.PAPER_TABLE2_BENCHMARKS)
    assert values["linear_probe"] == set(report.PAPER_TABLE3_DATASETS)
    assert values["backbones"] == set(report.PAPER_TABLE4_BACKBONES)
    assert values["data_sizes"] == set(report.PAPER_FIG4["clip"])


def test_numbers_made_by_older_evaluation_code_are_marked(tmp_path, frame, roles):
    assert report.table1(frame, BACKBONE, DATA_SIZE, "shapes", "shapes_captions").attrs.get("stale") is None
    # clip's main run re-evaluated long ago: its zero-shot result carries another code hash
    root = tmp_path / "eval"
    write_synthetic_results(root)
    path = root / run_id("clip") / "zeroshot-shapes.json"
    data = json.loads(path.read_text())
    path.write_text(json.dumps(data | {"code_hash": "0" * 16}))
    old = report.collect(root)
    assert list(old.loc[report.is_stale(old), "run_id"]) == [run_id("clip")]

    table = report.table1(old, BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    marked = {
        (table.iloc[row]["method"], table.iloc[row]["source"], column) for row, column in table.attrs["stale"]
    }
    assert marked == {
        ("clip", "ours", metric) for metric in ("top1", "top3", "top5")
    }  # not the retrieval columns, not the paper's row, no other method (no difference: shapes is a stand-in)
    markdown = report.to_markdown(table)
    assert report.STALE_NOTE in markdown and markdown.count(report.STALE_MARK) == 3 + 1
    # a table made from other results has no mark
    assert not report.table3(old, BACKBONE, DATA_SIZE, roles.linear_probe).attrs.get("stale")

    outputs = report.ReportOutputs(tmp_path / "out", "Title")
    outputs.table(table, "table1", "Table 1", "caption")
    item = json.loads((tmp_path / "out" / "index.json").read_text())["items"][0]
    assert item["stale"] == table.attrs["stale"] and report.STALE_NOTE in item["caption"]
    # a results file written before code hashes were recorded counts as stale too
    data.pop("code_hash")
    path.write_text(json.dumps(data))
    assert report.is_stale(report.collect(root)).sum() == 1


def test_list_scale_runs_are_their_own_ablation_not_main_runs(tmp_path):
    main = demo_runs(["clip", "rankclip"])
    scaled = [main[1] | dict(list_scale=scale) for scale in (1 / 16, 1 / 64)]
    write_synthetic_results(tmp_path, main + scaled)
    frame = report.collect(tmp_path)
    assert len(frame) == len(list(tmp_path.rglob("*.json")))
    table = report.table1(frame, BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    ours = table[table["source"] == "ours"]
    assert ours["method"].tolist() == [
        "clip",
        "rankclip",
    ]  # one row each: the list-scale runs are not mixed in
    rankclip = report.select(frame, report.ZEROSHOT, "shapes", BACKBONE, DATA_SIZE)
    assert len(rankclip[rankclip["method"] == "rankclip"]) == 1
    sweep = report.list_scale_sweep(frame, BACKBONE, DATA_SIZE, "shapes", "shapes_captions")
    assert sweep["list_scale"].tolist() == [1 / 64, 1 / 32, 1 / 16] and set(sweep["source"]) == {"ours"}


def test_uncertainty_table_pairs_each_method_with_clip_on_the_same_items_and_seeds(tmp_path):
    """Per-item hits written into synthetic results: a method equal to CLIP differs by 0 with a zero-width
    interval; one with 40 more hits of 400 on each of two seeds by +10 points, its interval excluding 0."""
    from synthetic_results import demo_runs

    from rankclip.eval.results import read_result, write_result
    from rankclip.eval.uncertainty import pack_hits

    runs = [run | dict(seed=seed) for seed in (0, 1) for run in demo_runs(["clip", "cyclip", "rankclip"])]
    paths = write_synthetic_results(tmp_path, runs=runs)
    rng = np.random.default_rng(0)
    clip = {seed: rng.random(400) < 0.3 for seed in (0, 1)}
    better = {}
    for seed, hits in clip.items():
        better[seed] = hits.copy()
        better[seed][np.flatnonzero(~hits)[:40]] = True
    chosen = {"clip": clip, "cyclip": clip, "rankclip": better}
    for path in paths:
        result = read_result(path)
        main = result.backbone == BACKBONE and result.data_size == DATA_SIZE
        if main and result.dataset == "shapes" and result.train_config.get("lambda_in", 1.0) == 1.0:
            hits = chosen[result.method][result.seed]
            write_result(result.model_copy(update={"item_hits": {"top1": pack_hits(hits)}}), path)
    table = report.uncertainty_table(tmp_path, BACKBONE, DATA_SIZE, [("zeroshot", "shapes", "top1")])
    rows = table.set_index("method")
    assert list(rows.index) == ["clip", "cyclip", "rankclip"] and set(rows["seeds"]) == {2}
    per_seed = [100 * clip[seed].mean() for seed in (0, 1)]
    assert rows.loc["clip", "mean"] == pytest.approx(np.mean(per_seed))
    assert rows.loc["clip", "std"] == pytest.approx(np.std(per_seed, ddof=1))
    assert rows.loc["clip", "delta vs clip"] == "-" and rows.loc["clip", "excludes 0"] is None
    assert (
        rows.loc["cyclip", "delta vs clip"] == "+0.00 [+0.00, +0.00]" and not rows.loc["cyclip", "excludes 0"]
    )
    assert rows.loc["rankclip", "delta vs clip"].startswith("+10.00 [") and rows.loc["rankclip", "excludes 0"]
    low, high = (float(x) for x in rows.loc["rankclip", "95% interval"].strip("[]").split(", "))
    assert low < rows.loc["rankclip", "mean"] < high


def test_collapsed_methods_are_those_whose_both_modalities_point_one_way():
    gap = report.compare(
        pd.DataFrame(
            {"image_centroid_norm": [0.995, 0.999, 0.62], "text_centroid_norm": [0.999, 0.55, 0.71]},
            index=pd.Index(["cyclip", "clip", "rankclip"], name="method"),
        ),
        pd.DataFrame(
            {"image_centroid_norm": [1.0], "text_centroid_norm": [1.0]},  # paper rows never count
            index=pd.Index(["alip"], name="method"),
        ),
        decimals=4,
    )
    assert report.collapsed_methods(gap) == ["cyclip"]  # clip: its texts are spread, not collapsed
    assert report.collapsed_methods(gap, threshold=0.5) == ["cyclip", "clip", "rankclip"]
    assert report.collapsed_methods(gap, threshold=1.0) == []


def _with_hits(paths, choose) -> None:
    """Give each synthetic result the hits ``choose(result)`` returns (metric -> hits; None: keep its own)."""
    from rankclip.eval.results import write_result
    from rankclip.eval.uncertainty import pack_hits

    for path in paths:
        result = read_result(path)
        hits = choose(result)
        if hits is not None:
            packed = {metric: pack_hits(values) for metric, values in hits.items()}
            write_result(result.model_copy(update={"item_hits": packed}), path)


def test_interval_percent_pools_seeds_per_item_and_averages_the_two_directions(tmp_path):
    from synthetic_results import demo_runs

    from rankclip.eval.uncertainty import mean_interval

    runs = [run | dict(seed=seed) for seed in (0, 1) for run in demo_runs(["clip", "rankclip"])]
    paths = write_synthetic_results(tmp_path, runs=runs)
    rng = np.random.default_rng(3)
    drawn = {(m, s): rng.random(300) < 0.4 for m in ("clip", "rankclip") for s in (0, 1)}

    def choose(result):
        if result.task == "zeroshot" and result.dataset == "shapes":
            return {"top1": drawn[(result.method, result.seed)]} if result.method == "clip" else {}
        if result.task == "retrieval":  # both directions the same hits: mean R@1's interval is theirs
            same = drawn[(result.method, result.seed)]
            return {"image_to_text_R@1": same, "text_to_image_R@1": same}
        return None

    _with_hits(paths, choose)
    hits = report.load_item_hits(tmp_path)
    frame = report.collect(tmp_path)
    zeroshot = report.select(frame, "zeroshot", "shapes", BACKBONE, DATA_SIZE)
    table = report.interval_percent(zeroshot, ["method"], "top1", hits)
    expected = mean_interval(np.stack([drawn[("clip", 0)], drawn[("clip", 1)]]))
    assert tuple(table.loc["clip"]) == pytest.approx(tuple(100 * v for v in expected))
    assert table.loc["rankclip"].isna().all()  # no per-item hits: no interval
    retrieval = report.select(frame, "retrieval", "shapes_captions", BACKBONE, DATA_SIZE)
    mean_r1 = report.interval_percent(retrieval, ["method"], "mean_R@1", hits)
    one_way = report.interval_percent(retrieval, ["method"], "image_to_text_R@1", hits)
    assert mean_r1.to_numpy() == pytest.approx(one_way.to_numpy())
    assert list(mean_r1.columns) == ["mean_R@1 low", "mean_R@1 high"]


def test_sweep_and_curve_carry_intervals_around_their_values(results_dir, frame, roles):
    """With every hit made 1 for one seed-pooled point, its interval is [100, 100]; the others bracket
    their value."""
    paths = sorted(results_dir.rglob("*.json"))
    copy = results_dir.parent / "with_hits"
    import shutil

    shutil.copytree(results_dir, copy)
    rng = np.random.default_rng(1)

    def choose(result):
        if result.task == "zeroshot":
            return {"top1": rng.random(200) < result.metrics["top1"]}
        if result.task == "retrieval":
            return {f"{d}_R@1": rng.random(200) < 0.3 for d in ("image_to_text", "text_to_image")}
        return None

    _with_hits(sorted(copy.rglob("*.json")), choose)
    assert paths  # the shared results stay as they were
    hits = report.load_item_hits(copy)
    sweep = report.lambda_sweep(frame, BACKBONE, DATA_SIZE, "shapes", "shapes_captions", hits=hits)
    ours = sweep[sweep["source"] == "ours"]
    for metric in ("top1", "mean_R@1"):
        assert (ours[f"{metric} low"] <= ours[f"{metric} high"]).all()
        assert ours[f"{metric} low"].notna().all()
    curve = report.data_size_curve(frame, OTHER_BACKBONE, "shapes", roles.data_sizes, hits=hits)
    ours = curve[curve["source"] == "ours"]
    assert ours["top1 low"].notna().all() and (ours["top1 low"] <= ours["top1 high"]).all()
    paper = curve[curve["source"] == "paper"]
    assert paper["top1 low"].isna().all()


def test_table1_uncertainty_has_a_spread_row_and_a_delta_row_per_method():
    long = pd.DataFrame(
        [
            {"benchmark": "shapes top1", "method": "clip", "seeds": 3, "mean": 20.0, "std": 1.25,
             "delta vs clip": "-"},
            {"benchmark": "shapes top1", "method": "rankclip", "seeds": 3, "mean": 22.5, "std": 0.5,
             "delta vs clip": "+2.50 [+0.40, +4.60] *"},
            {"benchmark": "captions image_to_text_R@1", "method": "clip", "seeds": 3, "mean": 9.0, "std": 2.0,
             "delta vs clip": "-"},
            {"benchmark": "captions image_to_text_R@1", "method": "rankclip", "seeds": 3, "mean": 8.0,
             "std": 1.0, "delta vs clip": "-1.00 [-3.00, +1.00]"},
        ]
    )  # fmt: skip
    table = report.table1_uncertainty(long)
    assert table[["method", "row"]].values.tolist() == [
        ["clip", "mean ± sd"],
        ["rankclip", "mean ± sd"],
        ["rankclip", "delta vs clip [95%]"],
    ]
    assert table.loc[1, "shapes top1"] == "22.50 ± 0.50"
    assert table.loc[2, "shapes top1"] == "+2.50 [+0.40, +4.60] *"
    assert table.loc[2, "captions image_to_text_R@1"] == "-1.00 [-3.00, +1.00]"
    assert set(table["seeds"]) == {3}


def test_plot_intervals_draws_one_line_per_group_with_its_interval():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.DataFrame(
        {
            "by": ["a", "a", "b"],
            "x": [2.0, 1.0, 1.0],
            "y": [5.0, 3.0, 4.0],
            "y low": [4.0, 2.5, 1.0],
            "y high": [7.0, 3.0, 4.0],
        }  # fmt: skip
    )
    fig, ax = plt.subplots()
    report.plot_intervals(ax, table, x="x", y="y", by="by")
    lines = {c.get_label(): c for c in ax.containers}
    assert list(lines) == ["a", "b"]
    a = lines["a"]
    assert a.lines[0].get_xdata().tolist() == [1.0, 2.0] and a.lines[0].get_ydata().tolist() == [3.0, 5.0]
    segments = a.lines[2][0].get_segments()  # the vertical error bars, sorted by x: [low, high] per point
    assert [(s[0][1], s[1][1]) for s in segments] == [(2.5, 3.0), (4.0, 7.0)]
    plt.close(fig)
