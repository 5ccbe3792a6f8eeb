"""MLflow tracking (hqjepa/tracking.py, the drivers' --mlflow) against real MLflow stores: a local `file:`
store in a temporary directory, and an `mlflow server` (SQLite backend, proxied artifacts) started here on
127.0.0.1. Runs, params, metrics and artifacts are read back with MlflowClient. One short pretraining
(2 workers, 4 steps, then resumed to 6) serves the pretraining assertions and feeds the evaluation."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from hqjepa import tracking
from hqjepa.config import ConfigError
from tests.test_pretrain_ray import SMALL

mlflow = pytest.importorskip("mlflow", reason="tracking is the optional extra hqjepa[tracking]")
from mlflow.tracking import MlflowClient  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


# --- the library helpers (no Ray, no server) ------------------------------------------------------------


def test_flatten_params_gives_dotted_keys_and_text_values():
    tree = {"model": {"embed_dim": 96, "mlp": {"ratio": 4.0}}, "mask": {"scale": [0.15, 0.2]}, "x": None, "e": {}}
    assert tracking.flatten_params(tree) == {
        "model.embed_dim": "96",
        "model.mlp.ratio": "4.0",
        "mask.scale": "[0.15, 0.2]",
        "x": "None",
        "e": "{}",
    }
    assert len(tracking.flatten_params({"long": "x" * 10_000})["long"]) == tracking.MAX_PARAM_LENGTH
    # a tuned pair's ends, as Ray Tune names them: brackets are not valid MLflow names
    flat = tracking.flatten_params({"mask.target_scale[0]": 0.1, "a$b": 1})
    assert flat == {"mask.target_scale.0": "0.1", "a_b": "1"}


def test_params_a_continued_run_may_log_and_metrics_it_can_take():
    new, changed = tracking.split_params({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "5"})
    assert new == {"c": "3"} and changed == {"b": "2"}
    import numpy as np
    import torch

    metrics = {"loss": 1, "lr": np.float32(0.5), "t": torch.tensor(2.0), "name": "x", "none": None, "ok": True}
    assert tracking.clean_metrics(metrics) == {"loss": 1.0, "lr": 0.5, "t": 2.0}
    scores = {"geobench/t/linear": 1, "geobench/t/linear/test": 2, "round": 1}
    assert tracking.folder_safe_metrics(scores) == {
        "geobench/t/linear/valid": 1,
        "geobench/t/linear/test": 2,
        "round": 1,
    }
    assert tracking.summary_metrics({"a": {"b": 1, "c": None, "d": float("nan")}, "e": 2}) == {"a/b": 1.0, "e": 2.0}


def test_flags_and_environment_choose_the_store(monkeypatch, tmp_path):
    monkeypatch.delenv(tracking.ENV_URI, raising=False)
    monkeypatch.delenv(tracking.ENV_EXPERIMENT, raising=False)
    assert tracking.tracking_from_flags(None) is None  # neither given: off
    monkeypatch.setenv(tracking.ENV_URI, "http://127.0.0.1:5000")
    assert tracking.tracking_from_flags(None) == tracking.Tracking("http://127.0.0.1:5000", "hqjepa")
    assert tracking.tracking_from_flags("off") is None  # the flag wins over the environment
    monkeypatch.setenv(tracking.ENV_EXPERIMENT, "exp")
    local = tracking.tracking_from_flags(str(tmp_path / "mlruns"), None)
    assert local == tracking.Tracking((tmp_path / "mlruns").as_uri(), "exp")  # a path: an absolute file: URI
    assert tracking.tracking_from_flags("sqlite:///x.db", "other").uri == "sqlite:///x.db"
    monkeypatch.setitem(sys.modules, "mlflow", None)  # mlflow not installed
    with pytest.raises(ConfigError, match=r"^--mlflow http://h: .*pip install 'hqjepa\[tracking\]'$"):
        tracking.tracking_from_flags("http://h")


def test_client_side_logging_to_a_file_store(tmp_path):
    where = tracking.Tracking(f"file:{tmp_path / 'mlruns'}", "unit")
    (tmp_path / "enc").mkdir()
    (tmp_path / "enc" / "config.json").write_text("{}")
    (tmp_path / "summary.json").write_text('{"a": 1}')
    run = tracking.start_run(where, "r", tracking.flatten_params({"train": {"max_steps": 4}}), {"hqjepa.job": "t"})
    assert tracking.log_params(run, {"train.max_steps": "6", "plan.workers": "2"}) == {"train.max_steps": "6"}
    tracking.log_metrics(run, {"loss": 0.5, "note": "text"}, step=3)
    logged = tracking.log_artifacts(run, [tmp_path / "enc", tmp_path / "summary.json", tmp_path / "absent"])
    assert logged == ["enc", "summary.json"]
    tracking.end_run(run)
    tracking.write_run_file(tmp_path, run)
    assert tracking.read_run_file(tmp_path) == run and tracking.read_run_file(tmp_path / "enc") is None

    client = MlflowClient(where.uri)
    got = client.get_run(run["run_id"])
    assert got.info.status == "FINISHED" and got.info.run_name == "r"
    assert got.data.params == {"train.max_steps": "4", "plan.workers": "2"}  # a logged param never changes
    assert got.data.tags["changed.train.max_steps"] == "6" and got.data.tags["hqjepa.job"] == "t"
    assert [(m.step, m.value) for m in client.get_metric_history(run["run_id"], "loss")] == [(3, 0.5)]
    assert {a.path for a in client.list_artifacts(run["run_id"])} == {"enc", "summary.json"}
    assert [a.path for a in client.list_artifacts(run["run_id"], "enc")] == ["enc/config.json"]
    assert tracking.find_run(where, {"hqjepa.job": "t"}) == run["run_id"]
    assert tracking.find_run(where, {"hqjepa.job": "other"}) is None
    assert tracking.logged_params(where, "0" * 32) is None  # an unknown run


class _Trial:
    """What Ray's MLflowLoggerCallback reads of a Tune trial: its name and sampled config."""

    def __init__(self, name: str, config: dict) -> None:
        self.name, self.config = name, config

    def __str__(self) -> str:
        return self.name


