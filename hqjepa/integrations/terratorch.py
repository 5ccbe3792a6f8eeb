"""The HQ-JEPA encoder as a TerraTorch backbone, `hqjepa_encoder`, in TerraTorch's own registry.

    import hqjepa.integrations.terratorch  # registers the backbone (TerraTorch's CLI: custom_modules_path)
    from terratorch.models import EncoderDecoderFactory

    model = EncoderDecoderFactory().build_model(
        task="segmentation", backbone="hqjepa_encoder", backbone_ckpt_path="runs/tiny/encoder",
        necks=[{"name": "LearnedInterpolateToPyramidal"}], decoder="UperNetDecoder", num_classes=10)

The backbone is `hqjepa.portable.PortableEncoder`: `forward(x)` gives one map [B, D, H/p, W/p] per
block of `out_indices` (four evenly spaced by default, as LearnedInterpolateToPyramidal and
UperNet expect) and `out_channels` is [D] * len(out_indices). It takes normalised input, as
TerraTorch's datamodules give it (their means and stds: the artifact's config.json `mean` / `std`),
or raw reflectance with `backbone_normalize_input=True`. TerraTorch pads H and W to multiples of
the patch size (it finds `patch_size` on the backbone).

TerraTorch is not a dependency of hqjepa (`pip install "terratorch>=1.2.11,<1.3"`; 1.2.11 is the
newest for Python 3.11, later ones need torchgeo 0.9 and Python 3.12). It needs a torchvision built
for the installed torch: PyPI's Linux torchvision wheels are CUDA builds, and beside a CPU torch
they make `import torchvision` fail (see `_declare_torchvision_ops_if_unloadable`, which lets
this module import TerraTorch anyway; other importers of torchvision, torchmetrics among them,
still fail in such an environment).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch

from hqjepa.portable import PortableEncoder, artifact_config, load_pretrained

_KEEP: list[torch.library.Library] = []  # a Library drops its definitions when collected


def _declare_torchvision_ops_if_unloadable() -> None:
    """Let torchvision import where its C++ ops cannot load.

    PyPI's Linux torchvision wheels are CUDA builds; beside a CPU-only torch their `_C` library
    needs libc10_cuda.so and does not load, and torchvision 0.28 then fails at import, registering
    fake kernels for `torchvision::nms` and `qnms` ("operator torchvision::nms does not exist").
    Declaring those two schemas (no kernels) lets it import; detection ops stay unusable, and
    segmentation models use none. Does nothing where the library loads or torchvision is absent.
    """
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations or hasattr(torch.ops.torchvision, "nms"):
        return
    libs = [p for d in spec.submodule_search_locations for p in Path(d).glob("_C.*") if p.suffix in (".so", ".pyd")]
    try:
        if libs:
            torch.ops.load_library(str(libs[0]))  # what torchvision does itself; loading twice is harmless
            return
    except OSError:
        pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(lib)


_declare_torchvision_ops_if_unloadable()

from terratorch.registry import TERRATORCH_BACKBONE_REGISTRY  # noqa: E402


def hqjepa_encoder(
    pretrained: bool = True,
    ckpt_path: str | Path | None = None,
    out_indices: Sequence[int] | None = None,
    normalize_input: bool = False,
) -> PortableEncoder:
    """TerraTorch backbone: the encoder of the artifact directory `ckpt_path` (RUN/encoder/, or
    `hqjepa export SRC --out DIR`). `pretrained=False` builds the same architecture and statistics
    with fresh weights (the artifact still gives the architecture). `out_indices`: blocks to return
    (default four evenly spaced, ending at the last); `normalize_input`: take raw reflectance."""
    if ckpt_path is None:
        raise ValueError("hqjepa_encoder: give backbone_ckpt_path=ARTIFACT_DIR (no weights are hosted for download)")
    if pretrained:
        return load_pretrained(ckpt_path, out_indices=out_indices, normalize_input=normalize_input)
    return PortableEncoder(artifact_config(ckpt_path), out_indices, normalize_input)


TERRATORCH_BACKBONE_REGISTRY.register(hqjepa_encoder)
