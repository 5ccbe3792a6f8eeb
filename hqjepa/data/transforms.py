"""Native-resolution bands -> model tensors: resampling, band stacking, per-band normalisation.

Resampling. BigEarthNet keeps every S2 band at its native grid (10 m: 120 px, 20 m: 60 px,
60 m: 20 px). The model sees all 12 bands on the 10 m grid, so 20 m and 60 m bands are upsampled
with bilinear interpolation as `torch.nn.functional.interpolate(mode="bilinear",
align_corners=False, antialias=False)` computes it (pixel-area convention: a 60 px band's pixel
centres sit at 10 m offsets 0.5, 2.5, ... of the 120 px grid; edges are clamped). This is the same
kernel torchgeo's BigEarthNet loader gets from rasterio's bilinear resampling on upsampling, and it
is fast on whole batches. Should a band ever need shrinking (a 256 px scene read at 120 px),
`mode="area"` (exact area averaging) is used instead, since bilinear without antialiasing aliases.

Normalisation. x' = (x - mean_b) / std_b per band b, with the statistics of the stored
native-resolution values (the converter's `_manifest.json`, or `synthetic_band_stats()` for the
synthetic generator).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from hqjepa.bands import REFERENCE_SIZE_PX, S1_BANDS, S2_BANDS

# --- resampling -----------------------------------------------------------------------------------


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    x = np.asarray(x)
    if not x.flags.writeable:  # Arrow / Ray hand out read-only buffers; torch wants writable memory
        x = x.copy()
    return torch.from_numpy(x)


def resample_array(x: np.ndarray | torch.Tensor, size_px: int) -> torch.Tensor:
    """Resample the last two axes of `x` ([..., h, w]) to size_px x size_px as float32.

    Upsampling: bilinear, align_corners=False, antialias=False. Downsampling: area averaging.
    """
    t = _tensor(x).to(torch.float32)
    h, w = t.shape[-2:]
    if (h, w) == (size_px, size_px):
        return t
    lead = t.shape[:-2]
    t4 = t.reshape(-1, 1, h, w)
    if h < size_px and w < size_px:
        out = F.interpolate(t4, size=(size_px, size_px), mode="bilinear", align_corners=False, antialias=False)
    else:
        out = F.interpolate(t4, size=(size_px, size_px), mode="area")
    return out.reshape(*lead, size_px, size_px)


def resample_to(
    bands: Mapping[str, np.ndarray | torch.Tensor], size_px: int = REFERENCE_SIZE_PX
) -> dict[str, np.ndarray]:
    """band -> [..., h, w] arrays at any grid -> band -> float32 [..., size_px, size_px] arrays.

    Bands of the same grid are resampled together in one interpolate call.
    """
    out: dict[str, np.ndarray] = {}
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name, arr in bands.items():
        by_shape.setdefault(tuple(np.shape(arr)), []).append(name)
    for names in by_shape.values():
        stacked = torch.stack([_tensor(bands[n]) for n in names], dim=-3)
        res = resample_array(stacked, size_px).numpy()
        for i, n in enumerate(names):
            out[n] = res[..., i, :, :]
    return out


# --- normalisation --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BandStats:
    """Per-band mean and standard deviation of stored values (S2: reflectance x 1e4, S1: dB)."""

    mean: Mapping[str, float]
    std: Mapping[str, float]

    def vectors(self, bands: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) as float32 vectors in the order of `bands`."""
        missing = [b for b in bands if b not in self.mean or b not in self.std]
        if missing:
            raise KeyError(f"band statistics lack {missing}; they cover {sorted(self.mean)}")
        std = np.array([self.std[b] for b in bands], np.float32)
        if np.any(~np.isfinite(std)) or np.any(std <= 0):
            raise ValueError(
                f"band standard deviations must be positive and finite: {dict(zip(bands, std, strict=True))}"
            )
        return np.array([self.mean[b] for b in bands], np.float32), std

    def to_dict(self) -> dict[str, dict[str, float]]:
        """{band: {mean, std}} as plain floats (the manifest's form)."""
        return {b: {"mean": float(self.mean[b]), "std": float(self.std[b])} for b in self.mean}

    @classmethod
    def from_dict(cls, d: Mapping[str, Mapping[str, float]]) -> BandStats:
        """Inverse of `to_dict`."""
        return cls(mean={b: float(v["mean"]) for b, v in d.items()}, std={b: float(v["std"]) for b, v in d.items()})


