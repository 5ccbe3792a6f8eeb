"""cluster/*.yaml pass `ray up`'s own offline checks (`prepare_config`, `validate_config`: schema and node-type
sanity, no cloud credentials needed) and keep the cluster closed."""

from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "local.yaml"])
def test_cluster_file_validates_and_is_locked_down(name):
    raw = yaml.safe_load((ROOT / "cluster" / name).read_text())
    cfg = prepare_config(raw)
    validate_config(cfg)  # jsonschema + sanity checks, as `ray up` runs them
    head = " ".join(cfg["head_start_ray_commands"])
    workers = " ".join(cfg["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    mounts = cfg["file_mounts"]
    assert any(k.endswith(".ray/auth_token") and v == "cluster/.auth_token" for k, v in mounts.items())
    assert any("chmod 600 ~/.ray/auth_token" in c for c in cfg["setup_commands"])


def test_aws_head_runs_no_training_and_workers_have_gpus():
    cfg = prepare_config(yaml.safe_load((ROOT / "cluster/aws-gpu.yaml").read_text()))
    types = cfg["available_node_types"]
    assert types[cfg["head_node_type"]]["resources"] == {"CPU": 0}
    assert types["gpu_worker"]["resources"]["GPU"] >= 1
    assert cfg["docker"]["image"].startswith("rayproject/ray:2.60.0")


def test_a_misspelled_key_is_caught():
    raw = yaml.safe_load((ROOT / "cluster/aws-gpu.yaml").read_text())
    raw["max_wokers"] = raw.pop("max_workers")
    with pytest.raises(Exception, match="max_wokers"):
        validate_config(prepare_config(raw))
