"""Metrics of rankclip/eval/metrics.py against hand-computed examples (ties, k > candidates, one sample,
several captions per image), against loop references, and against clip_benchmark's own recall function."""

from __future__ import annotations

import ast
import inspect

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rankclip.eval.metrics import (
    class_embeddings,
    modality_gap,
    positive_ranks,
    retrieval_ranks,
    retrieval_recall,
    topk_accuracy,
    zeroshot_ranks,
)
from rankclip.evalsets.imagenet_facts import IMAGENET_R_CLASS_INDICES


def scores_as_features(scores: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Image features = identity, text features = scores.T, so that images @ texts.T == scores."""
    scores = torch.as_tensor(scores, dtype=torch.float32)
    return torch.eye(scores.shape[0]), scores.T.contiguous()


# ------------------------------------------------------------------------------------------- ranks
def test_positive_ranks_hand_built_matrix_with_ties():
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.3],  # positive col 0 is the best: rank 0
            [0.2, 0.8, 0.2, 0.9],  # positive col 0 (0.2): beaten by 0.8 and 0.9, tied with col 2
            [0.5, 0.5, 0.5, 0.5],  # all tied: pessimistic 3, optimistic 0
            [0.1, 0.7, 0.7, 0.3],  # positives cols 1 and 2 (0.7 both): best positive 0.7, rank 0
        ]
    )
    positive = torch.zeros(4, 4, dtype=torch.bool)
    positive[0, 0] = positive[1, 0] = positive[2, 1] = True
    positive[3, 1] = positive[3, 2] = True
    assert positive_ranks(scores, positive, "pessimistic").tolist() == [0, 3, 3, 0]
    assert positive_ranks(scores, positive, "optimistic").tolist() == [0, 2, 0, 0]


def test_positive_ranks_match_a_sorting_loop_on_every_row():
    """The CyCLIP-base bug left most ranks at zero: every row here is checked against an argsort loop."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 40, generator=generator)
    positive = torch.rand(50, 40, generator=generator) < 0.1
    positive[torch.arange(50), torch.randint(0, 40, (50,), generator=generator)] = True
    ranks = positive_ranks(scores, positive)
    for row in range(50):
        order = torch.argsort(scores[row], descending=True)
        first_positive = next(i for i, col in enumerate(order.tolist()) if positive[row, col])
        assert ranks[row] == first_positive, row
    assert (ranks > 0).float().mean() > 0.5  # most rows are not hits at 1: nothing left at a default 0


def test_positive_ranks_reject_bad_input():
    with pytest.raises(ValueError, match="no positive"):
        positive_ranks(torch.zeros(2, 3), torch.tensor([[True, False, False], [False] * 3]))
    with pytest.raises(ValueError, match="NaN"):
        positive_ranks(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[True, False]]))
    with pytest.raises(ValueError, match="ties"):
        positive_ranks(torch.zeros(1, 2), torch.tensor([[True, False]]), ties="random")


# --------------------------------------------------------------------------------- classification
def test_zeroshot_topk_by_hand_including_k_above_the_class_count():
    classifier = torch.eye(4)  # logits == image features
    images = torch.tensor(
        [
            [0.9, 0.1, 0.0, 0.0],  # label 0: rank 0
            [0.1, 0.2, 0.3, 0.4],  # label 0: rank 3
            [0.0, 0.5, 0.6, 0.1],  # label 1: rank 1
            [0.3, 0.3, 0.3, 0.3],  # label 2: all tied -> rank 3 (pessimistic)
            [0.0, 0.0, 0.0, 1.0],  # label 3: rank 0
        ]
    )
    labels = [0, 0, 1, 2, 3]
    ranks, _ = zeroshot_ranks(images, labels, classifier)
    assert ranks.tolist() == [0, 3, 1, 3, 0]
    metrics, per_class = topk_accuracy(ranks, labels, ks=(1, 2, 5), num_classes=4)
    assert metrics["top1"] == pytest.approx(2 / 5)
    assert metrics["top2"] == pytest.approx(3 / 5)
    assert metrics["top5"] == 1.0  # k = 5 > 4 classes: every image is a hit
    # per class: class 0 -> 1/2, class 1 -> 0, class 2 -> 0, class 3 -> 1
    assert metrics["mean_per_class_top1"] == pytest.approx((0.5 + 0 + 0 + 1) / 4)
    assert [(row["index"], row["num_samples"], row["accuracy"]["top1"]) for row in per_class] == [
        (0, 2, 0.5),
        (1, 1, 0.0),
        (2, 1, 0.0),
        (3, 1, 1.0),
    ]
    ranks, _ = zeroshot_ranks(images, labels, classifier, ties="optimistic")
    assert ranks.tolist()[3] == 0


