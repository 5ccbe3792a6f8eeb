#!/usr/bin/env bash
# More learning-signal pairs on one GPU machine: experiments/learning.py's default recipe for seeds
# FIRST..FIRST+N-1 at once, one process per seed, then the probes of every seed at once.
#   1. N x `learning.py --pretrain-only --device cuda --first-seed s --pretrain-seeds 1` (fp32, TF32
#      off: the CPU recipe's weights at step 0, scenes, order and masks), while learning.py's
#      write_geobench writes the benchmark once (SAMPLES / SEG_SAMPLES, its defaults);
#   2. N x `learning.py --checkpoint <run s> --first-seed s --seeds 1 --benchmark <it> --device cuda`
#      (random encoder s against pretraining run s, as on the CPU), PROBE_JOBS at a time;
#   3. experiments/pairs.py over the seeds that finished.
#
#   FIRST=9 N=12 TASKS=m-brick-kiln,m-cashew-plant OUT=runs/learning_gpu experiments/learning_gpu.sh
#   DEVICE=cpu N=2 EXTRA="--max-steps 2" SAMPLES=40 SEG_SAMPLES=8 experiments/learning_gpu.sh   # a smoke run
# Run it from the repository root: it calls `python -m experiments.learning` and `-m experiments.pairs`.
# Writes OUT/seed<s>/ (learning.py's OUT), OUT/seed<s>.jsonl and OUT/pretrain<s>.jsonl (their
# stdout), OUT/pairs.jsonl, and for carrying back OUT/results.tar.gz (everything but the weights)
# and OUT/exports<k>.tar (the encoder exports, four per file). DEADLINE (seconds) ends both phases;
# runs that cannot finish pretraining by PRETRAIN_DEADLINE are stopped one by one (see the watch loop).
#
# Measured (one H200, 16 cores, torch 2.11.0+cu130, FIRST=9 N=14 PRETRAIN_DEADLINE=380 DEADLINE=550):
# all 14 seeds pretrained by +377 s (each rendering its 4,096 scenes on one core until ~+150 s, then
# ~3,180 steps/min together, 294-309 s per run), but none of the 7 probes started at +377 s finished
# in the 173 s left (why was not looked into: the lease was spent). The exports came back and were
# probed on a 2-core CPU instead (~2 min per seed on m-brick-kiln, 5-8 min on m-cashew-plant). So on
# such a machine, give pretraining the whole call and probe elsewhere with --checkpoint.
# That run's records and what they showed: experiments/learning_signal/ (gpu_seeds9-22/).
set -u
FIRST=${FIRST:-9}; N=${N:-12}; TASKS=${TASKS:-m-brick-kiln,m-cashew-plant}
SAMPLES=${SAMPLES:-4000}; SEG_SAMPLES=${SEG_SAMPLES:-200}   # experiments/learning.py's defaults
DEVICE=${DEVICE:-cuda}; OUT=${OUT:-runs/learning_gpu}; PY=${PYTHON:-python3}
DEADLINE=${DEADLINE:-540}; PRETRAIN_DEADLINE=${PRETRAIN_DEADLINE:-400}; WATCH=${WATCH:-20}
STEPS=${STEPS:-768}; PROBE_JOBS=${PROBE_JOBS:-8}; EXTRA=${EXTRA:-}
mkdir -p "$OUT"
# one CPU thread per process: the GPU does the arithmetic, and N processes share the cores
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
t0=$(date +%s)
stamp() { echo "[learning_gpu.sh +$(( $(date +%s) - t0 ))s] $*"; }
left() { echo $(( DEADLINE - ($(date +%s) - t0) )); }
seeds=$(seq "$FIRST" $(( FIRST + N - 1 )))
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'; nproc; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
# fail in seconds, not after the pretraining, where the machine lacks a package or the device
$PY -c "import torch, experiments.learning, hqjepa.pretrain_local, hqjepa.eval.runner
assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'no CUDA device'" || exit 2

stamp "writing the benchmark ($TASKS, $SAMPLES samples) and pretraining seeds $FIRST..$(( FIRST + N - 1 ))"
rm -rf "$OUT/geobench" "$OUT/geobench.tmp"
( $PY -c 'import sys; from pathlib import Path; from experiments.learning import write_geobench
write_geobench(Path(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4]))' \
    "$OUT/geobench.tmp" "$TASKS" "$SAMPLES" "$SEG_SAMPLES" && mv "$OUT/geobench.tmp" "$OUT/geobench" ) \
    > "$OUT/geobench.log" 2>&1 &
writer=$!
declare -A pid_of
for s in $seeds; do
  timeout "$(left)" $PY -m experiments.learning --pretrain-only --device "$DEVICE" --first-seed "$s" \
      --pretrain-seeds 1 --threads 1 --out "$OUT/seed$s" $EXTRA > "$OUT/pretrain$s.jsonl" 2> "$OUT/pretrain$s.err" &
  pid_of[$s]=$!
