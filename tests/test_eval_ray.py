"""ray_jobs/evaluate.py end-to-end through Ray on the synthetic GeoBench (1 seed, tiny settings):
every (task, protocol, seed) a Ray task, a broken task reported by name while the others finish."""

from __future__ import annotations

import json

import torch

from hqjepa.checkpoint import export_encoder
from hqjepa.config import config_from_dict, save_config
from hqjepa.eval.synth_geobench import write_benchmark
from hqjepa.models.encoder import build_encoder

TINY_MODEL = {
    "image_size": 40,
    "patch_size": 10,
    "embed_dim": 16,
    "depth": 2,
    "num_heads": 2,
    "d_state": 4,
    "predictor_embed_dim": 16,
    "predictor_depth": 1,
    "predictor_heads": 2,
    "s1_embed_dim": 16,
    "s1_depth": 1,
    "s1_heads": 2,
    "fusion_heads": 2,
}
TASKS = ["m-bigearthnet", "m-eurosat", "m-brick-kiln", "m-SA-crop-type"]


def test_evaluate_through_ray(ray_local, tmp_path, monkeypatch, capsys):
    from ray_jobs.evaluate import main

    bench = tmp_path / "geobench"
    write_benchmark(bench, samples=4, seed=2, tasks=TASKS)
    kiln = bench / "classification_v1.0" / "m-brick-kiln" / "id_0000.hdf5"
    kiln.write_bytes(kiln.read_bytes()[:3000])  # a corrupt sample file
    cfg = config_from_dict({"model": TINY_MODEL, "mask": {"min_keep": 4}})
    torch.manual_seed(0)
    export_encoder(tmp_path / "export.pt", build_encoder(cfg.model), cfg)
    save_config(cfg, tmp_path / "tiny.yaml")
    monkeypatch.setenv("GEO_BENCH_DIR", str(bench))  # no --benchmark-dir: the env var
    out = tmp_path / "out"

    rc = main(
        [
            "--checkpoint",
            str(tmp_path / "export.pt"),
            "--tasks",
            ",".join(TASKS),
            "--protocol",
            "linear,finetune",
            "--seeds",
            "1",
            "--baseline",
            "random-init",
            "--config",
            str(tmp_path / "tiny.yaml"),
            "--out",
            str(out),
            "--set",
            "run.classification_size=40",
            "--set",
            "run.segmentation_size=40",
            "--set",
            "linear.epochs=1",
            "--set",
            "linear.lrs=[0.01]",
            "--set",
            "linear.extract_batch_size=4",
            "--set",
            "finetune.epochs=1",
            "--set",
            "finetune.batch_size=2",
        ]
    )
    assert rc == 3  # finished, some jobs failed

    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert len(runs) == 2 * 4 * 2  # encoders x tasks x protocols x 1 seed
    failed = [r for r in runs if r["status"] != "ok"]
    assert {r["task"] for r in failed} == {"m-brick-kiln"} and len(failed) == 4
    assert all("m-brick-kiln: sample file id_0000.hdf5 is corrupt or not HDF5" in r["error"] for r in failed)
    assert all(0 <= r["test"] <= 100 for r in runs if r["status"] == "ok")
    assert results["summary"]["random-init"]["finetune"]["m-SA-crop-type"]["n"] == 1

    table = (out / "table.md").read_text().splitlines()
    assert table[0] == (
        "| Method | Setting | m-bigearthnet F1 (%) | m-eurosat Acc. (%) | m-brick-kiln Acc. (%) "
        "| m-SA-crop Jaccard (%) |"
    )
    rows = [line for line in table if line.startswith("| HQ-JEPA") or line.startswith("| Random")]
    assert [r.split(" | ")[1] for r in rows] == ["Linear probing", "Fine-tuning"] * 2
    assert all(r.split(" | ")[4].startswith("error [") for r in rows)  # the m-brick-kiln column
    assert all("±" in r.split(" | ")[2] for r in rows)  # the others report mean ± std
    assert any(line.startswith("[1] m-brick-kiln / ") and "id_0000.hdf5 is corrupt" in line for line in table)
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "m-brick-kiln" in capsys.readouterr().out
