"""ray_jobs/pretrain.py end to end on a local Ray: 2 CPU workers on synthetic shards, checkpoints,
resume, recovery from a worker failed by the fault-injection hook and from one killed with SIGKILL,
and a truncated latest checkpoint giving way to the previous one."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from hqjepa.checkpoint import CheckpointError, load_encoder, load_training_state
from hqjepa.config import config_from_dict, load_config
from hqjepa.engine import Trainer
from hqjepa.models.hqjepa import HQJEPA

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "model.embed_dim=32",
    "model.depth=2",
    "model.num_heads=2",
    "model.d_state=4",
    "model.predictor_embed_dim=16",
    "model.predictor_depth=1",
    "model.predictor_heads=2",
    "model.s1_embed_dim=16",
    "model.s1_depth=1",
    "model.s1_heads=2",
    "model.fusion_heads=2",
    "loss.sigreg_slices=16",
    "optim.batch_size=8",
    "data.synthetic_pairs=96",
    "data.shuffle_buffer=16",
    "train.checkpoint_every=2",
    "optim.epochs=3",
]


def _run(tmp: Path, cache: Path, name: str, *extra: str) -> dict:
    from ray_jobs import pretrain

    argv = [
        "--config",
        str(ROOT / "configs/tiny.yaml"),
        "--workers",
        "2",
        "--storage",
        str(tmp),
        "--experiment",
        name,
        "--cache-dir",
        str(cache),
        "--max-steps",
        "6",
    ]
    for s in SMALL:
        argv += ["--set", s]
    assert pretrain.main(argv + list(extra)) == 0
    return json.loads((tmp / name / "summary.json").read_text())


def _losses(csv_path: Path) -> dict[int, float]:
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    steps = [int(float(r["step"])) for r in rows]
    assert len(steps) == len(set(steps)), f"a step was logged twice: {steps}"
    return {int(float(r["step"])): float(r["loss"]) for r in rows}


@pytest.fixture(scope="module")
def runs(ray_local, tmp_path_factory):
    tmp, cache = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("shards")
    clean = _run(tmp, cache, "clean")
    faulted = _run(tmp, cache, "faulted", "--fail-at-step", "3", "--max-failures", "1")
    return tmp, cache, clean, faulted


def test_two_workers_reach_the_step_count_and_write_loadable_artifacts(runs):
    tmp, _, clean, _ = runs
    run = tmp / "clean"
    assert sorted(_losses(run / "metrics.csv")) == list(range(6))
    assert (run / "losses.png").stat().st_size > 0 and (run / "tensorboard").is_dir()
    latest = Path(clean["latest_checkpoint"])
    assert latest.name == "step_0000006"
    cfg = load_config(ROOT / "configs/tiny.yaml")  # embed_dim 96: another architecture
    # the training state restores into a fresh trainer of the same architecture
    saved_cfg = config_from_dict(torch.load(latest / "state.pt", weights_only=True)["config"])
    trainer = Trainer(HQJEPA(saved_cfg), saved_cfg, steps_per_epoch=4)
    load_training_state(latest / "state.pt", trainer)
    assert trainer.step == 6
    encoder, enc_cfg = load_encoder(run / "export.pt")
    assert enc_cfg.model.embed_dim == 32 and encoder(torch.zeros(1, 12, 120, 120)).shape == (1, 144, 32)
    # a checkpoint of another architecture is refused with a clear message
    with pytest.raises(CheckpointError, match="different architecture"):
        load_training_state(latest / "state.pt", Trainer(HQJEPA(cfg), cfg, steps_per_epoch=4))
    # best-k (k = train.keep_checkpoints = 2) plus the latest are kept
    kept = sorted(p.name for p in run.glob("step_*"))
    assert "step_0000006" in kept and len(kept) <= 3


def test_the_run_writes_the_portable_encoder_with_the_manifests_statistics(runs):
    """RUN/encoder/ loads with torch + safetensors: its tokens are export.pt's, its mean and std the
    shards' train-split statistics that the Ray Data stream normalised with."""
    import hqjepa
    from hqjepa.data.shards import band_stats, load_manifest

    tmp, cache, clean, _ = runs
    run = tmp / "clean"
    assert clean["encoder"] == str(run / "encoder")
    portable = hqjepa.load_pretrained(run / "encoder")
    encoder, _ = load_encoder(run / "export.pt")
    (manifest,) = [load_manifest(p.parent) for p in cache.rglob("_manifest.json")]
    mean, std = band_stats(manifest, "train").vectors(portable.bands)
    assert torch.allclose(portable.mean.flatten().double(), torch.as_tensor(mean).double(), rtol=1e-6)
    assert torch.allclose(portable.std.flatten().double(), torch.as_tensor(std).double(), rtol=1e-6)
    x = torch.randn(2, 12, 120, 120)
    with torch.no_grad():
        assert torch.equal(portable.forward_features(x), encoder(x))


