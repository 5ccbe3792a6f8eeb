"""GeoBench's metrics, exactly as GeoBench's experiment code sets them up, in percent.

GeoBench's reference trainer (ServiceNow/geo-bench-experiments, geobench_exp/torch_toolbox/model.py,
`eval_metrics_generator`, torchmetrics 0.11.1 pinned in its pyproject) uses:

- Classification (m-eurosat, m-so2sat, m-brick-kiln):
  `torchmetrics.Accuracy(task="multiclass", num_classes=n)`; the wrapper's default average is
  "micro", i.e. plain accuracy = #(argmax logits == y) / N.
- MultiLabelClassification (m-bigearthnet):
  `torchmetrics.F1Score(task="multilabel", num_labels=43)`; wrapper defaults threshold=0.5 and
  average="micro": with p = sigmoid(logits) >= 0.5 pooled over all samples and labels,
  F1 = 2 TP / (2 TP + FP + FN).
- SegmentationClasses (m-SA-crop-type, m-cashew-plant):
  `torchmetrics.JaccardIndex(task="multiclass", num_classes=n)`; wrapper default average="macro",
  no ignore_index: the "no data" class 0 counts like any class. From the confusion matrix
  accumulated over all pixels of the split, IoU_c = TP_c / (TP_c + FP_c + FN_c) and
  mIoU = (1/n) sum_c IoU_c. In torchmetrics 0.11.1 a class absent from both predictions and targets
  has IoU 0 and still counts in the mean (torchmetrics >= 1.0 drops such classes from "macro");
  we keep GeoBench's 0.11.1 definition by averaging the per-class (average="none") values.

(The same defaults were checked in torchmetrics 0.11.1 and 1.9.0: F1Score/Accuracy wrappers
average="micro", JaccardIndex wrapper average="macro", ignore_index=None.)
"""

from __future__ import annotations

import torch
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassJaccardIndex,
    MultilabelF1Score,
)

METRIC_NAMES = {"multiclass": "Accuracy", "multilabel": "F1", "segmentation": "Jaccard"}


class TaskMetric:
    """Accumulates a task's GeoBench metric over batches; `compute()` returns percent.

    torchmetrics' per-update argument checks are off: labels are checked once when a sample is read
    (`GeoBenchTask._check_label`), and the checks cost more than the update on 256 x 256 masks.
    """

    def __init__(self, kind: str, n_classes: int):
        if kind == "multiclass":
            self._m = MulticlassAccuracy(num_classes=n_classes, average="micro", validate_args=False)
        elif kind == "multilabel":
            self._m = MultilabelF1Score(num_labels=n_classes, threshold=0.5, average="micro", validate_args=False)
        elif kind == "segmentation":
            self._m = MulticlassJaccardIndex(num_classes=n_classes, average="none", validate_args=False)
        else:
            raise ValueError(f"unknown task kind {kind!r}; one of {', '.join(METRIC_NAMES)}")
        self.kind = kind
        self.name = METRIC_NAMES[kind]

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """logits [N, C] (classification) or [N, C, H, W] (segmentation); target as in GeoBench."""
        logits = logits.detach().float().cpu()
        target = target.detach().cpu()
        if self.kind == "multilabel":
            self._m.update(torch.sigmoid(logits), target.long())
        else:
            self._m.update(logits, target.long())

    def compute(self) -> float:
        """The metric over every update so far, in percent.

        Segmentation: the mean of the per-class IoU over all classes, a class absent from both
        prediction and target counting 0."""
        value = self._m.compute()
        if self.kind == "segmentation":
            value = value.mean()  # torchmetrics 0.11.1 "macro": absent classes count as IoU 0
        return float(value) * 100.0

    def reset(self) -> None:
        """Forget every update."""
        self._m.reset()


def score(kind: str, n_classes: int, logits: torch.Tensor, target: torch.Tensor) -> float:
    """One-shot GeoBench metric in percent (see the module docstring for each formula)."""
    m = TaskMetric(kind, n_classes)
    m.update(logits, target)
    return m.compute()
