"""Synthetic Sentinel-1/Sentinel-2 scenes drawn from a latent land-cover map.

No BigEarthNet archive can be downloaded here, so pretraining, the converter and the GeoBench tasks
run on scenes this module draws. One scene is:

1. a land-cover map: `k` classes of the 43-class CORINE nomenclature (`labels.LABELS43`), each
   owning the pixels where its smoothed Gaussian random field is the largest,
       c(x) = argmax_j (f_j * g_l)(x) + b_j,
   with `g_l` a Gaussian kernel of a per-scene correlation length `l` (so regions are spatially
   coherent blobs of a scene-specific size) and `b_j` a per-class bias (some classes dominate);
2. Sentinel-2 L2A bottom-of-atmosphere reflectance: each class has a spectral signature over
   B01..B12 (water dark in NIR/SWIR, vegetation with a red edge and a high NIR plateau, urban bright
   and flat, bare soil rising to SWIR), mixed by the class's own spatial pattern with a partner
   surface (built blocks and streets, field parcels at different growth stages, orchard rows on
   bare soil, canopy grain and shadow, a road grid, marsh pools: `_CLASS_TEXTURE`), then modulated
   by a smooth texture and a per-scene illumination factor; rendered at 10 m, area-averaged to
   each band's native grid (20 m: 2x2, 60 m: 6x6 pixels), plus sensor noise, scaled by 10000 and
   stored as uint16 like L2A;
3. Sentinel-1 GRD backscatter: per-class sigma0 in dB for VV and VH, mixed with the partner's by
   the same pattern, plus a smooth texture, turned into linear power, multiplied by speckle
   ~ Gamma(L, 1/L) with L = 4.4 looks (the equivalent number of looks of IW GRDH), and converted
   back to dB (float32, 10 m grid);
4. the multi-label set: a class is a label when it covers more than `min_fraction` of the scene;
   the 19-class labels follow from the official 43 -> 19 conversion.

S1 and S2 of a pair come from the same land-cover map, so there is cross-modal structure to learn.
Everything is vectorised over scenes (numpy FFTs in chunks); ~1000 scenes at 120 px take seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from hqjepa.bands import REFERENCE_RESOLUTION_M, S1_BANDS, S2_BANDS, resolution_m
from hqjepa.data.labels import INDEX_43_TO_19, LABELS19, LABELS43, label_index

# --- spectral world -------------------------------------------------------------------------------
# Archetype reflectances over S2_BANDS (B01 B02 B03 B04 B05 B06 B07 B08 B8A B09 B11 B12) and
# S1 sigma0 (VV, VH) in dB. Values follow typical published spectra (e.g. the USGS spectral
# library shapes) at the precision a synthetic benchmark needs.
_ARCHETYPES: dict[str, tuple[tuple[float, ...], tuple[float, float]]] = {
    "urban": ((0.10, 0.10, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.16, 0.15, 0.18, 0.16), (-4.0, -11.0)),
    "suburban": ((0.07, 0.07, 0.09, 0.09, 0.12, 0.18, 0.21, 0.23, 0.24, 0.22, 0.20, 0.14), (-7.0, -14.0)),
    "bare_bright": ((0.11, 0.12, 0.15, 0.19, 0.22, 0.24, 0.25, 0.26, 0.27, 0.26, 0.33, 0.28), (-10.0, -19.0)),
    "park": ((0.04, 0.04, 0.07, 0.05, 0.11, 0.26, 0.32, 0.35, 0.36, 0.34, 0.22, 0.11), (-10.5, -17.0)),
    "crop": ((0.05, 0.05, 0.08, 0.07, 0.12, 0.24, 0.29, 0.31, 0.32, 0.30, 0.24, 0.14), (-10.0, -17.0)),
    "rice": ((0.04, 0.04, 0.06, 0.05, 0.08, 0.16, 0.19, 0.20, 0.21, 0.19, 0.12, 0.07), (-14.0, -22.0)),
    "orchard": ((0.05, 0.05, 0.07, 0.07, 0.11, 0.20, 0.24, 0.26, 0.27, 0.25, 0.23, 0.14), (-9.0, -15.0)),
    "grass": ((0.04, 0.04, 0.07, 0.05, 0.11, 0.25, 0.31, 0.33, 0.34, 0.32, 0.23, 0.12), (-11.0, -18.0)),
    "broadleaf": ((0.03, 0.03, 0.05, 0.03, 0.08, 0.25, 0.33, 0.36, 0.37, 0.35, 0.18, 0.08), (-7.5, -13.0)),
    "conifer": ((0.02, 0.02, 0.035, 0.02, 0.05, 0.14, 0.19, 0.21, 0.22, 0.21, 0.10, 0.045), (-8.0, -13.5)),
    "mixed": ((0.025, 0.025, 0.043, 0.025, 0.065, 0.20, 0.26, 0.285, 0.295, 0.28, 0.14, 0.062), (-7.7, -13.2)),
    "shrub": ((0.035, 0.035, 0.06, 0.05, 0.09, 0.18, 0.22, 0.24, 0.25, 0.23, 0.20, 0.11), (-9.0, -15.5)),
    "sand": ((0.15, 0.18, 0.24, 0.30, 0.33, 0.35, 0.37, 0.38, 0.39, 0.38, 0.45, 0.40), (-17.0, -26.0)),
    "rock": ((0.12, 0.13, 0.16, 0.19, 0.21, 0.22, 0.23, 0.24, 0.24, 0.23, 0.28, 0.24), (-8.0, -16.0)),
    "sparse": ((0.08, 0.09, 0.12, 0.14, 0.17, 0.21, 0.24, 0.25, 0.26, 0.25, 0.28, 0.21), (-11.0, -19.0)),
    "burnt": ((0.04, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.10, 0.10, 0.10, 0.16, 0.14), (-12.0, -19.5)),
    "marsh": ((0.04, 0.04, 0.06, 0.045, 0.08, 0.16, 0.20, 0.21, 0.22, 0.20, 0.12, 0.06), (-10.0, -17.0)),
    "salines": ((0.20, 0.22, 0.25, 0.27, 0.27, 0.26, 0.25, 0.24, 0.24, 0.22, 0.15, 0.10), (-15.0, -24.0)),
    "tidal": ((0.07, 0.07, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08, 0.07, 0.05, 0.03), (-14.0, -23.0)),
    "water": ((0.06, 0.05, 0.045, 0.03, 0.025, 0.018, 0.015, 0.012, 0.011, 0.008, 0.004, 0.003), (-20.0, -27.0)),
    "sea": ((0.07, 0.06, 0.05, 0.025, 0.015, 0.010, 0.008, 0.007, 0.006, 0.004, 0.002, 0.001), (-21.0, -28.0)),
    # partners only (the sub-pixel-scale surfaces that textures mix in): streets/roofs, canopy shadow
    "asphalt": ((0.06, 0.06, 0.07, 0.08, 0.08, 0.09, 0.09, 0.10, 0.10, 0.10, 0.12, 0.11), (-6.0, -14.0)),
    "shadow": ((0.015, 0.015, 0.02, 0.012, 0.025, 0.06, 0.08, 0.09, 0.09, 0.09, 0.04, 0.02), (-12.0, -19.0)),
}

# archetype and prior weight (rough BigEarthNet frequency) of each of the 43 classes, LABELS43 order
_CLASS_ARCHETYPE: tuple[tuple[str, float], ...] = (
    ("urban", 1),
    ("suburban", 3),
    ("urban", 2),
    ("urban", 1),
    ("urban", 0.3),
    ("urban", 0.3),
    ("bare_bright", 0.5),
    ("bare_bright", 0.2),
    ("bare_bright", 0.2),
    ("park", 0.3),
    ("suburban", 0.5),
    ("crop", 6),
    ("crop", 1),
    ("rice", 0.3),
    ("orchard", 0.8),
    ("orchard", 0.8),
    ("orchard", 0.5),
    ("grass", 5),
    ("crop", 0.3),
    ("crop", 4),
    ("crop", 4),
    ("orchard", 0.5),
    ("broadleaf", 4),
    ("conifer", 5),
    ("mixed", 5),
    ("grass", 1.5),
    ("shrub", 1),
    ("shrub", 0.8),
    ("shrub", 4),
    ("sand", 0.3),
    ("rock", 0.3),
    ("sparse", 0.5),
    ("burnt", 0.1),
    ("marsh", 1),
    ("marsh", 1),
    ("marsh", 0.3),
    ("salines", 0.1),
    ("tidal", 0.2),
    ("water", 1),
    ("water", 2),
    ("sea", 0.3),
    ("sea", 0.3),
    ("sea", 2),
)
assert len(_CLASS_ARCHETYPE) == len(LABELS43)

# Spatial texture of each class at 10 m: (pattern, amount, partner). Inside a class region the
# pixel is the mixture (1 - a m(x)) s_class + a m(x) s_partner, with m(x) in [0, 1] the scene's map
# of that pattern (`_texture_maps`). Classes sharing an archetype spectrum differ in texture, as
# they do on the ground: dense urban blocks vs industrial halls vs a road grid, field parcels vs
# orchard rows vs canopy grain.
TEXTURES = ("none", "grain", "patches", "blocks", "large_blocks", "parcels", "small_parcels", "rows", "road_grid")
_CLASS_TEXTURE: tuple[tuple[str, float, str], ...] = (  # LABELS43 order
    ("blocks", 0.5, "asphalt"),  # Continuous urban fabric
    ("blocks", 0.7, "grass"),  # Discontinuous urban fabric
    ("large_blocks", 0.6, "asphalt"),  # Industrial or commercial units
    ("road_grid", 0.8, "grass"),  # Road and rail networks and associated land
    ("large_blocks", 0.6, "water"),  # Port areas
    ("road_grid", 0.9, "grass"),  # Airports
    ("patches", 0.6, "water"),  # Mineral extraction sites
    ("grain", 0.6, "rock"),  # Dump sites
    ("large_blocks", 0.7, "urban"),  # Construction sites
    ("patches", 0.5, "broadleaf"),  # Green urban areas
    ("large_blocks", 0.5, "bare_bright"),  # Sport and leisure facilities
    ("parcels", 0.7, "bare_bright"),  # Non-irrigated arable land
    ("parcels", 0.4, "grass"),  # Permanently irrigated land
    ("parcels", 0.6, "water"),  # Rice fields
    ("rows", 0.7, "bare_bright"),  # Vineyards
    ("rows", 0.5, "grass"),  # Fruit trees and berry plantations
    ("grain", 0.6, "bare_bright"),  # Olive groves
    ("patches", 0.2, "grass"),  # Pastures
    ("parcels", 0.5, "orchard"),  # Annual crops associated with permanent crops
    ("small_parcels", 0.9, "bare_bright"),  # Complex cultivation patterns
    ("patches", 0.6, "shrub"),  # Land principally occupied by agriculture, with natural vegetation
    ("grain", 0.6, "grass"),  # Agro-forestry areas
    ("grain", 0.3, "shadow"),  # Broad-leaved forest
    ("grain", 0.5, "shadow"),  # Coniferous forest
    ("patches", 0.5, "conifer"),  # Mixed forest
    ("patches", 0.25, "shrub"),  # Natural grassland
    ("patches", 0.5, "sparse"),  # Moors and heathland
    ("grain", 0.5, "bare_bright"),  # Sclerophyllous vegetation
    ("patches", 0.6, "broadleaf"),  # Transitional woodland/shrub
    ("rows", 0.3, "sparse"),  # Beaches, dunes, sands
    ("grain", 0.5, "shadow"),  # Bare rock
    ("grain", 0.5, "grass"),  # Sparsely vegetated areas
    ("patches", 0.5, "shrub"),  # Burnt areas
    ("patches", 0.5, "water"),  # Inland marshes
    ("grain", 0.4, "water"),  # Peatbogs
    ("patches", 0.5, "tidal"),  # Salt marshes
    ("small_parcels", 0.8, "water"),  # Salines
    ("patches", 0.6, "water"),  # Intertidal flats
    ("none", 0.0, "water"),  # Water courses
    ("none", 0.0, "water"),  # Water bodies
    ("patches", 0.2, "tidal"),  # Coastal lagoons
    ("patches", 0.3, "tidal"),  # Estuaries
    ("none", 0.0, "sea"),  # Sea and ocean
)
assert len(_CLASS_TEXTURE) == len(LABELS43)

S1_LOOKS = 4.4  # equivalent number of looks of Sentinel-1 IW GRDH


def _texture_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class texture pattern index [43], amount [43], partner S2 [43, 12] and S1 dB [43, 2]."""
    kind = np.array([TEXTURES.index(k) for k, _, _ in _CLASS_TEXTURE], np.int64)
    amount = np.array([a for _, a, _ in _CLASS_TEXTURE], np.float32)
    s2 = np.array([_ARCHETYPES[p][0] for _, _, p in _CLASS_TEXTURE], np.float32)
    s1 = np.array([_ARCHETYPES[p][1] for _, _, p in _CLASS_TEXTURE], np.float32)
    return kind, amount, s2, s1


