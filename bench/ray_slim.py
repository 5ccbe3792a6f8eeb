"""A stripped Ray install small enough to carry to a GPU machine that has no package index.

    python -m bench.ray_slim [--python-version 3.12] [--out runs/ray_slim] [--no-smoke]

Ray's wheel (2.60: 75.6 MiB for CPython 3.11, manylinux x86-64) is more than the 64 MiB a device
check may carry. This script builds `ray_slim-<ray version>-cp<XY>.tar.xz`, a directory to put on
PYTHONPATH there (`tar xJf FILE -C DIR; export PYTHONPATH=DIR`), from the wheel pip downloads for
the target Python:

  removed   ray/jars (Java), ray/rllib, ray/serve, ray/llm, the dashboard's front-end build
            (ray/dashboard/client), every `tests` package, the C++ API (ray/cpp)
  stripped  debug symbols of the native code (strip --strip-unneeded on _raylet.so, gcs_server,
            raylet and the other ELF files): Ray ships them unstripped
  added     the wheels of Ray's requirements the target lacks (`--add`: by default those not in the
            GPU image's package list: jsonschema and its referencing stack, pydantic and its core)
  packed    tar, xz -9e

It prints one JSON line per step with sizes (MiB) and, when the target Python is this one (so the
native code can load here), checks the result in a fresh virtual environment (python -m venv, pip
inside it lists what it holds) that sees only the slim directory plus this environment's copies of
the packages the GPU image already has (`--present`, symlinked): `import ray, ray.train.torch,
ray.data` and a one-worker TorchTrainer run that reads a small Ray Dataset and reports twice.
Downloads go through pip (`pip download`, the ordinary client of the package index).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

from hqjepa.provenance import provenance

PROVENANCE: dict[str, str] = {}

REMOVE = ("ray/jars", "ray/rllib", "ray/serve", "ray/llm", "ray/dashboard/client", "ray/cpp")
# Ray's requirements (core, data, train, tune) that the GPU image lacks (its package list, as read
# on 2026-11-17: it has click, filelock, msgpack, packaging, protobuf, pyyaml, requests, numpy,
# pandas, pyarrow, fsspec, aiohttp, grpcio, psutil, attrs, typing-extensions, ...)
ADD = (
    "jsonschema",
    "jsonschema-specifications",
    "referencing",
    "rpds-py",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "tensorboardX",
)
# distributions the GPU image has that Ray or the smoke run import (made visible in the fresh venv)
PRESENT = (
    "torch",
    "numpy",
    "pandas",
    "pyarrow",
    "fsspec",
    "click",
    "filelock",
    "msgpack",
    "packaging",
    "protobuf",
    "PyYAML",
    "requests",
    "urllib3",
    "idna",
    "certifi",
    "charset-normalizer",
    "typing_extensions",
    "attrs",
    "aiohttp",
    "aiosignal",
    "frozenlist",
    "multidict",
    "yarl",
    "propcache",
    "aiohappyeyeballs",
    "grpcio",
    "psutil",
    "python-dateutil",
    "six",
    "pytz",
    "tzdata",
    "sympy",
    "mpmath",
    "networkx",
    "jinja2",
    "MarkupSafe",
    "prometheus-client",
    "cloudpickle",
)


def emit(step: str, **fields) -> None:
    print(json.dumps({"bench": "ray_slim", "step": step, **fields, **PROVENANCE}), flush=True)


def mib(path: Path) -> float:
    if path.is_file():
        return round(path.stat().st_size / 2**20, 2)
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) / 2**20, 2)


def pip_download(names: list[str], python_version: str, dest: Path) -> list[Path]:
    """Wheels of `names` (no dependencies) for CPython `python_version` on manylinux x86-64."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", str(dest)]
    cmd += [
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "--abi",
        f"cp{python_version.replace('.', '')}",
    ]
    cmd += [
        "--platform",
        "manylinux2014_x86_64",
        "--platform",
        "manylinux_2_17_x86_64",
        "--platform",
        "manylinux_2_28_x86_64",
    ]
    cmd += ["--abi", "abi3", "--abi", "none", *names]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return sorted(dest.glob("*.whl"))


