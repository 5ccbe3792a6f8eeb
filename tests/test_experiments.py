"""experiments.learning's pairing: pretraining run i starts from random encoder i's weights, and its
per-seed differences are computed seed by seed; experiments.pairs pools them and tests them."""

from pathlib import Path

import pytest
import torch

from experiments import grad_share as grad_share_script
from experiments import learning
from experiments import pairs as pairs_script
from hqjepa.config import load_config, parse_override
from hqjepa.eval.config import load_eval_config
from hqjepa.eval.runner import EvalJob, load_job_encoder
from hqjepa.models.hqjepa import HQJEPA

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    return learning


def test_pretraining_run_starts_from_the_random_encoder_of_the_same_seed():
    bench = _bench()
    overrides = dict(parse_override(t) for t in bench.PRETRAIN_RECIPE + ["optim.seed=1"])
    cfg = load_config(ROOT / "configs" / "tiny.yaml", overrides)
    torch.manual_seed(cfg.optim.seed)  # what hqjepa.pretrain_local does before building the model
    student = HQJEPA(cfg).student.state_dict()

    config = load_eval_config(ROOT / "configs" / "eval.yaml").to_dict()
    config["run"]["random_init_seed"] = None  # experiments.learning's EVAL_DEFAULTS: encoder i for seed i
    job = EvalJob("m-eurosat", "linear", 1, "random-init", None, "unused", config, str(ROOT / "configs" / "tiny.yaml"))
    random_1 = load_job_encoder(job)[0].state_dict()
    assert student.keys() == random_1.keys()
    assert all(torch.equal(student[k], random_1[k]) for k in student)
    job0 = EvalJob("m-eurosat", "linear", 0, "random-init", None, "unused", config, str(ROOT / "configs" / "tiny.yaml"))
    random_0 = load_job_encoder(job0)[0].state_dict()
    assert not torch.equal(random_0["patch_embed.proj.weight"], student["patch_embed.proj.weight"])


def test_paired_deltas_subtract_seed_by_seed_and_mark_failed_probes():
    bench = _bench()
    records = [
        {"task": "m-eurosat", "encoder": "checkpoint", "seed": 0, "status": "ok", "test": 85.0},
        {"task": "m-eurosat", "encoder": "checkpoint", "seed": 1, "status": "ok", "test": 80.0},
        {"task": "m-eurosat", "encoder": "checkpoint", "seed": 2, "status": "error", "test": None},
        {"task": "m-eurosat", "encoder": "random-init", "seed": 1, "status": "ok", "test": 82.5},
        {"task": "m-eurosat", "encoder": "random-init", "seed": 0, "status": "ok", "test": 84.0},
        {"task": "m-eurosat", "encoder": "random-init", "seed": 2, "status": "ok", "test": 70.0},
        {"task": "m-so2sat", "encoder": "checkpoint", "seed": 0, "status": "ok", "test": 1.0},
    ]
    assert bench.paired_deltas(records, "m-eurosat") == [1.0, -2.5, None]


def test_grad_share_separates_each_terms_weighted_gradient():
    from tests.test_model import _batch, _cfg

    grad_share = grad_share_script
    torch.manual_seed(0)
    model = HQJEPA(_cfg(w_cm=0.0, w_sig=0.0, w_fqs=0.0))
    batch = _batch(model.cfg)
    rows, total = grad_share.term_gradients(model, batch, 0)
    assert set(rows) == {"pred"} and abs(total - rows["pred"]["student"]) < 1e-9 * max(total, 1)
    model.zero_grad()
    model(batch, step=0).total.backward()  # the same number as the plain backward of the objective
    want = float(
        torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.student.parameters() if p.grad is not None))
    )
    assert abs(rows["pred"]["student"] - want) < 1e-6 * max(want, 1e-12)

    torch.manual_seed(0)
    both = HQJEPA(_cfg(w_cm=0.0, w_sig=0.0, w_fqs=0.0, w_sig_ctx=0.5))
    rows, total = grad_share.term_gradients(both, _batch(both.cfg), 0)
    assert set(rows) == {"pred", "sig_ctx"} and rows["sig_ctx"]["weight"] == 0.5
    assert rows["sig_ctx"]["predictor"] == 0.0  # SIGReg on context tokens never reaches the predictor
    assert total <= rows["pred"]["student"] + rows["sig_ctx"]["student"] + 1e-9

    torch.manual_seed(0)  # gradnorm: the rows carry the weights the forward measured and applied
    gn = HQJEPA(_cfg(weighting="gradnorm", w_cm=0.0, w_sig=0.0, w_fqs=0.0, w_sig_ctx=0.5))
    rows, _ = grad_share.term_gradients(gn, _batch(gn.cfg), 0)
    assert rows["pred"]["weight"] == 1.0
    assert rows["sig_ctx"]["weight"] == gn.weighting.applied["sig_ctx"] != 0.5


