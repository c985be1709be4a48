"""Bad input and faults, one test per case a hostile-but-fair user tried: each stops with a clear error or is
counted, never hangs, never passes silently, and a checkpoint never claims a config its weights did not see.

The README's "Troubleshooting" section says what a user sees in each case.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
import torch
import webdataset as wds
import yaml
from snakemake.utils import validate

from rankclip import checkpoint as ckpt
from rankclip import train as train_module
from rankclip.cli import main
from rankclip.config import TrainConfig, make_config
from rankclip.corpus.loader import DataFaultError, expand_shards
from rankclip.run_lock import LOCK_FILE, OutputDirBusyError, exclusive_output_dir
from rankclip.workflow_config import name_problems
from tests.conftest import write_colour_shards

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def tiny(shards: str, out: Path, **values) -> TrainConfig:
    base = dict(
        train_data=shards,
        train_num_samples=64,
        output_dir=str(out),
        batch_size=32,
        epochs=1,
        lr=1e-3,
        warmup_steps=1,
        workers=0,
        shuffle_buffer=0,
        progress=False,
        tensorboard=False,
        log_every_steps=1,
        model="rankclip-tiny-vit",
        loss="clip",
    )
    return make_config(base | values)


@pytest.fixture(scope="module")
def good_shards(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good")
    write_colour_shards(folder, num_samples=128, num_shards=2)
    return folder


# --- data faults ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("missing/x-{0..2}.tar", "3 of 3 shards do not exist"),  # brace expansion naming absent files
        ("FOLDER/*.tgz", "matches no file"),  # a quoted glob with no match
        ("FOLDER/shard-{000000..000005}.tar", "4 of 6 shards do not exist"),  # only 2 of 6 exist
    ],
)
def test_absent_shards_stop_at_start_with_paths_named(good_shards, tmp_path, pattern, message):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=message) as error:
        train_module.train(tiny(pattern.replace("FOLDER", str(good_shards)), out))
    assert (
        "shard-000005.tar" in str(error.value) or "x-0.tar" in str(error.value) or "*.tgz" in str(error.value)
    )
    assert not out.exists(), "nothing (no empty tensorboard/) is left behind"


def test_a_quoted_glob_that_matches_is_expanded(good_shards):
    assert [Path(s).name for s in expand_shards(f"{good_shards}/*.tar")] == [
        "shard-000000.tar",
        "shard-000001.tar",
    ]


def test_cli_names_absent_shards_and_exits_2(tmp_path, capsys):
    code = main(["train", "--train-data", str(tmp_path / "x-{0..2}.tar"), "--train-num-samples", "10",
                 "--output-dir", str(tmp_path / "o")])  # fmt: skip
    assert code == 2
    assert "x-0.tar" in capsys.readouterr().err


def copy_with_truncated_shard(good: Path, out: Path) -> str:
    out.mkdir()
    (out / "a.tar").write_bytes((good / "shard-000000.tar").read_bytes())
    (out / "b.tar").write_bytes((good / "shard-000001.tar").read_bytes()[:3000])
    return f"{out}/{{a,b}}.tar"


def test_truncated_shard_stops_the_run_with_counts(good_shards, tmp_path):
    shards = copy_with_truncated_shard(good_shards, tmp_path / "shards")
    with pytest.raises(DataFaultError, match=r"unreadable .* skip budget of 0"):
        train_module.train(tiny(shards, tmp_path / "run", train_num_samples=128))
    assert not (tmp_path / "run" / "model.pt").exists()


def write_text_as_png_shard(path: Path, count: int) -> None:
    with wds.TarWriter(str(path)) as sink:
        for index in range(count):
            sink.write({"__key__": f"bad{index:04d}", "png": b"this is not an image", "txt": "a caption"})


def test_undecodable_members_stop_quickly_not_sleep(tmp_path):
    shard = tmp_path / "text.tar"
    write_text_as_png_shard(shard, 200)
    # in a subprocess with a deadline: webdataset's warn_and_continue slept 0.5 s per bad sample (100+ s)
    script = textwrap.dedent(f"""
        from rankclip import train
        from tests.test_faults import tiny
        train.train(tiny({str(shard)!r}, {str(tmp_path / "run")!r}, workers=1))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "DataFaultError" in result.stderr and "skip budget of 0" in result.stderr