def is_elf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == b"\x7fELF"


def slim(site: Path) -> dict[str, float]:
    """Remove what training does not need and strip native code; returns MiB removed per item."""
    removed = {}
    for rel in REMOVE:
        p = site / rel
        if p.exists():
            removed[rel] = mib(p)
            shutil.rmtree(p)
    tests = [d for d in (site / "ray").rglob("tests") if d.is_dir()]
    removed["tests packages"] = round(sum(mib(d) for d in tests), 2)
    for d in tests:
        shutil.rmtree(d, ignore_errors=True)
    for d in list(site.rglob("__pycache__")):
        shutil.rmtree(d, ignore_errors=True)
    before = 0.0
    after = 0.0
    if shutil.which("strip"):
        for f in site.rglob("*"):
            if f.is_file() and not f.is_symlink() and is_elf(f):
                before += f.stat().st_size
                subprocess.run(["strip", "--strip-unneeded", str(f)], check=False, stderr=subprocess.DEVNULL)
                after += f.stat().st_size
    removed["debug symbols (strip)"] = round((before - after) / 2**20, 2)
    return removed


def pack(site: Path, out: Path) -> Path:
    with tarfile.open(out, "w:xz", preset=9 | 0x80000000) as tar:  # xz -9e
        for f in sorted(site.iterdir()):
            tar.add(f, arcname=f.name)
    return out


def _top_levels(dist: str) -> list[Path]:
    """This environment's files of distribution `dist`: its top-level packages and modules."""
    d = md.distribution(dist)
    roots = set()
    for f in d.files or []:
        first = Path(str(f)).parts[0]
        if first.endswith(".dist-info") or first == ".." or first.endswith(".pth") or first == "__pycache__":
            continue
        roots.add(first)
    base = Path(d.locate_file(""))
    return [base / r for r in sorted(roots)]


def smoke(site: Path, work: Path, present: list[str]) -> dict:
    """Fresh venv + the slim directory + symlinks to the GPU image's packages: imports and a
    one-worker TorchTrainer run fed by Ray Data."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    sp = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    missing = []
    for dist in present:
        try:
            for src in _top_levels(dist):
                if src.exists() and not (sp / src.name).exists():
                    (sp / src.name).symlink_to(src)
            info = Path(md.distribution(dist)._path)  # type: ignore[attr-defined]
            if not (sp / info.name).exists():
                (sp / info.name).symlink_to(info)
        except md.PackageNotFoundError:
            missing.append(dist)
    pip_list = subprocess.check_output([str(py), "-m", "pip", "list", "--format=freeze"], text=True).split()
    script = r"""
import os, sys, tempfile, time
t0 = time.time()
import ray, ray.data, ray.train, ray.train.torch
assert ray.__file__.startswith(os.environ["SLIM"]), ray.__file__
from ray.train import ScalingConfig, RunConfig
from ray.train.torch import TorchTrainer
def loop(config):
    import torch
    model = ray.train.torch.prepare_model(torch.nn.Linear(4, 1))
    shard = ray.train.get_dataset_shard("train")
    rows = 0
    for batch in shard.iter_torch_batches(batch_size=8):
        loss = model(batch["x"].float()).pow(2).mean(); loss.backward(); rows += len(batch["x"])
    ray.train.report({"rows": rows})
    ray.train.report({"rows": rows, "again": 1})
    open(config["out"], "w").write(str(rows))
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
import numpy as np
ds = ray.data.from_items([{"x": np.arange(4, dtype=np.float32) + i} for i in range(32)])
out = os.path.join(tempfile.mkdtemp(), "rows")
res = TorchTrainer(loop, train_loop_config={"out": out}, datasets={"train": ds},
                   scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                   run_config=RunConfig(storage_path=tempfile.mkdtemp(), name="slim")).fit()
