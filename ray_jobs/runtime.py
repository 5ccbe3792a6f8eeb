"""How every driver starts or joins Ray, and the environment Ray must see before it starts.

Import this module before `ray` itself: the variables below are read by Ray's processes when they
start, so they are set here, once, for every driver.
"""

from __future__ import annotations

import os
from pathlib import Path

# Train v2 answers `ray.train.report` at its health-check poll interval; the 2 s default would add
# ~2 s to every report. Set before Ray starts so the controller and workers inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.05")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
# Arrow's allocator (mimalloc) gives freed pages back to the OS after 10 ms and faults them in again
# on the next block: every shard read and every batch gathered paid that. Keeping them (-1): 1.33x
# the input stream's pairs per CPU core (docs/performance.md); a process's memory stays at its peak
# instead. Every process Ray starts from here inherits it.
os.environ.setdefault("MIMALLOC_PURGE_DELAY", "-1")

import ray  # noqa: E402  (after the environment above)

ROOT = Path(__file__).resolve().parents[1]


def start_ray(num_cpus: int | None = None, *, log_to_driver: bool = True) -> bool:
    """Join the cluster named by RAY_ADDRESS (as `ray job submit` sets it), or start an embedded one.

    Returns True when this call started Ray (the caller may shut it down), False when Ray was
    already up (a test's or a notebook's instance) or a cluster was joined.
    """
    if ray.is_initialized():
        return False
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return False
    # Workers import hqjepa and ray_jobs from this checkout even without an editable install.
    pythonpath = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    os.environ["PYTHONPATH"] = pythonpath
    # An embedded Ray has no dashboard, yet Train v2's placement-group cleaner asks the state API
    # whether its controller lives; with no address that lookup follows /tmp/ray/ray_current_cluster
    # to whatever `ray start` head ran last and can block for tens of seconds. A closed port makes
    # it fail at once.
    os.environ.setdefault("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:9")
    # address="local": always a new instance, even when a `ray start` head runs on this machine.
    ray.init(
        address="local",
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        log_to_driver=log_to_driver,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
    )
    return True