def test_skips_within_the_budget_are_counted_and_logged(good_shards, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.tar").write_bytes((good_shards / "shard-000000.tar").read_bytes())
    write_text_as_png_shard(folder / "b.tar", 2)
    config = tiny(f"{folder}/{{a,b}}.tar", tmp_path / "run", max_skipped_fraction=0.1)
    final = train_module.train(config)  # 64 samples, budget 6: the 2 bad samples are skipped
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["skipped"] == ckpt.load(final)["skipped"] == 2


def test_the_decode_cache_changes_no_weight_and_no_skip_count(good_shards, tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.tar").write_bytes((good_shards / "shard-000000.tar").read_bytes())
    write_text_as_png_shard(folder / "b.tar", 2)
    finals = {
        mb: ckpt.load(
            train_module.train(
                tiny(
                    f"{folder}/{{a,b}}.tar",
                    tmp_path / f"run-{mb}",
                    epochs=3,
                    max_skipped_fraction=0.1,
                    decode_cache_mb=mb,
                )
            )
        )
        for mb in (0, 64)
    }
    plain, cached = finals[0], finals[64]
    assert cached["skipped"] == plain["skipped"] > 2  # an undecodable sample is tried (and counted) again
    assert plain["state_dict"].keys() == cached["state_dict"].keys()
    assert all(torch.equal(plain["state_dict"][k], cached["state_dict"][k]) for k in plain["state_dict"])


# --- a checkpoint is bound to its config ------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(good_shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    train_module.train(tiny(f"{good_shards}/shard-{{000000..000001}}.tar", out, lr=1e-3))
    return out


def clone_run(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


@pytest.mark.parametrize("keep_model", [False, True])
def test_resume_with_other_settings_is_refused_naming_them(finished_run, good_shards, tmp_path, keep_model):
    run = clone_run(finished_run, tmp_path / "run")
    if not keep_model:
        (run / "model.pt").unlink()  # what Snakemake does before rerunning a job whose params changed
    before = ckpt.load(run / "checkpoints" / "latest.pt")["state_dict"]
    with pytest.raises(train_module.CheckpointConfigError, match=r"lr 0\.001 \(checkpoint\) vs 0\.5 \(now\)"):
        train_module.train(tiny(f"{good_shards}/shard-{{000000..000001}}.tar", run, lr=0.5))
    after = ckpt.load(run / "checkpoints" / "latest.pt")["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (run / "model.pt").exists() == keep_model


def test_on_config_change_restart_moves_old_outputs_aside(finished_run, good_shards, tmp_path):
    run = clone_run(finished_run, tmp_path / "run")
    (run / "model.pt").unlink()
    old = ckpt.load(run / "checkpoints" / "latest.pt")["state_dict"]
    config = tiny(f"{good_shards}/shard-{{000000..000001}}.tar", run, lr=0.5, on_config_change="restart")
    final = train_module.train(config)
    assert ckpt.load(final)["config"]["lr"] == 0.5
    (superseded,) = (run / "superseded").iterdir()
    kept = ckpt.load(superseded / "checkpoints" / "latest.pt")
    assert kept["config"]["lr"] == 1e-3 and all(torch.equal(old[k], kept["state_dict"][k]) for k in old)
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_extending_epochs_resumes(finished_run, good_shards, tmp_path):
    run = clone_run(finished_run, tmp_path / "run")
    final = train_module.train(tiny(f"{good_shards}/shard-{{000000..000001}}.tar", run, epochs=2))
    assert ckpt.load(final)["step"] == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "rankclip-tiny-rn"}, "is model rankclip-tiny-vit, you asked for model rankclip-tiny-rn"),
        ({"loss": "rankclip"}, "is loss clip, you asked for loss rankclip"),
    ],
)
def test_model_or_loss_mismatch_is_one_line(finished_run, good_shards, tmp_path, change, message):
    run = clone_run(finished_run, tmp_path / "run")
    with pytest.raises(train_module.CheckpointConfigError) as error:
        train_module.train(tiny(f"{good_shards}/shard-{{000000..000001}}.tar", run, **change))
    assert str(error.value).splitlines()[0].endswith(message)


def test_truncated_latest_falls_back_to_the_newest_epoch_checkpoint(
    finished_run, good_shards, tmp_path, caplog
):
    run = clone_run(finished_run, tmp_path / "run")
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:3000])
    (run / "model.pt").unlink()
    with caplog.at_level(logging.WARNING):
        final = train_module.train(tiny(f"{good_shards}/shard-{{000000..000001}}.tar", run, epochs=2))
    assert "latest.pt cannot be read" in caplog.text and "resuming from" in caplog.text
    assert ckpt.load(final)["step"] == 4


