"""Which loss term actually steers the encoder? Per-term gradient norms on the student.

    python -m experiments.grad_share [--config configs/tiny.yaml] [--set loss.w_sig_ctx=0.2 ...]
                                     [--checkpoint RUN/checkpoint.pt] [--batches 4]

For `--batches` synthetic batches (the config's batch size, masks drawn as in training), each
term's *weighted* gradient w_i dL_i/dtheta is taken separately and its norm printed for the
student (context) encoder and for the predictor, averaged over the batches:

    g_i = || w_i * dL_i / dtheta_student ||_2,   share_i = g_i / sum_j g_j.

The optimiser clips the *summed* gradient to `optim.grad_clip` and AdamW normalises per parameter,
so a term whose g_i is orders of magnitude above the others sets the direction of every step,
whatever its weight is meant to say. Without `--checkpoint` the model is the one
`hqjepa.pretrain_local` builds at step 0 (`torch.manual_seed(optim.seed)`); with a training-state
checkpoint, its weights (and adaptive weights) at that step. With `loss.weighting: gradnorm` the
weights are those the forward measured (smoothed over the batches, as in training). Prints one JSON line per term, then
the norm of the summed student gradient and the configured clip.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hqjepa.config import load_config, parse_override
from hqjepa.data.dataset import SyntheticPairs
from hqjepa.masks.multiblock import sample_masks
from hqjepa.models.hqjepa import HQJEPA
from hqjepa.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]


PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


def grad_norm(params: list[torch.nn.Parameter]) -> float:
    grads = [p.grad for p in params if p.grad is not None]
    return float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))) if grads else 0.0


def term_gradients(model: HQJEPA, batch: dict[str, torch.Tensor], step: int) -> tuple[dict[str, dict], float]:
    """{term: {"loss", "weight", "student", "predictor"}} (weighted gradient norms) and the norm of
    the summed student gradient, for one batch."""
    out = model(batch, step=step)
    weights = model.weighting.applied  # what this forward used (gradnorm measures them on the batch)
    student, predictor = list(model.student.parameters()), list(model.predictor.parameters())
    rows, total = {}, [torch.zeros_like(p) for p in student]
    for name, value in out.terms.items():
        model.zero_grad(set_to_none=True)
        (weights[name] * value).backward(retain_graph=True)
        rows[name] = {
            "loss": float(value.detach()),
            "weight": weights[name],
            "student": grad_norm(student),
            "predictor": grad_norm(predictor),
        }
        for acc, p in zip(total, student, strict=True):
            if p.grad is not None:
                acc += p.grad
    model.zero_grad(set_to_none=True)
    return rows, float(torch.sqrt(sum((t.double() ** 2).sum() for t in total)))


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    p.add_argument("--checkpoint", default=None, help="training-state checkpoint (checkpoint.pt) to take weights from")
    p.add_argument("--batches", type=int, default=4)
    p.add_argument("--seed", type=int, default=1, help="synthetic scenes and masks")
    args = p.parse_args(argv)
    if args.batches < 1:
        raise SystemExit(f"--batches {args.batches}: need at least one batch")
    cfg = load_config(args.config, dict(parse_override(t) for t in args.set))
    torch.manual_seed(cfg.optim.seed)
    model = HQJEPA(cfg)
    step = 0
    if args.checkpoint:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)  # tensors and plain data only
        model.load_state_dict(state["model"])
        step = int(state.get("step", 0))
    bsz = cfg.optim.batch_size
    pairs = SyntheticPairs(bsz * args.batches, seed=args.seed, size_px=cfg.model.image_size)
    g = torch.Generator().manual_seed(args.seed)
    sums: dict[str, dict[str, float]] = {}
    total = 0.0
    for i in range(args.batches):
        batch = pairs.__getitems__(list(range(i * bsz, (i + 1) * bsz)))
        batch.update(sample_masks(bsz, cfg.model.grid, cfg.mask, g).as_dict())
        rows, norm = term_gradients(model, batch, step)
        total += norm / args.batches
        for name, row in rows.items():
            acc = sums.setdefault(name, {k: 0.0 for k in row})
            for k, v in row.items():
                acc[k] += v / args.batches
    all_student = sum(r["student"] for r in sums.values())
    for name, row in sums.items():
        print(
            record(
                {
                    "term": name,
                    "loss": round(row["loss"], 4),
                    "weight": row["weight"],
                    "student_grad": float(f"{row['student']:.4g}"),
                    "predictor_grad": float(f"{row['predictor']:.4g}"),
                    "student_share": round(row["student"] / all_student, 6) if all_student else None,
                }
            )
        )
    print(
        record(
            {
                "summary": True,
                "config": args.config,
                "set": args.set,
                "checkpoint": args.checkpoint,
                "step": step,
                "batches": args.batches,
                "batch_size": bsz,
                "student_grad_sum_norm": float(f"{total:.4g}"),
                "grad_clip": cfg.optim.grad_clip,
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
