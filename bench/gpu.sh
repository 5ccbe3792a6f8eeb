#!/usr/bin/env bash
# The device checks, in one run on a one-GPU CUDA machine (what the CPU suite and CI cannot show):
#   1. upstream's kernels (mamba-ssm selective_scan_cuda, causal-conv1d) built for this GPU
#      from their sdists (bench/gpu_kernels.py), in the background while 2-3 run;
#   2. meanwhile, checks that are not timings: NCCL, FQS on CUDA against the CPU (test and bench);
#   3. once built: our Mamba against upstream's module (tests/test_mamba.py -k gpu);
#   4. timings on the quiet machine: bench/fqs.py --cuda, bench/gpu.py (FQS batches, scans
#      against upstream's kernel), bench/step.py on configs/paper.yaml in bf16 with our PyTorch
#      scan and with upstream's kernels (model.mamba_backend=torch|cuda);
#   5. the step's switches, before/after, paper config, bf16, batch $BATCH, upstream kernels:
#      per-component times eager vs compiled and default vs fused AdamW (bench/step.py
#      --components), the FQS simulator as CUDA graphs (HQJEPA_FQS_CUDA_GRAPHS=1, its CUDA test
#      first), and the step (MFU, FQS share) with compile + graphs against step_paper_cuda.jsonl;
#   6. Ray Train on the GPU with the real input pipeline (ray_jobs/pretrain.py via
#      bench/train_scaling.py --gpus-per-worker 1, Ray Data streaming shards written on the spot by
#      bench/synth_shards.py): samples/s and data-wait fraction, against the bare step of 4-5.
#      Needs Ray, which the image lacks: carry the slim install bench/ray_slim.py builds for the
#      image's CPython 3.12 (runs/ray_slim/ray_slim-*-cp312.tar.xz, ~20 MiB; RAY_SLIM=FILE).
#
#   SRC=.gpu OUT=runs/gpu bench/gpu.sh      # SRC holds the unpacked mamba_ssm-* and causal_conv1d-* sdists
# Run it from the repository root (the benchmarks run as `python -m bench.<name>`).
# Writes $OUT/*.jsonl and logs; a failed part is logged and the rest still runs.
set -u
SRC=${SRC:-.gpu}
OUT=${OUT:-runs/gpu}
PY=${PYTHON:-python3}
BATCH=${BATCH:-512}   # configs/paper.yaml's per-GPU batch
KERNELS=${KERNELS:-/tmp/hqjepa-kernels}
BUILD_TIMEOUT=${BUILD_TIMEOUT:-330}   # seconds; past it the upstream comparisons skip
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
stamp() { echo "[gpu.sh +$(( $(date +%s) - t0 ))s] $*"; }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  nvcc --version | tail -1; nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

mamba_src=$(ls -d "$SRC"/mamba_ssm-*/ 2>/dev/null | head -1)
conv_src=$(ls -d "$SRC"/causal_conv1d-*/ 2>/dev/null | head -1)
pids=()
if [ -n "$mamba_src" ] && [ -n "$conv_src" ]; then
  # all cores but two: 4 for causal-conv1d's 4 files, the rest for selective_scan's 11
  ncores=$(nproc)
  for ext in selective_scan_cuda causal_conv1d_cuda; do
    jobs=4; [ $ext = selective_scan_cuda ] && jobs=$(( ncores > 8 ? ncores - 6 : 2 ))
    MAX_JOBS=$jobs timeout "$BUILD_TIMEOUT" $PY -m bench.gpu_kernels --mamba "$mamba_src" \
        --causal-conv1d "$conv_src" --build "$KERNELS" --only $ext > "$OUT/kernels_$ext.log" 2>&1 &
    pids+=($!)
  done
  stamp "building upstream kernels in the background"
else
  stamp "no sdists under $SRC: upstream comparisons will skip"
fi

# While the kernels build (all but two cores): checks whose results are not timings.
stamp "correctness while building: FQS CUDA vs CPU, NCCL"
$PY -m bench.gpu --sections nccl --fqs-batches 1024 > "$OUT/gpu_checks.jsonl" 2>"$OUT/gpu_checks.err"
$PY -m pytest -q -p no:cacheprovider tests/test_fqs_fidelity.py -k cuda -rs > "$OUT/pytest_fqs_cuda.log" 2>&1
tail -1 "$OUT/pytest_fqs_cuda.log"

for p in "${pids[@]}"; do wait "$p"; done
stamp "kernels built"
cat "$OUT"/kernels_*.log | grep '^{' || true
export PYTHONPATH="$KERNELS/py${PYTHONPATH:+:$PYTHONPATH}"
$PY -c 'import mamba_ssm' > "$OUT/import_mamba_ssm.log" 2>&1 || stamp "import mamba_ssm failed (see import_mamba_ssm.log)"
stamp "GPU test against upstream's Mamba"
$PY -m pytest -q -p no:cacheprovider tests/test_mamba.py -k gpu -rs > "$OUT/pytest_mamba_gpu.log" 2>&1
tail -1 "$OUT/pytest_mamba_gpu.log"

