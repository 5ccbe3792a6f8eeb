"""Sentinel band names and native resolutions, the vocabulary every module shares.

BigEarthNet S2 patches keep the 12 L2A bands (B10, the cirrus band, is dropped by L2A) at their
native ground sampling: 10 m bands are 120 x 120 px, 20 m bands 60 x 60 px, 60 m bands 20 x 20 px
over the same 1.2 km x 1.2 km footprint. S1 patches hold VV and VH backscatter in dB at 120 x 120 px.
"""

from __future__ import annotations

S2_BANDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B11",
    "B12",
)
S1_BANDS: tuple[str, ...] = ("VV", "VH")

S2_RESOLUTION_M: dict[str, int] = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B11": 20,
    "B12": 20,
}
S1_RESOLUTION_M: dict[str, int] = {"VV": 10, "VH": 10}

PATCH_FOOTPRINT_M = 1200  # one BigEarthNet patch is 1.2 km on a side
REFERENCE_RESOLUTION_M = 10
REFERENCE_SIZE_PX = PATCH_FOOTPRINT_M // REFERENCE_RESOLUTION_M  # 120


def resolution_m(band: str) -> int:
    """Ground sampling distance of a band in metres."""
    if band in S2_RESOLUTION_M:
        return S2_RESOLUTION_M[band]
    if band in S1_RESOLUTION_M:
        return S1_RESOLUTION_M[band]
    raise KeyError(f"unknown band {band!r}; known: {S2_BANDS + S1_BANDS}")


def native_size_px(band: str) -> int:
    """Side length in pixels of a BigEarthNet patch of this band (120, 60 or 20)."""
    return PATCH_FOOTPRINT_M // resolution_m(band)
