"""Linear probing and fine-tuning end-to-end on the synthetic GeoBench, with the project's encoder
(tiny sizes, 1-2 epochs); bad inputs become error records that name them while other jobs finish."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import pytest
import torch

from hqjepa.checkpoint import export_encoder
from hqjepa.config import config_from_dict, save_config
from hqjepa.eval.config import eval_config_from_dict
from hqjepa.eval.geobench import TASKS
from hqjepa.eval.runner import EvalJob, feature_seeds, load_job_encoder, run_extract, run_finetune, run_job, run_linear
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
TINY_EVAL = eval_config_from_dict(
    {
        "run": {"seeds": [0], "classification_size": 40, "segmentation_size": 40},
        "linear": {"epochs": 2, "lrs": [0.01], "batch_size": 8, "extract_batch_size": 4},
        "finetune": {"epochs": 1, "batch_size": 2, "warmup_epochs": 0},
    }
).to_dict()


def tiny_cfg(**model):
    return config_from_dict({"model": {**TINY_MODEL, **model}, "mask": {"min_keep": 4}})


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-protocols")
    write_benchmark(root / "geobench", samples=4, seed=1)
    cfg = tiny_cfg()
    torch.manual_seed(0)
    export_encoder(root / "export.pt", build_encoder(cfg.model), cfg)
    save_config(cfg, root / "tiny.yaml")
    save_config(tiny_cfg(embed_dim=24), root / "other.yaml")
    return root


def job(
    env: Path,
    task: str,
    protocol: str = "linear",
    seed: int = 0,
    encoder: str = "checkpoint",
    bench: Path | None = None,
    checkpoint: Path | None = None,
    model_config: str | None = None,
    eval_config: dict | None = None,
) -> EvalJob:
    return EvalJob(
        task,
        protocol,
        seed,
        encoder,
        str(checkpoint or env / "export.pt"),
        str(bench or env / "geobench"),
        eval_config or TINY_EVAL,
        model_config,
    )


def assert_ok(record: dict) -> None:
    assert record["status"] == "ok", record.get("error")
    assert 0.0 <= record["test"] <= 100.0 and 0.0 <= record["valid"] <= 100.0
    assert record["n_train"] == 2 and record["n_valid"] == 1 and record["n_test"] == 1


@pytest.mark.parametrize("task", list(TASKS))
def test_linear_probe_every_task(env, task):
    record = run_job(job(env, task))
    assert_ok(record)
    assert record["metric"] == TASKS[task].metric and record["lr"] == 0.01 and 1 <= record["epoch"] <= 2


@pytest.mark.parametrize(
    "task", ["m-bigearthnet", "m-so2sat", "m-cashew-plant"]
)  # multi-label, multi-class, segmentation
def test_finetune_each_task_kind(env, task):
    assert_ok(run_job(job(env, task, "finetune")))


def test_finetune_updates_the_encoder_at_the_lower_rate(env, monkeypatch):
    seen = {}
    real = torch.optim.AdamW

    def spy(groups, **kw):
        seen["lrs"] = [g["lr"] for g in groups]
        return real(groups, **kw)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    assert_ok(run_finetune(job(env, "m-eurosat", "finetune")))
    assert seen["lrs"] == [pytest.approx(1e-3 * 0.1), pytest.approx(1e-3)]  # encoder, head


def test_features_are_shared_across_seeds(env):
    features = run_extract(job(env, "m-eurosat"))
    assert features.x["train"].shape == (2, 16) and features.grid is None
    seg = run_extract(job(env, "m-SA-crop-type"))
    assert seg.x["train"].shape == (2, 16, 16) and seg.grid == (4, 4) and seg.y["train"].shape == (2, 256, 256)
    a, b = run_linear(job(env, "m-eurosat", seed=0), features), run_linear(job(env, "m-eurosat", seed=1), features)
    assert a["status"] == b["status"] == "ok" and (a["seed"], b["seed"]) == (0, 1)


def _with_feature_blocks(env: Path, task: str, n: int) -> EvalJob:
    return job(env, task, eval_config={**TINY_EVAL, "linear": {**TINY_EVAL["linear"], "feature_blocks": n}})


def test_feature_blocks_concatenate_the_last_blocks_outputs(env):
    """linear.feature_blocks = 2 probes [block 1 | block 2] tokens (each through the final norm);
    its last D channels are the encoder's own output, and so is feature_blocks = 1 (the default)."""
    one = run_extract(job(env, "m-eurosat"))
    two = run_extract(_with_feature_blocks(env, "m-eurosat", 2))
    assert two.x["train"].shape == (2, 32)
    assert torch.allclose(two.x["train"][:, 16:], one.x["train"], atol=1e-6)
    assert not torch.allclose(two.x["train"][:, :16], one.x["train"], atol=1e-3)
    seg = run_extract(_with_feature_blocks(env, "m-SA-crop-type", 2))
    assert seg.x["train"].shape == (2, 16, 32) and seg.grid == (4, 4)
    assert_ok(run_linear(_with_feature_blocks(env, "m-eurosat", 2), two))
    # more blocks than the encoder has: the task's record names the cause, nothing is raised
    bad = run_extract(_with_feature_blocks(env, "m-eurosat", 3))
    assert bad["status"] == "error" and "the last 3, the encoder has 2 blocks" in bad["error"]
    with pytest.raises(Exception, match="linear.feature_blocks"):
        eval_config_from_dict({"linear": {"feature_blocks": 0}})