# --- config typos stop at DAG time / in the CLI -------------------------------------------------------------


def test_cli_takes_whole_flag_names_only(capsys):
    with pytest.raises(SystemExit) as error:
        main(["train", "--train-data", "x.tar", "--epoch", "1", "--epochs", "5"])
    assert error.value.code == 2
    assert "unrecognized arguments: --epoch 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--train-data", "x.tar", "--epochs", "1", "--epochs", "5"])
    assert "--epochs given twice" in capsys.readouterr().err


def demo_config(**sections) -> dict:
    config = json.loads(json.dumps(DEMO_CONFIG))
    for section, values in sections.items():
        config[section] = {**config[section], **values}
    return config


@pytest.mark.parametrize("typo", ["epoch", "lerning_rate", "loss", "output_dir"])
def test_schema_closes_train(typo):
    with pytest.raises(Exception, match=f"'{typo}' was unexpected"):
        validate(demo_config(train={typo: 1}), str(REPO / "config" / "schema.yaml"))


def test_schema_train_section_lists_trainconfig_fields():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())["properties"]["train"]
    set_by_workflow = {"train_data", "output_dir", "model", "loss", "lambda_cross", "lambda_in", "list_scale",
                       "seed", "progress", "resume", "on_config_change"}  # fmt: skip
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == set(TrainConfig.model_fields) - set_by_workflow
    reference = TrainConfig.model_json_schema()["properties"]
    for name, entry in schema["properties"].items():
        for key in ("type", "enum", "anyOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            assert entry.get(key) == reference[name].get(key), (name, key)


def test_schema_needs_a_benchmark_for_every_run():
    """An empty eval.every_run would train the sweeps' runs (lambda, data size) and evaluate none of them."""
    with pytest.raises(Exception, match=r"\[\] should be non-empty") as error:
        validate(demo_config(eval={"every_run": []}), str(REPO / "config" / "schema.yaml"))
    assert "every_run" in str(error.value)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"runs": {"backbone_methods": ["clip", "clipp"]}}, "runs.backbone_methods: 'clipp' is not a method"),
        ({"runs": {"backbones": ["rn50"]}}, "runs.backbones: 'rn50' is not an open_clip model"),
        ({"report": {"zeroshot": "shapez"}}, "report.zeroshot: 'shapez' is not evaluated with zeroshot"),
        ({"report": {"retrieval": "shapes"}}, "report.retrieval: 'shapes' is not evaluated with retrieval"),
        ({"report": {"shift": {"shapes_sketchy": "imagenet_r"}}}, "report.shift: 'shapes_sketchy' is not in"),
        ({"report": {"backbones": {"RN-50": "RN50"}}}, "report.backbones: 'RN-50' is not an open_clip model"),
    ],
)
def test_unknown_names_are_found_with_the_key(sections, message):
    assert message in "\n".join(name_problems(demo_config(**sections)))


def test_a_role_whose_task_no_run_evaluates_is_left_empty_not_refused():
    config = demo_config(eval={"every_run": ["zeroshot:shapes"], "main_runs": []})
    assert name_problems(config) == []  # report.retrieval: shapes_captions, merged from config/config.yaml
    config["report"]["zeroshot"] = "shapez"
    expected = "report.zeroshot: 'shapez' is not evaluated with zeroshot (known: shapes)"
    assert name_problems(config) == [expected]


@pytest.mark.parametrize("section", ["train", "resources"])
def test_the_paper_config_sets_every_key_the_demo_sets_for_its_jobs(section):
    """paper.yaml is an overlay on config/config.yaml: a demo setting it leaves out would be the paper's."""
    demo, paper = (yaml.safe_load((REPO / "config" / f).read_text()) for f in ("config.yaml", "paper.yaml"))

    def settings(tree, prefix=""):  # dotted keys; samples_per_s is a table by backbone, not a setting
        for key, value in tree.items():
            if isinstance(value, dict) and key != "samples_per_s":
                yield from settings(value, f"{prefix}{key}.")
            else:
                yield prefix + key

    assert sorted(set(settings(demo[section])) - set(settings(paper[section]))) == []


