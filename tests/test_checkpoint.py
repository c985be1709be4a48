from pathlib import Path

import open_clip
import pytest
import torch

from rankclip import checkpoint as ckpt
from rankclip.models import create_model, register_model_configs


def test_open_clip_loads_our_checkpoint_directly(tmp_path: Path):
    torch.manual_seed(0)
    model = create_model("rankclip-tiny-vit")[0]
    path = ckpt.atomic_save(
        {
            "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
            "optimizer": {"state": {}},
            "step": 3,
            "config": {"lr": 1e-3, "output_dir": "x"},
        },
        tmp_path / "c.pt",
    )
    register_model_configs()
    loaded, _, _ = open_clip.create_model_and_transforms("rankclip-tiny-vit", pretrained=str(path))
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_atomic_save_leaves_no_partial_file(tmp_path: Path, monkeypatch):
    target = tmp_path / "latest.pt"
    ckpt.atomic_save({"state_dict": {"w": torch.ones(2)}}, target)

    def broken_save(obj, f):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_save({"state_dict": {"w": torch.zeros(2)}}, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]
    assert torch.equal(ckpt.load(target)["state_dict"]["w"], torch.ones(2))


def test_bad_checkpoints_name_the_file(tmp_path: Path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist"):
        ckpt.load(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    ckpt.atomic_save({"state_dict": {"w": torch.ones(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="truncated.pt"):
        ckpt.load(truncated)
    no_state = ckpt.atomic_save({"step": 1}, tmp_path / "nostate.pt")
    with pytest.raises(ckpt.CheckpointError, match="lacks state_dict"):
        ckpt.load(no_state)


def test_unsafe_pickles_are_refused(tmp_path: Path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "obj": Path("x")}, path)
    with pytest.raises(ckpt.CheckpointError, match="evil.pt"):
        ckpt.load(path)


def test_find_latest(tmp_path: Path):
    assert ckpt.find_latest(tmp_path) is None
    for epoch in (2, 10, 9):
        (tmp_path / f"epoch_{epoch}.pt").write_bytes(b"")
    assert ckpt.find_latest(tmp_path).name == "epoch_10.pt"
    (tmp_path / "latest.pt").write_bytes(b"")
    assert ckpt.find_latest(tmp_path).name == "latest.pt"


@pytest.mark.parametrize("keep", [0, 1, 2, 5])
def test_prune_epoch_files_keeps_the_newest(tmp_path: Path, keep: int):
    for name in ("epoch_2.pt", "epoch_10.pt", "epoch_9.pt", "latest.pt", "epoch_x.pt"):
        (tmp_path / name).write_bytes(b"")
    ckpt.prune_epoch_files(tmp_path, keep=keep)
    assert [p.name for p in ckpt.epoch_files(tmp_path)] == ["epoch_10.pt", "epoch_9.pt", "epoch_2.pt"][:keep]
    assert (tmp_path / "latest.pt").exists() and (tmp_path / "epoch_x.pt").exists()  # not epoch files