# Timings, on a quiet machine.
stamp "FQS on CUDA"
$PY -m bench.fqs --cuda --skip-pennylane --repeats 20 > "$OUT/fqs_cuda.jsonl" 2>"$OUT/fqs_cuda.err"
stamp "gpu.py fqs, scan"
$PY -m bench.gpu --sections fqs,scan > "$OUT/gpu.jsonl" 2>"$OUT/gpu.err"
for backend in torch cuda; do
  stamp "step, paper config, bf16, mamba_backend=$backend"
  $PY -m bench.step --config configs/paper.yaml --batch "$BATCH" --set model.mamba_backend=$backend \
      > "$OUT/step_paper_$backend.jsonl" 2>"$OUT/step_paper_$backend.err"
done

# 5. The step's switches (goal: a faster GPU step, the math unchanged), before/after in one run each.
stamp "FQS CUDA graphs: equality with the eager simulator"
HQJEPA_FQS_CUDA_GRAPHS=1 $PY -m pytest -q -p no:cacheprovider tests/test_fqs_cuda_graphs.py -rs \
    > "$OUT/pytest_fqs_cuda_graphs.log" 2>&1
tail -1 "$OUT/pytest_fqs_cuda_graphs.log"
stamp "step components, paper config: eager vs compiled, default vs fused AdamW"
$PY -m bench.step --config configs/paper.yaml --batch "$BATCH" --set model.mamba_backend=cuda --components \
    --compile-modes eager,compiled --optimizers default,fused --repeats 5 \
    > "$OUT/step_components_paper.jsonl" 2>"$OUT/step_components_paper.err"
stamp "step, paper config, FQS as CUDA graphs (before: step_paper_cuda.jsonl)"
HQJEPA_FQS_CUDA_GRAPHS=1 $PY -m bench.step --config configs/paper.yaml --batch "$BATCH" \
    --set model.mamba_backend=cuda > "$OUT/step_paper_cuda_fqsgraphs.jsonl" 2>"$OUT/step_paper_cuda_fqsgraphs.err"
stamp "step, paper config, compiled + FQS graphs (after; MFU in its summary)"
HQJEPA_FQS_CUDA_GRAPHS=1 $PY -m bench.step --config configs/paper.yaml --batch "$BATCH" \
    --set model.mamba_backend=cuda --set optim.compile=true --variants +sig,full \
    > "$OUT/step_paper_cuda_after.jsonl" 2>"$OUT/step_paper_cuda_after.err"

# 6. Ray Train on the GPU fed by Ray Data (goal: the input pipeline keeps up: data-wait fraction).
pytag=$($PY -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
RAY_SLIM=${RAY_SLIM:-$(ls runs/ray_slim/ray_slim-*-cp"$pytag".tar.xz 2>/dev/null | head -1)}
if ! $PY -c 'import ray' 2>/dev/null && [ -n "$RAY_SLIM" ]; then
  mkdir -p /tmp/ray-slim && tar xJf "$RAY_SLIM" -C /tmp/ray-slim
  export PYTHONPATH="/tmp/ray-slim${PYTHONPATH:+:$PYTHONPATH}"
fi
if $PY -c 'import ray, ray.train.torch, ray.data' 2>"$OUT/import_ray.log"; then
  stamp "synthetic shards for Ray (${RAY_PAIRS:-8192} pairs)"
  $PY -m bench.synth_shards --out /tmp/hqjepa-shards --pairs "${RAY_PAIRS:-8192}" > "$OUT/synth_shards.jsonl" 2>&1
  stamp "Ray Train, 1 GPU worker, paper config, batch $BATCH, Ray Data on the other cores"
  RAY_DATA_DISABLE_PROGRESS_BARS=1 $PY -m bench.train_scaling --config configs/paper.yaml --workers 1 \
      --gpus-per-worker 1 --steps "${RAY_STEPS:-40}" --set data.source=shards --set data.shards=/tmp/hqjepa-shards \
      --set model.mamba_backend=cuda --set optim.batch_size="$BATCH" --set data.split=train \
      > "$OUT/ray_train_gpu.jsonl" 2>"$OUT/ray_train_gpu.err"
  $PY - "$OUT" > "$OUT/ray_train_gpu_vs_bare.jsonl" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def last(name, keep):
    path = out / name
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")] if path.exists() else []
    rows = [r for r in rows if keep(r)]
    return rows[-1] if rows else None
ray_row = last("ray_train_gpu.jsonl", lambda r: r.get("workers") == 1)
bare = last("step_paper_cuda.jsonl", lambda r: r.get("summary"))
if ray_row and bare:
    print(json.dumps({"bench": "ray_train_gpu_vs_bare_step", "ray_samples_per_s": ray_row["global_samples_per_s"],
                      "data_wait_fraction": ray_row["data_wait_fraction"],
                      "bare_step_samples_per_s": bare["full_samples_per_s"],
                      "ray_over_bare": round(ray_row["global_samples_per_s"] / bare["full_samples_per_s"], 3)}))
PY
else
  stamp "no importable Ray (import_ray.log) and no RAY_SLIM archive: Ray Train on the GPU skipped"
fi
stamp "done"
grep -h '"summary"\|gpu_scan\|gpu_nccl\|"check"\|gpu_fqs\|train_scaling\|ray_train_gpu' "$OUT"/*.jsonl