assert res.error is None and open(out).read() == "32", res
print("SMOKE_OK", ray.__version__, round(time.time() - t0, 1))
ray.shutdown()
"""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(
        PYTHONPATH=str(site),
        SLIM=str(site),
        RAY_DATA_DISABLE_PROGRESS_BARS="1",
        RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
    )
    t0 = time.time()
    r = subprocess.run([str(py), "-c", script], capture_output=True, text=True, env=env, cwd=work, timeout=600)
    ok = r.returncode == 0 and "SMOKE_OK" in r.stdout
    return {
        "ok": ok,
        "seconds": round(time.time() - t0, 1),
        "venv_pip_list": pip_list,
        "present_not_found_here": missing,
        "tail": (r.stdout + r.stderr)[-1500:] if not ok else r.stdout.strip().splitlines()[-1],
    }


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    p.add_argument("--python-version", default=here, help="target CPython, e.g. 3.12 (the GPU image's)")
    p.add_argument("--ray-version", default=md.version("ray"))
    p.add_argument("--out", default="runs/ray_slim")
    p.add_argument("--add", default=",".join(ADD), help="requirement wheels to bundle (comma-separated)")
    p.add_argument("--present", default=",".join(PRESENT), help="distributions the target already has")
    p.add_argument("--no-smoke", action="store_true")
    p.add_argument("--smoke-only", metavar="ARCHIVE", help="only check an archive built before")
    args = p.parse_args(argv)
    if args.smoke_only:
        check = Path(tempfile.mkdtemp(prefix="ray-slim-check-"))
        try:
            with tarfile.open(args.smoke_only) as tar:
                tar.extractall(check / "site", filter="fully_trusted")
            emit(
                "smoke",
                archive=args.smoke_only,
                **smoke(check / "site", check, [d for d in args.present.split(",") if d]),
            )
        finally:
            shutil.rmtree(check, ignore_errors=True)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = args.python_version.replace(".", "")
    work = Path(tempfile.mkdtemp(prefix="ray-slim-"))
    try:
        wheel = pip_download([f"ray=={args.ray_version}"], args.python_version, work / "ray-wheel")[0]
        emit("ray wheel", file=wheel.name, mib=mib(wheel))
        site = work / "site"
        with zipfile.ZipFile(wheel) as z:
            z.extractall(site)
        for f in (site / "ray").rglob("*"):  # zip drops the execute bits of the native programs
            if f.is_file() and is_elf(f):
                f.chmod(0o755)
        emit("ray unpacked", mib=mib(site))
        removed = slim(site)
        emit("removed", mib_removed=removed, ray_left_mib=mib(site))
        adds = [a for a in args.add.split(",") if a]
        if adds:
            wheels = pip_download(adds, args.python_version, work / "deps")
            for w in wheels:
                with zipfile.ZipFile(w) as z:
                    z.extractall(site)
            emit("requirements added", wheels=[w.name for w in wheels], mib=round(sum(mib(w) for w in wheels), 2))
        for d in list(site.rglob("__pycache__")):
            shutil.rmtree(d, ignore_errors=True)
        emit("unpacked total", mib=mib(site))
        t0 = time.time()
        archive = pack(site, out / f"ray_slim-{args.ray_version}-cp{tag}.tar.xz")
        size = mib(archive)
        emit(
            "packed",
            file=str(archive),
            mib=size,
            fits_64_mib=size <= 64,
            seconds=round(time.time() - t0, 1),
            install="tar xJf FILE -C DIR && export PYTHONPATH=DIR",
        )
        if not args.no_smoke:
            if args.python_version != here:
                emit("smoke", ok=None, skipped=f"target CPython {args.python_version}, this is {here}")
            else:
                check = work / "check"
                check.mkdir()
                with tarfile.open(archive) as tar:
                    tar.extractall(check / "site", filter="fully_trusted")
                emit("smoke", **smoke(check / "site", check, [d for d in args.present.split(",") if d]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