done
wait $writer || stamp "benchmark writer failed: $(tail -3 "$OUT/geobench.log")"
stamp "benchmark written"

# The runs share one GPU, so they advance together and would all miss a deadline together.
# Every WATCH seconds: the steps all runs made since the last look give the joint rate; while the
# steps the running ones still need would not fit before PRETRAIN_DEADLINE at that rate, the run
# furthest behind is stopped (its pair is lost, the others' finish). STEPS: each run's budget.
steps_done() { local f="$OUT/seed$1/pretrain_seed$1/metrics.csv"
               if [ -f "$f" ]; then echo $(( $(wc -l < "$f") - 1 )); else echo 0; fi; }
prev=-1; prev_least=0; prev_t=$(date +%s)
while :; do
  running=(); for s in $seeds; do [ -n "${pid_of[$s]:-}" ] && kill -0 "${pid_of[$s]}" 2>/dev/null && running+=("$s"); done
  [ ${#running[@]} -eq 0 ] && break
  sleep "$WATCH"
  now=$(date +%s); total=0; need=0; behind=""; least=-1
  for s in $seeds; do d=$(steps_done "$s"); total=$(( total + d )); done
  for s in "${running[@]}"; do
    kill -0 "${pid_of[$s]}" 2>/dev/null || continue
    d=$(steps_done "$s"); need=$(( need + STEPS - d ))
    if [ $least -lt 0 ] || [ "$d" -le $least ]; then least=$d; behind=$s; fi
  done
  # judged only over a look that began with every running run stepping (scene rendering is over)
  if [ $prev_least -gt 0 ] && [ $total -gt $prev ] && [ $need -gt 0 ]; then
    per_min=$(( (total - prev) * 60 / (now - prev_t) ))   # steps per minute, all runs together
    finish=$(( now - t0 + need * 60 / (per_min > 0 ? per_min : 1) ))
    stamp "pretraining: $total steps, $per_min steps/min together, ${#running[@]} running, finish at ~+${finish}s"
    if [ $finish -gt "$PRETRAIN_DEADLINE" ] && [ ${#running[@]} -gt 1 ]; then
      stamp "seed $behind stopped ($least steps): the rest would finish after +${PRETRAIN_DEADLINE}s"
      kill "${pid_of[$behind]}" 2>/dev/null   # timeout passes it on to learning.py; and its pretraining:
      pkill -f "/seed$behind/pretrain_seed$behind( |\$)" 2>/dev/null
      unset "pid_of[$behind]"
    fi
  fi
  prev=$total; prev_least=$least; prev_t=$now
done
wait
done_seeds=()
for s in $seeds; do
  if [ -f "$OUT/seed$s/pretrain_seed$s/export.pt" ]; then done_seeds+=("$s")
  else stamp "seed $s: no export ($(tr '\r' '\n' < "$OUT/pretrain$s.err" | tail -2 | tr '\n' ' '))"; fi
done
stamp "pretrained: ${done_seeds[*]:-none}"

# at most PROBE_JOBS at once, so that a deadline still leaves the first ones' pairs
for s in "${done_seeds[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$PROBE_JOBS" ]; do wait -n; done
  [ "$(left)" -gt 0 ] || { stamp "seed $s: no time left to probe"; continue; }
  timeout "$(left)" $PY -m experiments.learning --checkpoint "$OUT/seed$s/pretrain_seed$s/export.pt" \
      --first-seed "$s" --seeds 1 --tasks "$TASKS" --samples "$SAMPLES" --segmentation-samples "$SEG_SAMPLES" \
      --benchmark "$OUT/geobench" \
      --device "$DEVICE" --threads 1 --out "$OUT/seed$s" $EXTRA > "$OUT/seed$s.jsonl" 2> "$OUT/seed$s.err" &
done
wait
stamp "probed"

results=()
for s in "${done_seeds[@]}"; do
  [ -f "$OUT/seed$s/eval/results.json" ] && results+=("$OUT/seed$s/eval/results.json")
done
if [ ${#results[@]} -gt 0 ]; then
  $PY -m experiments.pairs "${results[@]}" > "$OUT/pairs.jsonl" && cat "$OUT/pairs.jsonl"
fi
stamp "${#results[@]} of $N seeds probed"
# for carrying back: the small files, and the encoders four to a file
( cd "$OUT" && tar czf results.tar.gz --exclude='*.pt' --exclude=geobench --exclude=tensorboard \
    env.txt ./*.jsonl ./*.err geobench.log $(ls -d seed* 2>/dev/null | grep -v '\.') 2>/dev/null )
k=0; batch=()
for s in "${done_seeds[@]}"; do
  batch+=("seed$s/pretrain_seed$s/export.pt")
  if [ ${#batch[@]} -eq 4 ]; then (cd "$OUT" && tar cf "exports$k.tar" "${batch[@]}"); k=$((k + 1)); batch=(); fi
done
[ ${#batch[@]} -gt 0 ] && (cd "$OUT" && tar cf "exports$k.tar" "${batch[@]}")
stamp "done"
