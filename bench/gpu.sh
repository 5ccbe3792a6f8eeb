#!/usr/bin/env bash
# The device checks, in one run on a one-GPU CUDA machine (what the CPU suite and CI cannot show):
#   1. upstream's kernels (mamba-ssm selective_scan_cuda, causal-conv1d) built for this GPU
#      from their sdists (bench/gpu_kernels.py), in the background while 2-3 run;
#   2. meanwhile, checks that are not timings: NCCL, FQS on CUDA against the CPU (test and bench);
#   3. once built: our Mamba against upstream's module (tests/test_mamba.py -k gpu);
#   4. timings on the quiet machine: bench/fqs.py --cuda, bench/gpu.py (FQS batches, scans
#      against upstream's kernel), bench/step.py on configs/paper.yaml in bf16 with our PyTorch
#      scan and with upstream's kernels (model.mamba_backend=torch|cuda).
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
stamp "done"
grep -h '"summary"\|gpu_scan\|gpu_nccl\|"check"\|gpu_fqs' "$OUT"/*.jsonl