def test_segmentation_probes_take_several_steps_per_epoch():
    """A segmentation probe batches images: at the classification batch (256) the bench's old 40 train
    images were one AdamW step per epoch, 100 in all, and every probe ended at the grid's top lr and
    its last epoch. configs/eval.yaml gives those tasks a batch that makes several steps per epoch
    on the bench's split (and ~500 steps in all)."""
    import math

    from hqjepa.eval.geobench import TASKS
    from hqjepa.eval.synth_geobench import split_names

    bench = _bench()
    n_train = len(split_names(bench.parse_args([]).segmentation_samples)["train"])
    config = load_eval_config(ROOT / "configs" / "eval.yaml")
    segmentation = [t for t, spec in TASKS.items() if spec.kind == "segmentation"]
    assert len(segmentation) == 2
    for task in segmentation:
        linear = config.for_task(task).linear
        per_epoch = math.ceil(n_train / linear.batch_size)
        assert per_epoch >= 5 and per_epoch * linear.epochs >= 400, (task, n_train, linear)
    assert config.for_task("m-eurosat").linear.batch_size == 256  # classification keeps its batch


def test_later_seeds_probe_their_own_pretraining_runs():
    bench = _bench()
    runs = [Path(f"pretrain_seed{s}/export.pt") for s in range(5, 10)]
    assert [bench.checkpoint_for(s, 5, runs) for s in range(5, 10)] == runs
    assert bench.checkpoint_for(3, 0, [Path("a"), Path("b")]) == Path("b")  # cyclic, as before


def test_sign_flip_p_value_equals_the_hand_count():
    pairs = pairs_script
    # d = (1, 2, 3): of the 8 sign assignments only +++ and --- reach |sum| >= 6
    assert pairs.sign_flip_p([1.0, 2.0, 3.0]) == 2 / 8
    # d = (1, -1, 2): the 8 sums +-1 +-1 +-2 are 2, 4, 0, 2, -2, 0, -4, -2; six reach |sum| >= 2
    assert pairs.sign_flip_p([1.0, -1.0, 2.0]) == 6 / 8
    assert pairs.sign_flip_p([0.5] * 10) == 2 / 1024
    # float32 scores: ties in counts must stay ties (seven m-brick-kiln pairs, as stored and rounded)
    stored = [0.20000339, -0.99999905, 1.00000501, -0.19999743, 1.19999647, 1.70000196, 0.60000420]
    assert pairs.sign_flip_p(stored) == pairs.sign_flip_p([round(d, 1) for d in stored]) == 30 / 128
    with pytest.raises(ValueError, match="at most 40"):
        pairs.sign_flip_p([1.0] * 41)
    assert pairs.sign_flip_p([0.5, -0.5]) == 1.0  # a zero sum: every assignment is as extreme


def test_sign_flip_p_meet_in_the_middle_equals_brute_force():
    """The halved count against all 2^n sums listed one by one, on draws with ties and zeros."""
    import itertools

    import numpy as np

    pairs = pairs_script
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 9, 12):
        for _ in range(5):
            d = [round(float(x), 1) for x in rng.normal(0.3, 0.8, n)]
            total = sum(d)
            brute = (
                sum(
                    abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= abs(total) - pairs.TIE_POINTS
                    for signs in itertools.product((1, -1), repeat=n)
                )
                / 2**n
            )
            assert pairs.sign_flip_p(d) == brute, d
    # 30 equal pairs: only the all-plus and all-minus assignments reach the sum
    assert pairs.sign_flip_p([0.1] * 30) == 2 / 2**30


def test_pooling_adds_seeds_and_refuses_a_seed_counted_twice():
    pairs = pairs_script

    def run(seed, pre, rnd, status="ok"):
        return [
            {
                "task": "m-brick-kiln",
                "protocol": "linear",
                "encoder": "checkpoint",
                "seed": seed,
                "status": status,
                "test": pre,
            },
            {
                "task": "m-brick-kiln",
                "protocol": "linear",
                "encoder": "random-init",
                "seed": seed,
                "status": "ok",
                "test": rnd,
            },
        ]

    pooled = pairs.pool(
        [("a", run(0, 97.0, 96.0) + run(1, 95.0, 96.5)), ("b", run(5, 96.0, 96.0) + run(6, 0.0, 90.0, status="error"))]
    )
    assert pooled == {"m-brick-kiln": {0: (97.0, 96.0), 1: (95.0, 96.5), 5: (96.0, 96.0)}}
    stats = pairs.task_stats("m-brick-kiln", pooled["m-brick-kiln"])
    assert (stats["n"], stats["wins"], stats["losses"], stats["ties"]) == (3, 1, 1, 1)
    assert stats["mean_delta"] == round((1.0 - 1.5 + 0.0) / 3, 3)
    with pytest.raises(ValueError, match="seed 1 is in both a and c"):
        pairs.pool([("a", run(0, 97.0, 96.0) + run(1, 95.0, 96.5)), ("c", run(1, 1.0, 1.0))])