TEXTURE_KIND, TEXTURE_AMOUNT, PARTNER_S2, PARTNER_S1_DB = _texture_tables()


def _class_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class S2 signature [43, 12], S1 sigma0 dB [43, 2] and prior [43].

    Classes sharing an archetype get a fixed, seeded perturbation (a smooth spectral tilt and
    +-1 dB) so every one of the 43 classes is spectrally distinct yet plausible.
    """
    rng = np.random.default_rng(20170613)
    s2 = np.empty((len(LABELS43), len(S2_BANDS)), np.float64)
    s1 = np.empty((len(LABELS43), len(S1_BANDS)), np.float64)
    prior = np.empty(len(LABELS43), np.float64)
    pos = np.linspace(-1.0, 1.0, len(S2_BANDS))
    for i, (arch, weight) in enumerate(_CLASS_ARCHETYPE):
        refl, sigma0 = _ARCHETYPES[arch]
        tilt = 1.0 + rng.uniform(-0.08, 0.08) + rng.uniform(-0.06, 0.06) * pos
        s2[i] = np.asarray(refl) * tilt
        s1[i] = np.asarray(sigma0) + rng.uniform(-1.0, 1.0, size=2)
        prior[i] = weight
    return s2, s1, prior / prior.sum()


S2_SIGNATURES, S1_SIGMA0_DB, CLASS_PRIOR = _class_tables()


# --- containers -----------------------------------------------------------------------------------


@dataclass
class Scene:
    """One synthetic S1/S2 pair.

    landcover: [size, size] uint8, index into `labels.LABELS43` (10 m grid).
    s2: band name -> uint16 reflectance x 10000 at the band's native resolution.
    s1: band name (VV, VH) -> float32 backscatter in dB on the 10 m grid.
    """

    landcover: np.ndarray
    s2: dict[str, np.ndarray]
    s1: dict[str, np.ndarray]
    labels43: list[str]
    labels19: list[str]


@dataclass
class SceneBatch:
    """Many scenes as arrays: the fast path for training data and archive writing."""

    landcover: np.ndarray  # [n, S, S] uint8
    s2: dict[str, np.ndarray]  # band -> [n, h, w] uint16 (native grid)
    s1: dict[str, np.ndarray]  # band -> [n, S, S] float32 dB
    labels43: np.ndarray  # [n, 43] uint8 multi-hot
    labels19: np.ndarray  # [n, 19] uint8 multi-hot
    fractions: np.ndarray = field(repr=False)  # [n, 43] float32 area fraction of each class

    def __len__(self) -> int:
        return self.landcover.shape[0]

    def scene(self, i: int) -> Scene:
        """Scene `i` of the batch as a `Scene` (arrays of that scene, labels by name)."""
        return Scene(
            landcover=self.landcover[i],
            s2={b: a[i] for b, a in self.s2.items()},
            s1={b: a[i] for b, a in self.s1.items()},
            labels43=[LABELS43[j] for j in np.flatnonzero(self.labels43[i])],
            labels19=[LABELS19[j] for j in np.flatnonzero(self.labels19[i])],
        )


# --- helpers --------------------------------------------------------------------------------------


def native_size(band: str, size_px: int) -> int:
    """Side in px of `band` for a scene that is `size_px` at 10 m (120 -> 120/60/20)."""
    return max(1, int(round(size_px * REFERENCE_RESOLUTION_M / resolution_m(band))))


def _smooth_fields(rng: np.random.Generator, n: int, k: int, size: int, corr_px: np.ndarray) -> np.ndarray:
    """[n, k, size, size] Gaussian random fields, unit variance, correlation length corr_px[n].

    White noise is low-pass filtered in the Fourier domain with exp(-2 pi^2 l^2 |f|^2) (a Gaussian
    kernel of std l pixels); the grid is padded by half its size so the periodic wrap-around of the
    FFT does not join opposite edges of the scene.
    """
    pad = size + size // 2
    noise = rng.standard_normal((n, k, pad, pad), dtype=np.float32)
    fy = np.fft.fftfreq(pad).astype(np.float32)
    fx = np.fft.rfftfreq(pad).astype(np.float32)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    kernel = np.exp(-2.0 * np.pi**2 * (corr_px.astype(np.float32) ** 2)[:, None, None, None] * f2)
    fields = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(pad, pad))[..., :size, :size]
    fields -= fields.mean(axis=(-2, -1), keepdims=True)
    fields /= fields.std(axis=(-2, -1), keepdims=True) + 1e-12
    return fields.astype(np.float32, copy=False)


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] linear interpolation matrix (pixel centres, edges clamped)."""
    x = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    x = np.clip(x, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    w = np.zeros((n_out, n_in), np.float32)
    np.add.at(w, (np.arange(n_out), lo), 1.0 - (x - lo))
    np.add.at(w, (np.arange(n_out), hi), x - lo)
    return w


def _coarse_fields(rng: np.random.Generator, n: int, k: int, size: int, corr_px: np.ndarray) -> np.ndarray:
    """Like `_smooth_fields`, drawn on a 4x coarser grid and interpolated linearly to `size`.

    The land-cover fields have correlation lengths of at least size/14 px, so a 4x coarser grid
    keeps their shape and makes the FFTs 16x cheaper.
    """
    coarse = max(4, -(-size // 4))
    f = _smooth_fields(rng, n, k, coarse, corr_px * coarse / size)
    w = _linear_weights(coarse, size)
    return np.einsum("oi,...ij,pj->...op", w, f, w, optimize=True).astype(np.float32, copy=False)


def _blocks(rng: np.random.Generator, n: int, size: int, side: int, binary: bool) -> np.ndarray:
    """[n, size, size] piecewise-constant cells of `side` px on a randomly shifted grid.

    binary: cells are 0/1 (built / open) with probability 1/2, else uniform in [0, 1] (a field's
    growth stage).
    """
    cells = -(-size // side) + 1
    grid = rng.random((n, cells, cells), dtype=np.float32)
    if binary:
        grid = (grid < 0.5).astype(np.float32)
    off = rng.integers(0, side, size=(n, 2))
    iy = (np.arange(size)[None, :] + off[:, :1]) // side  # [n, size]
    ix = (np.arange(size)[None, :] + off[:, 1:]) // side
    return grid[np.arange(n)[:, None, None], iy[:, :, None], ix[:, None, :]]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _texture_maps(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """[n, len(TEXTURES), size, size] maps m(x) in [0, 1] of each texture pattern.

    grain: canopy gaps / stones, sigmoid(2 z) of a field with a 0.7 px correlation length;
    patches: sigmoid(3 z) at 2.5 px (wet / dry, shrub / open); blocks: 3 px built / open cells;
    large_blocks: 7 px; parcels: 12 px fields at uniform growth stages; small_parcels: 6 px;
    rows: 0.5 + 0.5 sin(2 pi u / P + phi) along a scene-specific direction, P in [3, 5] px;
    road_grid: 0 on 1 px lines every 15-25 px in two directions, 1 between them.
    """
    maps = np.zeros((n, len(TEXTURES), size, size), np.float32)
    at = {name: i for i, name in enumerate(TEXTURES)}
    maps[:, at["grain"]] = _sigmoid(2.0 * _smooth_fields(rng, n, 1, size, np.full(n, 0.7))[:, 0])
    maps[:, at["patches"]] = _sigmoid(3.0 * _smooth_fields(rng, n, 1, size, np.full(n, 2.5))[:, 0])
    maps[:, at["blocks"]] = _blocks(rng, n, size, 3, binary=True)
    maps[:, at["large_blocks"]] = _blocks(rng, n, size, 7, binary=True)
    maps[:, at["parcels"]] = _blocks(rng, n, size, 12, binary=False)
    maps[:, at["small_parcels"]] = _blocks(rng, n, size, 6, binary=False)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta = rng.uniform(0.0, np.pi, size=(n, 1, 1)).astype(np.float32)
    u = xx * np.cos(theta) + yy * np.sin(theta)  # [n, S, S]
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    period = rng.uniform(3.0, 5.0, size=(n, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, 1))
    maps[:, at["rows"]] = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase)
    spacing = rng.uniform(15.0, 25.0, size=(n, 1, 1)).astype(np.float32)
    on_road = (np.mod(u, spacing) < 1.0) | (np.mod(v, spacing * 1.3) < 1.0)
    maps[:, at["road_grid"]] = 1.0 - on_road
    return maps


def _area_weights(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of overlap fractions: exact area averaging for any size ratio."""
    edges_in = np.arange(n_in + 1) / n_in
    edges_out = np.arange(n_out + 1) / n_out
    lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
    hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
    w = np.clip(hi - lo, 0.0, None)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def area_average(x: np.ndarray, out_size: int) -> np.ndarray:
    """Area-average the last two axes of `x` (square) to out_size x out_size."""
    size = x.shape[-1]
    if out_size == size:
        return x
    if size % out_size == 0:
        f = size // out_size
        return x.reshape(*x.shape[:-2], out_size, f, out_size, f).mean(axis=(-3, -1))
    w = _area_weights(size, out_size)
    return np.einsum("oi,...ij,pj->...op", w, x, w, optimize=True)


def _class_ids(classes: Sequence[str | int] | None) -> np.ndarray:
    if classes is None:
        return np.arange(len(LABELS43))
    ids = [label_index(c, 43) if isinstance(c, str) else int(c) for c in classes]
    if not ids or min(ids) < 0 or max(ids) >= len(LABELS43):
        raise ValueError(f"classes must be names or indices of the 43-class nomenclature, got {classes!r}")
    return np.asarray(sorted(set(ids)))


# --- rendering ------------------------------------------------------------------------------------


def _render_chunk(
    rng: np.random.Generator,
    n: int,
    size: int,
    max_classes: int,
    min_classes: int,
    pool: np.ndarray,
    min_fraction: float,
) -> SceneBatch:
    k_max = min(max_classes, len(pool))
    k_min = min(min_classes, k_max)
    # 1. latent land-cover map
    k = rng.integers(k_min, k_max + 1, size=n)
    p = CLASS_PRIOR[pool] / CLASS_PRIOR[pool].sum()
    # Gumbel top-k: k_max distinct classes per scene drawn with probabilities p
    keys = np.log(p)[None, :] + rng.gumbel(size=(n, len(pool)))
    chosen = pool[np.argsort(-keys, axis=1)[:, :k_max]]  # [n, k_max]
    corr = rng.uniform(size / 14.0, size / 4.0, size=n)  # region scale, px
    fields = _coarse_fields(rng, n, k_max, size, corr)
    fields += rng.normal(0.0, 0.6, size=(n, k_max, 1, 1)).astype(np.float32)  # dominance
    unused = np.arange(k_max)[None, :] >= k[:, None]
    fields[unused] = -np.inf
    slot = fields.argmax(axis=1)  # [n, S, S]
    landcover = np.take_along_axis(chosen, slot.reshape(n, -1), axis=1).reshape(n, size, size)
    landcover = landcover.astype(np.uint8)

    # 2. S2 reflectance on the 10 m grid, then each band's native grid: the class signature mixed
    # with its texture partner by the class's pattern, a smooth texture and the illumination
    maps = _texture_maps(rng, n, size)
    mix = np.take_along_axis(maps, TEXTURE_KIND[landcover][:, None], axis=1)[:, 0]
    mix *= TEXTURE_AMOUNT[landcover]  # [n, S, S]
    del maps
    texture = _smooth_fields(rng, n, 2, size, rng.uniform(1.5, 4.0, size=n))  # [n, 2, S, S]
    illum = rng.uniform(0.85, 1.15, size=(n, 1, 1, 1)).astype(np.float32)
    refl = S2_SIGNATURES.astype(np.float32)[landcover]  # [n, S, S, 12]
    refl += mix[..., None] * (PARTNER_S2[landcover] - refl)
    refl = np.moveaxis(refl, -1, 1) * illum * (1.0 + 0.08 * texture[:, :1])  # [n, 12, S, S]
    s2 = {}
    for c, band in enumerate(S2_BANDS):
        r = area_average(refl[:, c], native_size(band, size))
        r = r + rng.standard_normal(r.shape, dtype=np.float32) * (0.002 + 0.01 * r)
        s2[band] = np.clip(np.rint(r * 10000.0), 1, 65535).astype(np.uint16)

    # 3. S1 backscatter: dB -> linear power x Gamma speckle -> dB
    sigma0_db = S1_SIGMA0_DB.astype(np.float32)[landcover]
    sigma0_db += mix[..., None] * (PARTNER_S1_DB[landcover] - sigma0_db) + 1.0 * texture[:, 1, :, :, None]
    power = np.power(np.float32(10.0), sigma0_db / 10.0)
    speckle = rng.gamma(S1_LOOKS, 1.0 / S1_LOOKS, size=power.shape).astype(np.float32)
    s1_db = 10.0 * np.log10(np.maximum(power * speckle, 1e-10))
    s1 = {band: np.ascontiguousarray(s1_db[..., c], dtype=np.float32) for c, band in enumerate(S1_BANDS)}

    # 4. labels from area fractions
    counts = np.zeros((n, len(LABELS43)), np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), size * size), landcover.reshape(-1)), 1)
    fractions = (counts / float(size * size)).astype(np.float32)
    labels43 = (fractions > min_fraction).astype(np.uint8)
    labels19 = np.zeros((n, len(LABELS19)), np.uint8)
    rows, cols = np.nonzero(labels43)
    mapped = INDEX_43_TO_19[cols]
    keep = mapped >= 0
    labels19[rows[keep], mapped[keep]] = 1
    return SceneBatch(landcover, s2, s1, labels43, labels19, fractions)


def render_batch(
    rng: np.random.Generator,
    n: int,
    size_px: int = 120,
    max_classes: int = 6,
    *,
    min_classes: int = 1,
    classes: Sequence[str | int] | None = None,
    min_fraction: float = 0.01,
    chunk: int = 64,
) -> SceneBatch:
    """Draw `n` scenes of `size_px` x `size_px` at 10 m.

    max_classes / min_classes: land-cover classes per scene (drawn uniformly in that range).
    classes: restrict the land-cover classes (43-class names or indices); default all 43.
    min_fraction: a class is a label when it covers more than this fraction of the scene.
    """
    if n < 0 or size_px < 2 or max_classes < 1:
        raise ValueError(
            f"render_batch(n={n}, size_px={size_px}, max_classes={max_classes}): "
            "need n >= 0, size_px >= 2, max_classes >= 1"
        )
    pool = _class_ids(classes)
    parts = [
        _render_chunk(rng, min(chunk, n - i), size_px, max_classes, min_classes, pool, min_fraction)
        for i in range(0, n, chunk)
    ] or [_render_chunk(rng, 0, size_px, max_classes, min_classes, pool, min_fraction)]
    if len(parts) == 1:
        return parts[0]
    return SceneBatch(
        landcover=np.concatenate([p.landcover for p in parts]),
        s2={b: np.concatenate([p.s2[b] for p in parts]) for b in S2_BANDS},
        s1={b: np.concatenate([p.s1[b] for p in parts]) for b in S1_BANDS},
        labels43=np.concatenate([p.labels43 for p in parts]),
        labels19=np.concatenate([p.labels19 for p in parts]),
        fractions=np.concatenate([p.fractions for p in parts]),
    )


def render_scene(
    rng: np.random.Generator,
    size_px: int = 120,
    max_classes: int = 6,
    *,
    min_classes: int = 1,
    classes: Sequence[str | int] | None = None,
    min_fraction: float = 0.01,
) -> Scene:
    """Draw one scene (see the module docstring for the generative model)."""
    return render_batch(
        rng, 1, size_px, max_classes, min_classes=min_classes, classes=classes, min_fraction=min_fraction
    ).scene(0)
