"""cluster/*.yaml pass `ray up`'s own offline checks (`prepare_config`, `validate_config`: schema and node-type
sanity, no cloud credentials needed) and keep the cluster closed; the token file is private from its first
byte and reaches the nodes only through its own file mount (never with the checkout or a job's working_dir)."""

import shutil
from pathlib import Path

import pytest
import ray
import yaml

try:  # private to Ray (what `ray up` runs): pyproject.toml allows Ray releases that might move it
    from ray.autoscaler._private.util import prepare_config, validate_config
except ImportError as e:
    pytest.skip(
        f"Ray {ray.__version__} has no ray.autoscaler._private.util.prepare_config/validate_config "
        f"(private; `ray up`'s offline checks cannot run here): {e}",
        allow_module_level=True,
    )

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "local.yaml"])
def test_cluster_file_validates_and_is_locked_down(name):
    raw = yaml.safe_load((ROOT / "cluster" / name).read_text())
    cfg = prepare_config(raw)
    validate_config(cfg)  # jsonschema + sanity checks, as `ray up` runs them
    head = " ".join(cfg["head_start_ray_commands"])
    workers = " ".join(cfg["worker_start_ray_commands"])
    assert "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in workers
    # every node's processes keep Arrow's freed pages, as the drivers' own Ray does (ray_jobs/runtime.py)
    assert "MIMALLOC_PURGE_DELAY=-1" in head and "MIMALLOC_PURGE_DELAY=-1" in workers
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


# --- the token: private from its first byte, and only ever shipped by its own file mount ---------------


def test_make_cluster_token_writes_a_private_file_from_its_first_byte(tmp_path):
    """PY_SYS is a wrapper that records the mode of the file its stdout was redirected into, i.e. the
    token file as the shell created it, before a byte of the token was written."""
    import os
    import stat
    import subprocess
    import sys

    if not shutil.which("make"):
        pytest.skip("no make")
    seen = tmp_path / "mode-at-creation"
    wrapper = tmp_path / "py"
    wrapper.write_text(f'#!/bin/sh\nstat -L -c %a /proc/self/fd/1 > {seen}\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    token = tmp_path / "sub" / ".auth_token"
    token.parent.mkdir()
    env = {**os.environ}
    run = ["make", "-s", "-C", str(ROOT), "cluster-token", f"TOKEN={token}", f"PY_SYS={wrapper}"]
    out = subprocess.run(["sh", "-c", 'umask 022 && exec "$@"', "sh", *run], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert seen.read_text().strip() == "600", "the token file was readable by others while it was written"
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and len(token.read_text().strip()) == 64
    first = token.read_text()
    assert subprocess.run(run, capture_output=True).returncode == 0 and token.read_text() == first  # kept


def _checkout_with_token(root: Path) -> Path:
    (root / "cluster").mkdir(parents=True)
    (root / "cluster" / ".auth_token").write_text("secret\n")
    (root / "ray_jobs").mkdir()
    (root / "ray_jobs" / "pretrain.py").write_text("print('job')\n")
    shutil.copy(ROOT / ".rayignore", root / ".rayignore")
    return root


@pytest.mark.parametrize("gitignore", [True, False])
def test_ray_job_submit_never_uploads_the_token(tmp_path, gitignore):
    """The working_dir package `ray job submit --working-dir .` uploads, built by Ray's own packaging
    code: the token is left out by .rayignore alone, whatever .gitignore says."""
    import zipfile

    try:
        from ray._private.runtime_env.packaging import _zip_files
    except ImportError as e:  # a private module: another Ray release may move it
        pytest.skip(f"ray {ray.__version__}: {e}")

    tree = _checkout_with_token(tmp_path / "checkout")
    if gitignore:
        shutil.copy(ROOT / ".gitignore", tree / ".gitignore")
    _zip_files(str(tree), [], str(tmp_path / "pkg.zip"), include_gitignore=True)
    names = zipfile.ZipFile(tmp_path / "pkg.zip").namelist()
    assert "ray_jobs/pretrain.py" in names
    assert not [n for n in names if "auth_token" in n], names


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "local.yaml"])
def test_the_token_reaches_a_node_only_through_its_own_mount(tmp_path, name):
    """Every file mount synced with real rsync and the exclude arguments Ray's command runner builds
    from the YAML (as `ray up` does, minus ssh): the token lands only at ~/.ray/auth_token."""
    import subprocess

    try:
        from ray.autoscaler._private.command_runner import SSHCommandRunner
    except ImportError as e:  # a private module: another Ray release may move it
        pytest.skip(f"ray {ray.__version__}: {e}")

    if not shutil.which("rsync"):
        pytest.skip("no rsync")
    cfg = prepare_config(yaml.safe_load((ROOT / "cluster" / name).read_text()))
    options = {"rsync_exclude": cfg.get("rsync_exclude"), "rsync_filter": cfg.get("rsync_filter")}
    filters = SSHCommandRunner._create_rsync_filter_args(None, options)
    checkout, node = _checkout_with_token(tmp_path / "checkout"), tmp_path / "node"
    for remote, local in cfg["file_mounts"].items():
        source = checkout / local
        dest = node / remote.removeprefix("~/").removeprefix("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        args = [str(source) + "/", str(dest) + "/"] if source.is_dir() else [str(source), str(dest)]
        subprocess.run(["rsync", "-a", *filters, *args], check=True, cwd=checkout)
    copies = sorted(str(p.relative_to(node)) for p in node.rglob("*") if p.is_file() and "auth_token" in p.name)
    assert copies == [f"{'home/ray/' if name == 'aws-gpu.yaml' else ''}.ray/auth_token"], copies
    assert (
        node
        / next(r for r in cfg["file_mounts"] if r.endswith("hqjepa")).removeprefix("~/").removeprefix("/")
        / "ray_jobs"
        / "pretrain.py"
    ).exists()
