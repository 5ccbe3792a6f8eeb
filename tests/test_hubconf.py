"""hubconf.py: torch.hub.load(REPO, "hqjepa_encoder", source="local", weights=ARTIFACT) from a
process whose working directory is outside the repository gives `load_encoder`'s tokens."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hqjepa.checkpoint import export_encoder, load_encoder
from hqjepa.data.transforms import BandStats
from hqjepa.models.encoder import build_encoder
from hqjepa.portable import export_artifact
from tests.test_portable import tiny_config

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
import torch

repo, artifact, x_file, out_file = sys.argv[1:]
hub_model = torch.hub.load(repo, "hqjepa_encoder", source="local", weights=artifact)
import hqjepa

pkg_model = hqjepa.load_pretrained(artifact)
x = torch.load(x_file)
with torch.no_grad():
    torch.save({"hub": hub_model.forward_features(x), "pkg": pkg_model.forward_features(x),
                "maps": [tuple(m.shape) for m in hub_model(x)]}, out_file)
heavy = [m for m in ("ray", "pennylane", "optuna", "rasterio", "h5py") if m in sys.modules]
print(json.dumps({"type": type(hub_model).__name__, "hqjepa": hqjepa.__file__, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("hub")
    cfg = tiny_config()
    torch.manual_seed(3)
    stats = BandStats(
        {b: 1000.0 + i for i, b in enumerate(cfg.model.s2_bands)}, dict.fromkeys(cfg.model.s2_bands, 500.0)
    )
    export_encoder(d / "export.pt", build_encoder(cfg.model), cfg, {"step": 7}, stats=stats)
    export_artifact(d / "export.pt", d / "encoder")
    return d


def test_torch_hub_load_from_outside_the_repository(exported, tmp_path):
    x = torch.randn(2, 12, 50, 30, generator=torch.Generator().manual_seed(0))
    torch.save(x, tmp_path / "x.pt")
    (tmp_path / "use.py").write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing but torch.hub finds the repo
    env["TORCH_HOME"] = str(tmp_path / "torch_home")
    args = [str(ROOT), str(exported / "encoder"), str(tmp_path / "x.pt"), str(tmp_path / "out.pt")]
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "use.py"), *args], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["type"] == "PortableEncoder" and info["heavy"] == []
    assert Path(info["hqjepa"]).resolve().is_relative_to(ROOT)
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    reference, _ = load_encoder(exported / "export.pt")
    with torch.no_grad():
        want = reference(x)
    assert torch.equal(got["hub"], want) and torch.equal(got["pkg"], want)
    assert got["maps"] == [(2, 32, 5, 3)] * 4


def test_hub_entry_needs_weights():
    with pytest.raises(ValueError, match="weights=ARTIFACT_DIR"):
        torch.hub.load(str(ROOT), "hqjepa_encoder", source="local")
