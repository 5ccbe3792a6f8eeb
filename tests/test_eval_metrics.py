"""GeoBench's metrics on small fixed examples, against values computed by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hqjepa.eval.heads import balanced_bce_with_logits
from hqjepa.eval.metrics import TaskMetric, score


def one_hot_logits(pred: torch.Tensor, n: int) -> torch.Tensor:
    """Logits whose argmax is `pred` ([N] -> [N, n], [N, H, W] -> [N, n, H, W])."""
    out = F.one_hot(pred, n).float() * 4.0
    return out if pred.dim() == 1 else out.permute(0, 3, 1, 2)


def test_accuracy():
    y = torch.tensor([0, 1, 2, 2, 1])
    pred = torch.tensor([0, 2, 2, 2, 0])  # 3 of 5 right
    assert score("multiclass", 3, one_hot_logits(pred, 3), y) == pytest.approx(60.0)
    # micro accuracy, not the mean of per-class recalls (that would be (1 + 0 + 1) / 3 = 66.7)
    assert score(
        "multiclass", 2, one_hot_logits(torch.tensor([1, 1, 1, 1]), 2), torch.tensor([1, 1, 1, 0])
    ) == pytest.approx(75.0)


def test_multilabel_f1_is_micro_at_threshold_half():
    # sample 1: predicted {0, 2}, true {0, 1};  sample 2: predicted {1}, true {1};  sample 3: predicted {}, true {3}
    logits = torch.tensor([[2.0, -2.0, 0.3, -1.0], [-3.0, 1.0, -0.1, -2.0], [-1.0, -1.0, -1.0, -0.01]])
    y = torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    # pooled: TP = 2 (0 of s1, 1 of s2), FP = 1 (2 of s1), FN = 2 (1 of s1, 3 of s3): F1 = 2TP / (2TP + FP + FN)
    assert score("multilabel", 4, logits, y) == pytest.approx(100 * 4 / 7)
    # (macro would be the mean of per-label F1s: (1 + 2/3 + 0 + 0) / 4 = 41.7; GeoBench's is micro)
    assert score("multilabel", 4, logits, y) != pytest.approx(100 * (1 + 2 / 3) / 4)


def test_jaccard_macro_over_all_classes_without_ignore_index():
    # 3 classes, class 0 = "no data" still counts; class 2 never occurs (neither predicted nor true)
    y = torch.tensor([[[0, 0, 1], [1, 1, 1]]])
    p = torch.tensor([[[0, 1, 1], [1, 1, 0]]])
    # class 0: TP 1, FP 1 (last pixel), FN 1 -> 1/3; class 1: TP 3, FP 1, FN 1 -> 3/5; class 2: 0 (absent)
    expect = 100 * (1 / 3 + 3 / 5 + 0.0) / 3
    assert score("segmentation", 3, one_hot_logits(p, 3), y) == pytest.approx(expect, rel=1e-5)


def test_metrics_accumulate_over_batches_like_one_shot():
    torch.manual_seed(0)
    y = torch.randint(0, 4, (6, 8, 8))
    logits = torch.randn(6, 4, 8, 8)
    m = TaskMetric("segmentation", 4)
    m.update(logits[:2], y[:2])
    m.update(logits[2:], y[2:])
    assert m.compute() == pytest.approx(score("segmentation", 4, logits, y))
    # the confusion matrix is pooled over the split, not averaged per image
    per_image = sum(score("segmentation", 4, logits[i : i + 1], y[i : i + 1]) for i in range(6)) / 6
    assert m.compute() != pytest.approx(per_image)
    with pytest.raises(ValueError, match="unknown task kind"):
        TaskMetric("regression", 2)


def test_balanced_bce_is_geobench_formula():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    bce = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    expect = bce[y == 0].mean() + bce[y == 1].mean()
    assert balanced_bce_with_logits(logits, y) == pytest.approx(float(expect))
    only_neg = torch.zeros(2, 2)
    assert torch.isfinite(balanced_bce_with_logits(logits, only_neg))
