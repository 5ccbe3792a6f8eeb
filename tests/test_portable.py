"""hqjepa.portable: the encoder artifact (model.safetensors + config.json), `hqjepa.load_pretrained`
and `hqjepa export`, checked against `load_encoder` and the shards' manifest."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hqjepa import cli, load_pretrained
from hqjepa.bands import S2_BANDS
from hqjepa.checkpoint import (
    export_encoder,
    export_trained_encoder,
    load_encoder,
    load_encoder_with_meta,
    save_training_state,
)
from hqjepa.config import config_from_dict
from hqjepa.data.shards import band_stats, load_manifest
from hqjepa.data.transforms import BandStats, normalise
from hqjepa.portable import CONFIG_FILE, WEIGHTS_FILE, default_out_indices, export_artifact
from tests.test_model import SMALL, _batch

ROOT = Path(__file__).resolve().parents[1]
DEPTH = 4
HEAVY = ("ray", "pennylane", "optuna", "rasterio", "h5py", "terratorch", "yaml")  # torch + safetensors only


def tiny_config():
    raw = {k: dict(v) for k, v in SMALL.items()}
    raw["model"]["depth"] = DEPTH
    raw["optim"] = {"epochs": 2, "warmup_epochs": 1, "batch_size": 4}
    return config_from_dict(raw)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Six synthetic pairs through hqjepa's own archive writer and converter."""
    from hqjepa.data.convert import convert_archive
    from hqjepa.data.synth_archive import write_archive

    root = tmp_path_factory.mktemp("ben")
    write_archive(root / "archive", 6, "v2", seed=5)
    convert_archive(root / "archive", root / "shards", progress=False)
    return root / "shards"


@pytest.fixture(scope="module")
def run(tmp_path_factory, shards):
    """A one-step run: export.pt with the manifest's statistics, old.pt without any (the format
    before them), state.pt (a training state: no statistics either)."""
    from hqjepa.engine import Trainer
    from hqjepa.models.hqjepa import HQJEPA

    cfg = tiny_config()
    torch.manual_seed(0)
    trainer = Trainer(HQJEPA(cfg), cfg, steps_per_epoch=2)
    trainer.train_step([_batch(cfg)])
    d = tmp_path_factory.mktemp("run")
    stats = band_stats(load_manifest(shards), "train")
    export_trained_encoder(d / "export.pt", trainer.core, cfg, {"step": trainer.step}, stats=stats)
    export_trained_encoder(d / "old.pt", trainer.core, cfg, {"step": trainer.step})
    save_training_state(d / "state.pt", trainer)
    return d


@pytest.fixture(scope="module")
def artifact(run, tmp_path_factory):
    return export_artifact(run / "export.pt", tmp_path_factory.mktemp("art") / "encoder", run="tiny")


def _x(size=(40, 40), b=2, seed=1):
    return torch.randn(b, len(S2_BANDS), *size, generator=torch.Generator().manual_seed(seed))


def test_artifact_round_trip_gives_load_encoders_tokens(run, artifact):
    assert sorted(p.name for p in artifact.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    modes = {(artifact / f).stat().st_mode & 0o777 for f in (CONFIG_FILE, WEIGHTS_FILE)}
    assert len(modes) == 1  # the weights are as readable as any file this process writes (not 0600)
    config = json.loads((artifact / CONFIG_FILE).read_text())
    assert config["format"] == "hqjepa-portable/1" and config["bands"] == list(S2_BANDS)
    assert (config["patch_size"], config["image_size"], config["gsd_m"]) == (10, 40, 10)
    assert config["architecture"]["depth"] == DEPTH and config["out_indices"] == [0, 1, 2, 3]
    prov = config["provenance"]
    assert prov["run"] == "tiny" and prov["step"] == 1 and prov["encoder"] == "teacher"
    assert prov["commit"] == prov["trained"]["commit"]  # the exporting process's own, recorded in export.pt
    assert {"commit", "command", "date"} <= set(prov["exported"])

    reference, _ = load_encoder(run / "export.pt")
    model = load_pretrained(artifact)
    want = reference.state_dict()
    got = model.encoder.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    x = _x()
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), reference(x))
    assert not model.training and model.bands == S2_BANDS


def test_statistics_are_the_manifests_and_normalize_is_trainings(shards, artifact):
    manifest = band_stats(load_manifest(shards), "train")
    mean, std = manifest.vectors(S2_BANDS)
    model = load_pretrained(artifact)
    assert np.array_equal(model.mean.numpy(), mean) and np.array_equal(model.std.numpy(), std)
    raw = torch.randint(0, 10_000, (2, 12, 40, 40), dtype=torch.int32).to(torch.uint16)  # as stored: uint16
    assert torch.equal(model.normalize(raw), normalise(raw.numpy(), S2_BANDS, manifest))  # the training formula
    folded = load_pretrained(artifact, normalize_input=True)
    with torch.no_grad():
        assert torch.equal(folded.forward_features(raw), model.forward_features(model.normalize(raw)))


