"""The two protocols: linear probing on frozen features, and fine-tuning.

Linear probing. The frozen encoder's features are extracted once per task (`extract_features`):
the mean over patch tokens for classification, the patch tokens themselves (float16) for
segmentation. For each learning rate of the grid a linear head (FeatureNorm + Linear, see `heads`)
is trained with AdamW and a cosine schedule; after every epoch it is scored on the valid split.
The (lr, epoch) with the best valid score is kept, and only that head is scored on the test split.

Fine-tuning. Encoder and head train together with AdamW: head at `lr`, encoder at
`lr * encoder_lr_scale`; linear warm-up for `warmup_epochs`, then cosine decay; gradient clipping.
The epoch with the best valid score is kept (its weights are restored) and scored once on test.

Scores are GeoBench's metrics in percent (`metrics`). Model selection never looks at test.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from hqjepa.eval.heads import PatchLinearDecoder, PooledLinearHead, task_loss
from hqjepa.eval.metrics import TaskMetric


@dataclass
class Features:
    """Frozen-encoder features of one task: split -> x ([N, D] pooled, or [N, h*w, D] tokens), y."""

    kind: str
    n_classes: int
    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    grid: tuple[int, int] | None = None

    @property
    def dim(self) -> int:
        """Feature width D (last axis of the features)."""
        return int(next(iter(self.x.values())).shape[-1])


def _grid(x: torch.Tensor, patch: int) -> tuple[int, int]:
    return x.shape[-2] // patch, x.shape[-1] // patch


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    splits: Mapping[str, Dataset],
    kind: str,
    n_classes: int,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    feature_blocks: int = 1,
) -> Features:
    """Run the frozen encoder once over every split (see the module docstring).

    feature_blocks: tokens of the last N blocks concatenated (`HybridEncoder.block_tokens`); 1 = output.
    """
    encoder = encoder.to(device).eval()
    xs, ys, grid = {}, {}, None
    for split, ds in splits.items():
        feats, labels = [], []
        for x, y in DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers):
            x_dev = x.to(device)
            tokens = encoder(x_dev) if feature_blocks == 1 else encoder.block_tokens(x_dev, feature_blocks)
            grid = _grid(x, encoder.patch_size)
            feats.append(tokens.half().cpu() if kind == "segmentation" else tokens.mean(dim=1).float().cpu())
            labels.append(y)
        xs[split], ys[split] = torch.cat(feats), torch.cat(labels)
    return Features(kind, n_classes, xs, ys, grid if kind == "segmentation" else None)


def _make_head(kind: str, dim: int, n_classes: int, norm: bool) -> nn.Module:
    return (
        PatchLinearDecoder(dim, n_classes, norm) if kind == "segmentation" else PooledLinearHead(dim, n_classes, norm)
    )


def _head_logits(
    head: nn.Module, kind: str, x: torch.Tensor, grid: tuple[int, int] | None, y: torch.Tensor
) -> torch.Tensor:
    if kind == "segmentation":
        return head(x.float(), grid, tuple(y.shape[-2:]))
    return head(x.float())


@torch.no_grad()
def _score_head(head: nn.Module, feats: Features, split: str, batch_size: int, device: Any) -> float:
    metric = TaskMetric(feats.kind, feats.n_classes)
    head.eval()
    x, y = feats.x[split], feats.y[split]
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)
        metric.update(_head_logits(head, feats.kind, xb, feats.grid, yb), yb)
    return metric.compute()


def _cosine(step: int, total: int, warmup: int = 0) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def linear_probe(
    feats: Features,
    lrs: tuple[float, ...],
    epochs: int,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train a linear head per lr on frozen features; keep the best (lr, epoch) on valid; score test once."""
    train_x, train_y = feats.x["train"], feats.y["train"]
    best: dict[str, Any] = {"valid": -math.inf}
    for lr in lrs:
        torch.manual_seed(seed)
        head = _make_head(feats.kind, feats.dim, feats.n_classes, norm=True)
        head.norm.fit(train_x)
        head = head.to(device)
        opt = torch.optim.AdamW(head.linear.parameters(), lr=lr, weight_decay=weight_decay)
        total_steps = epochs * math.ceil(len(train_x) / batch_size)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, functools.partial(_cosine, total=total_steps))
        gen = torch.Generator().manual_seed(seed)
        for epoch in range(epochs):
            head.train()
            for idx in torch.randperm(len(train_x), generator=gen).split(batch_size):
                xb, yb = train_x[idx].to(device), train_y[idx].to(device)
                loss = task_loss(feats.kind, _head_logits(head, feats.kind, xb, feats.grid, yb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            valid = _score_head(head, feats, "valid", batch_size, device)
            if valid > best["valid"]:
                best = {"valid": valid, "lr": lr, "epoch": epoch + 1, "state": copy.deepcopy(head.state_dict())}
    head = _make_head(feats.kind, feats.dim, feats.n_classes, norm=True).to(device)
    head.load_state_dict(best.pop("state"))
    best["test"] = _score_head(head, feats, "test", batch_size, device)
    return best


class EncoderWithHead(nn.Module):
    """The fine-tuned model: encoder tokens -> pooled linear head, or the per-patch decoder."""

    def __init__(self, encoder: nn.Module, kind: str, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.kind = kind
        self.head = _make_head(kind, encoder.embed_dim, n_classes, norm=False)

    def forward(self, x: torch.Tensor, out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Images x [B, C, H, W] -> logits: [B, K] for classification, [B, K, H', W'] for segmentation
        (out_size (H', W'), default the input's H x W)."""
        tokens = self.encoder(x)
        if self.kind == "segmentation":
            return self.head(tokens, _grid(x, self.encoder.patch_size), out_size or tuple(x.shape[-2:]))
        return self.head(tokens)


@torch.no_grad()
def _score_model(model: EncoderWithHead, loader: DataLoader, n_classes: int, device: Any) -> float:
    metric = TaskMetric(model.kind, n_classes)
    model.eval()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        metric.update(model(x, tuple(y.shape[-2:]) if model.kind == "segmentation" else None), y)
    return metric.compute()


def finetune(
    encoder: nn.Module,
    splits: Mapping[str, Dataset],
    kind: str,
    n_classes: int,
    *,
    epochs: int,
    lr: float,
    encoder_lr_scale: float = 0.1,
    weight_decay: float = 0.05,
    batch_size: int = 32,
    warmup_epochs: float = 1.0,
    grad_clip: float = 1.0,
    seed: int = 0,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Fine-tune encoder + head (module docstring); returns valid/test scores of the best epoch."""
    torch.manual_seed(seed)
    model = EncoderWithHead(encoder, kind, n_classes).to(device)
    opt = torch.optim.AdamW(
        [
            {"params": model.encoder.parameters(), "lr": lr * encoder_lr_scale},
            {"params": model.head.parameters(), "lr": lr},
        ],
        weight_decay=weight_decay,
    )
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(
        splits["train"],
        batch_size=batch_size,
        shuffle=True,
        generator=gen,
        num_workers=num_workers,
        drop_last=len(splits["train"]) > batch_size,
    )
    valid = DataLoader(splits["valid"], batch_size=batch_size, num_workers=num_workers)
    test = DataLoader(splits["test"], batch_size=batch_size, num_workers=num_workers)
    total = epochs * len(train)
    warm = int(round(warmup_epochs * len(train)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine(s, total, warm))
    best: dict[str, Any] = {"valid": -math.inf}
    for epoch in range(epochs):
        model.train()
        for x, y in train:
            x, y = x.to(device), y.to(device)
            logits = model(x, tuple(y.shape[-2:]) if kind == "segmentation" else None)
            loss = task_loss(kind, logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
        score = _score_model(model, valid, n_classes, device)
        if score > best["valid"]:
            best = {
                "valid": score,
                "epoch": epoch + 1,
                "lr": lr,
                "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
            }
    model.load_state_dict(best.pop("state"))
    best["test"] = _score_model(model, test, n_classes, device)
    return best
