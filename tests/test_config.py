from pathlib import Path

import pytest

from rankclip.cli import main
from rankclip.config import ConfigError, load_config, make_config

BASE = {"train_data": "x/{0..1}.tar", "train_num_samples": 100, "output_dir": "out"}


def test_defaults_follow_the_paper():
    config = make_config(BASE)
    assert (config.lr, config.weight_decay, config.epochs, config.warmup_steps) == (5e-4, 0.1, 64, 10_000)
    assert config.list_scale == pytest.approx(1 / 32)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"lr": -1.0}, "lr"),
        ({"loss": "siglip"}, "loss"),
        ({"batch_size": 0}, "batch_size"),
        ({"precision": "fp64"}, "precision"),
        ({"learning_rate": 1e-3}, "learning_rate"),
        ({"loss": "rankclip_in", "lambda_in": 0.0}, "lambda_in"),
        ({"decode_cache_mb": 64, "workers": 2}, "decode_cache_mb .* workers 0 .*got workers 2"),
        ({"decode_cache_mb": 64, "augment": True, "workers": 0}, "decode_cache_mb .*workers 0, augment true"),
        ({"decode_cache_mb": -1}, "decode_cache_mb"),
    ],
)
def test_bad_values_name_the_field(values, field):
    with pytest.raises(ConfigError, match=field):
        make_config(BASE | values)


def test_missing_field_is_named():
    with pytest.raises(ConfigError, match="output_dir"):
        make_config({"train_data": "x", "train_num_samples": 10})


def test_yaml_file_and_overrides(tmp_path: Path):
    path = tmp_path / "train.yaml"
    path.write_text("train_data: a.tar\ntrain_num_samples: 10\noutput_dir: o\nlr: 0.001\n")
    assert load_config(path).lr == 1e-3
    assert load_config(path, {"lr": 0.002}).lr == 2e-3
    path.write_text("- not a mapping\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path)


def test_cli_rejects_a_bad_config_before_any_work(tmp_path: Path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--train-data",
            "x.tar",
            "--train-num-samples",
            "10",
            "--output-dir",
            str(out),
            "--loss",
            "nope",
        ]
    )
    assert code == 2
    assert "loss" in capsys.readouterr().err
    assert not out.exists()


def test_a_main_run_is_one_definition_read_by_workflow_and_report():
    from rankclip.config import MAIN_RUN, has_main_settings

    assert MAIN_RUN == {"lambda_cross": 1.0, "lambda_in": 1.0, "list_scale": 1 / 32}  # the paper's
    assert has_main_settings({})
    assert has_main_settings({"lambda_in": 1, "list_scale": 0.03125, "loss": "clip"})
    assert not has_main_settings({"lambda_cross": 0.5}) and not has_main_settings({"list_scale": 1 / 16})
    smk = (Path(__file__).resolve().parents[1] / "workflow" / "rules" / "common.smk").read_text()
    assert "**MAIN_RUN" in smk and "has_main_settings(run)" in smk
