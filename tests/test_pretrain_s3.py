"""A pretraining run whose --storage is S3 (moto's S3 server on localhost, through pyarrow's S3 client
as on a cluster): checkpoints, metrics.csv, losses.png, summary.json, TensorBoard events and the
exported encoder land in the bucket; an interrupted run continues when the same command is run again;
--resume s3://.../RUN continues it further; ray_jobs/evaluate.py reads --checkpoint s3://.../export.pt."""

from __future__ import annotations

import csv
import io
import json
import socket

import pytest

pytest.importorskip("moto.server")
pafs = pytest.importorskip("pyarrow.fs")

from hqjepa.runs import storage  # noqa: E402
from tests.test_pretrain_ray import ROOT, SMALL  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bucket():
    """The storage URI of an empty bucket. The credentials travel in the URI (pyarrow reads
    s3://KEY:SECRET@bucket/...), so Ray workers started before this fixture need no environment."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    fs, _ = pafs.FileSystem.from_uri(f"s3://test:test@runs?{query}&allow_bucket_creation=true")
    fs.create_dir("runs")
    yield f"s3://test:test@runs/pretrain?{query}"
    server.stop()


def _argv(storage_uri: str, cache, *extra: str) -> list[str]:
    argv = ["--config", str(ROOT / "configs/tiny.yaml"), "--workers", "1", "--cache-dir", str(cache)]
    for s in SMALL:
        argv += ["--set", s]
    return argv + list(extra)


def _rows(run: str) -> list[int]:
    text = storage.read_bytes(storage.join(run, "metrics.csv")).decode()
    return [int(float(r["step"])) for r in csv.DictReader(io.StringIO(text))]


def _plan(out: str) -> dict:
    return next(json.loads(line) for line in out.splitlines() if line.startswith('{"event": "plan"'))


def test_a_run_on_s3_writes_everything_there_resumes_and_evaluates(ray_local, bucket, tmp_path_factory, capsys):
    from ray_jobs import evaluate, pretrain

    cache = tmp_path_factory.mktemp("shards")
    run = storage.join(bucket, "exp")
    first = _argv(bucket, cache, "--storage", bucket, "--experiment", "exp", "--max-steps", "6")
    first += ["--fail-at-step", "3", "--max-failures", "0"]

    # 1. interrupted after the step-2 checkpoint (a worker fails at step 3, no retries left)
    from ray.train import WorkerGroupError

    with pytest.raises(WorkerGroupError, match="fault injected at step 3"):
        pretrain.main(first)
    assert json.loads(storage.read_bytes(storage.join(run, "run.json")))["identity"]["run"]["workers"] == 1
    assert not storage.exists(storage.join(bucket, ".exp.lock")), "the lease is released when the driver stops"
    capsys.readouterr()

    # 2. the same command again continues from the checkpoint in the bucket
    assert pretrain.main(first) == 0
    out = capsys.readouterr().out
    assert _plan(out)["continues"] == "run"
    assert _rows(run) == list(range(6))
    names = storage.list_names(run)
    for f in ("export.pt", "metrics.csv", "losses.png", "summary.json", "run.json", "encoder", "tensorboard"):
        assert f in names, (f, names)
    assert "step_0000006" in names and "step_0000002-1" not in names  # continued, not redone
    assert "checksums.json" in storage.list_names(storage.join(run, "step_0000006"))
    assert any(n.startswith("events.out.tfevents") for n in storage.list_names(storage.join(run, "tensorboard")))
    text = storage.read_bytes(storage.join(run, "summary.json")).decode()
    assert "test:test@" not in out and "test:test@" not in text  # the plan and summary carry no credentials
    assert json.loads(text)["export"] == storage.redact(storage.join(run, "export.pt"))

    # 3. --resume with the run's URI trains further
    assert pretrain.main(_argv(bucket, cache, "--resume", run, "--max-steps", "8")) == 0
    assert _rows(run) == list(range(8))
    history = json.loads(storage.read_bytes(storage.join(run, "run.json")))["history"]
    assert history[-1]["changed"] == ["config.train.fail_at_step", "config.train.max_steps"]

    # 4. evaluation reads the exported encoder from the bucket
    from hqjepa.eval.synth_geobench import write_benchmark

    bench = tmp_path_factory.mktemp("geobench")
    write_benchmark(bench, samples=4, seed=2, tasks=["m-eurosat"])
    out_dir = tmp_path_factory.mktemp("eval")
    args = ["--checkpoint", storage.join(run, "export.pt"), "--tasks", "m-eurosat", "--protocol", "linear"]
    args += ["--seeds", "1", "--benchmark-dir", str(bench), "--out", str(out_dir)]
    for s in ("run.classification_size=120", "linear.epochs=1", "linear.lrs=[0.01]", "linear.extract_batch_size=4"):
        args += ["--set", s]
    assert evaluate.main(args) == 0
    results = json.loads((out_dir / "results.json").read_text())
    assert [r["status"] for r in results["runs"]] == ["ok"]
    assert results["meta"]["checkpoint"].startswith("s3://***@runs/pretrain/exp/export.pt?")  # no credentials


def test_a_lease_on_s3_admits_one_holder(bucket, monkeypatch):
    """The run lock on an object store: the first lease is created with a conditional PUT (If-None-Match),
    a second holder is refused while the lease is live, an expired lease is taken over, and without
    conditional PUTs (no boto3) the write-then-read-back path gives the same answers."""
    import time

    from hqjepa.runs.lock import LeaseLock, LockHeld, lock_for

    where = storage.join(bucket, ".lease-test.lock")
    first = lock_for(where, what="run lease-test", settle_s=0.1)
    assert isinstance(first, LeaseLock)
    assert first._conditional_create(b"{}") is True  # the server honours If-None-Match: *
    assert first._conditional_create(b"{}") is False  # and refuses a second create
    storage.delete_file(where)
    first.acquire()
    with pytest.raises(LockHeld, match=r"run lease-test is locked by pid \d+ on .*\*\*\*@runs/pretrain/\.lease-test"):
        lock_for(where, what="run lease-test", settle_s=0.1).acquire()
    first.release()
    assert not storage.exists(where)

    monkeypatch.setattr(LeaseLock, "_conditional_create", lambda self, body: None)  # a store without them
    short = lock_for(where, what="run lease-test", settle_s=0.1, timeout_s=1.0, heartbeat_s=30)
    short.acquire()
    with pytest.raises(LockHeld):
        lock_for(where, what="run lease-test", settle_s=0.1).acquire()
    time.sleep(1.2)  # no heartbeat within the timeout: the lease expires
    taker = lock_for(where, what="run lease-test", settle_s=0.1).acquire()
    assert json.loads(storage.read_bytes(where))["token"] == taker.token
    short.release()  # not its lease any more: left alone
    assert json.loads(storage.read_bytes(where))["token"] == taker.token
    taker.release()