def normalise(x: np.ndarray | torch.Tensor, bands: Sequence[str], stats: BandStats) -> torch.Tensor:
    """(x - mean_b) / std_b over the band axis -3 of x ([..., C, H, W]); float32 tensor."""
    mean, std = stats.vectors(bands)
    t = _tensor(x).to(torch.float32)
    if t.shape[-3] != len(bands):
        raise ValueError(f"array has {t.shape[-3]} bands on axis -3; expected {len(bands)} ({list(bands)})")
    return (t - torch.from_numpy(mean)[:, None, None]) / torch.from_numpy(std)[:, None, None]


def stack_s2(
    bands: Mapping[str, np.ndarray | torch.Tensor],
    size_px: int = REFERENCE_SIZE_PX,
    stats: BandStats | None = None,
    order: Sequence[str] = S2_BANDS,
) -> torch.Tensor:
    """S2 bands at native grids -> float32 [..., 12, size_px, size_px] in S2_BANDS order.

    20 m / 60 m bands are upsampled (module docstring); normalised when `stats` is given.
    """
    missing = [b for b in order if b not in bands]
    if missing:
        raise KeyError(f"S2 bands missing: {missing}")
    res = resample_to({b: bands[b] for b in order}, size_px)
    x = torch.from_numpy(np.stack([res[b] for b in order], axis=-3))
    return normalise(x, order, stats) if stats is not None else x


def stack_s1(
    bands: Mapping[str, np.ndarray | torch.Tensor],
    size_px: int = REFERENCE_SIZE_PX,
    stats: BandStats | None = None,
    order: Sequence[str] = S1_BANDS,
) -> torch.Tensor:
    """S1 bands (dB) -> float32 [..., 2, size_px, size_px] in S1_BANDS order, normalised if `stats`."""
    missing = [b for b in order if b not in bands]
    if missing:
        raise KeyError(f"S1 bands missing: {missing}")
    res = resample_to({b: bands[b] for b in order}, size_px)
    x = torch.from_numpy(np.stack([res[b] for b in order], axis=-3))
    return normalise(x, order, stats) if stats is not None else x


# --- statistics of the synthetic generator ----------------------------------------------------------

SYNTHETIC_STATS_SCENES = 256
SYNTHETIC_STATS_SEED = 8_675_309


@lru_cache(maxsize=8)
def synthetic_band_stats(size_px: int = REFERENCE_SIZE_PX, max_classes: int = 6) -> BandStats:
    """Per-band mean/std of the synthetic generator, over its native-resolution values.

    Computed once per process (cached) from SYNTHETIC_STATS_SCENES scenes drawn with the fixed seed
    SYNTHETIC_STATS_SEED, in float64, so every run and every worker normalise the same way
    (~1 s on one core). Like the manifest statistics of real shards, S2 is in reflectance x 1e4
    and S1 in dB.
    """
    from hqjepa.data.synthetic import render_batch  # local: keep `transforms` importable on its own

    batch = render_batch(np.random.default_rng(SYNTHETIC_STATS_SEED), SYNTHETIC_STATS_SCENES, size_px, max_classes)
    mean, std = {}, {}
    for band, arr in list(batch.s2.items()) + list(batch.s1.items()):
        a = arr.astype(np.float64)
        mean[band], std[band] = float(a.mean()), float(a.std())
    return BandStats(mean=mean, std=std)
