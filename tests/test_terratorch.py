"""hqjepa.integrations.terratorch: the encoder as TerraTorch's `hqjepa_encoder` backbone, built into
a segmentation model by TerraTorch's own EncoderDecoderFactory (LearnedInterpolateToPyramidal neck,
UperNet decoder) and trained one step.

TerraTorch is not a dependency of this project: it needs a torchvision built for its torch, and
PyPI's Linux torchvision wheels are CUDA builds that do not load beside this project's CPU torch.
`make test` runs this file in `.venv-terratorch` (tests/test_terratorch_env.py); in an environment
without TerraTorch it skips.
"""

import pytest
import torch

from hqjepa import load_pretrained
from hqjepa.checkpoint import export_encoder
from hqjepa.data.transforms import BandStats
from hqjepa.models.encoder import build_encoder
from hqjepa.portable import PortableEncoder, export_artifact
from tests.test_portable import tiny_config

# registers the backbone; imports terratorch after making torchvision importable beside a CPU torch
pytest.importorskip("hqjepa.integrations.terratorch", reason="terratorch is not installed")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("tt")
    cfg = tiny_config()
    torch.manual_seed(4)
    stats = BandStats(dict.fromkeys(cfg.model.s2_bands, 1500.0), dict.fromkeys(cfg.model.s2_bands, 800.0))
    export_encoder(d / "export.pt", build_encoder(cfg.model), cfg, stats=stats)
    return export_artifact(d / "export.pt", d / "encoder")


def _model(artifact, **backbone):
    from terratorch.models import EncoderDecoderFactory

    return EncoderDecoderFactory().build_model(
        task="segmentation",
        backbone="hqjepa_encoder",
        backbone_ckpt_path=str(artifact),
        **{f"backbone_{k}": v for k, v in backbone.items()},
        necks=[{"name": "LearnedInterpolateToPyramidal"}],
        decoder="UperNetDecoder",
        decoder_channels=32,
        num_classes=3,
    )


def test_backbone_is_in_terratorchs_registry(artifact):
    from terratorch.registry import BACKBONE_REGISTRY

    assert "hqjepa_encoder" in BACKBONE_REGISTRY and "terratorch_hqjepa_encoder" in BACKBONE_REGISTRY
    backbone = BACKBONE_REGISTRY.build("hqjepa_encoder", ckpt_path=str(artifact))
    assert isinstance(backbone, PortableEncoder) and backbone.out_channels == [32] * 4
    maps = backbone(torch.zeros(1, 12, 40, 40))
    assert isinstance(maps, list) and [tuple(m.shape) for m in maps] == [(1, 32, 4, 4)] * 4
    fresh = BACKBONE_REGISTRY.build("hqjepa_encoder", pretrained=False, ckpt_path=str(artifact))
    assert not torch.equal(fresh.encoder.patch_embed.proj.weight, backbone.encoder.patch_embed.proj.weight)
    assert torch.equal(fresh.mean, backbone.mean)  # the artifact still gives architecture and statistics
    with pytest.raises(ValueError, match="backbone_ckpt_path"):
        BACKBONE_REGISTRY.build("hqjepa_encoder")


def test_segmentation_model_trains_one_step(artifact):
    torch.manual_seed(0)
    model = _model(artifact)
    pretrained = load_pretrained(artifact).encoder.state_dict()
    assert all(torch.equal(v, pretrained[k]) for k, v in model.encoder.encoder.state_dict().items())
    x = torch.randn(2, 12, 40, 40)
    y = torch.randint(0, 3, (2, 40, 40))
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    logits = model(x).output
    assert logits.shape == (2, 3, 40, 40)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    optimizer.step()
    unchanged = [k for k, v in model.named_parameters() if torch.equal(v, before[k])]
    assert unchanged == [] and any(k.startswith("encoder.encoder.") for k in before)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 12, 45, 35)).output.shape == (2, 3, 45, 35)  # padded to the patch size
