"""The evaluation-set layout has one owner: its file names live in rankclip/evalset_layout.py alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from rankclip import evalset_layout as layout
from rankclip.eval.datasets import WdsSplit, dataset_type, read_classnames, read_templates

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", [layout.DATASET_TYPE_FILE, layout.NSHARDS_FILE, layout.CLASSNAMES_FILE])
def test_a_layout_file_name_is_spelled_in_one_module(name):
    sources = [*(REPO / "rankclip").rglob("*.py"), *(REPO / "workflow").rglob("*.smk")]
    spelled = sorted(str(p.relative_to(REPO)) for p in sources if f'"{name}"' in p.read_text())
    assert spelled == ["rankclip/evalset_layout.py"]


def test_what_the_writer_writes_the_reader_reads(tmp_path):
    layout.write_layout(tmp_path, "classification", classnames=[" cat ", "dog"], templates=["a {c}."])
    layout.write_shard_count(tmp_path / "test", 1)
    (tmp_path / "test" / "0.tar").write_bytes(b"")
    assert read_classnames(tmp_path) == ["cat", "dog"] and read_templates(tmp_path) == ["a {c}."]
    assert dataset_type(tmp_path) == "classification"
    assert WdsSplit(tmp_path, "test").shards == [tmp_path / "test" / "0.tar"]
    layout.write_layout(tmp_path / "r", "retrieval")
    assert dataset_type(tmp_path / "r") == "retrieval" and not (tmp_path / "r" / "classnames.txt").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset_type": "detection"}, "dataset_type must be one of"),
        ({"dataset_type": "classification", "classnames": ["a", ""]}, "non-empty single lines"),
        ({"dataset_type": "classification", "templates": ["a photo"]}, "must contain"),
    ],
)
def test_a_bad_layout_is_refused_naming_what_is_wrong(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        layout.write_layout(tmp_path, **kwargs)
    assert not (tmp_path / layout.DATASET_TYPE_FILE).exists()  # the type file is written last
