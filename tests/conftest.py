"""Shared fixtures. One local Ray instance per test session: `ray.init` costs 2-3 s and `ray.shutdown` over 1 s,
too much to pay per test."""

from __future__ import annotations

import os

import pytest

_TESTS = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_TESTS)
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
# Ray workers import test-module functions and ray_jobs/ by name: put tests/ and the repo root on their path.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_TESTS, _ROOT, os.environ.get("PYTHONPATH")]))


# The slowest modules, slowest first (a 2-core machine: each starts Ray, Train runs, drivers as subprocesses).
# `make test` runs the suite on two pytest-xdist workers, a module at a time on one worker, in collection
# order (`-n 2 --dist loadfile --no-loadscope-reorder`): with these first, both workers start on the long
# modules and the many short ones fill in behind, instead of a long module starting last on its own.
SLOW_FIRST = (
    "test_tune_search.py",
    "test_tracking.py",
    "test_pretrain_ray.py",
    "test_job_submit.py",
    "test_pretrain_node_loss.py",
    "test_pretrain_s3.py",
    "test_compile.py",
    "test_reproduce.py",
    "test_data_stream.py",
    "test_eval_ray.py",
    "test_terratorch_env.py",
)


def pytest_collection_modifyitems(session, config, items):
    """SLOW_FIRST modules first; otherwise (and within a module) the collection order is kept."""
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(autouse=True)
def _no_ambient_mlflow(monkeypatch):
    """Every test starts with no MLflow store in the environment, and one a test leaves there goes with it:
    MLflow's `set_tracking_uri` (which Ray's MLflow integration calls in-process) also exports
    $MLFLOW_TRACKING_URI, and a later test's driver subprocess would then track to a server long gone."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    # address="local": always a fresh instance, never a stray `ray start` head found in /tmp/ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _last_ray_user(session) -> object | None:
    if not hasattr(session, "_hqjepa_last_ray_user"):
        users = [it for it in session.items if "ray_local" in getattr(it, "fixturenames", ())]
        session._hqjepa_last_ray_user = users[-1] if users else None
    return session._hqjepa_last_ray_user


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """Shut the shared Ray instance down as soon as its last user has run, not at session end: the
    tests after it start processes of their own (gloo ranks, `tune.py`'s own Ray) and should not run
    beside an idle Ray driver, raylet and workers on a 2-core machine (a driver whose raylet goes
    away exits the whole pytest process)."""
    if item is _last_ray_user(item.session):
        import ray

        if ray.is_initialized():
            ray.shutdown()
