"""The results JSON (rankclip/eval/results.py): validated on write and on read, clear errors, atomic."""

from __future__ import annotations

import json

import pytest

from rankclip.eval.results import EvalResult, ResultsError, read_result, read_results, write_result
from rankclip.hashing import code_version, sha256_file


def valid_result(**changes) -> dict:
    result = {
        "run_id": "rankclip-3m-s0",
        "method": "rankclip",
        "backbone": "ViT-B-32",
        "data_size": 3_000_000,
        "seed": 0,
        "train_step": 1000,
        "train_config": {"lambda_cross": 1.0, "lambda_in": 0.0},
        "checkpoint_path": "runs/rankclip-3m-s0/model.pt",
        "checkpoint_sha256": "a" * 64,
        "task": "zeroshot",
        "dataset": "imagenet1k",
        "dataset_path": "data/eval/imagenet1k",
        "split": "test",
        "dataset_sha256": "b" * 64,
        "num_samples": 50_000,
        "num_classes": 1000,
        "metrics": {"top1": 0.1016, "top3": 0.1957, "top5": 0.2401},
        "per_class": [{"index": 0, "name": "tench", "num_samples": 50, "accuracy": {"top1": 0.5}}],
        "protocol": {"ks": [1, 3, 5]},
        "code_version": "0.1.0",
        "created_at": "2026-01-01T00:00:00Z",
    }
    return result | changes


def test_round_trip(tmp_path):
    path = write_result(EvalResult(**valid_result()), tmp_path / "sub" / "r.json")
    result = read_result(path)
    assert result.metrics["top1"] == 0.1016
    assert result.per_class[0].name == "tench"
    assert json.loads(path.read_text())["schema_version"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary left behind
    assert result.record()["lambda_in"] == 0.0 and result.record()["top5"] == 0.2401
    assert [r.run_id for r in read_results(tmp_path)] == ["rankclip-3m-s0"]


def test_results_frame_has_one_row_per_file(tmp_path):
    pytest.importorskip("pandas")
    from rankclip.eval.results import results_frame

    write_result(valid_result(), tmp_path / "a.json")
    write_result(valid_result(run_id="clip-3m-s0", method="clip"), tmp_path / "b.json")
    frame = results_frame(tmp_path)
    assert sorted(frame["method"]) == ["clip", "rankclip"]
    assert "top1" in frame.columns


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"metrics": {"top1": 1.7}}, "metrics", "fraction in [0, 1]"),
        ({"metrics": {"top1": "high"}}, "metrics.top1", "valid number"),
        ({"metrics": {"mean_per_class_top1": 0.2}}, "(top level)", "requires metrics matching"),
        ({"run_id": ""}, "run_id", "at least 1 character"),
        ({"checkpoint_sha256": "xyz"}, "checkpoint_sha256", "should match pattern"),
        ({"task": "captioning"}, "task", "zeroshot"),
        ({"num_samples": 0}, "num_samples", "greater than or equal to 1"),
        ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
        (
            {"per_class": [{"index": 0, "name": "x", "num_samples": 1, "accuracy": {"top1": 2}}]},
            "per_class.0.accuracy",
            "fraction",
        ),
    ],
)
def test_bad_file_names_the_file_and_the_field(tmp_path, change, field, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(valid_result(**change)))
    with pytest.raises(ResultsError) as error:
        read_result(path)
    text = str(error.value)
    assert str(path) in text
    assert f"field '{field}'" in text
    assert message in text


def test_missing_field_is_named(tmp_path):
    data = valid_result()
    del data["backbone"]
    path = tmp_path / "missing.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ResultsError, match=r"field 'backbone': Field required"):
        read_result(path)


def test_unreadable_files(tmp_path):
    (tmp_path / "broken.json").write_text('{"run_id": ')
    with pytest.raises(ResultsError, match=r"broken.json: not valid JSON: .* line 1"):
        read_result(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ResultsError, match="holds a JSON object, got list"):
        read_result(tmp_path / "list.json")
    with pytest.raises(ResultsError, match="cannot read"):
        read_result(tmp_path / "absent.json")


def test_write_refuses_an_invalid_result_and_leaves_no_file(tmp_path):
    result = EvalResult(**valid_result())
    result.metrics["top1"] = float("nan")  # mutated after validation
    with pytest.raises(ResultsError, match="not finite"):
        write_result(result, tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_hashes_and_code_version(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    memo = tmp_path / "memo.json"
    assert sha256_file(path) == sha256_file(path, memo) == expected
    assert sha256_file(path, memo) == expected  # from the memo
    path.write_bytes(b"abcd")  # rewritten: new size and mtime, so hashed again
    assert sha256_file(path, memo) != expected
    assert code_version().startswith(__import__("rankclip").__version__)
