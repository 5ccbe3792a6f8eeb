"""`ray job submit` to a local head with token authentication (Ray 2.60) runs the pretraining job
and leaves its artifacts under --storage (what `make cluster-local submit` does by hand)."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_pretrain_ray import SMALL

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    """n distinct free ports: every socket stays bound until all are chosen, so none repeats."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _status(url: str, token: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        return urllib.request.urlopen(req, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


class Head:
    """A token-authenticated `ray start --head --block` on free ports, restartable: on a loaded 2-core
    machine Ray 2.60's raylet can abort at start-up when its dashboard agent writes its port file too
    late ("Timed out waiting for file ..."), and `--block` then exits with it."""

    def __init__(self) -> None:
        self.token = secrets.token_hex(32)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token, PATH=f"{BIN}{os.pathsep}{self.env['PATH']}")
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.starts = 0

    def start(self) -> None:
        gcs, dash, listen, agent_grpc, runtime_env, metrics, object_manager, node_manager = _free_ports(8)
        # every agent port explicit and free: an earlier test's Ray (or a stray one) may still hold the defaults
        # (agent 52365, metrics random), and an agent that cannot bind leaves the job server with "No available
        # agent". The raylet's own two ports too: left to the OS, one once took the agent's gRPC port chosen here.
        node_ports = [
            f"--dashboard-agent-listen-port={listen}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--metrics-export-port={metrics}",
            f"--object-manager-port={object_manager}",
            f"--node-manager-port={node_manager}",
        ]
        temp_dir = tempfile.mkdtemp(prefix="hqj-", dir="/tmp")  # short: Ray's socket paths are length-limited
        self.starts += 1
        self.proc = subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                "--num-cpus=2",
                f"--port={gcs}",
                f"--dashboard-port={dash}",
                "--dashboard-host=127.0.0.1",
                "--disable-usage-stats",
                f"--temp-dir={temp_dir}",
                *node_ports,
            ],
            env=self.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{dash}"
        for _ in range(120):
            if _status(f"{self.url}/api/version", self.token) == 200 or self.proc.poll() is not None:
                break
            time.sleep(1)

    def alive(self) -> bool:
        return (
            self.proc is not None and self.proc.poll() is None and _status(f"{self.url}/api/version", self.token) == 200
        )

    def ensure_alive(self, attempts: int = 3) -> None:
        """Start the head, or start it again if it went away, up to `attempts` starts in all."""
        while not self.alive():
            if self.starts >= attempts:
                pytest.fail(f"the Ray head did not come up in {self.starts} starts")
            self.stop()
            self.start()

    def stop(self) -> None:
        # --block: on SIGTERM the head drains and stops its own processes, which took 35-40 s here; the
        # test is over, so after a short grace the whole process group (GCS, raylet, agents) is killed
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@pytest.fixture()
def head():
    h = Head()
    try:
        h.ensure_alive()
        yield h
    finally:
        h.stop()


def test_job_submit_with_token_runs_pretraining(head, tmp_path):
    url, env = head.url, head.env
    # token authentication is on: the job server refuses a request without the token
    assert _status(f"{url}/api/version", None) == 401
    no_token = {k: v for k, v in env.items() if k not in ("RAY_AUTH_TOKEN",)}
    no_token.update(RAY_API_SERVER_ADDRESS=url, HOME=str(tmp_path))  # no ~/.ray/auth_token either
    denied = subprocess.run(
        [str(BIN / "ray"), "job", "list"], env=no_token, capture_output=True, text=True, timeout=120
    )
    assert denied.returncode != 0

    storage = tmp_path / "runs"
    args = [
        "python",
        "ray_jobs/pretrain.py",
        "--config",
        "configs/tiny.yaml",
        "--workers",
        "1",
        "--max-steps",
        "2",
        "--storage",
        str(storage),
        "--experiment",
        "submitted",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--set",
        "data.synthetic_pairs=48",
    ]
    for s in SMALL:
        if not s.startswith("data.synthetic_pairs"):
            args += ["--set", s]
    deadline = time.monotonic() + 300  # the job server answers before the node's agent is up ("try again later")
    while True:
        if not head.alive():  # the head died (see Head): a new one, on new ports, with the same token
            head.ensure_alive()
            url = head.url
        submit = subprocess.run(
            [
                str(BIN / "ray"),
                "job",
                "submit",
                "--working-dir",
                str(ROOT),
                "--submission-id",
                f"hqjepa-test-{secrets.token_hex(4)}",
                "--",
                *args,
            ],
            env={**env, "RAY_API_SERVER_ADDRESS": url},
            capture_output=True,
            text=True,
            timeout=900,
        )
        retry = "No available agent" in submit.stdout + submit.stderr or not head.alive()
        if not retry or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert submit.returncode == 0, submit.stdout[-3000:] + submit.stderr[-3000:]
    assert "succeeded" in (submit.stdout + submit.stderr).lower()
    run = storage / "submitted"
    for artifact in ("export.pt", "metrics.csv", "losses.png", "summary.json"):
        assert (run / artifact).is_file(), artifact
    summary = json.loads((run / "summary.json").read_text())
    assert Path(summary["latest_checkpoint"]).name == "step_0000002"