def _iteration(i: int) -> dict:
    return {"training_iteration": i, "config": {"mask.target_scale[0]": 0.12}}  # as Tune's results carry them


def test_a_trial_continued_after_a_restore_finds_its_run(tmp_path):
    from ray_jobs.tune import trial_runs_callback

    search = tracking.start_run(tracking.Tracking(f"file:{tmp_path}", "tune"), "search")
    trial = _Trial("run_trial_0001", {"mask.target_scale[0]": 0.12, "mask.num_targets": 4})
    first = trial_runs_callback(search)
    first.setup()
    first.log_trial_start(trial)
    first.log_trial_result(1, trial, {"geobench/t/linear": 50.0, "geobench/t/linear/test": 40.0, **_iteration(1)})
    again = trial_runs_callback(search)  # as Tuner.restore brings it back: no trial -> run map
    again.setup()
    again.log_trial_start(trial)
    again.log_trial_result(2, trial, {"geobench/t/linear": 60.0, "geobench/t/linear/test": 45.0, **_iteration(2)})
    again.log_trial_end(trial)

    client = MlflowClient(search["uri"])
    (run,) = client.search_runs([search["experiment_id"]], "tags.`hqjepa.job` = 'tune-trial'")
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.parentRunId"] == search["run_id"]
    assert run.data.params == {"mask.target_scale.0": "0.12", "mask.num_targets": "4"}
    history = client.get_metric_history(run.info.run_id, "geobench/t/linear/valid")  # beside .../test
    assert sorted((m.step, m.value) for m in history) == [(1, 50.0), (2, 60.0)]