def test_zeroshot_one_sample_and_classes_without_samples():
    ranks, labels = zeroshot_ranks(torch.tensor([[0.2, 0.9, 0.1]]), [1], torch.eye(3))
    metrics, per_class = topk_accuracy(ranks, labels, ks=(1,), num_classes=3)
    assert metrics == {"top1": 1.0, "mean_per_class_top1": 1.0}
    assert [row["index"] for row in per_class] == [1]  # classes without test images are not averaged


def test_zeroshot_class_subset_restricts_the_logits():
    classifier = torch.eye(5)
    images = torch.tensor([[0.9, 0.5, 0.1, 0.8, 0.0], [0.0, 0.1, 0.2, 0.3, 0.4]])
    # Over all classes image 0 (label 3) loses to class 0; restricted to {1, 3, 4} it wins.
    full, _ = zeroshot_ranks(images, [3, 4], classifier)
    subset, labels = zeroshot_ranks(images, [3, 4], classifier, class_subset=[1, 3, 4])
    assert full.tolist() == [1, 0]
    assert subset.tolist() == [0, 0]
    assert labels.tolist() == [1, 2]  # remapped to positions in the subset
    with pytest.raises(ValueError, match=r"labels \[0\] are not in class_subset"):
        zeroshot_ranks(images, [0, 4], classifier, class_subset=[1, 3, 4])


def test_class_embeddings_average_normalised_templates_like_open_clip():
    from open_clip import build_zero_shot_classifier

    generator = torch.Generator().manual_seed(1)
    classnames, templates = ["cat", "dog", "owl"], ["a {c}.", "the {c}!"]
    table = {t.format(c=c): torch.randn(8, generator=generator) * 3 for c in classnames for t in templates}

    class Tokens(list):
        def to(self, device):
            return self

    class Model:
        def encode_text(self, texts, normalize=False):
            features = torch.stack([table[t] for t in texts])
            return F.normalize(features, dim=-1) if normalize else features

    expected = build_zero_shot_classifier(
        Model(), Tokens, classnames, [lambda c, t=t: t.format(c=c) for t in templates]
    )
    template_features = torch.stack(
        [torch.stack([table[t.format(c=c)] for t in templates]) for c in classnames]
    )
    torch.testing.assert_close(class_embeddings(template_features), expected.T)
    by_hand = F.normalize(table["a dog."], dim=0) + F.normalize(table["the dog!"], dim=0)
    torch.testing.assert_close(class_embeddings(template_features)[1], by_hand / by_hand.norm())


def test_imagenet_r_indices_match_clip_benchmark():
    import clip_benchmark.datasets.builder as builder

    tree = ast.parse(inspect.getsource(builder))
    wnids = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id == "imagenet_r_wnids"
    )
    expected = [i for i, wnid in enumerate(builder.all_imagenet_wordnet_ids) if wnid in wnids]
    assert list(IMAGENET_R_CLASS_INDICES) == expected
    assert len(expected) == 200


