"""Nomenclatures, the synthetic scene generator, resampling/normalisation and the batch collate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hqjepa.bands import S1_BANDS, S2_BANDS, native_size_px
from hqjepa.config import MaskConfig
from hqjepa.data import labels as L
from hqjepa.data.collate import MaskCollator, collate
from hqjepa.data.dataset import SyntheticPairs
from hqjepa.data.synthetic import area_average, render_batch, render_scene
from hqjepa.data.transforms import BandStats, normalise, resample_to, stack_s1, stack_s2

# --- labels ---------------------------------------------------------------------------------------


def test_nomenclatures_and_official_conversion():
    assert len(L.LABELS43) == 43 and len(set(L.LABELS43)) == 43
    assert len(L.LABELS19) == 19 and len(set(L.LABELS19)) == 19
    unmapped = sorted(n for n, v in L.CONVERSION_43_TO_19.items() if v is None)
    assert unmapped == sorted(
        [
            "Road and rail networks and associated land",
            "Port areas",
            "Airports",
            "Mineral extraction sites",
            "Dump sites",
            "Construction sites",
            "Green urban areas",
            "Sport and leisure facilities",
            "Bare rock",
            "Burnt areas",
            "Intertidal flats",
        ]
    )
    assert set(v for v in L.CONVERSION_43_TO_19.values() if v) == set(L.LABELS19)
    assert L.labels43_to_19(["Sea and ocean", "Estuaries", "Airports", "Continuous urban fabric"]) == [
        "Urban fabric",
        "Marine waters",
    ]
    assert L.labels43_to_19(["Bare rock"]) == []
    assert L.CLC_CODES43[L.LABELS43.index("Sea and ocean")] == 523


def test_multi_hot_roundtrip_and_unknown_names():
    names = ["Pastures", "Mixed forest", "Marine waters"]
    v = L.to_multi_hot(names, 19)
    assert v.dtype == np.uint8 and v.sum() == 3
    assert L.from_multi_hot(v, 19) == ["Pastures", "Mixed forest", "Marine waters"]
    v43 = L.to_multi_hot(["Peatbogs"], 43)
    assert v43.shape == (43,) and v43[L.LABELS43.index("Peatbogs")] == 1
    with pytest.raises(L.UnknownLabelError, match="Peat bogs"):
        L.to_multi_hot(["Peat bogs"], 43)
    with pytest.raises(L.UnknownLabelError):
        L.labels43_to_19(["Urban fabric"])  # a 19-class name is not a 43-class name


# --- generator ------------------------------------------------------------------------------------


def test_scene_shapes_dtypes_and_labels():
    batch = render_batch(np.random.default_rng(1), 24)
    assert batch.landcover.shape == (24, 120, 120) and batch.landcover.dtype == np.uint8
    for b in S2_BANDS:
        n = native_size_px(b)
        assert batch.s2[b].shape == (24, n, n) and batch.s2[b].dtype == np.uint16
        assert batch.s2[b].min() >= 1
    for b in S1_BANDS:
        assert batch.s1[b].shape == (24, 120, 120) and batch.s1[b].dtype == np.float32
        assert np.isfinite(batch.s1[b]).all()
    # labels are exactly the classes covering more than 1 % of the map
    for i in range(24):
        frac = np.bincount(batch.landcover[i].ravel(), minlength=43) / 120**2
        assert set(np.flatnonzero(batch.labels43[i])) == set(np.flatnonzero(frac > 0.01))
        s = batch.scene(i)
        assert s.labels19 == L.labels43_to_19(s.labels43)
    assert (batch.labels43.sum(1) >= 1).all()


def test_generator_is_deterministic_and_supports_other_sizes_and_class_subsets():
    a = render_scene(np.random.default_rng(7))
    b = render_scene(np.random.default_rng(7))
    assert np.array_equal(a.landcover, b.landcover) and np.array_equal(a.s2["B05"], b.s2["B05"])
    for size in (32, 64, 256):
        s = render_scene(np.random.default_rng(size), size_px=size)
        assert s.landcover.shape == (size, size)
        assert s.s2["B02"].shape == (size, size) and s.s2["B05"].shape == (size // 2, size // 2)
        assert s.s1["VV"].shape == (size, size)
    water = ["Water bodies", "Sea and ocean"]
    s = render_batch(np.random.default_rng(0), 8, 64, classes=water)
    assert set(np.unique(s.landcover)) <= {L.LABELS43.index(n) for n in water}


def test_spectra_and_backscatter_follow_the_shared_land_cover():
    rng = np.random.default_rng(3)
    forest = L.LABELS43.index("Broad-leaved forest")
    water = L.LABELS43.index("Water bodies")
    urban = L.LABELS43.index("Continuous urban fabric")
    batch = render_batch(rng, 12, classes=[forest, water, urban], min_classes=3, max_classes=3)
    lc = batch.landcover
    red, nir, swir = (batch.s2[b].astype(float) for b in ("B04", "B08", "B11"))
    vv = batch.s1["VV"]
    # vegetation: red edge / NIR plateau; water: dark in NIR and SWIR; urban: bright and flat
    assert np.median(nir[lc == forest]) > 4 * np.median(red[lc == forest])
    assert np.median(nir[lc == water]) < np.median(red[lc == water]) < 600
    lc20 = lc[:, ::2, ::2]  # B11 is a 20 m band (60 px)
    assert np.median(swir[lc20 == water]) < 200 < np.median(swir[lc20 == urban])
    assert 0.7 < np.median(nir[lc == urban]) / np.median(red[lc == urban]) < 2.0
    # S1 from the same map: open water is the darkest, built-up the brightest backscatter
    assert np.median(vv[lc == water]) < np.median(vv[lc == forest]) - 8 < np.median(vv[lc == urban]) - 8
    # multiplicative speckle: within one class the linear-power coefficient of variation ~ 1/sqrt(L)
    power = 10 ** (vv[lc == water] / 10)
    assert 0.35 < power.std() / power.mean() < 0.8


def _single_class(name: str, n: int = 6, size: int = 120) -> np.ndarray:
    """B04 (10 m red: vegetation dark, soil and roofs bright) of n scenes covered by one class."""
    batch = render_batch(np.random.default_rng(11), n, size, classes=[name], max_classes=1)
    assert (batch.landcover == L.LABELS43.index(name)).all()
    return batch.s2["B04"].astype(float)


def _band_power(img: np.ndarray, lo_px: float, hi_px: float) -> float:
    """Share of the (mean-removed) spectral power at periods between lo_px and hi_px."""
    x = img - img.mean(axis=(-2, -1), keepdims=True)
    p = np.abs(np.fft.fft2(x)) ** 2
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(img.shape[-2]), np.fft.fftfreq(img.shape[-1]), indexing="ij"))
    band = (f >= 1 / hi_px) & (f <= 1 / lo_px)
    return float(p[..., band].sum() / p.sum())


def test_classes_sharing_a_spectrum_differ_in_texture():
    """Water is smooth, pasture nearly so, arable land a patchwork of parcels; orchard rows put
    their power at periods of 3-5 px; dense urban blocks (3 px) decorrelate faster than industrial
    halls (7 px), although both classes share the 'urban' archetype spectrum."""
    std = {
        n: float(_single_class(n).std(axis=(-2, -1)).mean())
        for n in ("Water bodies", "Pastures", "Non-irrigated arable land")
    }
    assert max(std["Water bodies"], std["Pastures"]) < 0.25 * std["Non-irrigated arable land"]
    assert _band_power(_single_class("Vineyards"), 2.8, 5.5) > 0.5 > _band_power(_single_class("Pastures"), 2.8, 5.5)

    def lag_corr(img: np.ndarray, lag: int) -> float:
        a = img - img.mean(axis=(-2, -1), keepdims=True)
        return float((a[..., :, lag:] * a[..., :, :-lag]).sum() / (a * a).sum())

    dense, industrial = _single_class("Continuous urban fabric"), _single_class("Industrial or commercial units")
    assert lag_corr(dense, 4) + 0.1 < lag_corr(industrial, 4)


def test_area_average_is_exact_for_integer_and_fractional_factors():
    x = np.random.default_rng(0).random((3, 12, 12)).astype(np.float32)
    assert np.allclose(area_average(x, 6), x.reshape(3, 6, 2, 6, 2).mean(axis=(2, 4)))
    y = area_average(x, 5)
    assert y.shape == (3, 5, 5) and np.allclose(y.mean(axis=(1, 2)), x.mean(axis=(1, 2)), atol=1e-5)


# --- transforms -----------------------------------------------------------------------------------


def test_resampling_is_torch_bilinear_without_antialias():
    rng = np.random.default_rng(0)
    bands = {
        "B05": rng.random((2, 60, 60)).astype(np.float32),
        "B01": rng.random((2, 20, 20)).astype(np.float32),
        "B02": rng.random((2, 120, 120)).astype(np.float32),
    }
    out = resample_to(bands, 120)
    ref = F.interpolate(
        torch.from_numpy(bands["B05"])[:, None], size=(120, 120), mode="bilinear", align_corners=False, antialias=False
    )[:, 0].numpy()
    assert np.allclose(out["B05"], ref) and out["B01"].shape == (2, 120, 120)
    assert np.array_equal(out["B02"], bands["B02"])
    const = resample_to({"B09": np.full((20, 20), 7, np.uint16)}, 120)["B09"]
    assert const.dtype == np.float32 and np.all(const == 7)


def test_stack_and_normalise_in_band_order():
    scene = render_scene(np.random.default_rng(5))
    x = stack_s2(scene.s2)
    assert x.shape == (12, 120, 120) and x.dtype == torch.float32
    assert torch.equal(x[S2_BANDS.index("B08")], torch.from_numpy(scene.s2["B08"].astype(np.float32)))
    stats = BandStats(mean={b: 1000.0 for b in S2_BANDS}, std={b: 500.0 for b in S2_BANDS})
    xn = stack_s2(scene.s2, stats=stats)
    assert torch.allclose(xn, (x - 1000) / 500)
    s1 = stack_s1(scene.s1)
    assert s1.shape == (2, 120, 120) and torch.equal(s1[1], torch.from_numpy(scene.s1["VH"]))
    with pytest.raises(ValueError, match="positive"):
        normalise(x, S2_BANDS, BandStats(mean=stats.mean, std={**stats.std, "B01": 0.0}))
    with pytest.raises(KeyError, match="B8A"):
        stack_s2({b: a for b, a in scene.s2.items() if b != "B8A"})


# --- dataset and collate --------------------------------------------------------------------------


def test_synthetic_pairs_and_collate_give_the_training_batch_contract():
    ds = SyntheticPairs(40, seed=1)
    item = ds[3]
    assert item["s2"].shape == (12, 120, 120) and item["s1"].shape == (2, 120, 120)
    many = ds.__getitems__([3, 5])
    assert torch.allclose(many["s2"][0], item["s2"]) and torch.equal(many["labels19"][0], item["labels19"])
    # normalised with the generator's statistics: roughly zero mean, unit variance per band
    all_s2 = ds.__getitems__(list(range(40)))["s2"]
    assert all_s2.mean(dim=(0, 2, 3)).abs().max() < 0.5
    assert ((all_s2.std(dim=(0, 2, 3)) - 1).abs() < 0.5).all()

    cfg = MaskConfig()
    loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=MaskCollator(cfg, grid=12, seed=0))
    batch = next(iter(loader))
    assert batch["s2"].shape == (8, 12, 120, 120) and batch["s1"].shape == (8, 2, 120, 120)
    assert batch["labels19"].shape == (8, 19) and batch["labels19"].dtype == torch.float32
    assert batch["ctx_idx"].dtype == torch.int64 and batch["ctx_valid"].dtype == torch.bool
    assert batch["tgt_idx"].shape[:2] == (8, cfg.num_targets) and batch["tgt_valid"].dtype == torch.bool
    for i in range(8):  # context and targets never overlap
        ctx = set(batch["ctx_idx"][i][batch["ctx_valid"][i]].tolist())
        tgt = set(batch["tgt_idx"][i][batch["tgt_valid"][i]].tolist())
        assert ctx and tgt and not ctx & tgt and max(ctx | tgt) < 144
    # a list of examples collates to the same tensors as the batched fetch
    listed = collate([ds[i] for i in range(4)], cfg, 12, np.random.default_rng(0))
    assert torch.allclose(listed["s2"], ds.__getitems__(range(4))["s2"])
    with pytest.raises(ValueError, match="grid"):
        collate([ds[0]], cfg, 7, 0)
