"""Build upstream's fused CUDA kernels from their source distributions, for this machine's GPU only.

    python -m bench.gpu_kernels --mamba SRC/mamba_ssm-2.3.2.post1 --causal-conv1d SRC/causal_conv1d-1.7.0 \
                                --build /tmp/kernels
    export PYTHONPATH=/tmp/kernels/py:$PYTHONPATH     # then `import mamba_ssm`, `import causal_conv1d`

`pip install 'hqjepa[gpu]'` is the way for users: mamba-ssm's setup.py fetches a prebuilt wheel from
its GitHub releases or compiles for every architecture from sm_75 up (tens of minutes). A GPU
machine with no route to GitHub (our lent test machines) needs the second without its cost, so
this script compiles the same sources with the same nvcc flags as the two setup.py files
(mamba-ssm 2.3.2.post1, causal-conv1d 1.7.0), but with torch's JIT extension builder (ninja, all
cores) for the one architecture present. Outputs under --build:
  py/selective_scan_cuda*.so, py/causal_conv1d_cuda*.so  the extension modules
  py/mamba_ssm/, py/causal_conv1d/                       the packages' Python code, unchanged
Prints one JSON line per extension (seconds, ok or the error).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from hqjepa.provenance import provenance

PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


# setup.py's nvcc flags, less its -gencode list (replaced by this GPU's architecture) and the
# verbose ptxas output.
NVCC_FLAGS = [
    "-O3",
    "-std=c++17",
    "-U__CUDA_NO_HALF_OPERATORS__",
    "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__",
    "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
    "--expt-extended-lambda",
    "--use_fast_math",
    "-lineinfo",
]

EXTENSIONS = {
    "selective_scan_cuda": (
        "mamba",
        "mamba_ssm",
        "csrc/selective_scan",
        [
            "selective_scan.cpp",
            "selective_scan_fwd_fp32.cu",
            "selective_scan_fwd_fp16.cu",
            "selective_scan_fwd_bf16.cu",
            "selective_scan_bwd_fp32_real.cu",
            "selective_scan_bwd_fp32_complex.cu",
            "selective_scan_bwd_fp16_real.cu",
            "selective_scan_bwd_fp16_complex.cu",
            "selective_scan_bwd_bf16_real.cu",
            "selective_scan_bwd_bf16_complex.cu",
        ],
    ),
    "causal_conv1d_cuda": (
        "causal_conv1d",
        "causal_conv1d",
        "csrc",
        ["causal_conv1d.cpp", "causal_conv1d_fwd.cu", "causal_conv1d_bwd.cu", "causal_conv1d_update.cu"],
    ),
}


def build(name: str, src: Path, build_root: Path) -> dict:
    import torch.utils.cpp_extension as cpp_ext

    _, package, csrc, files = EXTENSIONS[name]
    out = build_root / "py"
    out.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src / package, out / package, dirs_exist_ok=True)
    work = build_root / name
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        cpp_ext.load(
            name=name,
            sources=[str(src / csrc / f) for f in files],
            extra_cflags=["-O3", "-std=c++17"],
            extra_cuda_cflags=NVCC_FLAGS,
            extra_include_paths=[str(src / csrc)],
            build_directory=str(work),
            verbose=False,
        )
    except Exception as e:  # report and go on: the caller's checks then skip with the reason
        return {
            "extension": name,
            "ok": False,
            "seconds": round(time.perf_counter() - t0, 1),
            "error": f"{type(e).__name__}: {str(e)[-2000:]}",
        }
    for so in work.glob(f"{name}*.so"):
        shutil.copy2(so, out / so.name)
    row = {"extension": name, "ok": True, "seconds": round(time.perf_counter() - t0, 1)}
    if package == "mamba_ssm":
        row["package_import"] = _check_package_import(out)
    return row


def _check_package_import(py: Path) -> str:
    """Import mamba_ssm as a user would; if its __init__ pulls in something this machine lacks
    (Mamba2/3's tilelang or triton extras, huggingface_hub), trim the package __init__ to its
    `__version__` line, so that `mamba_ssm.modules.mamba_simple` (Mamba v1, what we compare
    against) imports on its own; returns what happened."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(py), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-c", "import mamba_ssm.modules.mamba_simple"]
    full = subprocess.run(cmd[:2] + ["import mamba_ssm"], env=env, capture_output=True, text=True)
    if full.returncode == 0:
        return "ok"
    init = py / "mamba_ssm" / "__init__.py"
    version = next((ln for ln in init.read_text().splitlines() if ln.startswith("__version__")), "")
    init.write_text(f"{version}\n# trimmed by bench/gpu_kernels.py: the full __init__ failed to import here\n")
    trimmed = subprocess.run(cmd, env=env, capture_output=True, text=True)
    reason = full.stderr.strip().splitlines()[-1] if full.stderr.strip() else "?"
    return f"full __init__ failed ({reason}); trimmed: " + (
        "ok" if trimmed.returncode == 0 else trimmed.stderr.strip().splitlines()[-1]
    )


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mamba", type=Path, required=True, help="unpacked mamba-ssm sdist")
    p.add_argument("--causal-conv1d", type=Path, required=True, help="unpacked causal-conv1d sdist")
    p.add_argument("--build", type=Path, required=True)
    p.add_argument("--only", choices=sorted(EXTENSIONS), help="build one extension (run two at once)")
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print(record({"bench": "gpu_kernels", "skipped": "no CUDA device"}))
        return 1
    major, minor = torch.cuda.get_device_capability()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 4))
    srcs = {"mamba": args.mamba, "causal_conv1d": args.causal_conv1d}
    ok = True
    for name, (key, *_rest) in EXTENSIONS.items():
        if args.only and name != args.only:
            continue
        row = build(name, srcs[key], args.build)
        row.update(
            bench="gpu_kernels",
            arch=os.environ["TORCH_CUDA_ARCH_LIST"],
            torch=torch.__version__,
            cuda=torch.version.cuda,
        )
        print(record(row), flush=True)
        ok &= row["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