# ---------------------------------------------------------------------------------------- retrieval
def test_retrieval_by_hand_several_captions_per_image():
    # 3 images; captions 0,1,2 -> image 0, caption 3 -> image 1, captions 4,5 -> image 2.
    owner = [0, 0, 0, 1, 2, 2]
    scores = np.array(
        [
            # c0   c1   c2   c3   c4   c5
            [0.1, 0.6, 0.2, 0.9, 0.3, 0.0],  # image 0: best own caption c1 (0.6), beaten by c3 -> rank 1
            [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # image 1: own c3 (0.2), beaten by c0,c1,c2 -> rank 3
            [0.0, 0.1, 0.2, 0.3, 0.4, 0.9],  # image 2: own c5 is the best -> rank 0
        ]
    )
    image_ranks, text_ranks = retrieval_ranks(*scores_as_features(scores), owner)
    assert image_ranks.tolist() == [1, 3, 0]
    # text -> image: each caption's column, the rank of its own image among the 3 images:
    # c0 (0.1, 0.5, 0.0) own 0 -> 1; c1 (0.6, 0.4, 0.1) own 0 -> 0; c2 (0.2, 0.3, 0.2) own 0 -> 2 (image 1
    # beats it, image 2 ties it: pessimistic); c3 (0.9, 0.2, 0.3) own 1 -> 2; c4 (0.3, 0.1, 0.4) own 2 -> 0;
    # c5 (0.0, 0.0, 0.9) own 2 -> 0
    assert text_ranks.tolist() == [1, 0, 2, 2, 0, 0]
    metrics = retrieval_recall(image_ranks, text_ranks, ks=(1, 2, 10))
    assert metrics["image_to_text_R@1"] == pytest.approx(1 / 3)
    assert metrics["image_to_text_R@2"] == pytest.approx(2 / 3)
    assert metrics["text_to_image_R@1"] == pytest.approx(3 / 6)
    assert metrics["text_to_image_R@2"] == pytest.approx(4 / 6)
    assert metrics["image_to_text_R@10"] == metrics["text_to_image_R@10"] == 1.0  # k > candidates
    assert metrics["mean_R@1"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    _, optimistic = retrieval_ranks(*scores_as_features(scores), owner, ties="optimistic")
    assert optimistic.tolist() == [1, 0, 1, 2, 0, 0]


def test_retrieval_one_image_one_caption():
    image_ranks, text_ranks = retrieval_ranks(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), [0])
    assert retrieval_recall(image_ranks, text_ranks, ks=(1,)) == {
        "image_to_text_R@1": 1.0,
        "text_to_image_R@1": 1.0,
        "mean_R@1": 1.0,
    }


def test_retrieval_collapsed_model_scores_zero_not_one():
    """All similarities equal (a collapsed model): R@1 is 0 under the default tie policy."""
    image_ranks, text_ranks = retrieval_ranks(torch.ones(4, 3), torch.ones(8, 3), [0, 0, 1, 1, 2, 2, 3, 3])
    metrics = retrieval_recall(image_ranks, text_ranks, ks=(1, 4))
    assert metrics["image_to_text_R@1"] == metrics["text_to_image_R@1"] == 0.0
    assert metrics["text_to_image_R@4"] == 1.0


def test_retrieval_rejects_images_without_captions():
    with pytest.raises(ValueError, match=r"images \[1\] have no caption"):
        retrieval_ranks(torch.eye(3), torch.eye(3), [0, 2, 2])


def test_retrieval_agrees_with_clip_benchmark_recall_at_k():
    from clip_benchmark.metrics.zeroshot_retrieval import recall_at_k

    generator = torch.Generator().manual_seed(2)
    images = F.normalize(torch.randn(30, 16, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(90, 16, generator=generator), dim=-1)
    owner = torch.arange(30).repeat_interleave(3)
    image_ranks, text_ranks = retrieval_ranks(images, texts, owner)
    ours = retrieval_recall(image_ranks, text_ranks, ks=(1, 5, 10))
    scores = texts @ images.T
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(90), owner] = True
    for k in (1, 5, 10):
        t2i = (recall_at_k(scores, positive, k) > 0).float().mean().item()
        i2t = (recall_at_k(scores.T, positive.T, k) > 0).float().mean().item()
        assert ours[f"text_to_image_R@{k}"] == pytest.approx(t2i, abs=1e-6)
        assert ours[f"image_to_text_R@{k}"] == pytest.approx(i2t, abs=1e-6)


# ----------------------------------------------------------------------------------- representation
def test_modality_gap_by_hand():
    images = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised: (1,0), (0,1); mean (0.5, 0.5)
    texts = torch.tensor([[-1.0, 0.0], [0.0, -5.0]])  # normalised: (-1,0), (0,-1); mean (-0.5, -0.5)
    metrics = modality_gap(images, texts, text_image_index=[0, 1])
    assert metrics["modality_gap"] == pytest.approx(np.sqrt(2))
    assert metrics["image_centroid_norm"] == pytest.approx(np.sqrt(0.5))
    assert metrics["mean_paired_cosine"] == pytest.approx(-1.0)
