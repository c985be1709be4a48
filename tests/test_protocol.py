"""rankclip.protocol: the paper's settings beside a config's and its runs', differences with reasons."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from rankclip import protocol
from rankclip.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def by_key(rows: list[dict]) -> dict[str, dict]:
    return {row["key"]: row for row in rows}


def differing(rows: list[dict]) -> set[str]:
    return {row["key"] for row in rows if row["differs"]}


def paper_identical() -> dict:
    """config/paper.yaml with what it keeps different set to the paper's: all of CC3M (3M pairs), the
    paper's data sizes and OFA as ALIP's captioner."""
    config = copy.deepcopy(load("paper.yaml"))
    config["runs"]["data_size"] = 3_000_000
    config["runs"]["data_sizes"] = [500_000, 750_000, 1_000_000, 15_000_000]
    config["report"]["data_sizes"] = {size: size for size in [*config["runs"]["data_sizes"], 3_000_000]}
    config["data"]["web"]["captions"]["model"] = "OFA-Sys/ofa-base"
    return config


def paper_results(config: dict, **train) -> list[dict]:
    """Results (as JSON dicts) of the paper config's runs: the stored train_config and eval protocols."""
    stored = TrainConfig(train_data="x", output_dir="y", **config["train"]).model_dump(mode="json") | train
    zeroshot = {"templates": "dataset", "num_templates": 80}
    return [
        {
            "task": "zeroshot",
            "dataset": "imagenet1k",
            "train_config": stored,
            "protocol": zeroshot,
        },
        {
            "task": "linear_probe",
            "dataset": "cifar10",
            "train_config": stored,
            "protocol": {"method": "linear"},
        },
    ]


def test_every_setting_has_a_row_with_the_papers_value_and_source():
    rows = protocol.protocol_rows(load("config.yaml"))
    assert [row["key"] for row in rows] == protocol.KEYS
    required = {"global_batch", "epochs", "lr", "warmup_steps", "weight_decay", "precision", "optimizer",
                "captioner", "training_data", "data_size", "main_backbone", "table4_backbones",
                "linear_probe_protocol", "zeroshot_templates", "image_size"}  # fmt: skip
    assert required <= set(protocol.KEYS)
    for row in rows:
        assert row["paper"] and row["paper_source"] and row["differs"] in (True, False, None)
    paper = by_key(rows)
    assert paper["global_batch"]["paper"] == "128" and paper["lr"]["paper"] == "0.0005"
    assert paper["captioner"]["paper"] == "OFA" and paper["main_backbone"]["paper"] == "ViT-B/32"


def test_the_demo_differs_with_a_reason_for_each_difference():
    rows = by_key(protocol.protocol_rows(load("config.yaml")))
    differs = differing(rows.values())
    assert {"epochs", "lr", "warmup_steps", "precision", "captioner", "training_data", "data_size",
            "main_backbone", "table4_backbones", "image_size", "zeroshot_benchmark",
            "retrieval_benchmark", "linear_probe_sets"} <= differs  # fmt: skip
    # the demo keeps the paper's global batch, optimizer and weight decay (TrainConfig's defaults)
    assert not ({"global_batch", "optimizer", "weight_decay", "linear_probe_protocol"} & differs)
    for key in differs:
        assert rows[key]["reason"], f"{key} differs without a reason"
    assert "CPU demo scale" in rows["epochs"]["reason"] and rows["epochs"]["ours"] == "3"
    assert rows["precision"]["ours"].startswith("auto (fp32") and "no GPU" in rows["precision"]["reason"]
    assert rows["zeroshot_benchmark"]["ours"] == "shapes (stand-in for ImageNet1K)"
    assert rows["weight_decay"]["ours_from"] == "default" and rows["epochs"]["ours_from"] == "config"
    assert rows["zeroshot_templates"]["differs"] is None  # no result yet


def test_a_config_identical_to_the_paper_has_no_differing_row():
    config = paper_identical()
    rows = protocol.protocol_rows(config, paper_results(config))
    assert differing(rows) == set(), [(r["key"], r["ours"]) for r in rows if r["differs"]]
    assert all(row["differs"] is False for row in rows)
    assert all(row["reason"] == "" for row in rows)
    # without results nothing differs either; what only the results tell is unknown
    unknown = {row["key"] for row in protocol.protocol_rows(config) if row["differs"] is None}
    assert differing(protocol.protocol_rows(config)) == set() and unknown == {"zeroshot_templates"}


def test_the_paper_config_lists_what_it_keeps_different_and_why():
    rows = by_key(protocol.protocol_rows(load("paper.yaml")))
    assert differing(rows.values()) == {"captioner", "fig4_sizes"}
    assert "OFA is not in transformers" in rows["captioner"]["reason"]
    assert rows["captioner"]["ours"] == "Salesforce/blip-image-captioning-base"
    assert rows["data_size"]["ours"] == "all that downloaded (counted by the subset stage)"


def test_the_runs_stored_settings_win_over_the_config():
    config = paper_identical()
    rows = by_key(protocol.protocol_rows(config, paper_results(config, lr=1e-3, precision="fp32")))
    assert rows["lr"]["differs"] and rows["lr"]["ours"] == "0.001" and rows["lr"]["ours_from"] == "runs"
    assert rows["precision"]["differs"] and rows["precision"]["ours"] == "fp32"
    # a difference nobody explained has no reason (the report flags it); report.reasons gives one
    assert rows["lr"]["reason"] == ""
    config["report"]["reasons"] = {"lr": "tuned for our batch"}
    rows = by_key(protocol.protocol_rows(config, paper_results(config, lr=1e-3)))
    assert rows["lr"]["reason"] == "tuned for our batch"
    # results of a stand-in set with its own prompts, or another probe, differ too
    results = paper_results(config)
    results[0]["protocol"] = {"templates": "dataset", "num_templates": 4}
    results[1]["protocol"] = {"method": "logistic"}
    rows = by_key(protocol.protocol_rows(config, results))
    assert rows["zeroshot_templates"]["differs"] and rows["linear_probe_protocol"]["differs"]
    assert rows["zeroshot_templates"]["ours"] == "dataset (4 templates)"


def test_unknown_reason_keys_are_refused_and_the_schema_lists_the_keys():
    config = load("config.yaml")
    config["report"]["reasons"] = {"batch": "x"}
    with pytest.raises(ValueError, match=r"report.reasons: unknown settings \['batch'\]"):
        protocol.protocol_rows(config)
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    reasons = schema["properties"]["report"]["properties"]["reasons"]
    assert reasons["propertyNames"]["enum"] == protocol.KEYS


@pytest.mark.parametrize(("pairs", "differs"), [(2_700_000, False), (1_200_000, True)])
def test_all_that_downloaded_is_judged_by_the_count_the_runs_trained_on(pairs, differs):
    config = load("paper.yaml")
    assert config["runs"]["data_size"] == "all"
    main = {"run_id": "clip__ViT-B-32__nall__lc1.0__li1.0__ls0.03125__s0", "data_size": pairs}
    other = {"run_id": "clip__RN50__n500000__lc1.0__li1.0__ls0.03125__s0", "data_size": 500_000}
    rows = by_key(protocol.protocol_rows(config, [main, other]))
    assert rows["data_size"]["ours"] == f"all that downloaded: {pairs:,}"
    assert rows["data_size"]["differs"] is differs
    # Fig. 4's sizes: the count stands for the paper's 3M (report.data_sizes: all -> 3000000)
    assert rows["fig4_sizes"]["ours"] == f"500K, 750K, 1M, {protocol._size(pairs)} (as 3M)"