def test_feature_maps_other_image_sizes_and_out_indices(run, artifact):
    reference, _ = load_encoder(run / "export.pt")
    model = load_pretrained(artifact)
    assert model.out_indices == (0, 1, 2, 3) and model.out_channels == [32] * 4
    x = _x((60, 80))  # not the training size: the sin-cos table is computed for a 6 x 8 grid
    with torch.no_grad():
        tokens = model.forward_features(x)
        maps = model(x)
        assert torch.equal(tokens, reference(x))
    assert [tuple(m.shape) for m in maps] == [(2, 32, 6, 8)] * 4
    assert torch.equal(maps[-1], tokens.transpose(1, 2).reshape(2, 32, 6, 8))  # row-major patch grid
    two = load_pretrained(artifact, out_indices=[1, -1])
    assert two.out_indices == (1, 3) and two.out_channels == [32, 32]
    with torch.no_grad():
        assert torch.equal(two(x)[0], maps[1])
    with pytest.raises(ValueError, match=r"out_indices \[4\].*4 blocks"):
        load_pretrained(artifact, out_indices=[4])
    assert default_out_indices(8) == (1, 3, 5, 7) and default_out_indices(12) == (2, 5, 8, 11)
    assert default_out_indices(2) == (0, 1)


def test_missing_bands_are_named(artifact):
    model = load_pretrained(artifact)
    with pytest.raises(ValueError, match=r"10 channels .* 12 bands .*: B11, B12 missing"):
        model.forward_features(_x()[:, :10])
    with pytest.raises(ValueError, match=r"13 channels"):
        model.normalize(torch.zeros(1, 13, 40, 40))
    x = _x()
    planes = {b: x[:, i] for i, b in enumerate(S2_BANDS)}
    shuffled = list(reversed(S2_BANDS)) + ["VV"]
    named = torch.stack([planes[b] if b in planes else torch.zeros(2, 40, 40) for b in shuffled], dim=1)
    assert torch.equal(model.select_bands(named, shuffled), x)  # by name; the extra band is dropped
    assert torch.equal(model.select_bands(planes), x)
    del planes["B8A"], planes["B01"]
    with pytest.raises(ValueError, match=r"lacks band\(s\) B01, B8A"):
        model.select_bands(planes)


def test_hqjepa_export_from_export_pt_and_from_state_pt(run, shards, tmp_path, capsys):
    assert cli.main(["export", str(run / "export.pt"), "--out", str(tmp_path / "a")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["artifact"] == str(tmp_path / "a") and printed["provenance"]["step"] == 1
    assert cli.main(["export", str(run / "state.pt"), "--out", str(tmp_path / "b"), "--shards", str(shards)]) == 0
    config = json.loads((tmp_path / "b" / CONFIG_FILE).read_text())
    assert "_manifest.json (split train)" in config["stats_source"] and config["provenance"]["commit"] is None
    reference, _ = load_encoder(run / "state.pt")  # the teacher, as export.pt
    x = _x()
    with torch.no_grad():
        want = reference(x)
        for d in ("a", "b"):
            model = load_pretrained(tmp_path / d)
            assert torch.equal(model.forward_features(x), want)
            assert torch.equal(model.mean, load_pretrained(tmp_path / "a").mean)


def test_export_errors_are_one_line_with_exit_2(run, shards, tmp_path, capsys):
    assert cli.main(["export", str(run / "state.pt"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "carries no band normalisation statistics" in err and "--shards" in err
    assert not (tmp_path / "x").exists()

    other = BandStats({b: 0.0 for b in S2_BANDS}, {b: 1.0 for b in S2_BANDS})
    export_encoder(tmp_path / "other.pt", load_encoder(run / "export.pt")[0], tiny_config(), stats=other)
    assert cli.main(["export", str(tmp_path / "other.pt"), "--out", str(tmp_path / "y"), "--shards", str(shards)]) == 2
    assert "differ from" in capsys.readouterr().err

    proc = subprocess.run(
        [sys.executable, "-m", "hqjepa", "export", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "z")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "missing.pt does not exist" in proc.stderr


def test_exports_without_statistics_still_load(run):
    encoder, cfg, meta = load_encoder_with_meta(run / "old.pt")
    assert meta["band_stats"] is None and meta["step"] == 1
    assert load_encoder_with_meta(run / "export.pt")[2]["band_stats"] is not None
    with pytest.raises(ValueError, match="carries no band normalisation statistics"):
        export_artifact(run / "old.pt", run / "never")


def test_loading_imports_nothing_heavy(artifact):
    code = (
        "import sys, json\n"
        "import hqjepa\n"
        "bare = sorted(m for m in ('torch', 'numpy', 'yaml') if m in sys.modules)\n"
        "import torch\n"
        "model = hqjepa.load_pretrained(sys.argv[1])\n"
        "model(torch.zeros(1, 12, 40, 40))\n"
        f"print(json.dumps({{'bare': bare, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(artifact)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"bare": [], "heavy": []}  # `import hqjepa` alone imports not even torch


def test_pretrain_local_writes_the_artifact_next_to_export_pt(tmp_path):
    from hqjepa.data.transforms import synthetic_band_stats

    out = tmp_path / "run"
    args = [
        "--config",
        str(ROOT / "configs" / "tiny.yaml"),
        "--out",
        str(out),
        "--quiet",
        "--max-steps",
        "1",
        "--set",
        "data.synthetic_pairs=16",
        "--set",
        "optim.batch_size=8",
        "--set",
        "train.steps_per_epoch=1",
    ]
    assert cli.main(["pretrain-local", *args]) == 0
    model = load_pretrained(out / "encoder")
    reference, cfg = load_encoder(out / "export.pt")
    x = _x((120, 120), b=1)
    with torch.no_grad():
        assert torch.equal(model.forward_features(x), reference(x))
    mean, std = synthetic_band_stats(120, cfg.data.synthetic_classes).vectors(S2_BANDS)  # what the run normalised with
    assert np.array_equal(model.mean.numpy(), mean) and np.array_equal(model.std.numpy(), std)
    assert model.config["provenance"]["run"] == str(out) and model.config["provenance"]["step"] == 1
