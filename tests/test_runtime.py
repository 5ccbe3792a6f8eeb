"""The environment every driver gives the processes of the Ray it starts (`ray_jobs/runtime.py`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, os
import ray_jobs.runtime as runtime
runtime.start_ray(1, log_to_driver=False)
import ray

@ray.remote(num_cpus=1)
def seen():
    import pyarrow as pa
    return os.environ.get("MIMALLOC_PURGE_DELAY"), pa.default_memory_pool().backend_name

print(json.dumps({"driver": os.environ.get("MIMALLOC_PURGE_DELAY"), "task": ray.get(seen.remote())}))
ray.shutdown()
"""


def _probe(env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_ray_processes_keep_arrows_freed_pages_unless_the_user_says_otherwise():
    """Arrow's allocator (mimalloc) keeps the pages it frees in the driver and in every Ray worker,
    so each shard block does not fault them in again; a value the user set wins."""
    env = {k: v for k, v in os.environ.items() if k not in ("MIMALLOC_PURGE_DELAY", "RAY_ADDRESS")}
    got = _probe(env)
    assert got["driver"] == "-1" and got["task"] == ["-1", "mimalloc"]
    assert _probe({**env, "MIMALLOC_PURGE_DELAY": "10"})["task"][0] == "10"
