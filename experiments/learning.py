"""Learning signal: does pretraining beat a random encoder of the same architecture on GeoBench?

    python -m experiments.learning [--config configs/tiny.yaml] [--max-steps 768] [--out runs/learning]
                                   [--pretrain-set loss.w_sig_ctx=0.2 ...] [--samples 4000] [--seeds 3]
                                   [--pretrain-seeds 3] [--checkpoint a.pt,b.pt] [--set linear.epochs=30 ...]
                                   [--tasks m-so2sat,...] [--first-seed 0] [--device cpu|cuda]
                                   [--benchmark DIR] [--pretrain-only]

(from the repository root). Results and their history: experiments/learning_signal/README.md.

1. pretrain `--config` on synthetic S1/S2 pairs for a fixed budget of `--max-steps` optimiser steps,
   the schedules (lr, weight decay, EMA) stretched to end there (`python -m hqjepa.pretrain_local`,
   which writes OUT/pretrain_seed<i>/export.pt: the EMA target encoder), once per pretraining seed
   i in F..F+`--pretrain-seeds`-1 (`optim.seed=i`: initial weights, scene order, masks);
   `--pretrain-only` stops here (probe later with `--checkpoint`). Without
   `--pretrain-set` the recipe is PRETRAIN_RECIPE below (768 steps = ~11 min per run on 2 cores;
   18-49 min seen on machines losing 28-50 % of their CPU to steal: the budget is in steps);
   `--checkpoint` skips this step;
2. write the six tasks in GeoBench's format from the synthetic scene generator
   (`hqjepa synth-geobench`; `--samples` per classification task, split 50/25/25, so 4000 gives
   1000 test samples like GeoBench's m- tasks; `--segmentation-samples` per segmentation task), or
   probe `--benchmark DIR` that `write_geobench` wrote once for several runs
   (experiments/learning_gpu.sh);
3. linear-probe every task with the pretrained encoder and with random-init encoders of the same
   architecture (configs/eval.yaml protocol: frozen features, linear head, 100 epochs (segmentation
   40 epochs of 8 images per step), lr and epoch chosen on valid, test scored once), over `--seeds`
   seeds (`--first-seed F`: seeds F..F+N-1, pretraining runs too, so that a later run adds pairs).
   Seed i probes pretraining run i (mod the number of runs) with head seed i and random encoder i
   with head seed i (`run.random_init_seed: null`), so both rows' means and stds include the
   spread between encoders: a random encoder's score depends on its draw (m-brick-kiln 95.6-97.1
   over three), and a pretrained one starts from such a draw too. Runs in this process (no Ray).

`--device cuda` pretrains (fp32 unless `--pretrain-set optim.precision=...` says otherwise) and
probes on the GPU: the same recipe, seeds, weights at step 0, scenes and masks as on the CPU, so a
GPU's pairs pool with the CPU's (experiments/learning_gpu.sh runs many seeds at once on one GPU).

Prints one JSON object per task: {"task", "metric", "pretrained", "pretrained_std", "random",
"random_std", "random_max", "delta", "beats_every_random", "paired_deltas", "p_sign_flip"} (test
scores in percent, delta = pretrained mean - random mean, paired_deltas = per seed, pretrained run i
- random encoder i, which share their initial weights when this bench pretrained them, p_sign_flip =
the exact sign-flip test of those differences; `python -m experiments.pairs` pools the pairs of
several runs),
then a summary line with the pretraining budget (steps, seconds per run), how many tasks improved,
how many beat every random encoder, and the mean delta. The table and chart land in OUT/eval/
(table.md, results.json, results.png).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from experiments.pairs import paired_scores, sign_flip_p  # the exact paired test; pools runs too
from hqjepa.config import load_config, parse_override
from hqjepa.eval.config import apply_eval_overrides, eval_config_from_dict, load_eval_config
from hqjepa.eval.geobench import TASKS, GeoBenchFormatError, GeoBenchTask
from hqjepa.eval.report import summarize, write_report
from hqjepa.eval.runner import EvalJob, feature_seeds, run_extract, run_linear
from hqjepa.eval.synth_geobench import write_benchmark
from hqjepa.pretrain_local import steps_per_epoch
from hqjepa.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]

# The recipe that is above the random encoders on all six tasks, m-brick-kiln and m-cashew-plant
# by a margin that takes many pairs to see (23 pairs each: +0.82 and +0.53, sign-flip p 3.0e-5 /
# 0.0064, fourteen runs made on a GPU; experiments/learning_signal/README.md): the terms' weights as
# gradient ratios to L_pred (loss.weighting=gradnorm), SIGReg also on the context tokens (ratio
# 0.2), lr 1e-4 (tiny.yaml's 1e-3 is the paper's value at a 256x larger batch), 4096 scenes seen
# 32 batches per epoch; ~11 min per run on 2 cores (longer where the machine is slower).
# (Fixed weights instead, i.e. without loss.weighting=gradnorm: 5 of 6, m-brick-kiln lost by 0.40.)
PRETRAIN_RECIPE = [
    "loss.w_sig_ctx=0.2",
    "loss.weighting=gradnorm",
    "data.synthetic_pairs=4096",
    "train.steps_per_epoch=32",
    "optim.lr=0.0001",
    "optim.start_lr=0.00002",
]
# Probe the tokens of all four tiny blocks, concatenated; one random encoder per seed.
EVAL_DEFAULTS = ["linear.feature_blocks=4", "run.random_init_seed=null"]


PROVENANCE: dict[str, str] = {}  # this run's commit, command and date; main() fills it


def record(row: dict) -> str:
    """`row` as one JSON line, with this run's provenance merged in."""
    return json.dumps({**row, **PROVENANCE})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny.yaml"), help="pretraining config")
    p.add_argument(
        "--max-steps", type=int, default=768, help="pretraining budget in optimiser steps (0: the config's own epochs)"
    )
    p.add_argument(
        "--pretrain-set",
        action="append",
        default=None,
        metavar="SECTION.KEY=VALUE",
        help="pretraining config override (repeatable), e.g. loss.w_sig_ctx=0.05; any given "
        "replace PRETRAIN_RECIPE (pass --pretrain-set '' for the config as it is)",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="use these encoder exports (comma-separated; seed i probes the i-th, cyclically) instead of pretraining",
    )
    p.add_argument(
        "--pretrain-seeds",
        type=int,
        default=3,
        help="pretraining runs with optim.seed 0..N-1 (init, scene order, masks); seed i probes "
        "run i mod N, as it probes random encoder i",
    )
    p.add_argument("--out", default=str(ROOT / "runs" / "learning"))
    p.add_argument(
        "--samples",
        type=int,
        default=4000,
        help="synthetic GeoBench samples per classification task (split 50/25/25: 4000 gives GeoBench's "
        "~1000 test samples, one sample 0.1 points; at 1000 the m-so2sat scores of random "
        "encoders spread over 4 points)",
    )
    p.add_argument(
        "--segmentation-samples",
        type=int,
        default=200,
        help="samples per segmentation task, split 100/50/50 (a 256 px sample holds 65,536 "
        "labelled pixels; these probes dominate the CPU time). At 80 (20 valid, 20 test "
        "images) valid and test disagreed by up to 13 points and on which encoder won",
    )
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="seeds are FIRST..FIRST+N-1 (pretraining runs, random encoders and probe heads alike), "
        "so that a later run adds pairs to an earlier one's instead of repeating them",
    )
    p.add_argument("--tasks", default="all")
    p.add_argument("--eval-config", default=str(ROOT / "configs" / "eval.yaml"))
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="eval-config override after EVAL_DEFAULTS, e.g. linear.epochs=30 (repeatable; at 30 "
        "epochs the probes underfit m-bigearthnet)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads for pretraining and probing")
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda"),
        help="pretrain and probe here (cuda: optim.precision fp32 unless --pretrain-set sets it)",
    )
    p.add_argument(
        "--pretrain-only",
        action="store_true",
        help="pretrain the seeds, print their budget and stop (probe later with --checkpoint)",
    )
    p.add_argument(
        "--benchmark",
        default=None,
        metavar="DIR",
        help="probe this GeoBench directory (written once for several runs by write_geobench "
        "with the same --samples / --segmentation-samples) instead of writing OUT/geobench",
    )
    args = p.parse_args(argv)
    if args.pretrain_only and args.checkpoint:
        p.error("--pretrain-only pretrains; --checkpoint skips pretraining: give one of them")
    if args.pretrain_set is None:
        args.pretrain_set = list(PRETRAIN_RECIPE)
    args.pretrain_set = [t for t in args.pretrain_set if t.strip()]
    args.max_steps = args.max_steps or None
    return args


