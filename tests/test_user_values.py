"""Values as users write them (`1e-3`, `5e-4`, `.5`) everywhere a value is read, and every bad
config, space or option of every entry point as one line on stderr, exit 2, no traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hqjepa.config import ConfigError, load_config, parse_override, yaml_load
from hqjepa.eval.config import apply_eval_overrides, eval_config_from_dict, load_eval_config
from hqjepa.tuning.space import load_space

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e-3", 1e-3), ("5e-4", 5e-4), (".5", 0.5), ("1E3", 1000.0), ("-2.5e-4", -2.5e-4), ("+1e3", 1000.0)],
)
def test_numbers_as_written_are_numbers(text, value):
    assert yaml_load(text) == value and isinstance(yaml_load(text), float)


@pytest.mark.parametrize(
    ("text", "value"), [("42", 42), ("1_000", 1000), ("abc", "abc"), ("1e", "1e"), ("v1e3", "v1e3")]
)
def test_other_scalars_keep_their_type(text, value):
    assert yaml_load(text) == value and type(yaml_load(text)) is type(value)


def test_set_override_takes_exponent_floats():
    assert parse_override("optim.lr=1e-3") == ("optim.lr", 1e-3)
    cfg = load_config(TINY, dict(parse_override(s) for s in ["optim.lr=1e-3", "optim.weight_decay=.5"]))
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 0.5


def test_yaml_config_file_takes_exponent_floats(tmp_path):
    import yaml

    raw = yaml_load((ROOT / "configs" / "tiny.yaml").read_text())
    raw["optim"]["lr"] = "PLACEHOLDER"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(raw).replace("PLACEHOLDER", "5e-4"))
    assert "lr: 5e-4" in path.read_text()
    assert load_config(path).optim.lr == 5e-4


def test_eval_overrides_and_eval_file_take_exponent_floats(tmp_path):
    raw = load_eval_config(ROOT / "configs" / "eval.yaml").to_dict()
    cfg = eval_config_from_dict(apply_eval_overrides(raw, ["finetune.lr=5e-4", "linear.lrs=[1e-3, 1e-2]"]))
    assert cfg.finetune.lr == 5e-4 and cfg.linear.lrs == (1e-3, 1e-2)
    path = tmp_path / "eval.yaml"
    path.write_text("finetune:\n  lr: 2e-4\n")
    assert load_eval_config(path).finetune.lr == 2e-4


def test_tune_space_takes_exponent_floats(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("metric: geobench/m-eurosat/linear\nmode: max\nparams:\n  optim.lr: {loguniform: [1e-5, 1e-3]}\n")
    space = load_space(path, load_config(TINY))
    assert space.keys == ["optim.lr"]


@pytest.mark.parametrize("seeds", ["[]", "[0, 0]"])
def test_empty_or_repeated_seed_lists_are_refused(seeds):
    raw = load_eval_config(ROOT / "configs" / "eval.yaml").to_dict()
    with pytest.raises(ConfigError, match=r"run.seeds = .*: must be a non-empty list of distinct integers"):
        eval_config_from_dict(apply_eval_overrides(raw, [f"run.seeds={seeds}"]))


def test_set_lr_1e3_trains(tmp_path):
    from hqjepa import pretrain_local

    parser = argparse.ArgumentParser()
    pretrain_local.configure_parser(parser)
    sets = ["optim.lr=1e-3", "data.synthetic_pairs=32", "train.steps_per_epoch=1", "optim.precision=fp32"]
    args = parser.parse_args(
        ["--out", str(tmp_path), "--quiet", "--max-steps", "1", *sum([["--set", s] for s in sets], [])]
    )
    assert pretrain_local.main(args) == 0
    assert load_config(tmp_path / "config.yaml").optim.lr == 1e-3


# Every entry point: (command line, the one line it must print). None of these may start Ray.
BAD = [
    (["ray_jobs/pretrain.py", "--set", "optim.lr=-1e-3"], "pretrain: error: optim.lr = -0.001: must be in (0, inf)"),
    (["ray_jobs/pretrain.py", "--workers", "0"], "pretrain: error: --workers 0: must be >= 1"),
    (["ray_jobs/pretrain.py", "--set", "optim.bogus=1"], "pretrain: error: optim.bogus: unknown key;"),
    (["ray_jobs/pretrain.py", "--config", "nowhere.yaml"], "pretrain: error: config file nowhere.yaml does not exist"),
    (
        ["-m", "hqjepa.pretrain_local", "--set", "mask.target_scale=[0.1, 1.5]", "--out", "OUT"],
        "python -m hqjepa.pretrain_local: error: mask.target_scale[1] = 1.5: must be in (0, 1]",
    ),
    (["ray_jobs/evaluate.py", "--checkpoint", "x.pt", "--seeds", "0"], "evaluate: error: --seeds 0: must be >= 1"),
    (
        ["ray_jobs/evaluate.py", "--checkpoint", "x.pt", "--gpu-fraction", "1.5"],
        "evaluate: error: --gpu-fraction 1.5: must be in (0, 1]",
    ),
    (
        ["ray_jobs/evaluate.py", "--checkpoint", "x.pt", "--gpu-fraction", "0"],
        "evaluate: error: --gpu-fraction 0.0: must be in (0, 1]",
    ),
    (
        ["ray_jobs/evaluate.py", "--checkpoint", "x.pt", "--set", "run.seeds=[1, 1]"],
        "evaluate: error: run.seeds = [1, 1]: must be a non-empty list of distinct integers >= 0",
    ),
    (
        ["ray_jobs/evaluate.py", "--checkpoint", "x.pt", "--set", "linear.epochs=0"],
        "evaluate: error: linear.epochs = 0: must be",
    ),
    (
        ["ray_jobs/tune.py", "--space", "tune_spaces/masking.yaml", "--workers", "0"],
        "tune: error: --workers 0: must be >= 1",
    ),
    (
        ["ray_jobs/tune.py", "--space", "SPACE"],
        "tune: error: space.yaml: params.optim.lr.loguniform: loguniform [0.001, 1e-05]: low > high",
    ),
    (
        ["ray_jobs/tune.py", "--space", "tune_spaces/masking.yaml", "--set", "optim.lr=abc"],
        "tune: error: optim.lr = 'abc': must be a number",
    ),
]


@pytest.mark.parametrize(("argv", "line"), BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(argv, line, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("metric: geobench/m-eurosat/linear\nmode: max\nparams:\n  optim.lr: {loguniform: [1e-3, 1e-5]}\n")
    argv = [str(space) if a == "SPACE" else str(tmp_path / "out") if a == "OUT" else a for a in argv]
    env = {**os.environ, "GEO_BENCH_DIR": str(tmp_path)}  # no benchmark is written for a refused search
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), proc.stderr
    assert not (tmp_path / "out").exists()
