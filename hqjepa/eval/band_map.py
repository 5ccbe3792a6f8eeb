"""Map a GeoBench task's bands, by name, onto the encoder's Sentinel-2 bands.

GeoBench names Sentinel-2 bands by number and description (`geobench.sentinel2_13_bands`):
"01 - Coastal aerosol", "02 - Blue", ..., "08 - NIR", "08A - Vegetation Red Edge",
"09 - Water vapour", "10 - SWIR - Cirrus", "11 - SWIR", "12 - SWIR". A band whose band-info class is
`Sentinel2` and whose name starts with "NN - " / "NNA - " is the S2 band BNN / BNNA (08A -> B8A).
Only the band-info class decides that a band is optical: m-so2sat's Sentinel-1 components are also
numbered ("01 - VH.Real", ..., "08 - VV.LEE Filtered.Imaginary") and must never become B01..B08.

Per task (GeoBench v1.0, from geobench's dataset converters):
- m-bigearthnet: B01..B09, B8A, B11, B12 (no B10) -> all 12 present.
- m-eurosat, m-brick-kiln: all 13 S2 bands -> B10 (cirrus) dropped.
- m-so2sat: 8 S1 components + B02..B08, B8A, B11, B12 -> S1 dropped; B01 and B09 missing.
- m-SA-crop-type, m-cashew-plant: 12 S2 bands + "Cloud Probability" -> cloud band dropped.

Fill rule for missing bands: after per-band standardisation x' = (x - mean_b) / std_b with the
task's `band_stats.json`, a missing band is all zeros, i.e. the band's mean. It carries no signal,
is identical for every sample, and keeps the input in the distribution the encoder expects
(the alternative, copying a spectral neighbour, would invent a correlation that is not there).
A task missing more than `max_missing` of the encoder's bands is refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from hqjepa.eval.safe_pickle import GeoBenchFormatError, Sentinel2

_S2_NAME = re.compile(r"^(\d{2})(A?)\s*-")


def s2_band_of(band_info: object) -> str | None:
    """The S2 band name (B01..B12, B8A) of a GeoBench band-info, or None if it is not an S2 band."""
    if not isinstance(band_info, Sentinel2):
        return None
    m = _S2_NAME.match(getattr(band_info, "name", "") or "")
    if not m:
        return None
    number, suffix = int(m.group(1)), m.group(2)
    return "B8A" if (number, suffix) == (8, "A") else f"B{number:02d}"


@dataclass(frozen=True)
class BandMapping:
    """Where each encoder band comes from in a task.

    source: encoder band -> GeoBench band name, or None when the task lacks it (filled, see module doc).
    dropped: GeoBench bands the encoder does not take (B10, cloud probability, S1 components).
    """

    target: tuple[str, ...]
    source: dict[str, str | None]
    dropped: tuple[str, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """Encoder bands the task lacks (source None), in encoder order."""
        return tuple(b for b in self.target if self.source[b] is None)


def map_bands(task: str, bands_info: Sequence[object], target: Sequence[str], max_missing: int = 2) -> BandMapping:
    """Match a task's band-info list to the encoder's band names (`target`, e.g. cfg.model.s2_bands)."""
    by_s2: dict[str, str] = {}
    dropped = []
    for info in bands_info:
        s2 = s2_band_of(info)
        if s2 is not None and s2 in target and s2 not in by_s2:
            by_s2[s2] = info.name
        else:
            dropped.append(info.name)
    source = {b: by_s2.get(b) for b in target}
    mapping = BandMapping(tuple(target), source, tuple(dropped))
    if len(mapping.missing) > max_missing:
        raise GeoBenchFormatError(
            f"{task}: provides {len(target) - len(mapping.missing)} of the encoder's {len(target)} "
            f"bands; missing {', '.join(mapping.missing)} (more than max_missing_bands={max_missing}); "
            f"task bands: {', '.join(getattr(i, 'name', '?') for i in bands_info)}"
        )
    return mapping
