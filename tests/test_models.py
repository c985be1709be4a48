"""rankclip.models: open_clip without its unused optional towers, and the model registry's errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rankclip import models


def test_open_clip_is_imported_without_transformers_and_timm_which_stay_importable():
    code = (
        "import sys; import rankclip.models as m; "
        "print(sorted(set(m.UNUSED_OPEN_CLIP_EXTRAS) & set(sys.modules))); "
        "print(m.open_clip.hf_model.transformers, m.open_clip.timm_model.timm); "
        "import transformers, timm; print(transformers.__name__, timm.__name__)"
    )
    lines = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert lines.splitlines() == ["[]", "None None", "transformers timm"]


def test_import_without_leaves_an_already_imported_package_alone():
    before = sys.modules["json"]
    assert models.import_without("csv", ("json",)).__name__ == "csv"
    assert sys.modules["json"] is before


def test_import_without_makes_the_package_unimportable_while_importing(tmp_path, monkeypatch):
    (tmp_path / "uses_colorsys.py").write_text(
        "try:\n    import colorsys\n    FOUND = True\nexcept ImportError:\n    FOUND = False\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    assert models.import_without("uses_colorsys", ("colorsys",)).FOUND is False
    assert "colorsys" not in sys.modules
    import colorsys  # importable again

    assert colorsys.__name__ == "colorsys"


@pytest.mark.parametrize(
    ("name", "cfg", "key"),
    [
        ("convnext_base", "vision_cfg", "timm_model_name"),
        ("xlm-roberta-base-ViT-B-32", "text_cfg", "hf_model_name"),
    ],
)
def test_a_model_with_a_timm_or_hugging_face_tower_is_refused_by_name(name, cfg, key):
    assert key in models.open_clip.get_model_config(name)[cfg]
    with pytest.raises(ValueError, match=rf"model '{name}' has a timm or Hugging Face tower"):
        models.model_config(name)


@pytest.mark.parametrize("name", ["RN50", "ViT-B-32", "rankclip-tiny-rn", "rankclip-tiny-vit"])
def test_the_papers_and_the_demos_backbones_are_native_open_clip_models(name):
    config = models.model_config(name)
    assert "timm_model_name" not in config["vision_cfg"] and "hf_model_name" not in config["text_cfg"]