# --- a real tracking server and the Ray drivers ------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1: SQLite backend store, artifacts proxied into a local folder."""
    tmp = tmp_path_factory.mktemp("mlflow-server")
    url = f"http://127.0.0.1:{_free_port()}"
    log = (tmp / "server.log").open("w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no background job runner process
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            url.rsplit(":", 1)[1],
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp / 'mlflow.db'}",
            "--artifacts-destination",
            str(tmp / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not come up; log:\n{(tmp / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, tmp / "artifacts"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _pretrain(tmp: Path, cache: Path, *extra: str) -> None:
    from ray_jobs import pretrain

    argv = ["--config", str(ROOT / "configs/tiny.yaml"), "--workers", "2", "--cache-dir", str(cache), *extra]
    for s in SMALL:
        argv += ["--set", s]
    assert pretrain.main(argv) == 0


@pytest.fixture(scope="module")
def tracked(ray_local, server, tmp_path_factory):
    """4 steps tracked in the server's experiment "pretrain-test", then --resume to 6 steps."""
    url, _ = server
    tmp, cache = tmp_path_factory.mktemp("runs"), tmp_path_factory.mktemp("shards")
    flags = ["--mlflow", url, "--mlflow-experiment", "pretrain-test"]
    t0 = time.time()
    _pretrain(tmp, cache, "--storage", str(tmp), "--experiment", "run", "--max-steps", "4", *flags)
    first = json.loads((tmp / "run" / tracking.RUN_FILE).read_text())
    _pretrain(tmp, cache, "--resume", str(tmp / "run"), "--max-steps", "6", *flags)
    print(f"two tracked pretraining runs: {time.time() - t0:.1f} s")
    return url, tmp / "run", cache, first


def test_pretraining_is_one_mlflow_run_with_the_config_and_every_step(tracked):
    url, run_dir, _, first = tracked
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("pretrain-test")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [first["run_id"]]  # the resumed run continued it
    assert json.loads((run_dir / tracking.RUN_FILE).read_text())["run_id"] == first["run_id"]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["model.embed_dim"] == "32" and params["mask.target_scale"] == "[0.15, 0.2]"
    assert params["plan.workers"] == "2" and params["plan.global_batch"] == "16"
    assert params["train.max_steps"] == "4" and run.data.tags["changed.train.max_steps"] == "6"
    assert run.data.tags["hqjepa.job"] == "pretrain"
    with (run_dir / "metrics.csv").open() as f:
        rows = {int(float(r["step"])): float(r["loss"]) for r in csv.DictReader(f)}
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(6))  # each step once: rank 0 alone logs
    for m in history:
        assert m.value == pytest.approx(rows[m.step], rel=1e-6)
    assert {"loss_smooth", "global_samples_per_s"} <= set(run.data.metrics)


def test_pretraining_artifacts_reach_the_server(tracked):
    url, run_dir, _, first = tracked
    client = MlflowClient(url)
    names = {a.path for a in client.list_artifacts(first["run_id"])}
    expected = {"losses.png", "summary.json", "export.pt"} | ({"encoder"} if (run_dir / "encoder").is_dir() else set())
    assert names == expected
    local = Path(client.download_artifacts(first["run_id"], "summary.json", str(run_dir.parent)))
    assert json.loads(local.read_text())["latest_checkpoint"].endswith("6")  # the resumed run's upload
    assert Path(client.download_artifacts(first["run_id"], "export.pt", str(run_dir.parent))).stat().st_size > 0


def test_evaluation_is_one_run_in_a_file_store(tracked, tmp_path):
    from hqjepa.eval.synth_geobench import write_benchmark
    from ray_jobs import evaluate

    _, run_dir, _, _ = tracked
    bench, out, store = tmp_path / "geobench", tmp_path / "out", f"file:{tmp_path / 'mlruns'}"
    write_benchmark(bench, samples=4, seed=0, tasks=["m-eurosat"])
    argv = ["--checkpoint", str(run_dir / "export.pt"), "--tasks", "m-eurosat", "--protocol", "linear"]
    argv += ["--seeds", "1", "--benchmark-dir", str(bench), "--out", str(out), "--mlflow", store]
    argv += ["--set", "linear.epochs=2", "--set", "linear.lrs=[0.01]"]
    assert evaluate.main(argv) == 0

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("hqjepa").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["hqjepa.job"] == "evaluate"
    assert run.data.params["linear.epochs"] == "2" and run.data.params["linear.lrs"] == "[0.01]"
    assert run.data.params["evaluate.tasks"] == '["m-eurosat"]'
    cell = json.loads((out / "results.json").read_text())["summary"]["checkpoint"]["linear"]["m-eurosat"]
    assert run.data.metrics["checkpoint/m-eurosat/linear/mean"] == pytest.approx(cell["mean"])
    assert run.data.metrics["checkpoint/m-eurosat/linear/std"] == pytest.approx(cell["std"])
    assert run.data.metrics["failed_jobs"] == 0
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"results.json", "table.md", "results.png"}


def test_search_is_a_run_with_one_nested_run_per_trial(tracked, tmp_path):
    from hqjepa.eval.synth_geobench import write_benchmark
    from ray_jobs import tune

    url, _, cache, _ = tracked
    bench = tmp_path / "geobench"
    write_benchmark(bench, samples=8, seed=0, tasks=["m-eurosat"])
    argv = ["--space", str(ROOT / "tune_spaces/masking.yaml"), "--trials", "1", "--budget-epochs", "1"]
    argv += ["--rounds", "1", "--benchmark-dir", str(bench), "--storage", str(tmp_path / "searches")]
    argv += ["--cache-dir", str(cache), "--mlflow", url, "--mlflow-experiment", "tune-test"]
    argv += ["--eval-set", "linear.epochs=2", "--eval-set", "linear.lrs=[0.01]", "--eval-set", "run.seeds=[0]"]
    for s in [s for s in SMALL if not s.startswith("optim.epochs=")] + ["train.steps_per_epoch=2"]:
        argv += ["--set", s]
    assert tune.main(argv) == 0

    client = MlflowClient(url)
    exp = client.get_experiment_by_name("tune-test")
    (search,) = client.search_runs([exp.experiment_id], "tags.`hqjepa.job` = 'tune'")
    (trial,) = client.search_runs([exp.experiment_id], "tags.`hqjepa.job` = 'tune-trial'")
    assert search.info.status == "FINISHED" and trial.info.status == "FINISHED"
    assert search.data.params["trials"] == "1" and search.data.params["base_config.model.embed_dim"] == "32"
    assert search.data.metrics["trials/total"] == 1 and "best_metric" in search.data.metrics
    assert {"trials.csv", "best_config.yaml", "params.png", "history.png", "search.json"} <= {
        a.path for a in client.list_artifacts(search.info.run_id)
    }
    assert trial.data.tags["mlflow.parentRunId"] == search.info.run_id
    assert "mask.num_targets" in trial.data.params  # the trial's sampled values
    history = client.get_metric_history(trial.info.run_id, "geobench/m-eurosat/linear/valid")
    assert len(history) == 1 and history[0].value == pytest.approx(search.data.metrics["best_metric"])
