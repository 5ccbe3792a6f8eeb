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

TerraTorch is not a dependency of hqjepa: `pip install "terratorch>=1.2.11,<1.3"` (1.2.11 is the
newest for Python 3.11; later releases need torchgeo 0.9 and Python 3.12) beside a torch and a
torchvision built for each other. PyPI's Linux torchvision wheels are CUDA builds: beside a CPU-only
torch, `import torchvision` fails ("operator torchvision::nms does not exist"), and so do TerraTorch
and torchmetrics. `make test` therefore builds `.venv-terratorch` (PyPI's torch 2.14.1 with
torchvision 0.29.1, TerraTorch, and this package) and runs the TerraTorch tests there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from terratorch.registry import TERRATORCH_BACKBONE_REGISTRY

from hqjepa.portable import PortableEncoder, artifact_config, load_pretrained


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
