"""A node lost mid-run on a two-node Ray cluster (both nodes on this machine, `ray.cluster_utils.Cluster`):
a 2-worker pretraining with one worker per node finishes on the node that is left.

The mechanism is Ray Train v2's own: `--min-workers 1` makes the worker group elastic
(`ScalingConfig(num_workers=(1, 2))`). The lost node's worker dies, the controller tears the group down
(the failure counts against FailureConfig(max_failures)), and the elastic scaling policy restarts it
with as many workers as the remaining nodes can hold (one) from the latest checkpoint. Seen in Ray
2.60: the first restart still asks for 2 workers (its view of the cluster lags), times out after
RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S (60 s; 30 s here), is retried as a controller error, and then
starts with 1. With a fixed `num_workers=2` every restart would wait for a node that never comes.

The cluster runs in a child process: it is a Ray instance of its own, separate from the suite's
shared local one. Storage is a local folder, which both "nodes" share as NFS would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.test_pretrain_ray import ROOT, SMALL, _losses

SCRIPT = textwrap.dedent(
    """
    import json, socket, sys, threading, time
    from pathlib import Path

    import ray
    from ray.cluster_utils import Cluster

    storage, cache, steps = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    small = json.loads(sys.argv[4])

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    # 3 logical CPUs a node, 2 a worker: one worker fits on a node, and 1 CPU is left there for Ray Data
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 3, "include_dashboard": False, "gcs_server_port": free_port()},
    )
    second = cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=True)

    run, removed = storage / "nodeloss", {}

    def remove_second_node_after_first_checkpoint():
        snapshot, deadline = run / "checkpoint_manager_snapshot.json", time.time() + 400
        while time.time() < deadline:
            try:
                text = snapshot.read_text()
            except OSError:
                text = ""
            if "step_0000002" in text:
                removed["after"] = sorted(p.name for p in run.glob("step_*"))
                cluster.remove_node(second, allow_graceful=False)
                removed["at"] = time.time()
                return
            time.sleep(0.05)

    threading.Thread(target=remove_second_node_after_first_checkpoint, daemon=True).start()
    from ray_jobs import pretrain

    argv = ["--config", "configs/tiny.yaml", "--workers", "2", "--min-workers", "1", "--cpus-per-worker", "2",
            "--storage", str(storage), "--experiment", "nodeloss", "--cache-dir", cache, "--max-steps", steps,
            "--max-failures", "2"]
    for s in small:
        argv += ["--set", s]
    rc = pretrain.main(argv)
    alive = [n for n in ray.nodes() if n["Alive"]]
    print("RESULT " + json.dumps({"rc": rc, "removed": removed, "alive_nodes": len(alive)}), flush=True)
    ray.shutdown()
    cluster.shutdown()
    """
)


@pytest.mark.timeout(600)
def test_a_node_lost_mid_run_and_the_run_finishes_on_the_other(tmp_path):
    steps = 6
    env = {
        **os.environ,
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
        "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "30",  # the stale 2-worker restart gives up sooner
        "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:9",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "runs"), str(tmp_path / "data"), str(steps), json.dumps(SMALL)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=560,
    )
    out = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, out[-4000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert result["rc"] == 0, out[-4000:]
    assert result["removed"].get("at"), "the second node was never removed"
    assert result["alive_nodes"] == 1
    run = tmp_path / "runs" / "nodeloss"
    assert "step_0000006" not in result["removed"]["after"], "the node went away only after the run had ended"
    # Ray Train's controller: two workers at the start, one after the node was lost
    sizes = [
        line for line in out.splitlines() if "Deciding to start/restart training with this worker group size" in line
    ]
    assert any("resources for 2 workers" in s for s in sizes) and "resources for 1 workers" in sizes[-1], sizes
    assert sorted(_losses(run / "metrics.csv")) == list(range(steps))  # every step once
    summary = json.loads((run / "summary.json").read_text())
    assert Path(summary["latest_checkpoint"]).name == f"step_{steps:07d}"
