"""pyproject.toml's dependency ranges hold what is installed and what the cluster image runs; optional
packages (PennyLane, MLflow) sit in extras, which the dev extra includes."""

from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _requirements(specs: list[str]) -> dict[str, Requirement]:
    return {(r := Requirement(s)).name: r for s in specs}


def test_installed_ray_and_the_cluster_image_are_in_the_declared_range():
    ray = _requirements(PROJECT["dependencies"])["ray"]
    assert {"default", "train", "tune", "data"} <= ray.extras
    assert ray.specifier.contains(version("ray")), (ray, version("ray"))
    image = yaml.safe_load((ROOT / "cluster/aws-gpu.yaml").read_text())["docker"]["image"]
    image_ray = image.split(":", 1)[1].split("-", 1)[0]  # rayproject/ray:2.60.0-py311-gpu
    assert ray.specifier.contains(image_ray), (ray, image)


def test_optional_packages_are_extras_the_dev_extra_includes():
    core = _requirements(PROJECT["dependencies"])
    extras = {name: _requirements(specs) for name, specs in PROJECT["optional-dependencies"].items()}
    assert "pennylane" not in core and "pennylane" in extras["reference"]
    assert not {"mlflow", "mlflow-skinny"} & set(core) and "mlflow-skinny" in extras["tracking"]
    assert {"tracking", "reference"} <= extras["dev"]["hqjepa"].extras
    for name in ("pyarrow", "torch"):
        assert core[name].specifier.contains(version(name).split("+")[0]), (core[name], version(name))
