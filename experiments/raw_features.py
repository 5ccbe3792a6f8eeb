"""Hand-made features of the input pixels, through the same linear probe as the encoders.

    python -m experiments.raw_features --task m-brick-kiln --benchmark-dir runs/learning/geobench

A reference row for `experiments.learning`: what a linear head reads from the S2 pixels without any
encoder. For each scene x [12 bands, H, W] (bands mapped and normalised as for the encoders):
- band_mean      mu_b = mean_(i,j) x_b(i,j)                          (12 features)
- band_mean_std  [mu_b | sigma_b], sigma_b the std over the scene     (24)
- patch_mean     mean over the encoder's patches (10 x 10 px) of the raw patch vector
                 (12 * 10 * 10 = 1200): what a mean-pooled *linear* patch embedding can see at most.
Prints one JSON line per feature set: test score per probe seed and their mean.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from hqjepa.eval.config import load_eval_config
from hqjepa.eval.probe import Features, linear_probe
from hqjepa.eval.runner import EvalJob, load_job_encoder, open_splits
from hqjepa.losses.pixel_stats import patchify
from hqjepa.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


FEATURES: dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {  # (scenes, patch size) -> features
    "band_mean": lambda x, patch: x.mean(dim=(2, 3)),
    "band_mean_std": lambda x, patch: torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], 1),
    "patch_mean": lambda x, patch: patchify(x, patch).flatten(2).mean(1),  # [B, C*P*P]
}


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="m-brick-kiln")
    p.add_argument("--benchmark-dir", required=True)
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="model config: bands, input size")
    p.add_argument("--eval-config", default=str(ROOT / "configs" / "eval.yaml"))
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    cfg = load_eval_config(args.eval_config)
    # a random-init job only to open the splits exactly as the encoders see them (bands, size)
    job = EvalJob(args.task, "linear", 0, "random-init", None, args.benchmark_dir, cfg.to_dict(), args.config)
    encoder, model_cfg = load_job_encoder(job)
    task, splits = open_splits(job, encoder, model_cfg)
    if task.info.kind == "segmentation":
        raise SystemExit(f"{args.task}: scene-level features only (a classification task)")
    lin = cfg.for_task(args.task).linear
    # read each split's pixels once; every feature set is computed from the same tensors
    pixels = {split: [(x, y) for x, y in DataLoader(ds, batch_size=64)] for split, ds in splits.items()}
    ys = {split: torch.cat([y for _, y in batches]) for split, batches in pixels.items()}
    for name, fn in FEATURES.items():
        xs = {split: torch.cat([fn(x, encoder.patch_size) for x, _ in batches]) for split, batches in pixels.items()}
        feats = Features(task.info.kind, task.n_classes, xs, ys, None)
        tests = [
            linear_probe(feats, tuple(lin.lrs), lin.epochs, lin.weight_decay, lin.batch_size, seed)["test"]
            for seed in range(args.seeds)
        ]
        print(
            record(
                {
                    "task": args.task,
                    "features": name,
                    "dim": int(xs["train"].shape[1]),
                    "tests": [round(t, 2) for t in tests],
                    "test": round(sum(tests) / len(tests), 2),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