def test_worker_killed_mid_run_is_survived_with_the_same_losses(runs):
    tmp, _, _, faulted = runs
    run = tmp / "faulted"
    assert (run / ".fault_injected").exists(), "the fault hook did not fire"
    clean, again = _losses(tmp / "clean" / "metrics.csv"), _losses(run / "metrics.csv")
    assert sorted(again) == list(range(6))  # no step lost, none repeated in the log
    for step in range(6):  # the restarted group replays steps 2-3 from the step-2 checkpoint exactly
        assert again[step] == pytest.approx(clean[step], rel=1e-5, abs=1e-6), step
    assert Path(faulted["latest_checkpoint"]).name == "step_0000006"


def test_resume_continues_the_step_count(runs):
    tmp, cache, _, _ = runs
    from ray_jobs import pretrain

    argv = [
        "--config",
        str(ROOT / "configs/tiny.yaml"),
        "--workers",
        "2",
        "--resume",
        str(tmp / "clean"),
        "--cache-dir",
        str(cache),
        "--max-steps",
        "8",
    ]
    for s in SMALL:
        argv += ["--set", s]
    assert pretrain.main(argv) == 0
    losses = _losses(tmp / "clean" / "metrics.csv")
    assert sorted(losses) == list(range(8))
    summary = json.loads((tmp / "clean" / "summary.json").read_text())
    assert Path(summary["latest_checkpoint"]).name == "step_0000008"


def test_bad_config_fails_before_ray_starts(tmp_path, capsys, monkeypatch):
    from ray_jobs import pretrain

    monkeypatch.setattr(pretrain, "start_ray", lambda *_a, **_k: pytest.fail("Ray was started"))
    argv = ["--config", str(ROOT / "configs/tiny.yaml"), "--set", "mask.target_scale=[0.1, 1.5]"]
    assert pretrain.main([*argv, "--storage", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "pretrain: error: mask.target_scale[1] = 1.5: must be in (0, 1]\n"


def _train_workers() -> list:
    """This test process's Ray Train worker processes (descendants only: never another session's)."""
    import psutil

    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_a_worker_killed_with_sigkill_from_outside_is_survived_with_the_same_losses(runs):
    """A real fault: SIGKILL to a Train worker process once the first checkpoint is registered. Ray
    Train restarts the whole worker group from that checkpoint (FailureConfig) and the run ends with
    the clean run's step count and losses."""
    import os
    import signal
    import threading
    import time

    tmp, cache, _, _ = runs
    run, killed = tmp / "sigkill", []

    def kill_after_first_checkpoint():
        snapshot, deadline = run / "checkpoint_manager_snapshot.json", time.time() + 300
        while time.time() < deadline and not killed:
            try:
                registered = "step_0000002" in snapshot.read_text()
            except OSError:
                registered = False
            workers = _train_workers() if registered else []
            if workers:
                os.kill(workers[-1].pid, signal.SIGKILL)
                killed.append(workers[-1].pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_after_first_checkpoint, daemon=True)
    killer.start()
    summary = _run(tmp, cache, "sigkill", "--max-failures", "1")
    killer.join(timeout=5)
    assert killed, "no Train worker was killed: the run ended before its first checkpoint was registered"
    clean, again = _losses(tmp / "clean" / "metrics.csv"), _losses(run / "metrics.csv")
    assert sorted(again) == list(range(6))
    for step in range(6):
        assert again[step] == pytest.approx(clean[step], rel=1e-5, abs=1e-6), step
    assert Path(summary["latest_checkpoint"]).name == "step_0000006"


def test_a_corrupt_latest_checkpoint_gives_way_to_the_previous_one(runs):
    """The latest checkpoint truncated on disk: the resumed run verifies it against its checksums.json,
    warns naming it and the one it uses instead, continues from the newest older checkpoint that
    verifies, and ends with every step logged once and the earlier losses unchanged."""
    import ray

    from hqjepa.runs.integrity import is_verified, verify_dir
    from ray_jobs import pretrain

    tmp, cache, _, _ = runs

    run = tmp / "clean"  # 8 steps after test_resume_continues_the_step_count
    before = _losses(run / "metrics.csv")
    state = run / "step_0000008" / "state.pt"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    argv = ["--config", str(ROOT / "configs/tiny.yaml"), "--workers", "2", "--resume", str(run)]
    argv += ["--cache-dir", str(cache), "--max-steps", "10"]
    for s in SMALL:
        argv += ["--set", s]
    assert pretrain.main(argv) == 0
    after = _losses(run / "metrics.csv")
    assert sorted(after) == list(range(10))
    for step in range(8):
        assert after[step] == pytest.approx(before[step], rel=1e-5, abs=1e-6), step
    summary = json.loads((run / "summary.json").read_text())
    assert Path(summary["latest_checkpoint"]).name == "step_0000010"
    verify_dir(summary["latest_checkpoint"])  # checksums.json written last, every file listed
    for kept in run.glob("step_*"):  # a new checkpoint never went into the corrupt one's directory
        assert kept.name == "step_0000008" or is_verified(kept), kept
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    warned = [
        line
        for f in logs.glob("worker-*.err")
        for line in f.read_text(errors="replace").splitlines()
        if "failed verification" in line
    ]
    assert any(str(run / "step_0000008") in w and "resuming from" in w for w in warned), warned
