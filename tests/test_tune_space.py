"""Search spaces: the shipped YAML files, Optuna drawing from them, and every invalid space
refused with its message before Ray starts (no Ray needed for any test here)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
import yaml

from hqjepa.config import ConfigError, apply_overrides, load_config
from hqjepa.tuning.space import SpaceError, load_space, make_sampler, space_from_dict
from hqjepa.tuning.trial import budget_config, parse_metrics, round_ends

ROOT = Path(__file__).resolve().parents[1]
SPACES = ["masking", "architecture", "loss_weights", "paper_table3"]
optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def tiny():
    return load_config(ROOT / "configs/tiny.yaml")


@pytest.mark.parametrize("config", ["tiny", "paper"])
@pytest.mark.parametrize("name", SPACES)
def test_shipped_spaces_load_against_both_configs(name, config):
    space = load_space(ROOT / "tune_spaces" / f"{name}.yaml", load_config(ROOT / "configs" / f"{config}.yaml"))
    assert space.keys and space.mode == "max"
    parse_metrics(space.metric)


@pytest.mark.parametrize("name", ["masking", "architecture", "loss_weights"])
def test_optuna_draws_valid_configs_from_each_sampled_space(name, tiny):
    space = load_space(ROOT / "tune_spaces" / f"{name}.yaml", tiny)
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 0, space))
    for i in range(25):
        trial = study.ask()
        space(trial)  # define-by-run, as OptunaSearch calls it
        overrides = space.overrides(trial.params)
        cfg = apply_overrides(tiny, overrides)  # every draw is a valid config
        for key, value in overrides.items():
            if isinstance(value, list):
                assert value[0] <= value[1], (key, value)
        if name == "loss_weights":  # the conditional key follows its choice
            assert ("loss.dwa_temperature" in overrides) == (cfg.loss.weighting == "dwa")
        study.tell(trial, float(i % 7))
    # the SQLite-free in-memory study still sees the parameter names the dashboard would show
    names = set().union(*(t.params for t in study.trials))
    if name == "masking":
        assert {
            "mask.num_targets",
            "mask.target_scale[0]",
            "mask.target_scale[1]",
            "mask.context_scale[0]",
            "mask.target_aspect",
        } <= names and "mask.context_scale[1]" not in names  # fixed end: not drawn


def test_paper_table3_is_the_papers_13_point_grid(tiny):
    space = load_space(ROOT / "tune_spaces" / "paper_table3.yaml", tiny)
    assert space.is_grid and len(space.grid) == 13
    default = {
        "model.depth": 8,
        "mask.num_targets": 4,
        "mask.target_scale": [0.15, 0.2],
        "mask.context_scale": [0.85, 1.0],
    }
    expected = [default] + [
        {**default, key: v}
        for key, values in (
            ("model.depth", [4, 6, 10]),
            ("mask.num_targets", [1, 2, 3]),
            ("mask.target_scale", [[0.125, 0.2], [0.2, 0.25], [0.2, 0.3]]),
            ("mask.context_scale", [[0.4, 1.0], [0.65, 1.0], [0.75, 1.0]]),
        )
        for v in values
    ]
    assert [p.overrides for p in space.grid] == expected
    assert space.grid[0].name == "default" and space.grid[0].factor is None
    assert {p.factor for p in space.grid[1:]} == set(default)
    # every distinct configuration once: the 13 configs differ
    configs = {json.dumps(apply_overrides(tiny, p.overrides).to_dict(), sort_keys=True) for p in space.grid}
    assert len(configs) == 13

    # Optuna's grid sampler (as the search runs it, ask/tell) visits each point exactly once, no error at the end
    study = optuna.create_study(direction="maximize", sampler=make_sampler("tpe", 0, space))
    seen = []
    for _ in range(13):
        trial = study.ask()
        space(trial)
        seen.append(trial.params["setting"])
        study.tell(trial, 1.0)
    assert sorted(seen) == sorted(p.name for p in space.grid)
    assert space.overrides({"setting": "mask.context_scale=0.4-1"})["mask.context_scale"] == [0.4, 1.0]


def test_pairs_choices_and_constants_turn_into_overrides(tiny):
    space = space_from_dict(
        {
            "params": {
                "mask.target_scale": {"pair": {"low": {"uniform": [0.1, 0.2]}, "high": {"loguniform": [0.2, 0.4]}}},
                "mask.context_scale": {"choice": [[0.85, 1.0], [0.5, 1.0]]},
                "mask.min_keep": 8,
                "model.depth": {"int": [2, 6], "step": 2},
            }
        },
        tiny,
        "inline.yaml",
    )
    params = {
        "mask.target_scale[0]": 0.12,
        "mask.target_scale[1]": 0.3,
        "mask.context_scale": "[0.5, 1.0]",
        "model.depth": 4,
    }
    assert space.overrides(params) == {
        "mask.target_scale": [0.12, 0.3],
        "mask.context_scale": [0.5, 1.0],
        "mask.min_keep": 8,
        "model.depth": 4,
    }
    assert space.plot_kinds == {
        "mask.target_scale": (0, 1),
        "mask.context_scale": "categories",
        "mask.min_keep": "categories",
        "model.depth": "numeric",
    }


# --- invalid spaces: each refused with its message -------------------------------------------------

BAD = {
    "unknown parameter": (
        {"params": {"mask.num_target": {"int": [1, 4]}}},
        r"bad.yaml: params: unknown parameter 'mask.num_target': not a config key; mask has "
        r"num_targets",
    ),
    "unknown section": (
        {"params": {"masking.num_targets": {"int": [1, 4]}}},
        r"unknown parameter 'masking.num_targets': not a config key \(section.key, section one of "
        r"model, mask",
    ),
    "empty range": (
        {"params": {"loss.w_cm": {"uniform": [0.5, 0.5]}}},
        r"params.loss.w_cm.uniform: uniform \[0.5, 0.5\]: empty range \(low == high\)",
    ),
    "empty choice": (
        {"params": {"mask.num_targets": {"choice": []}}},
        r"params.mask.num_targets.choice: empty range: an empty choice",
    ),
    "empty grid factor": (
        {"grid": {"one_at_a_time": {"model.depth": []}}},
        r"grid.one_at_a_time.model.depth: empty range: no values",
    ),
    "low > high": (
        {"params": {"loss.w_sig": {"loguniform": [0.5, 0.05]}}},
        r"params.loss.w_sig.loguniform: loguniform \[0.5, 0.05\]: low > high",
    ),
    "low > high int": ({"params": {"model.depth": {"int": [8, 4]}}}, r"int \[8, 4\]: low > high"),
    "pair ends cross": (
        {"params": {"mask.target_scale": {"pair": {"low": {"uniform": [0.1, 0.3]}, "high": {"uniform": [0.2, 0.4]}}}}},
        r"params.mask.target_scale.pair: low can reach 0.3 but high can be as small as 0.2",
    ),
    "unknown distribution": (
        {"params": {"loss.w_cm": {"gaussian": [1.0, 0.1]}}},
        r"params.loss.w_cm: unknown distribution 'gaussian'; one of uniform, loguniform, int, "
        r"choice, pair",
    ),
    "choice the config does not allow": (
        {"params": {"loss.weighting": {"choice": ["fixed", "pcgrad"]}}},
        r"params.loss.weighting: value 'pcgrad' is not allowed by the config: "
        r"loss.weighting = 'pcgrad': must be one of 'fixed', 'uncertainty', 'dwa', 'gradnorm'",
    ),
    "range end the config does not allow": (
        {"params": {"mask.target_scale": {"choice": [[0.1, 0.2], [0.2, 1.5]]}}},
        r"value \[0.2, 1.5\] is not allowed by the config: "
        r"mask.target_scale\[1\] = 1.5: must be in \(0, 1\]",
    ),
    "int for a float range end": (
        {"params": {"loss.w_cm": {"uniform": [-1.0, 2.0]}}},
        r"value -1.0 is not allowed by the config: loss.w_cm = -1.0: must be in \[0, inf\)",
    ),
    "cross-field combination": (
        {"params": {"model.depth": {"choice": [2, 4]}, "model.mamba_layers": {"int": [0, 3]}}},
        r"params: the combination model.depth=2, model.mamba_layers=3 is not allowed by the "
        r"config: model.mamba_layers = 3: must be in \[0, model.depth=2\]",
    ),
    "heads do not divide the width": (
        {"params": {"model.embed_dim": {"choice": [96, 98]}}},
        r"value 98 is not allowed by the config: model.embed_dim = 98: must be "
        r"divisible by its number of heads \(4\)",
    ),
    "grid point the config does not allow": (
        {"grid": {"one_at_a_time": {"mask.num_targets": [2, 17]}}},
        r"grid point mask.num_targets=17: this point is not allowed by the config: "
        r"mask.num_targets = 17: must be in \[1, 16\]",
    ),
    "both params and grid": (
        {"params": {"model.depth": 4}, "grid": {"default": {}}},
        r"give either params \(sampled\) or grid \(explicit points\), exactly one",
    ),
    "unknown top-level entry": (
        {"params": {"model.depth": 4}, "sampler": "tpe"},
        r"unknown entry 'sampler'; a search space has metric, mode, params, grid",
    ),
    "condition on a non-choice": (
        {
            "params": {
                "loss.w_cm": {"uniform": [0.1, 1.0]},
                "loss.dwa_temperature": {"uniform": [1.0, 2.0], "when": {"loss.w_cm": 0.5}},
            }
        },
        r"params.loss.dwa_temperature.when: loss.w_cm must be a choice declared above",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_space_is_refused_with_its_message(case, tiny):
    raw, message = BAD[case]
    with pytest.raises(SpaceError, match=message):
        space_from_dict(raw, tiny, "bad.yaml")


@pytest.mark.parametrize(
    "case",
    ["unknown parameter", "empty range", "low > high", "unknown distribution", "choice the config does not allow"],
)
def test_tune_py_refuses_an_invalid_space_before_ray_starts(case, tmp_path, monkeypatch, capsys):
    from ray_jobs import tune as tune_py

    def no_ray(*_a, **_k):
        raise AssertionError("Ray was started for an invalid space")

    monkeypatch.setattr(tune_py, "start_ray", no_ray)
    monkeypatch.setattr(tune_py, "synthetic_shards", no_ray)  # no data is made either
    raw, message = BAD[case]
    space = tmp_path / "bad.yaml"
    space.write_text(yaml.safe_dump(raw))
    rc = tune_py.main(["--space", str(space), "--storage", str(tmp_path / "tune"), "--benchmark-dir", str(tmp_path)])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("tune: error: ") and __import__("re").search(message, err), err
    assert not (tmp_path / "tune").exists()


def test_tune_py_refuses_bad_options_before_ray_starts(tmp_path, monkeypatch, capsys):
    from ray_jobs import tune as tune_py

    monkeypatch.setattr(tune_py, "start_ray", lambda *_a, **_k: pytest.fail("Ray was started"))
    monkeypatch.setattr(tune_py, "synthetic_shards", lambda *_a, **_k: pytest.fail("data was made"))
    masking = str(ROOT / "tune_spaces" / "masking.yaml")
    cases = [
        (["--space", masking, "--metric", "geobench/m-eurosat/knn"], "unknown protocol 'knn'"),
        (["--space", masking, "--metric", "geobench/eurosat/linear"], "unknown task 'eurosat'"),
        (["--space", masking], "no task directory classification_v1.0/m-eurosat"),
        (["--space", masking, "--sampler", "annealing"], "unknown sampler 'annealing'"),
        (["--space", str(ROOT / "tune_spaces" / "paper_table3.yaml"), "--trials", "5"], "has 13 points"),
        (["--space", str(tmp_path / "missing.yaml")], "missing.yaml does not exist"),
        (["--resume", "--name", "nothing-here"], "holds no search"),
    ]
    for argv, message in cases:
        rc = tune_py.main(argv + ["--storage", str(tmp_path / "tune"), "--benchmark-dir", str(tmp_path)])
        err = capsys.readouterr().err
        assert rc == 2 and message in err, (argv, err)


def test_budget_and_rounds(tiny):
    cfg = budget_config(tiny, {"mask.num_targets": 2}, budget_epochs=3)
    assert cfg.optim.epochs == 3 and cfg.mask.num_targets == 2 and cfg.train.max_steps is None
    assert math.isclose(cfg.optim.warmup_epochs, tiny.optim.warmup_epochs * 3 / tiny.optim.epochs)
    assert round_ends(10, 3) == [4, 7, 10] and round_ends(2, 2) == [1, 2]
    with pytest.raises(ConfigError, match="cannot be cut into 3 rounds"):
        round_ends(2, 3)
    assert parse_metrics("geobench/m-eurosat/linear, geobench/m-so2sat/finetune") == [
        ("m-eurosat", "linear"),
        ("m-so2sat", "finetune"),
    ]


def test_the_tuning_library_does_not_import_ray():
    import subprocess
    import sys

    code = (
        "import sys, hqjepa.tuning.space, hqjepa.tuning.report, hqjepa.tuning.trial; "
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "qmc", "gp"])
def test_every_sampler_draws_from_a_space(sampler, tiny):
    space = load_space(ROOT / "tune_spaces/masking.yaml", tiny)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(sampler, 0, space))
    for i in range(4):
        trial = study.ask()
        space(trial)
        apply_overrides(tiny, space.overrides(trial.params))
        study.tell(trial, float(i))
    assert len(study.trials) == 4
