"""BigEarthNet label nomenclatures: the 43 CORINE level-3 classes and the 19-class nomenclature.

`LABELS43` is the CLC level-3 list exactly as BigEarthNet v1.0 spells it in every
`*_labels_metadata.json` (the order of `original_labels` in BigEarthNet's `label_indices.json`).
`LABELS19` is the 19-class nomenclature of Sumbul et al. (IGARSS 2019), exactly as BigEarthNet v2.0
(reBEN) spells it in `metadata.parquet`'s `labels` column (the order of `BigEarthNet-19_labels`).
`CONVERSION_43_TO_19` is `label_indices.json`'s `label_conversion`: eleven level-3 classes
(roads, ports, airports, mines, dumps, construction sites, green urban areas, sport and leisure,
bare rock, burnt areas, intertidal flats) map to no 19-class label.

Sources checked: torchgeo `BigEarthNet.class_sets` / `label_converter` and bigearthnet_common
`OLD2NEW_LABELS_DICT` (generated from label_indices.json); they agree with the lists below.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

LABELS43: tuple[str, ...] = (
    "Continuous urban fabric",
    "Discontinuous urban fabric",
    "Industrial or commercial units",
    "Road and rail networks and associated land",
    "Port areas",
    "Airports",
    "Mineral extraction sites",
    "Dump sites",
    "Construction sites",
    "Green urban areas",
    "Sport and leisure facilities",
    "Non-irrigated arable land",
    "Permanently irrigated land",
    "Rice fields",
    "Vineyards",
    "Fruit trees and berry plantations",
    "Olive groves",
    "Pastures",
    "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland",
    "Moors and heathland",
    "Sclerophyllous vegetation",
    "Transitional woodland/shrub",
    "Beaches, dunes, sands",
    "Bare rock",
    "Sparsely vegetated areas",
    "Burnt areas",
    "Inland marshes",
    "Peatbogs",
    "Salt marshes",
    "Salines",
    "Intertidal flats",
    "Water courses",
    "Water bodies",
    "Coastal lagoons",
    "Estuaries",
    "Sea and ocean",
)

LABELS19: tuple[str, ...] = (
    "Urban fabric",
    "Industrial or commercial units",
    "Arable land",
    "Permanent crops",
    "Pastures",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas",
    "Broad-leaved forest",
    "Coniferous forest",
    "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation",
    "Transitional woodland, shrub",
    "Beaches, dunes, sands",
    "Inland wetlands",
    "Coastal wetlands",
    "Inland waters",
    "Marine waters",
)

# CORINE Land Cover level-3 codes of LABELS43, same order (the values of BigEarthNet v2.0's
# pixel-level reference maps). CLC 335 "Glaciers and perpetual snow" does not occur in BigEarthNet.
CLC_CODES43: tuple[int, ...] = (
    111,
    112,
    121,
    122,
    123,
    124,
    131,
    132,
    133,
    141,
    142,
    211,
    212,
    213,
    221,
    222,
    223,
    231,
    241,
    242,
    243,
    244,
    311,
    312,
    313,
    321,
    322,
    323,
    324,
    331,
    332,
    333,
    334,
    411,
    412,
    421,
    422,
    423,
    511,
    512,
    521,
    522,
    523,
)

# label_indices.json "label_conversion": for each 19-class label, its 43-class indices.
_CONVERSION_ROWS: tuple[tuple[int, ...], ...] = (
    (0, 1),
    (2,),
    (11, 12, 13),
    (14, 15, 16, 18),
    (17,),
    (19,),
    (20,),
    (21,),
    (22,),
    (23,),
    (24,),
    (25, 31),
    (26, 27),
    (28,),
    (29,),
    (33, 34),
    (35, 36),
    (38, 39),
    (40, 41, 42),
)

CONVERSION_43_TO_19: dict[str, str | None] = {name: None for name in LABELS43}
for _new, _olds in enumerate(_CONVERSION_ROWS):
    for _old in _olds:
        CONVERSION_43_TO_19[LABELS43[_old]] = LABELS19[_new]

NOMENCLATURES: dict[int, tuple[str, ...]] = {43: LABELS43, 19: LABELS19}
_INDEX = {n: {name: i for i, name in enumerate(names)} for n, names in NOMENCLATURES.items()}

# index arrays for vectorised conversion: LABELS43 index -> LABELS19 index or -1
INDEX_43_TO_19: np.ndarray = np.array(
    [LABELS19.index(CONVERSION_43_TO_19[n]) if CONVERSION_43_TO_19[n] else -1 for n in LABELS43], dtype=np.int64
)


class UnknownLabelError(ValueError):
    """A class name that is not in the nomenclature it was read against."""


def _nomenclature(nomenclature: int | Sequence[str]) -> tuple[str, ...]:
    if isinstance(nomenclature, int):
        if nomenclature not in NOMENCLATURES:
            raise ValueError(f"nomenclature {nomenclature}: BigEarthNet has 43 or 19 classes")
        return NOMENCLATURES[nomenclature]
    return tuple(nomenclature)


def label_index(name: str, nomenclature: int | Sequence[str] = 19) -> int:
    """Position of `name` in the nomenclature (43, 19 or a list of names)."""
    names = _nomenclature(nomenclature)
    table = _INDEX.get(len(names)) if names in (LABELS43, LABELS19) else {n: i for i, n in enumerate(names)}
    try:
        return table[name]
    except KeyError:
        raise UnknownLabelError(f"{name!r} is not a class of the {len(names)}-class nomenclature") from None


def to_multi_hot(names: Iterable[str], nomenclature: int | Sequence[str] = 19) -> np.ndarray:
    """Class names -> multi-hot uint8 vector over the nomenclature (43, 19 or a list of names)."""
    names_ = _nomenclature(nomenclature)
    out = np.zeros(len(names_), dtype=np.uint8)
    for name in names:
        out[label_index(name, names_)] = 1
    return out


def from_multi_hot(vector: Sequence[int] | np.ndarray, nomenclature: int | Sequence[str] = 19) -> list[str]:
    """Multi-hot vector -> class names in nomenclature order."""
    names_ = _nomenclature(nomenclature)
    v = np.asarray(vector)
    if v.shape != (len(names_),):
        raise ValueError(f"multi-hot vector of shape {v.shape}; expected ({len(names_)},)")
    return [names_[i] for i in np.flatnonzero(v)]


def labels43_to_19(names: Iterable[str]) -> list[str]:
    """43-class names -> 19-class names (official label_conversion), deduplicated, in 19-class order.

    Classes without a 19-class counterpart are dropped, so the result may be empty.
    """
    idx = set()
    for name in names:
        if name not in CONVERSION_43_TO_19:
            raise UnknownLabelError(f"{name!r} is not a class of the 43-class nomenclature")
        new = CONVERSION_43_TO_19[name]
        if new is not None:
            idx.add(LABELS19.index(new))
    return [LABELS19[i] for i in sorted(idx)]
