"""Shared fixtures. One local Ray instance per test session (RAY-NOTES §7)."""

from __future__ import annotations

import os

import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
# Ray workers import test-module functions and ray_jobs/ by name: put tests/ and the repo root on their path.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_TESTS, _ROOT, os.environ.get("PYTHONPATH")]))


@pytest.fixture(scope="session")
def ray_local():
    import ray

    # address="local": always a fresh instance, never a stray `ray start` head found in /tmp/ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