def pretrain(args: argparse.Namespace, out: Path, seed: int) -> tuple[Path, dict]:
    """Pretrain the recipe with `optim.seed=seed` (init, scene order, masks) into `out`."""
    cmd = [sys.executable, "-m", "hqjepa.pretrain_local", "--config", args.config, "--out", str(out)]
    for text in args.pretrain_set:
        cmd += ["--set", text]
    cmd += ["--set", f"optim.seed={seed}"]
    if args.device != "cpu":
        # the CPU recipe's arithmetic, unless the caller chose a precision
        if not any(parse_override(t)[0] == "optim.precision" for t in args.pretrain_set):
            cmd += ["--set", "optim.precision=fp32"]
        cmd += ["--device", args.device]
    if args.max_steps is not None:
        # stretch the epochs so that the lr / EMA schedules end at the budget instead of being cut
        cfg = load_config(args.config, dict(parse_override(t) for t in args.pretrain_set))
        per_epoch = steps_per_epoch(cfg, cfg.data.synthetic_pairs)
        cmd += ["--set", f"optim.epochs={math.ceil(args.max_steps / per_epoch)}", "--max-steps", str(args.max_steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    seconds = time.time() - t0
    steps = None
    metrics = out / "metrics.csv"
    if metrics.exists():
        steps = max(0, len(metrics.read_text().strip().splitlines()) - 1)
    return out / "export.pt", {"steps": steps, "seconds": round(seconds, 1)}


def pretrained_encoders(args: argparse.Namespace, out: Path) -> tuple[list[Path], dict]:
    """The checkpoints to compare with the random encoders, and the pretraining budget of each."""
    if args.checkpoint:
        paths = [Path(c.strip()) for c in args.checkpoint.split(",") if c.strip()]
        if not paths:
            raise SystemExit(f"--checkpoint {args.checkpoint!r}: no checkpoint path given")
        return paths, {"pretrain_steps": None, "pretrain_seconds": None}
    if args.pretrain_seeds < 1:
        raise SystemExit(f"--pretrain-seeds {args.pretrain_seeds}: at least one pretraining run is needed")
    runs = [
        pretrain(args, out / f"pretrain_seed{seed}", seed)
        for seed in range(args.first_seed, args.first_seed + args.pretrain_seeds)
    ]
    return [path for path, _ in runs], {
        "pretrain_steps": runs[0][1]["steps"],
        "pretrain_seconds": [budget["seconds"] for _, budget in runs],
    }


def write_geobench(bench: Path, tasks: list[str], samples: int, segmentation_samples: int | None) -> None:
    """The tasks in GeoBench's format: `samples` per classification task, `segmentation_samples`
    (or `samples`) per segmentation task, generator seed 0 (every run of this bench probes the same)."""
    segmentation = [t for t in tasks if TASKS[t].kind == "segmentation"]
    if len(segmentation) < len(tasks):
        write_benchmark(bench, samples, seed=0, tasks=[t for t in tasks if t not in segmentation])
    if segmentation:
        write_benchmark(bench, segmentation_samples or samples, seed=0, tasks=segmentation)


def checkpoint_for(seed: int, first_seed: int, checkpoints: list[Path]) -> Path:
    """Seed `seed` probes the ((seed - first_seed) mod n)-th checkpoint: with `--first-seed 5`
    and the five runs this bench pretrained (optim.seed 5..9), seed 5 probes pretrain_seed5."""
    return checkpoints[(seed - first_seed) % len(checkpoints)]


def paired_deltas(records: list[dict], task: str) -> list[float | None]:
    """Per seed i: the pretrained encoder's test score minus random encoder i's, both probed with
    head seed i. When this bench pretrained the checkpoints (`optim.seed=i`), pretraining run i
    starts from exactly random encoder i's weights (both draw `build_encoder` first after
    `torch.manual_seed(i)`), so each difference is what pretraining changed in that draw; None
    where either probe failed."""
    pairs = paired_scores(records).get(task, {})
    seeds = sorted(
        {
            r["seed"]
            for r in records
            if r["task"] == task and r.get("status") == "ok" and r["encoder"] in ("checkpoint", "random-init")
        }
    )
    return [round(pairs[s][0] - pairs[s][1], 2) if s in pairs else None for s in seeds]


def main(argv: list[str] | None = None) -> int:
    PROVENANCE.update(provenance(None if argv is None else ["-m", __spec__.name, *argv]))
    args = parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw = apply_eval_overrides(load_eval_config(args.eval_config).to_dict(), EVAL_DEFAULTS + args.set)
    if args.first_seed < 0:
        raise SystemExit(f"--first-seed {args.first_seed}: seeds are non-negative")
    raw["run"]["seeds"] = list(range(args.first_seed, args.first_seed + args.seeds))
    config = eval_config_from_dict(raw).to_dict()
    tasks = list(TASKS) if args.tasks == "all" else [t for t in TASKS if t in args.tasks.split(",")]

    if args.benchmark and not args.pretrain_only:
        for task in tasks:  # opened before pretraining, so that a wrong path costs nothing
            try:
                GeoBenchTask(args.benchmark, task)
            except GeoBenchFormatError as exc:
                raise SystemExit(
                    f"--benchmark {args.benchmark}: {exc} (write it with "
                    "experiments.learning.write_geobench, as experiments/learning_gpu.sh does)"
                ) from None
    checkpoints, budget = pretrained_encoders(args, out)
    if args.pretrain_only:
        print(
            record(
                {
                    "pretrained": [str(c) for c in checkpoints],
                    "first_seed": args.first_seed,
                    "device": args.device,
                    **budget,
                }
            ),
            flush=True,
        )
        return 0
    t0 = time.time()
    bench = Path(args.benchmark) if args.benchmark else out / "geobench"
    if not args.benchmark:  # else written once by write_geobench (experiments/learning_gpu.sh)
        write_geobench(bench, tasks, args.samples, args.segmentation_samples)
    synth_seconds = time.time() - t0

    t0 = time.time()
    records = []
    for encoder in ("checkpoint", "random-init"):
        for task in tasks:
            extracted = {}  # (checkpoint, seed whose encoder gave the features) -> features
            for seed, source in feature_seeds(encoder, config["run"]["seeds"], config).items():
                checkpoint = str(checkpoint_for(seed, args.first_seed, checkpoints))
                key = (checkpoint if encoder == "checkpoint" else None, source)
                if key not in extracted:
                    extracted[key] = run_extract(
                        EvalJob(
                            task, "linear", source, encoder, checkpoint, str(bench), config, args.config, args.device
                        )
                    )
                job = EvalJob(task, "linear", seed, encoder, checkpoint, str(bench), config, args.config, args.device)
                records.append(run_linear(job, extracted[key]))
    eval_seconds = time.time() - t0

    summary = summarize(records)
    deltas, beats = [], 0
    checked = eval_config_from_dict(config)
    top_lr = {task: max(checked.for_task(task).linear.lrs) for task in tasks}  # per-task overrides included
    for task in tasks:
        pre = summary["checkpoint"]["linear"][task]
        rnd = summary["random-init"]["linear"][task]
        random_tests = [
            r["test"]
            for r in records
            if r["task"] == task and r["encoder"] == "random-init" and r.get("status") == "ok"
        ]
        row = {
            "task": task,
            "metric": TASKS[task].metric,
            "pretrained": pre["mean"],
            "pretrained_std": pre["std"],
            "random": rnd["mean"],
            "random_std": rnd["std"],
            "random_max": max(random_tests, default=None),
            "seeds": pre["n"],
            # probes whose chosen lr is the grid's largest: the grid may be too narrow
            "lr_at_grid_top": sum(
                r.get("lr") == top_lr[task] for r in records if r["task"] == task and r.get("status") == "ok"
            ),
        }
        row["paired_deltas"] = paired_deltas(records, task)
        complete = [d for d in row["paired_deltas"] if d is not None]
        # exact two-sided sign-flip p of the paired differences; 3 pairs cannot go below 0.25
        row["p_sign_flip"] = round(sign_flip_p(complete), 4) if complete else None
        if pre["mean"] is not None and rnd["mean"] is not None:
            row["delta"] = round(pre["mean"] - rnd["mean"], 3)
            row["beats_every_random"] = pre["mean"] > row["random_max"]
            deltas.append(row["delta"])
            beats += row["beats_every_random"]
        else:
            row["delta"] = None
            row["errors"] = pre["errors"] + rnd["errors"]
        print(record(row), flush=True)
    paths = write_report(
        out / "eval",
        records,
        {"checkpoints": [str(c) for c in checkpoints], "benchmark_dir": str(bench), "eval_config": config, **budget},
        {"checkpoint": "HQ-JEPA (pretrained)", "random-init": "Random init (same arch.)"},
    )
    results = Path(paths["results"])  # results.json carries this run's provenance too
    results.write_text(json.dumps({**PROVENANCE, **json.loads(results.read_text())}, indent=1) + "\n")
    print(
        record(
            {
                "summary": True,
                "config": args.config,
                "pretrain_set": None if args.checkpoint else args.pretrain_set,
                "pretrained_encoders": len(checkpoints),
                **budget,
                "samples_per_task": args.samples,
                "segmentation_samples_per_task": args.segmentation_samples or args.samples,
                "seeds": args.seeds,
                "first_seed": args.first_seed,
                "device": args.device,
                "eval_set": EVAL_DEFAULTS + args.set,
                "tasks": len(tasks),
                "tasks_improved": sum(d > 0 for d in deltas),
                "tasks_above_every_random_encoder": beats,
                "random_init_seed": config["run"]["random_init_seed"],
                # pretraining run i started from random encoder i: paired_deltas compare like with like
                "shared_init": (
                    not args.checkpoint
                    and args.pretrain_seeds == args.seeds
                    and config["run"]["random_init_seed"] is None
                ),
                "mean_delta": round(sum(deltas) / len(deltas), 3) if deltas else None,
                "synth_seconds": round(synth_seconds, 1),
                "eval_seconds": round(eval_seconds, 1),
                "table": paths["table"],
            }
        ),
        flush=True,
    )
    return 0 if len(deltas) == len(tasks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