def test_random_init_baseline_uses_the_same_architecture(env):
    enc, model_cfg = load_job_encoder(job(env, "m-eurosat", encoder="random-init"))
    trained, _ = load_job_encoder(job(env, "m-eurosat"))
    assert model_cfg.embed_dim == 16 and type(enc) is type(trained)
    assert {k: v.shape for k, v in enc.state_dict().items()} == {k: v.shape for k, v in trained.state_dict().items()}
    again, _ = load_job_encoder(job(env, "m-eurosat", encoder="random-init"))
    assert all(torch.equal(a, b) for a, b in zip(enc.state_dict().values(), again.state_dict().values(), strict=True))
    assert_ok(run_job(job(env, "m-eurosat", encoder="random-init")))


def test_random_init_seed_null_draws_one_random_encoder_per_seed(env):
    per_seed = {**TINY_EVAL, "run": {**TINY_EVAL["run"], "random_init_seed": None}}
    weights = {
        seed: load_job_encoder(job(env, "m-eurosat", seed=seed, encoder="random-init", eval_config=per_seed))[
            0
        ].state_dict()
        for seed in (0, 1)
    }
    fixed = load_job_encoder(job(env, "m-eurosat", seed=1, encoder="random-init"))[0].state_dict()
    # seed 0 == fixed seed 0
    assert all(torch.equal(a, b) for a, b in zip(weights[0].values(), fixed.values(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(weights[0].values(), weights[1].values(), strict=True))
    with pytest.raises(Exception, match="run.random_init_seed"):
        eval_config_from_dict({"run": {"random_init_seed": -1}})


def test_linear_probes_share_features_of_one_fixed_encoder_only():
    fixed = {"run": {"random_init_seed": 0}}
    per_seed = {"run": {"random_init_seed": None}}
    assert feature_seeds("checkpoint", [0, 1, 2], fixed) == {0: 0, 1: 0, 2: 0}
    assert feature_seeds("checkpoint", [0, 1, 2], per_seed) == {0: 0, 1: 0, 2: 0}
    assert feature_seeds("random-init", [0, 1, 2], fixed) == {0: 0, 1: 0, 2: 0}
    assert feature_seeds("random-init", [0, 1, 2], per_seed) == {0: 0, 1: 1, 2: 2}


def test_bad_inputs_are_named_and_other_tasks_finish(env, tmp_path):
    bench = tmp_path / "geobench"
    shutil.copytree(env / "geobench", bench)
    eurosat = bench / "classification_v1.0" / "m-eurosat"
    (eurosat / "id_0001.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # corrupt sample file
    kiln = bench / "classification_v1.0" / "m-brick-kiln"
    for sample in kiln.glob("*.hdf5"):  # a band missing in every sample
        with h5py.File(sample, "a") as f:
            del f["04 - Red"]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes((env / "export.pt").read_bytes()[:2000])

    records = {
        "corrupt": run_job(job(env, "m-eurosat", bench=bench)),
        "band": run_job(job(env, "m-brick-kiln", "finetune", bench=bench)),
        "mismatch": run_job(job(env, "m-so2sat", model_config=str(env / "other.yaml"))),
        "truncated": run_job(job(env, "m-so2sat", "finetune", checkpoint=truncated)),
        "fine": run_job(job(env, "m-so2sat", bench=bench)),
        "baseline": run_job(
            job(env, "m-so2sat", encoder="random-init", model_config=str(env / "tiny.yaml"), checkpoint=truncated)
        ),
    }
    err = {k: r["error"] for k, r in records.items() if r["status"] == "error"}
    assert set(err) == {"corrupt", "band", "mismatch", "truncated"}
    assert err["corrupt"].startswith(
        "m-eurosat / linear / checkpoint / seed 0: GeoBenchFormatError: m-eurosat: "
        "sample file id_0001.hdf5 is corrupt or not HDF5"
    )
    assert re.search(
        r"m-brick-kiln: sample file id_000\d.hdf5 lacks band '04 - Red' listed in task_specs.pkl", err["band"]
    )
    assert err["mismatch"].startswith("m-so2sat / linear / checkpoint / seed 0: CheckpointError: checkpoint ")
    assert (
        "export.pt was made by a different architecture (model.embed_dim: checkpoint 16 vs config 24" in err["mismatch"]
    )
    assert "CheckpointError" in err["truncated"] and "truncated.pt is truncated" in err["truncated"]
    assert_ok(records["fine"])
    assert_ok(records["baseline"])  # the baseline's architecture comes from --config when the file is unreadable
