"""HQ-JEPA: cross-modal Sentinel-1/Sentinel-2 JEPA with SIGReg and a SWAP-test fidelity loss.

The library is plain PyTorch and never imports Ray; `ray_jobs/` wires it to Ray.
`hqjepa.load_pretrained(artifact_dir)` loads an exported encoder with torch and safetensors only
(`hqjepa.portable`); importing this package imports nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from hqjepa.portable import PortableEncoder

__version__ = "0.1.0"
__all__ = ["__version__", "load_pretrained"]


def load_pretrained(path: str | Path, **kwargs: Any) -> PortableEncoder:
    """The pretrained encoder of an artifact directory (`hqjepa export`): an nn.Module with `bands`,
    `mean`, `std`, `normalize(x)`, `forward_features(x) -> [B, N, D]` and `forward(x)` -> feature
    maps [B, D, H/p, W/p]. Keyword arguments go to `hqjepa.portable.load_pretrained` (out_indices,
    normalize_input, device)."""
    from hqjepa.portable import load_pretrained as _load

    return _load(path, **kwargs)
