"""rankclip/code_hash.py: the files of each stage and their hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rankclip.code_hash import STAGE_CODE, stage_code_hash, stage_files

REPO = Path(__file__).resolve().parents[1]


def test_every_listed_file_exists_and_hashes_are_short_hex():
    for stage in STAGE_CODE:
        assert stage_files(stage), stage
        assert len(stage_code_hash(stage)) == 16 and int(stage_code_hash(stage), 16) >= 0
    assert "rankclip/eval/metrics.py" in stage_files("eval")
    assert "rankclip/model_configs/rankclip-tiny-vit.json" in stage_files("train")
    with pytest.raises(KeyError, match="unknown stage 'evaluate'"):
        stage_code_hash("evaluate")


def test_the_hash_follows_the_contents_of_its_stage_only(tmp_path):
    shutil.copytree(REPO / "rankclip", tmp_path / "rankclip", ignore=shutil.ignore_patterns("__pycache__"))
    before = {stage: stage_code_hash(stage, root=tmp_path) for stage in STAGE_CODE}
    assert before == {stage: stage_code_hash(stage) for stage in STAGE_CODE}  # paths are relative
    with open(tmp_path / "rankclip" / "losses.py", "a") as file:
        file.write("\n# an edit\n")
    after = {stage: stage_code_hash(stage, root=tmp_path) for stage in STAGE_CODE}
    assert {stage for stage in STAGE_CODE if before[stage] != after[stage]} == {"train"}
