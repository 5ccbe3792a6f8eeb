"""Does the FQS loss reach ~0 by learning or by collapse? Train only an FQSHead on synthetic summaries.

Synthetic pairs where matched student/teacher summaries share information:

    scene latent     u_b ~ N(0, I_z)                     (one per sample)
    block latent     v_bk = u_b + sigma_block * e_bk      (what block k of sample b shows)
    context summary  c_b  = LN(E_c u_b + sigma_noise * n)         E_c, E_t, E_q: fixed random
    target summary   t_bk = LN(E_t v_bk + sigma_noise * n')       linear maps ("encoders")
    mask query       m_bk = E_q pos_bk,  pos_bk ~ U[0, 1]^2 through sin-cos features

Only the head trains (Adam). Each step logs L_fqs, the mean fidelity of matched and shuffled pairs,
the gap (matched - shuffled) and the spread of the angles over the batch (std over samples,
averaged over angle slots) and the diversity of the register states (1 - mean fidelity between
different samples' states): a head that maps every input to the same state has diversity -> 0 and
gap -> 0, whatever its loss.

Configurations (`--configs`):
    trainable   the head as used in HQ-JEPA: context, target and query projections all train.
    frozen      the target projection is frozen (a fixed map of the teacher summary, as an EMA
                teacher's own projection would be): the student cannot make the teacher constant.

Prints JSON lines: one per logged step, then one summary per configuration and seed.

    python -m experiments.fqs_collapse                     # both configurations, 2 seeds
    python -m experiments.fqs_collapse --steps 3000 --lr 1e-3 --log-every 1 --configs trainable
"""

from __future__ import annotations

import argparse
import json
import math

import torch
from torch import Tensor, nn

from hqjepa.losses.fqs import shuffled_pairs
from hqjepa.provenance import provenance
from hqjepa.quantum.head import FQSHead
from hqjepa.quantum.statevector import register_state

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


_SUMMARY = ("heldout_loss", "heldout_gap", "angle_student", "angle_teacher", "diversity_student", "diversity_teacher")


class SyntheticSummaries:
    """Fixed random "encoders" and a sampler of (context, target, mask query) summaries."""

    def __init__(self, dim: int, latent: int, sigma_block: float, sigma_noise: float, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.g = g
        self.latent, self.sigma_block, self.sigma_noise = latent, sigma_block, sigma_noise
        self.e_c = torch.randn(latent, dim, generator=g) / math.sqrt(latent)
        self.e_t = torch.randn(latent, dim, generator=g) / math.sqrt(latent)
        self.e_q = torch.randn(8, dim, generator=g) / math.sqrt(8)
        self.freq = torch.tensor([1.0, 2.0]) * math.pi

    def sample(self, batch: int, blocks: int) -> tuple[Tensor, Tensor, Tensor]:
        g = self.g
        u = torch.randn(batch, self.latent, generator=g)
        v = u.unsqueeze(1) + self.sigma_block * torch.randn(batch, blocks, self.latent, generator=g)
        ln = nn.functional.layer_norm
        dim = self.e_c.shape[1]
        ctx = ln(u @ self.e_c + self.sigma_noise * torch.randn(batch, dim, generator=g), (dim,))
        tgt = ln(v @ self.e_t + self.sigma_noise * torch.randn(batch, blocks, dim, generator=g), (dim,))
        pos = torch.rand(batch, blocks, 2, 1, generator=g) * self.freq  # [B, K, 2, 2]
        feats = torch.cat((pos.sin(), pos.cos()), -1).flatten(-2)  # [B, K, 8]
        return ctx, tgt, feats @ self.e_q


def spreads(head: FQSHead, ctx: Tensor, tgt: Tensor, query: Tensor) -> dict[str, float]:
    """How much the head's outputs vary over the batch (all -> 0 under collapse).

    angle_*: std over samples of each angle, averaged over angle slots.
    diversity_*: 1 - mean_b |<psi_b|psi_pi(b)>|^2 over a derangement pi, on the register states.
    """
    s, t, p = head.angles(ctx, tgt, query)
    s, t, p = s[:, 0], t[:, 0], p[:, 0]  # block 0 of every sample
    perm = shuffled_pairs(s.shape[0])
    out = {"angle_student": float(s.flatten(1).std(0).mean()), "angle_teacher": float(t.flatten(1).std(0).mean())}
    for name, angles in (("student", torch.cat((s, p), 1)), ("teacher", t)):
        psi = register_state(angles.double())
        out[f"diversity_{name}"] = float(1 - (psi.conj() * psi[perm]).sum(-1).abs().pow(2).mean())
    return {k: round(v, 4) for k, v in out.items()}


def run(config: str, seed: int, args: argparse.Namespace) -> dict:
    torch.manual_seed(seed)
    data = SyntheticSummaries(args.dim, args.latent, args.sigma_block, args.sigma_noise, seed)
    head = FQSHead(args.dim, args.enc_layers, args.pred_layers)
    if config == "frozen":
        head.target_proj.requires_grad_(False)
    elif config != "trainable":
        raise ValueError(f"--configs: unknown configuration {config!r}")
    opt = torch.optim.Adam([p for p in head.parameters() if p.requires_grad], lr=args.lr)
    held_out = data.sample(args.batch, args.blocks)
    first_low = None
    history = []
    for step in range(args.steps + 1):
        ctx, tgt, query = data.sample(args.batch, args.blocks)
        out = head(ctx, tgt, query)
        if step % args.log_every == 0 or step == args.steps:
            with torch.no_grad():
                ev = head(*held_out)
                spread = spreads(head, *held_out)
            loss, fid = float(out.loss.detach()), float(out.fidelity.detach().mean())
            row = {
                "config": config,
                "seed": seed,
                "step": step,
                "loss": round(loss, 5),
                "gap": round(float(out.gap), 5),
                "fid_matched": round(fid, 5),
                "fid_shuffled": round(fid - float(out.gap), 5),
                "heldout_loss": round(float(ev.loss), 5),
                "heldout_gap": round(float(ev.gap), 5),
                **spread,
            }
            history.append(row)
            if not args.quiet:
                print(record(row), flush=True)
            if first_low is None and float(ev.loss) < args.low:
                first_low = row
        if step < args.steps:
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
    final = history[-1]
    return {
        "summary": True,
        "config": config,
        "seed": seed,
        "steps": args.steps,
        "lr": args.lr,
        "initial": {k: history[0][k] for k in _SUMMARY},
        "first_step_heldout_loss_below": args.low,
        "first_low": None if first_low is None else {k: first_low[k] for k in ("step",) + _SUMMARY},
        "final": {k: final[k] for k in _SUMMARY + ("fid_matched", "fid_shuffled")},
    }


def main(argv: list[str] | None = None) -> None:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="trainable,frozen")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--latent", type=int, default=8)
    parser.add_argument("--enc-layers", type=int, default=2)
    parser.add_argument("--pred-layers", type=int, default=1)
    parser.add_argument("--sigma-block", type=float, default=0.3)
    parser.add_argument("--sigma-noise", type=float, default=0.1)
    parser.add_argument("--low", type=float, default=0.1, help="'near zero' loss threshold")
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--quiet", action="store_true", help="print only the summaries")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the ops are small: 1 is fastest on a shared CPU)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for config in args.configs.split(","):
        for seed in range(args.seeds):
            print(record(run(config, seed, args)), flush=True)


if __name__ == "__main__":
    main()
