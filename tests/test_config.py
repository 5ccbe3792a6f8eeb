"""Config loading: the shipped configs load; every bad value fails with one message naming the key."""

from pathlib import Path

import pytest

from hqjepa.config import ConfigError, apply_overrides, config_from_dict, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_configs_load():
    paper = load_config(ROOT / "configs/paper.yaml")
    assert (paper.model.depth, paper.mask.num_targets, paper.model.patch_size, paper.model.image_size) == (
        8,
        4,
        10,
        120,
    )
    assert paper.mask.target_scale == (0.15, 0.2) and paper.mask.context_scale == (0.85, 1.0)
    assert paper.mask.target_aspect == (0.75, 1.5)
    assert paper.optim.ema[0] == 0.996 and (paper.optim.warmup_epochs, paper.optim.epochs) == (30, 400)
    assert paper.optim.grad_clip == 1.0
    assert paper.optim.batch_size * 4 * paper.optim.accumulation == 4096
    assert paper.model.n_mamba == 4  # first half Mamba
    tiny = load_config(ROOT / "configs/tiny.yaml")
    assert tiny.data.source == "synthetic"


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"mask": {"target_scale": [0.1, 1.5]}}, "mask.target_scale[1] = 1.5: must be in (0, 1]"),
        ({"mask": {"context_scale": [0.0, 1.0]}}, "mask.context_scale[0] = 0.0: must be in (0, 1]"),
        ({"mask": {"target_scale": [0.3, 0.2]}}, "mask.target_scale = [0.3, 0.2]: must be a [low, high] pair"),
        ({"model": {"depth": 0}}, "model.depth = 0: must be in [1, inf)"),
        ({"loss": {"w_fqs": -0.1}}, "loss.w_fqs = -0.1: must be in [0, inf)"),
        ({"loss": {"w_sig": "a lot"}}, "loss.w_sig = 'a lot': must be a number in [0, inf)"),
        ({"model": {"depth": 8.5}}, "model.depth = 8.5: must be an integer"),
        ({"model": {"detph": 8}}, "model.detph: unknown key"),
        ({"modle": {}}, "modle: unknown section"),
        (
            {"loss": {"weighting": "magic"}},
            "loss.weighting = 'magic': must be one of 'fixed', 'uncertainty', 'dwa', 'gradnorm'",
        ),
        ({"mask": {"allow_overlap": "no"}}, "mask.allow_overlap = 'no': must be true or false"),
        ({"model": {"image_size": 125}}, "model.image_size = 125: must be a multiple of model.patch_size"),
        ({"model": {"embed_dim": 100, "num_heads": 6}}, "model.embed_dim = 100: must be divisible"),
        ({"model": {"s2_bands": ["B01", "B10"]}}, "model.s2_bands"),
        ({"model": {"mamba_layers": 9, "depth": 8}}, "model.mamba_layers = 9"),
        ({"optim": {"lr": float("nan")}}, "optim.lr = nan: must be a finite number"),
        ({"optim": {"ema": [0.996]}}, "optim.ema = [0.996]: must be a list of 2 float"),
        ({"data": {"source": "shards"}}, "data.shards = null"),
    ],
)
def test_bad_values_name_key_and_range(raw, message):
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw)
    assert message in str(e.value)


def test_overrides_are_checked_like_yaml(tmp_path):
    cfg = load_config(ROOT / "configs/tiny.yaml", {"mask.num_targets": 2, "model.depth": 6})
    assert cfg.mask.num_targets == 2 and cfg.model.depth == 6
    with pytest.raises(ConfigError, match=r"mask.num_targets = 0: must be in \[1, 16\]"):
        apply_overrides(cfg, {"mask.num_targets": 0})
    with pytest.raises(ConfigError, match="overrides are 'section.key'"):
        apply_overrides(cfg, {"depth": 3})
    assert parse_override("mask.target_scale=[0.1, 0.2]") == ("mask.target_scale", [0.1, 0.2])


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_only_declared_ranges_must_be_ordered():
    # betas is a pair of coefficients, not a [low, high] range: any order is a valid value
    cfg = config_from_dict({"optim": {"betas": [0.99, 0.9]}})
    assert cfg.optim.betas == (0.99, 0.9)
    with pytest.raises(ConfigError, match=r"mask.target_aspect = \[1.5, 0.75\]: must be a \[low, high\] pair"):
        config_from_dict({"mask": {"target_aspect": [1.5, 0.75]}})
