"""The embedded default benchmark: what `evaluate` and `tune` use when the user names no GeoBench.

A real GeoBench (`--benchmark-dir`, else $GEO_BENCH_DIR) always wins. Without one, a small
synthetic benchmark in GeoBench's exact on-disk format (all six tasks, `hqjepa synth-geobench`'s
writer) is written once under the cache directory and reused, so that every documented command
runs on a fresh clone. Scores on it say that the pipeline works, not how good an encoder is.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hqjepa.eval.geobench import ENV_VAR, TASKS, resolve_benchmark_dir

SAMPLES = 40  # per task, split 50/25/25 by the writer
SEED = 0
COMPLETE = "_complete.json"  # written last: a folder without it is an interrupted write


def default_benchmark_path(cache_dir: str | Path) -> Path:
    """Where the embedded benchmark lives under `cache_dir`."""
    return Path(cache_dir) / f"geobench-synthetic-{SAMPLES}-seed{SEED}"


def ensure_default_benchmark(cache_dir: str | Path) -> Path:
    """The embedded benchmark, written on first use (about 15 s and 250 MB), then reused.

    Written into a temporary sibling folder and renamed into place, so an interrupted write never
    leaves a half benchmark that a later run would read; two concurrent first uses both succeed.
    """
    from hqjepa.eval.synth_geobench import write_benchmark

    target = default_benchmark_path(cache_dir)
    if (target / COMPLETE).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write_benchmark(tmp, SAMPLES, SEED, list(TASKS))
        (tmp / COMPLETE).write_text(json.dumps({"samples_per_task": SAMPLES, "seed": SEED, "tasks": list(TASKS)}))
        try:
            os.replace(tmp, target)  # atomic; fails if another writer got there first
        except OSError:
            if not (target / COMPLETE).exists():
                shutil.rmtree(target, ignore_errors=True)  # a leftover without its marker
                os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def benchmark_or_default(
    path: str | os.PathLike | None, cache_dir: str | Path, announce: Callable[[str], None] = print
) -> Path:
    """`path`, else $GEO_BENCH_DIR, else the embedded synthetic benchmark (announced in one line)."""
    if path is not None or os.environ.get(ENV_VAR):
        return resolve_benchmark_dir(path)
    target = default_benchmark_path(cache_dir)
    announce(
        f"no --benchmark-dir and no {ENV_VAR}: using the embedded synthetic GeoBench at {target} "
        f"({SAMPLES} samples per task; scores test the pipeline, not the encoder)"
    )
    return ensure_default_benchmark(cache_dir)
