"""How far pretraining moved an encoder from its own initial weights, and what that did to its tokens.

    python -m experiments.encoder_drift --checkpoint runs/learning/pretrain_seed0/export.pt,...

`experiments.learning` pretrains run i from exactly random encoder i's weights (`optim.seed=i`,
`torch.manual_seed(i)` then the student is built first; `tests/test_experiments.py`), so each
export can be set beside its own starting point. For each checkpoint this rebuilds that starting
point and prints one JSON line with
- rel_change: ||W_trained - W_init||_F / ||W_init||_F over the weight matrices (ndim >= 2) of the
  patch embedding, each block, and all of them together;
- on `--scenes` synthetic m-brick-kiln scenes (its generator, full 120 px, normalised as in
  pretraining), per token, the last 4 blocks' tokens concatenated (the learning bench's probe
  features), fitted by ridge regression on the first half of the scenes and scored on the second:
  - kiln_token_acc / kiln_token_recall: a patch that is > 50 % kiln pit vs every other patch
    (threshold 0.5 on the ridge output);
  - texture_r2 / colour_r2: R^2 of the patch's 12 band log-stds / 12 band means;
  - scene_acc: the scene label (kiln > 1 % of the scene) from mean-pooled tokens;
  - kiln_false_positives and the land cover under the most of them (each patch's majority class);
  for the initial ("init") and the trained ("trained") encoder.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import numpy as np
import torch

from hqjepa.bands import S2_BANDS
from hqjepa.checkpoint import load_encoder
from hqjepa.data.labels import NOMENCLATURES
from hqjepa.data.transforms import stack_s2, synthetic_band_stats
from hqjepa.eval.synth_geobench import KILN, _scenes
from hqjepa.losses.pixel_stats import patch_band_stats, patchify
from hqjepa.models.hqjepa import HQJEPA
from hqjepa.provenance import provenance

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


def initial_encoder(cfg) -> torch.nn.Module:
    """The student exactly as `hqjepa.pretrain_local` built it before step 0."""
    torch.manual_seed(cfg.optim.seed)
    return HQJEPA(cfg).student


def rel_change(trained: torch.nn.Module, init: torch.nn.Module) -> dict[str, float]:
    a, b = trained.state_dict(), init.state_dict()
    groups: dict[str, list[str]] = {"patch_embed": [k for k in a if k.startswith("patch_embed.")]}
    for i in range(len(trained.blocks)):
        groups[f"block{i}"] = [k for k in a if k.startswith(f"blocks.{i}.")]
    groups["all"] = list(a)
    out = {}
    for name, keys in groups.items():
        keys = [k for k in keys if a[k].ndim >= 2]
        num = sum(float((a[k] - b[k]).square().sum()) for k in keys)
        den = sum(float(b[k].square().sum()) for k in keys)
        out[name] = round((num / den) ** 0.5, 4)
    return out


def ridge_predict(x: torch.Tensor, y: torch.Tensor, n_fit: int, lam: float) -> torch.Tensor:
    """Standardise x on the fit rows, solve (X'X + lam I) W = X'y there, predict the other rows."""
    mu, sd = x[:n_fit].mean(0), x[:n_fit].std(0) + 1e-6
    xs = torch.cat([(x - mu) / sd, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.linalg.solve(
        xs[:n_fit].T @ xs[:n_fit] + lam * torch.eye(xs.shape[1], dtype=x.dtype), xs[:n_fit].T @ y[:n_fit]
    )
    return xs[n_fit:] @ w


def token_scores(
    encoder: torch.nn.Module,
    s2: torch.Tensor,
    kiln_share: torch.Tensor,
    label: torch.Tensor,
    majority: torch.Tensor,
    blocks: int = 4,
) -> dict:
    encoder.eval()
    with torch.no_grad():
        tokens = torch.cat([encoder.block_tokens(s2[i : i + 20], blocks) for i in range(0, len(s2), 20)]).double()
    n_img, n_tok, dim = tokens.shape
    half = n_img // 2
    flat = tokens.reshape(-1, dim)
    is_kiln = (kiln_share.reshape(-1) > 0.5).double()
    p = ridge_predict(flat, is_kiln, half * n_tok, 10.0) > 0.5
    truth = is_kiln[half * n_tok :].bool()
    stats = patch_band_stats(s2, encoder.patch_size).reshape(-1, 2 * s2.shape[1]).double()
    pred = ridge_predict(flat, stats, half * n_tok, 10.0)
    r2 = 1 - (stats[half * n_tok :] - pred).square().mean(0) / stats[half * n_tok :].var(0)
    wrong = Counter(majority.reshape(-1)[half * n_tok :][p & ~truth].tolist())
    c = s2.shape[1]
    scene = ridge_predict(tokens.mean(1), label.double(), half, 1.0) > 0.5
    return {
        "kiln_token_acc": round(float((p == truth).double().mean()), 4),
        "kiln_token_recall": round(float(p[truth].double().mean()), 4),
        "texture_r2": round(float(r2[c:].mean()), 3),
        "colour_r2": round(float(r2[:c].mean()), 3),
        "scene_acc": round(float((scene == label[half:].bool()).double().mean()), 3),
        "held_out_tokens": int(len(truth)),
        "kiln_false_positives": int(sum(wrong.values())),
        # the land cover that covers most of each wrongly flagged patch
        "false_positive_classes": {NOMENCLATURES[43][k]: v for k, v in wrong.most_common(3)},
    }


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="comma-separated encoder exports of pretrain_local runs")
    p.add_argument("--scenes", type=int, default=400)
    p.add_argument("--seed", type=int, default=5, help="scene generator seed")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    paths = [c.strip() for c in args.checkpoint.split(",") if c.strip()]
    if not paths:
        raise SystemExit(f"--checkpoint {args.checkpoint!r}: no checkpoint path given")
    scenes = _scenes("m-brick-kiln", np.random.default_rng(args.seed), args.scenes, 120)
    s2 = stack_s2({b: scenes.s2[b] for b in S2_BANDS}, 120, synthetic_band_stats(120, 6))
    label = torch.from_numpy(scenes.fractions[:, KILN] > 0.01)
    land = torch.from_numpy(scenes.landcover).long().unsqueeze(1)  # [n, 1, 120, 120]
    per_patch: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # patch size -> (share, majority)
    for path in paths:
        trained, cfg = load_encoder(path)
        patch = cfg.model.patch_size
        if patch not in per_patch:  # each patch's kiln-pit share and majority land cover, [n, N]
            cells = patchify(land, patch)[:, :, 0]
            per_patch[patch] = ((cells == KILN).double().mean(-1), torch.mode(cells, -1).values)
        share, majority = per_patch[patch]
        init = initial_encoder(cfg)
        print(
            record(
                {
                    "checkpoint": path,
                    "optim_seed": cfg.optim.seed,
                    "scenes": args.scenes,
                    "rel_change": rel_change(trained, init),
                    "init": token_scores(init, s2, share, label, majority),
                    "trained": token_scores(trained, s2, share, label, majority),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
