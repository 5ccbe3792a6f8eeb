"""The HQ-JEPA model: student, EMA teacher, predictor, S1 branch, fusion, FQS head, and the
objective L = L_pred + w_cm L_cm + w_sig L_sig + w_fqs L_fqs (fixed or adaptive weights).

Only the parts a configuration uses are built: with w_cm = w_sig = w_fqs = 0 the model is a bare
I-JEPA (no S1 encoder, fusion or FQS head), which is what `bench/step.py` compares against.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hqjepa.config import Config
from hqjepa.losses.cross_modal import cross_modal_loss
from hqjepa.losses.masked import masked_pool
from hqjepa.losses.pixel_stats import patch_band_stats, pixel_stats_loss
from hqjepa.losses.prediction import prediction_loss
from hqjepa.losses.sigreg import SIGReg
from hqjepa.losses.weighting import LossWeighting
from hqjepa.models.encoder import build_encoder, build_s1_encoder, gather_tokens
from hqjepa.models.fusion import CrossModalFusion
from hqjepa.models.predictor import Predictor


@dataclass
class Objective:
    """What one forward pass returns: the objective, its unweighted terms and diagnostics."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)


class HQJEPA(nn.Module):
    """The whole model of one configuration: student encoder, EMA teacher (no gradients), predictor and,
    as the enabled loss terms need them, the S1 encoder and projection, fusion, SIGReg, pixel-statistics
    head and FQS head; `weighting` combines the terms."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        m, loss = cfg.model, cfg.loss
        self.cfg = cfg
        self.grid = (m.grid, m.grid)
        self.student = build_encoder(m)
        self.teacher = copy.deepcopy(self.student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.predictor = Predictor(
            m.embed_dim, m.predictor_embed_dim, m.predictor_depth, m.predictor_heads, m.mlp_ratio
        )
        base = {
            "pred": 1.0,
            "cm": loss.w_cm,
            "sig": loss.w_sig,
            "fqs": loss.w_fqs,
            "sig_ctx": loss.w_sig_ctx,
            "pix": loss.w_pix,
        }
        self.weighting = LossWeighting(loss.weighting, base, loss.dwa_temperature)
        self.uses = set(self.weighting.names)
        if self.uses & {"cm", "sig"}:
            self.s1_encoder = build_s1_encoder(m)
            self.s1_proj = nn.Sequential(
                nn.Linear(m.s1_embed_dim, m.embed_dim), nn.GELU(), nn.Linear(m.embed_dim, m.embed_dim)
            )
        if "sig" in self.uses:
            self.fusion = CrossModalFusion(m.embed_dim, m.fusion_heads)
        if self.uses & {"sig", "sig_ctx"}:
            self.sigreg = SIGReg(loss.sigreg_slices, loss.sigreg_knots, loss.sigreg_t_max, seed=cfg.optim.seed)
        if "pix" in self.uses:  # 2 statistics (mean, log std) per S2 band
            self.pix_head = nn.Linear(m.embed_dim, 2 * len(m.s2_bands))
        if "fqs" in self.uses:
            from hqjepa.quantum.head import FQSHead

            self.fqs_head = FQSHead(
                m.embed_dim,
                m.fqs_enc_layers,
                m.fqs_pred_layers,
                backend=loss.fqs_backend,
                device=loss.fqs_device,
                mode=loss.fqs_mode,
                angle_scale=loss.fqs_angle_scale,
            )

    @torch.no_grad()
    def update_teacher(self, momentum: float) -> None:
        """theta_teacher <- m theta_teacher + (1 - m) theta_student."""
        s = [p.detach() for p in self.student.parameters()]
        t = list(self.teacher.parameters())
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, s, alpha=1.0 - momentum)

    @torch.no_grad()
    def teacher_tokens(self, s2: torch.Tensor) -> torch.Tensor:
        """Prediction targets for every patch, [B, N, D]: LN(h_L) (I-JEPA) with loss.target_blocks = 1,
        else LN(mean_k LN(h_k)) over the teacher's last K blocks (data2vec's averaged targets), h_k
        after the final norm."""
        k = self.cfg.loss.target_blocks
        if k == 1:
            full = self.teacher(s2)
            return F.layer_norm(full, (full.shape[-1],))
        outs = [F.layer_norm(h, (h.shape[-1],)) for h in self.teacher.block_outputs(s2, k)]
        mean = torch.stack(outs).mean(0)
        return F.layer_norm(mean, (mean.shape[-1],))

    def forward(self, batch: dict[str, torch.Tensor], step: int = 0) -> Objective:
        """One training objective from a batch.

        batch: s2 [B, C, H, W], ctx_idx / ctx_valid [B, Nc], tgt_idx / tgt_valid [B, K, T], and s1
        [B, 2, H, W] when L_cm or L_sig is on; `step` seeds SIGReg's directions. Returns the weighted
        objective (scalar), the unweighted terms and diagnostics (FQS fidelity and collapse gap)."""
        s2, ctx_idx, ctx_valid = batch["s2"], batch["ctx_idx"], batch["ctx_valid"]
        tgt_idx, tgt_valid = batch["tgt_idx"], batch["tgt_valid"]
        beta = self.cfg.loss.smooth_l1_beta

        with torch.no_grad():
            targets = gather_tokens(self.teacher_tokens(s2), tgt_idx)  # [B, K, T, D]

        ctx = self.student(s2, ctx_idx, ctx_valid)  # [B, Nc, D]
        pred = self.predictor(ctx, ctx_idx, ctx_valid, tgt_idx, tgt_valid, self.grid)
        terms = {"pred": prediction_loss(pred, targets, tgt_valid, beta)}
        if "sig_ctx" in self.uses:  # every valid context token is one embedding, or each sample's mean token
            emb = ctx[ctx_valid] if self.cfg.loss.sig_ctx_on == "tokens" else masked_pool(ctx, ctx_valid)
            terms["sig_ctx"] = self.sigreg(emb, step)
        if "pix" in self.uses:
            stats = patch_band_stats(s2, self.cfg.model.patch_size)  # [B, N, 2C]
            if self.cfg.loss.pix_on == "targets":
                terms["pix"] = pixel_stats_loss(self.pix_head(pred), gather_tokens(stats, tgt_idx), tgt_valid)
            else:  # one block of the context tokens
                terms["pix"] = pixel_stats_loss(
                    self.pix_head(ctx)[:, None], gather_tokens(stats, ctx_idx)[:, None], ctx_valid[:, None]
                )
        diagnostics: dict[str, torch.Tensor] = {}

        if self.uses & {"cm", "sig"}:
            s1_tokens = self.s1_encoder(batch["s1"], tgt_idx, tgt_valid)  # [B, K, T, D1]
            s1_proj = self.s1_proj(s1_tokens)
            if "cm" in self.uses:
                terms["cm"] = cross_modal_loss(pred, s1_proj, tgt_valid, self.cfg.loss.cm_loss, beta)
            if "sig" in self.uses:
                fused = self.fusion(masked_pool(pred, tgt_valid), masked_pool(s1_proj, tgt_valid))
                terms["sig"] = self.sigreg(fused.flatten(0, 1), step)
        if "fqs" in self.uses:
            grid_pos = self.student.pos_embed(self.grid, s2.device).to(pred.dtype)
            pos = grid_pos.unsqueeze(0).expand(s2.shape[0], -1, -1)
            out = self.fqs_head(
                masked_pool(ctx, ctx_valid),  # student context summary
                masked_pool(targets, tgt_valid),  # teacher target summaries
                masked_pool(gather_tokens(pos, tgt_idx), tgt_valid),
            )  # mask queries
            terms["fqs"] = out.loss
            diagnostics["fqs_gap"] = out.gap.detach()
            diagnostics["fqs_fidelity"] = out.fidelity.detach().mean()
        total = self.weighting(terms, shared=ctx)
        return Objective(total, terms, diagnostics)
