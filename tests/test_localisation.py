"""Fig. 7's word heatmaps (rankclip.localisation) against slow computations by hand on tiny random models:
the ViT's patch features from its modules (attention written out), Grad-CAM from finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from synthetic_results import BACKBONE, DATA_SIZE, run_id, write_synthetic_results

from rankclip import localisation as loc
from rankclip.models import create_model


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model, _, preprocess, tokenizer = create_model("rankclip-tiny-vit")
    return model.eval(), preprocess, tokenizer


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(1)
    model, _, preprocess, tokenizer = create_model("rankclip-tiny-rn")
    return model.eval(), preprocess, tokenizer


def image_tensor(seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ words
@pytest.mark.parametrize(
    ("caption", "words"),
    [
        ("circle", ["circle"]),
        ("A red, red circle!", ["a", "red", "circle"]),
        ("a dog's toy -- (blue-green).", ["a", "dog's", "toy", "blue-green"]),
        ("  ...  ", []),
        ("Two 2 two", ["two", "2"]),
    ],
)
def test_caption_words_drop_punctuation_and_repeats(caption, words):
    assert loc.caption_words(caption) == words


def test_caption_words_keep_repeats_when_asked():
    assert loc.caption_words("red, Red red.", unique=False) == ["red", "red", "red"]


# ------------------------------------------------------------------------------------------ ViT
def slow_vit_tokens(visual, image: torch.Tensor) -> torch.Tensor:
    """Every output token (1 + grid^2, d) of one image, from the modules' weights, attention by hand."""
    x = visual.conv1(image[None])[0]  # (width, grid, grid)
    x = x.flatten(1).T  # (grid^2, width), row-major over the grid
    x = torch.cat([visual.class_embedding[None], x]) + visual.positional_embedding
    x = visual.ln_pre(x)
    for block in visual.transformer.resblocks:
        attn = block.attn
        heads, width = attn.num_heads, x.shape[-1]
        y = block.ln_1(x)
        q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).split(width, dim=-1)
        q, k, v = (t.reshape(len(t), heads, width // heads).transpose(0, 1) for t in (q, k, v))
        weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(width // heads), dim=-1)
        y = (weights @ v).transpose(0, 1).reshape(len(x), width)
        x = x + F.linear(y, attn.out_proj.weight, attn.out_proj.bias)
        y = block.ln_2(x)
        y = F.linear(F.gelu(F.linear(y, block.mlp.c_fc.weight, block.mlp.c_fc.bias)), block.mlp.c_proj.weight)
        x = x + y + block.mlp.c_proj.bias
    return visual.ln_post(x) @ visual.proj


def test_vit_patch_features_match_a_computation_by_hand(vit):
    model, _, tokenizer = vit
    images = torch.stack([image_tensor(0), image_tensor(1)])
    fast = loc.vit_patch_features(model, images)
    assert fast.shape == (2, 4, 4, 128)  # 32 px / patch 8
    with torch.no_grad():
        for image, features in zip(images, fast, strict=True):
            tokens = slow_vit_tokens(model.visual, image)
            # the class token by hand is open_clip's image embedding: the slow path is the model's
            torch.testing.assert_close(tokens[0], model.encode_image(image[None])[0], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(features.reshape(16, -1), tokens[1:], atol=1e-5, rtol=1e-4)

    words = ["red", "circle", "left"]
    heatmaps = loc.word_heatmaps(model, tokenizer, images[0], words)
    assert heatmaps.method == "patch_cosine" and heatmaps.grid == (4, 4) and heatmaps.layer is None
    with torch.no_grad():
        texts = F.normalize(model.encode_text(tokenizer(words)), dim=-1)
        patches = F.normalize(slow_vit_tokens(model.visual, images[0]), dim=-1)
    expected = (patches[1:] @ texts.T).T.reshape(3, 4, 4)  # patch (row, col) -> map[row, col]
    np.testing.assert_allclose(heatmaps.maps, expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(heatmaps.scores, (texts @ patches[0]).numpy(), atol=1e-5)
    assert heatmaps.maps.dtype == np.float32 and np.abs(heatmaps.maps).max() <= 1 + 1e-6


def test_edge_cases_one_word_punctuation_repeats_empty(vit, resnet):
    for model, _, tokenizer in (vit, resnet):
        image = image_tensor(3)
        one = loc.word_heatmaps(model, tokenizer, image, "red.")
        assert one.words == ["red"] and len(one.maps) == 1 and one.scores.shape == (1,)
        many = loc.word_heatmaps(model, tokenizer, image, "Red, circle; red!")
        assert many.words == ["red", "circle"]
        np.testing.assert_allclose(many.maps[0], one.maps[0], atol=1e-6)
        repeated = loc.word_heatmaps(model, tokenizer, image, ["red", "circle", "red"])  # a list: as given
        assert repeated.words == ["red", "circle", "red"]
        np.testing.assert_allclose(repeated.maps[0], repeated.maps[2], atol=1e-6)
        np.testing.assert_allclose(repeated.maps[:2], many.maps, atol=1e-6)
        empty = loc.word_heatmaps(model, tokenizer, image, "?!")
        assert empty.words == [] and empty.maps.shape == (0, *one.grid) and empty.scores.shape == (0,)


def test_maps_are_deterministic_and_leave_the_model_as_it_was(vit, resnet):
    for model, _, tokenizer in (vit, resnet):
        model.train()
        first = loc.word_heatmaps(model, tokenizer, image_tensor(4), "a red circle")
        second = loc.word_heatmaps(model, tokenizer, image_tensor(4), "a red circle")
        assert model.training
        model.eval()
        assert np.array_equal(first.maps, second.maps) and np.array_equal(first.scores, second.scores)
        assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------ ResNet
def test_default_resnet_layer_keeps_a_grid_of_at_least_four():
    assert loc.default_resnet_layer(224) == "layer4"  # RN50: 7x7
    assert loc.default_resnet_layer(128) == "layer4"  # 4x4
    assert loc.default_resnet_layer(64) == "layer3"
    assert loc.default_resnet_layer(32) == "layer2"
    assert loc.default_resnet_layer(8) == "layer1"


def test_resnet_gradcam_matches_finite_differences(resnet):
    """Grad-CAM on layer3 (2x2 grid, 256 channels) with ds/dA from central differences in float64."""
    model, _, tokenizer = resnet
    model = create_model("rankclip-tiny-rn")[0].eval()
    model.load_state_dict(resnet[0].state_dict())
    model.double()
    visual, image, words = model.visual, image_tensor(5).double(), ["red", "circle"]
    heatmaps = loc.word_heatmaps(model, tokenizer, image, words, layer="layer3")
    assert heatmaps.method == "gradcam" and heatmaps.layer == "layer3" and heatmaps.grid == (2, 2)

    with torch.no_grad():
        texts = F.normalize(model.encode_text(tokenizer(words)), dim=-1)
        activations = visual.layer3(visual.layer2(visual.layer1(visual.stem(image[None]))))[0]

        def scores(a: torch.Tensor) -> torch.Tensor:  # (N, C, 2, 2) -> (N, words)
            return F.normalize(visual.attnpool(visual.layer4(a)), dim=-1) @ texts.T

        eps, size = 1e-6, activations.numel()
        steps = torch.eye(size, dtype=torch.float64).reshape(size, *activations.shape) * eps
        gradient = (scores(activations + steps) - scores(activations - steps)) / (2 * eps)  # (size, words)
        gradient = gradient.T.reshape(len(words), *activations.shape)
        expected = F.relu((gradient.mean(dim=(2, 3), keepdim=True) * activations).sum(dim=1))
        expected_scores = scores(activations[None])[0]
    assert expected.max() > 0
    np.testing.assert_allclose(heatmaps.maps, expected.numpy(), rtol=1e-5, atol=1e-9 * float(expected.max()))
    np.testing.assert_allclose(heatmaps.scores, expected_scores.numpy(), rtol=1e-6)


def test_resnet_gradcam_on_a_named_layer(resnet):
    model, _, tokenizer = resnet
    assert loc.word_heatmaps(model, tokenizer, image_tensor(6), "red", layer="layer4").grid == (1, 1)
    with pytest.raises(ValueError, match="layer9"):
        loc.word_heatmaps(model, tokenizer, image_tensor(6), "red", layer="layer9")


# ------------------------------------------------------------------------------------------ drawing
def test_normalise_and_upsample():
    maps = np.array([[[0.0, 2.0], [1.0, 4.0]], [[3.0, 3.0], [3.0, 3.0]]], dtype=np.float32)
    normalised = loc.normalise_maps(maps)
    np.testing.assert_allclose(normalised[0], [[0, 0.5], [0.25, 1]])
    assert np.array_equal(normalised[1], np.zeros((2, 2)))
    big = loc.upsample(maps, (8, 8))
    assert big.shape == (2, 8, 8) and np.allclose(big[1], 3.0)
    assert big[0, 0, 0] == 0.0 and big[0, -1, -1] == 4.0  # corners keep the corner patch's value
    assert loc.upsample(maps[:0], (8, 8)).shape == (0, 8, 8)


def test_display_image_undoes_the_normalisation(vit):
    _, preprocess, _ = vit
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    shown = loc.display_image(preprocess(Image.fromarray(pixels)), preprocess)
    assert shown.shape == (32, 32, 3)
    np.testing.assert_allclose(shown, pixels / 255, atol=1e-5)


# ------------------------------------------------------------------------------------------ inputs
def test_localisation_runs_pick_the_main_runs_and_resolve_recorded_paths(tmp_path, monkeypatch):
    results_dir = tmp_path / "work" / "results" / "demo" / "eval"
    write_synthetic_results(results_dir)
    monkeypatch.chdir(tmp_path)
    runs = loc.localisation_runs(results_dir, "shapes_captions", BACKBONE, DATA_SIZE, ["rankclip", "clip"])
    assert list(runs["method"]) == ["clip", "rankclip"]
    assert list(runs["run_id"]) == [run_id("clip"), run_id("rankclip")]
    assert runs["checkpoint"].isna().all() and runs["dataset_dir"].isna().all()  # nothing there yet

    checkpoint = tmp_path / "work" / runs["checkpoint_path"][0]  # relative to the workflow's folder
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    runs = loc.localisation_runs(results_dir, "shapes_captions", BACKBONE, DATA_SIZE, ["clip", "rankclip"])
    assert runs["checkpoint"][0] == checkpoint and runs["checkpoint"][1] is None
    assert loc.resolve_recorded_path(str(checkpoint), results_dir) == checkpoint
    monkeypatch.chdir(tmp_path / "work")  # as the workflow runs it
    assert loc.resolve_recorded_path(runs["checkpoint_path"][0], tmp_path / "elsewhere") == checkpoint
    assert loc.localisation_runs(results_dir, "no_such_set").empty


def test_retrieval_images_are_seeded_sorted_and_first_captions(tmp_path):
    from rankclip.demo_data.shapes import make_demo
    from rankclip.eval.datasets import WdsSplit

    make_demo(tmp_path, seed=0, num_train=1, num_eval=5, image_size=32, shard_size=5)
    dataset = tmp_path / "eval" / "retrieval"
    chosen = loc.retrieval_images(dataset, "test", count=3, seed=0)
    assert [c["index"] for c in chosen] == [c["index"] for c in loc.retrieval_images(dataset, "test", 3, 0)]
    assert [c["index"] for c in chosen] == sorted(c["index"] for c in chosen) and len(chosen) == 3
    index = WdsSplit(dataset, "test").index()
    for item in chosen:
        assert item["key"] == index.keys[item["index"]]
        assert item["caption"] == index.captions[item["index"]][0]
        assert item["image"].mode == "RGB" and item["image"].size == (32, 32)
    assert [c["index"] for c in loc.retrieval_images(dataset, "test", count=9)] == [0, 1, 2, 3, 4]