def test_shipped_configs_have_no_unknown_names():
    for name in ("config.yaml", "paper.yaml"):
        assert name_problems(yaml.safe_load((REPO / "config" / name).read_text())) == [], name


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('train={"epoch": 1}', "'epoch' was unexpected"),
        ('report={"zeroshot": "shapez", "retrieval": "shapes_captions"}', "report.zeroshot: 'shapez'"),
    ],
)
def test_workflow_stops_at_dag_time(override, message):
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--config", override],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


def test_a_decode_cache_beside_loader_workers_stops_at_dag_time(tmp_path):
    overlay = tmp_path / "workers.yaml"
    overlay.write_text("train:\n  workers: 2\n")  # over the demo's decode_cache_mb
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1",
         "--configfile", "config/config.yaml", overlay],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "'decode_cache_mb needs workers 0" in result.stdout + result.stderr
    assert "On instance['train']['workers']" in result.stdout + result.stderr


# --- one writer per output directory ------------------------------------------------------------------------


def test_second_writer_is_refused_and_a_stale_lock_is_taken_over(good_shards, tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    hold = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from rankclip.run_lock import exclusive_output_dir
        with exclusive_output_dir(Path({str(out)!r})):
            print("held", flush=True)
            time.sleep(60)
    """)
    holder = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputDirBusyError, match=rf"pid {holder.pid} on "):
            train_module.train(tiny(f"{good_shards}/shard-{{000000..000001}}.tar", out))
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "metrics.jsonl").exists()
    assert f"pid {holder.pid}" in (out / LOCK_FILE).read_text()  # killed: its lock file stays, unlocked
    with caplog.at_level(logging.WARNING), exclusive_output_dir(out):
        pass
    assert f"taking over the lock of pid {holder.pid}" in caplog.text
    assert (out / LOCK_FILE).read_text() == ""  # released on exit


# --- clear I/O errors --------------------------------------------------------------------------------


def test_full_disk_is_named_and_the_previous_checkpoint_kept(tmp_path, monkeypatch):
    target = tmp_path / "latest.pt"
    ckpt.atomic_save({"state_dict": {"w": torch.ones(4)}}, target)
    usage = ckpt.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    with pytest.raises(
        ckpt.CheckpointError, match=r"no space left on the disk of .*\(needed ~4 MB, 0 MB free\)"
    ):
        ckpt.atomic_save({"state_dict": {"w": torch.zeros(2**20)}}, target)
    assert torch.equal(ckpt.load(target)["state_dict"]["w"], torch.ones(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_disk_filling_during_the_write_is_named(tmp_path, monkeypatch):
    target = tmp_path / "latest.pt"
    real_usage = ckpt.shutil.disk_usage

    def torch_save_on_full_disk(obj, path):  # what torch's zip writer raises on ENOSPC
        monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=10))
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 35567616 vs 35567508")

    monkeypatch.setattr(torch, "save", torch_save_on_full_disk)
    with pytest.raises(ckpt.CheckpointError, match="no space left"):
        ckpt.atomic_save({"state_dict": {"w": torch.zeros(2**18)}}, target)
    assert not any(tmp_path.iterdir())


def test_other_write_errors_name_the_file(tmp_path, monkeypatch):
    def failing_save(obj, path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(
        ckpt.CheckpointError, match=r"cannot write checkpoint .*latest.pt: .*Permission denied"
    ):
        ckpt.atomic_save({"state_dict": {}}, tmp_path / "latest.pt")


def test_truncated_tar_helper_really_truncates(good_shards, tmp_path):
    """The fixture behind the truncated-shard test is what it claims: tarfile fails on it."""
    copy_with_truncated_shard(good_shards, tmp_path / "s")
    with pytest.raises(tarfile.ReadError), tarfile.open(tmp_path / "s" / "b.tar") as tar:
        for member in tar:
            tar.extractfile(member).read()


def test_resume_after_a_training_code_edit_is_refused(finished_run, good_shards, tmp_path, monkeypatch):
    run = clone_run(finished_run, tmp_path / "run")
    (run / "model.pt").unlink()
    stored = ckpt.load(run / "checkpoints" / "latest.pt")["code_hash"]
    monkeypatch.setattr(train_module, "stage_code_hash", lambda stage: "0" * 16)  # as after editing losses.py
    with pytest.raises(
        train_module.CheckpointConfigError, match=rf"code '{stored}' \(checkpoint\) vs '0{{16}}'"
    ):
        train_module.train(tiny(f"{good_shards}/shard-{{000000..000001}}.tar", run))