def test_cuda_pretraining_keeps_the_cpu_recipes_arithmetic(monkeypatch, tmp_path):
    """--device cuda passes the device on and asks for fp32 (bf16 is pretrain_local's `auto` there),
    unless the caller chose a precision."""
    bench = _bench()
    seen = []
    monkeypatch.setattr(bench.subprocess, "run", lambda cmd, **kw: seen.append(cmd))
    bench.pretrain(bench.parse_args(["--device", "cuda"]), tmp_path / "run", 9)
    cmd = " ".join(seen[-1])
    assert "--device cuda" in cmd and "--set optim.precision=fp32" in cmd and "--set optim.seed=9" in cmd
    bench.pretrain(bench.parse_args(["--device", "cuda", "--pretrain-set", "optim.precision=bf16"]), tmp_path / "r", 9)
    assert "optim.precision=fp32" not in " ".join(seen[-1]) and "optim.precision=bf16" in " ".join(seen[-1])
    bench.pretrain(bench.parse_args([]), tmp_path / "c", 9)
    assert "--device" not in seen[-1] and "optim.precision=fp32" not in " ".join(seen[-1])


def test_benchmark_and_pretrain_only_are_checked_before_any_work(monkeypatch, tmp_path, capsys):
    bench = _bench()
    monkeypatch.setattr(bench, "pretrained_encoders", lambda *a: pytest.fail("pretrained before the check"))
    with pytest.raises(SystemExit, match="m-brick-kiln: task directory not found"):
        bench.main(["--benchmark", str(tmp_path / "missing"), "--tasks", "m-brick-kiln", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        bench.parse_args(["--pretrain-only", "--checkpoint", "a.pt"])
    assert "give one of them" in capsys.readouterr().err


def _table2_results(effect) -> dict:
    """A table2 results.json as reproduce.py writes it (runs with overrides, job records), scored by
    `effect(terms, mode, seed, task)`."""
    from experiments.term_effects import row_terms
    from ray_jobs.reproduce import plan_runs

    runs = plan_runs("table2", load_config(ROOT / "configs" / "tiny.yaml"), seeds=3)
    records = []
    for run in runs:
        terms, mode = row_terms(run.overrides)
        for task in ("m-eurosat", "m-bigearthnet"):
            test = effect(terms, mode, run.seed, task)
            records.append({"row": run.row, "seed": run.seed, "task": task, "protocol": "linear", "test": test})
            records[-1]["status"] = "ok"
    records.append({"row": runs[0].row, "seed": 0, "task": "m-eurosat", "protocol": "linear", "status": "failed"})
    return {"table": "table2", "runs": [vars(r) for r in runs], "records": records}


def test_term_effects_pair_rows_that_differ_in_one_term_seed_by_seed():
    from experiments.term_effects import effects

    def effect(terms, mode, seed, task):  # FQS +2 points everywhere, L_cm -1 on one task, SIGReg nothing
        score = 50.0 + 10 * seed + (2.0 if "fqs" in terms else 0.0)
        score -= 1.0 if "cm" in terms and task == "m-eurosat" else 0.0
        return score + (3.0 if mode == "siamese" else 0.0)

    got = {(e["term"], e["scope"]): e for e in effects(_table2_results(effect))}
    fqs = got[("fqs", "all tasks")]
    assert fqs["n"] == 12 and fqs["mean_delta"] == 2.0 and fqs["wins"] == 12  # 4 row pairs x 3 seeds
    assert fqs["p_sign_flip"] == pytest.approx(2 / 2**12, rel=1e-3)  # all signs one way: the two extremes
    cm = got[("cm", "all tasks")]
    assert cm["mean_delta"] == -0.5 and got[("cm", "m-eurosat")]["mean_delta"] == -1.0
    assert got[("cm", "m-bigearthnet")]["p_sign_flip"] == 1.0  # no change on that task
    sig = got[("sig", "all tasks")]
    assert sig["ties"] == 12 and sig["p_sign_flip"] == 1.0
    mode = got[("fqs_mode siamese vs paper", "all tasks")]
    assert mode["n"] == 3 and mode["mean_delta"] == 3.0 and mode["p_sign_flip"] == pytest.approx(0.25)
    assert {u["unit"] for u in fqs["units"]} >= {"L_pred seed 0", "L_pred+cm+sig seed 2"}


def test_term_effects_refuse_another_table_in_one_line(tmp_path, capsys):
    from experiments import term_effects

    path = tmp_path / "results.json"
    path.write_text('{"table": "table3", "runs": [], "records": []}')
    assert term_effects.main([str(path)]) == 2
    assert capsys.readouterr().err == f"term_effects: error: {path} is a 'table3' result, not table2\n"
