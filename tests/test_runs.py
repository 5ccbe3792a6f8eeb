"""hqjepa.runs without Ray: run identity (run.json), lock files and leases, checkpoint checksums, and
ray_jobs/pretrain.py refusing a clashing run before Ray starts."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hqjepa.runs import identity, integrity, storage
from hqjepa.runs.lock import FileLock, LockHeld, lock_for, run_lock_location

ROOT = Path(__file__).resolve().parents[1]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- identity ---------------------------------------------------------------------------------------


def test_fingerprint_is_canonical_and_every_key_counts():
    a = {"config": {"optim": {"lr": 0.001, "batch_size": 8}, "data": {"shards": "/d"}}, "run": {"workers": 2}}
    b = {"run": {"workers": 2}, "config": {"data": {"shards": "/d"}, "optim": {"batch_size": 8, "lr": 0.001}}}
    assert identity.fingerprint(a) == identity.fingerprint(b)  # key order does not matter
    c = json.loads(json.dumps(a))
    c["config"]["optim"]["lr"] = 0.002
    c["config"]["data"]["shards"] = "/e"
    c["run"]["workers"] = 4
    assert identity.fingerprint(c) != identity.fingerprint(a)
    assert identity.differing_keys(a, c) == ["config.data.shards", "config.optim.lr", "run.workers"]


def test_check_identity_new_same_conflict_and_explicit_resume(tmp_path):
    run = tmp_path / "exp"
    rec = identity.run_record({"config": {"optim": {"lr": 0.001}}, "run": {"workers": 2}}, ["ray_jobs/pretrain.py"])
    assert set(rec) >= {"fingerprint", "identity", "commit", "command", "date"}
    assert rec["command"] == "python ray_jobs/pretrain.py"
    assert identity.check_identity(run, rec)["fingerprint"] == rec["fingerprint"]  # new run
    identity.write_record(run, rec)
    assert identity.check_identity(run, rec)["history"] == []  # same settings: continue
    other = identity.run_record({"config": {"optim": {"lr": 0.01}}, "run": {"workers": 1}})
    with pytest.raises(identity.RunConflict) as e:
        identity.check_identity(run, other)
    msg = str(e.value)
    assert "\n" not in msg and "config.optim.lr, run.workers" in msg
    assert f"--resume {run}" in msg and "--experiment" in msg and "--force-new" in msg
    resumed = identity.check_identity(run, other, resume=True)
    assert resumed["history"][0]["changed"] == ["config.optim.lr", "run.workers"]
    assert resumed["history"][0]["previous_fingerprint"] == rec["fingerprint"]


def test_clear_run_moves_the_old_directory_aside(tmp_path):
    run = tmp_path / "exp"
    (run / "step_0000002").mkdir(parents=True)
    moved = identity.clear_run(run)
    assert not run.exists() and (Path(moved) / "step_0000002").is_dir()
    assert Path(moved).name.startswith("exp.replaced-")
    assert identity.clear_run(run) is None


# --- locks ------------------------------------------------------------------------------------------


def test_a_second_holder_is_refused_until_release(tmp_path):
    path = tmp_path / ".exp.lock"
    first = lock_for(path, what="run exp").acquire()
    assert isinstance(first, FileLock)
    holder = json.loads(path.read_text())
    assert holder["pid"] == os.getpid() and holder["host"] and holder["started"] and holder["token"]
    with pytest.raises(LockHeld, match=rf"run exp is locked by pid {os.getpid()} .*{path.name}") as e:
        lock_for(path, what="run exp").acquire()
    assert "\n" not in str(e.value)
    first.release()
    assert not path.exists()
    lock_for(path, what="run exp").acquire().release()


def test_stale_locks_are_taken_over(tmp_path):
    path = tmp_path / ".exp.lock"
    import socket

    # the holder ran on this host and its pid is gone
    path.write_text(json.dumps({"token": "t", "pid": _dead_pid(), "host": socket.gethostname(), "started": "x"}))
    lock = lock_for(path, what="run exp").acquire()
    assert json.loads(path.read_text())["token"] == lock.token
    lock.release()
    # another host: live until its heartbeat is older than the timeout
    path.write_text(json.dumps({"token": "t", "pid": 1, "host": "elsewhere", "started": "x"}))
    with pytest.raises(LockHeld, match="on elsewhere"):
        lock_for(path, what="run exp", timeout_s=30).acquire()
    old = time.time() - 31
    os.utime(path, (old, old))
    lock = lock_for(path, what="run exp", timeout_s=30).acquire()
    assert json.loads(path.read_text())["token"] == lock.token
    lock.release()


def test_heartbeat_keeps_the_lock_fresh_and_notices_a_takeover(tmp_path):
    path = tmp_path / ".exp.lock"
    lock = lock_for(path, what="run exp", timeout_s=2.0, heartbeat_s=0.1).acquire()
    old = time.time() - 100
    os.utime(path, (old, old))
    time.sleep(0.5)
    assert time.time() - path.stat().st_mtime < 1.5  # refreshed by the heartbeat thread
    path.write_text(json.dumps({"token": "someone else", "pid": 1, "host": "elsewhere"}))
    assert lock.lost.wait(2.0)
    lock.release()
    assert path.exists(), "a lock that is no longer ours is never deleted"


def test_of_many_processes_racing_for_one_lock_exactly_one_wins(tmp_path):
    path = tmp_path / ".race.lock"
    code = (
        "import sys, time; from hqjepa.runs.lock import lock_for, LockHeld\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "try:\n    l = lock_for(sys.argv[1], what='race').acquire()\nexcept LockHeld:\n    print('refused')\n"
        "else:\n    print('won'); time.sleep(1.5); l.release()\n"
    )
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(path), str(start)], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        for _ in range(6)
    ]
    outs = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert outs == ["refused"] * 5 + ["won"], outs


def test_run_lock_sits_beside_the_run_directory():
    assert run_lock_location("/s/runs/exp") == "/s/runs/.exp.lock"
    assert run_lock_location("s3://b/runs/exp?region=x") == "s3://b/runs/.exp.lock?region=x"


# --- checkpoint checksums ---------------------------------------------------------------------------


def _checkpoint(directory: Path, payload: bytes) -> Path:
    directory.mkdir(parents=True)
    (directory / "state.pt").write_bytes(payload)
    (directory / "metrics.csv").write_text("step,loss\n0,1.0\n")
    integrity.write_checksums(directory)
    return directory


def test_checksums_catch_torn_truncated_and_altered_checkpoints(tmp_path):
    good = _checkpoint(tmp_path / "step_0000002", b"x" * 1000)
    integrity.verify_dir(good)
    listed = json.loads((good / integrity.CHECKSUMS).read_text())["files"]
    assert sorted(listed) == ["metrics.csv", "state.pt"]

    torn = tmp_path / "step_0000004"
    torn.mkdir()
    (torn / "state.pt").write_bytes(b"x" * 10)
    with pytest.raises(integrity.CorruptCheckpoint, match="no checksums.json"):
        integrity.verify_dir(torn)
    truncated = _checkpoint(tmp_path / "step_0000006", b"y" * 1000)
    with open(truncated / "state.pt", "r+b") as f:
        f.truncate(500)
    with pytest.raises(integrity.CorruptCheckpoint, match="state.pt has 500 bytes, 1000 were written"):
        integrity.verify_dir(truncated)
    flipped = _checkpoint(tmp_path / "step_0000008", b"z" * 1000)
    (flipped / "state.pt").write_bytes(b"Z" + b"z" * 999)
    with pytest.raises(integrity.CorruptCheckpoint, match="does not match its sha256"):
        integrity.verify_dir(flipped)

    fs, path = storage.resolve(tmp_path)
    names = [Path(p).name for p in integrity.checkpoints_newest_first(fs, path)]
    assert names == ["step_0000008", "step_0000006", "step_0000004", "step_0000002"]
    assert integrity.checkpoint_dir_name(4, names) == "step_0000004-1"
    assert integrity.checkpoint_dir_name(4, [*names, "step_0000004-1"]) == "step_0000004-2"
    assert integrity.checkpoint_dir_name(10, names) == "step_0000010"
    assert integrity.step_of("step_0000004-2") == (4, 2) and integrity.step_of("checkpoint_x") is None


def _tiny_trainer():
    from hqjepa.config import load_config, parse_override
    from hqjepa.engine import Trainer
    from hqjepa.models.hqjepa import HQJEPA
    from tests.test_pretrain_ray import SMALL

    cfg = load_config(ROOT / "configs/tiny.yaml", dict(parse_override(s) for s in SMALL))
    return Trainer(HQJEPA(cfg), cfg, steps_per_epoch=4)


def _save_checkpoint(directory: Path, trainer) -> None:
    from hqjepa.checkpoint import save_training_state

    directory.mkdir(parents=True)
    save_training_state(directory / "state.pt", trainer)
    integrity.write_checksums(directory)


def _newest_usable(run: Path) -> Path:
    fs, path = storage.resolve(run)
    for p in integrity.checkpoints_newest_first(fs, path):
        if integrity.is_verified(p):
            return Path(p)
    raise AssertionError("no checkpoint verifies")


class _DiskWithQuota:
    """A pyarrow file system on a local folder that fails writes with ENOSPC past `quota` bytes:
    a disk that fills up, for machines where a small tmpfs cannot be mounted."""

    def __init__(self, quota: int):
        import pyarrow.fs as pafs

        local, handler_self = pafs.LocalFileSystem(), self
        self.quota, self.used = quota, 0

        class Handler(pafs.FileSystemHandler):
            def __getattribute__(self, name):  # every method but writing delegates to the local fs
                if name in (
                    "open_output_stream",
                    "get_type_name",
                    "normalize_path",
                    "get_file_info",
                    "get_file_info_selector",
                    "create_dir",
                    "equals",
                ):
                    return object.__getattribute__(self, name)
                return getattr(local, name)

            def get_type_name(self):
                return "quota"

            def normalize_path(self, path):
                return path

            def equals(self, other):
                return self is other

            def get_file_info(self, paths):
                return local.get_file_info(paths)

            def get_file_info_selector(self, selector):
                return local.get_file_info(selector)

            def create_dir(self, path, recursive):
                local.create_dir(path, recursive=recursive)

            def open_output_stream(self, path, metadata):
                import pyarrow as pa

                os.makedirs(os.path.dirname(path), exist_ok=True)
                f = open(path, "wb")  # noqa: SIM115 - closed by pyarrow through PythonFile

                class Out:
                    closed = False

                    def write(self, data):
                        handler_self.used += len(data)
                        if handler_self.used > handler_self.quota:
                            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
                        return f.write(data)

                    def flush(self):
                        f.flush()

                    def close(self):
                        f.close()
                        self.closed = True

                return pa.PythonFile(Out(), mode="w")

        for abstract in getattr(pafs.FileSystemHandler, "__abstractmethods__", ()):
            if abstract not in Handler.__dict__:
                setattr(Handler, abstract, lambda self, *a, _n=abstract: getattr(local, _n)(*a))
        Handler.__abstractmethods__ = frozenset()
        self.fs = pafs.PyFileSystem(Handler())


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def persist_like_ray_train(fs, staging: Path, dest: Path) -> None:
    """What StorageContext.persist_current_checkpoint does (ray/train/v2/_internal/execution/storage.py)."""
    import pyarrow.fs as pafs

    fs.create_dir(str(dest))
    pafs.copy_files(str(staging), str(dest), destination_filesystem=fs, chunk_size=64 * 1024 * 1024)


@pytest.mark.parametrize("disk", ["quota", "tmpfs"])
def test_a_full_disk_mid_checkpoint_leaves_the_previous_one_usable(tmp_path, disk):
    """A new checkpoint copied to storage the way Ray Train persists one (pyarrow.fs.copy_files from
    the worker's staging folder) onto a disk that fills up half way: the copy fails with ENOSPC, the new
    directory is torn (never verifies) and the previous checkpoint is intact, verifies and restores."""
    import pyarrow.fs as pafs

    from hqjepa.checkpoint import load_training_state

    trainer = _tiny_trainer()
    staging2, staging4 = tmp_path / "stage2", tmp_path / "stage4"
    trainer.step = 2
    _save_checkpoint(staging2, trainer)
    trainer.step = 4
    _save_checkpoint(staging4, trainer)
    size2 = sum(f.stat().st_size for f in staging2.iterdir())
    room = size2 + (staging4 / "state.pt").stat().st_size // 2  # the second checkpoint fits half way

    run = tmp_path / "run"
    if disk == "tmpfs":
        if not _mount_tmpfs(run, room + 64 * 1024):
            pytest.skip("cannot mount a tmpfs here (needs root); the quota file system covers the same path")
        fs = pafs.LocalFileSystem()
    else:
        run.mkdir()
        fs = _DiskWithQuota(room).fs
    try:
        persist_like_ray_train(fs, staging2, run / "step_0000002")
        with pytest.raises(OSError, match="No space left on device"):
            persist_like_ray_train(fs, staging4, run / "step_0000004")
        assert (run / "step_0000004").is_dir() and not integrity.is_verified(run / "step_0000004")
        chosen = _newest_usable(run)
        assert chosen.name == "step_0000002"
        fresh = _tiny_trainer()
        load_training_state(chosen / "state.pt", fresh)
        assert fresh.step == 2
    finally:
        if disk == "tmpfs":
            subprocess.run(["umount", str(run)], check=False)


# --- ray_jobs/pretrain.py: refused before Ray starts ------------------------------------------------


class _RayStarted(Exception):
    pass


def test_pretrain_refuses_other_settings_and_a_live_run_before_ray_starts(tmp_path, capsys, monkeypatch):
    from ray_jobs import pretrain

    def started(*_a, **_k):
        raise _RayStarted

    monkeypatch.setattr(pretrain, "start_ray", started)
    base = ["--config", str(ROOT / "configs/tiny.yaml"), "--storage", str(tmp_path), "--experiment", "exp"]
    with pytest.raises(_RayStarted):  # a new run: run.json written, then Ray would start
        pretrain.main([*base, "--workers", "2"])
    run = tmp_path / "exp"
    record = json.loads((run / "run.json").read_text())
    assert record["identity"]["run"]["workers"] == 2 and record["identity"]["config"]["optim"]["lr"] == 0.001
    assert record["command"].startswith("python ray_jobs/pretrain.py --config") and record["commit"]
    assert not (tmp_path / ".exp.lock").exists(), "the lock is released when the driver stops"
    capsys.readouterr()

    # other settings anywhere in the config or the driver: one line, exit 2, keys named, Ray not started
    assert pretrain.main([*base, "--workers", "1", "--set", "optim.lr=5e-4", "--set", "data.synthetic_pairs=64"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pretrain: error: run ")
    assert "(config.data.synthetic_pairs, config.optim.lr, run.workers)" in err
    assert f"--resume {run}" in err and "--experiment" in err and "--force-new" in err

    with pytest.raises(_RayStarted):  # the same settings continue the run
        pretrain.main([*base, "--workers", "2"])
    again = json.loads((run / "run.json").read_text())
    assert again["fingerprint"] == record["fingerprint"] and again["history"] == []

    # a live run of this name holds its lock (a live pid on this host)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = {"token": "t", "pid": holder.pid, "host": __import__("socket").gethostname(), "started": "now"}
        (tmp_path / ".exp.lock").write_text(json.dumps(lock))
        assert pretrain.main([*base, "--workers", "2"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"is locked by pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(_RayStarted):  # its holder is gone: the stale lock is taken over
        pretrain.main([*base, "--workers", "2"])

    # --force-new starts over: the old directory moves aside, run.json holds the new settings
    (run / "step_0000002").mkdir()
    with pytest.raises(_RayStarted):
        pretrain.main([*base, "--workers", "1", "--set", "optim.lr=5e-4", "--force-new"])
    assert not (run / "step_0000002").exists()
    assert [p.name for p in tmp_path.glob("exp.replaced-*/step_0000002")] == ["step_0000002"]
    assert json.loads((run / "run.json").read_text())["identity"]["config"]["optim"]["lr"] == 5e-4


# --- the converter's lock ---------------------------------------------------------------------------


def test_a_second_converter_on_one_out_is_refused_and_leaves_the_first_ones_files(tmp_path, capsys):
    from hqjepa.data.convert import CONVERT_LOCK, convert_archive
    from hqjepa.data.synth_archive import write_archive
    from ray_jobs import convert

    write_archive(tmp_path / "archive", 6, layout="v2", seed=0)
    out = tmp_path / "shards"
    out.mkdir()
    code = (
        "import sys, time; from hqjepa.runs.lock import lock_for\n"
        "l = lock_for(sys.argv[1], what='conversion into ' + sys.argv[2]).acquire()\n"
        "open(sys.argv[2] + '/.part-00000.parquet.tmp-0000abcd', 'w').write('being written')\n"
        "print('holding', flush=True); sys.stdin.read(); l.release()\n"
    )
    first = subprocess.Popen(
        [sys.executable, "-c", code, str(out / CONVERT_LOCK), str(out)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert first.stdout.readline().strip() == "holding"
        temporary = out / ".part-00000.parquet.tmp-0000abcd"
        assert convert.main(["--archive", str(tmp_path / "archive"), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"conversion into {out} is locked by pid {first.pid}" in err
        with pytest.raises(LockHeld):
            convert_archive(tmp_path / "archive", out, progress=False)
        assert temporary.read_text() == "being written", "the first converter's temporary shard was deleted"
    finally:
        first.communicate("", timeout=30)
    summary = convert_archive(tmp_path / "archive", out, shard_size=4, progress=False)  # the first one is done
    assert summary.converted == 6 and not temporary.exists() and not (out / CONVERT_LOCK).exists()


# --- checkpoints are never unpickled with arbitrary code ----------------------------------------------


def test_no_script_loads_a_checkpoint_with_weights_only_false(tmp_path, capsys, monkeypatch):
    files = [p for d in ("bench", "experiments", "hqjepa", "ray_jobs") for p in (ROOT / d).rglob("*.py")]
    files.append(ROOT / "hubconf.py")
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in files
        if p.exists()
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "weights_only=False" in line.replace(" ", "")
    ]
    assert not offenders, offenders
    # the training-state checkpoint experiments/grad_share.py reads loads with weights_only=True
    from hqjepa.checkpoint import save_training_state
    from tests.test_pretrain_ray import SMALL

    trainer = _tiny_trainer()
    trainer.step = 3
    save_training_state(tmp_path / "state.pt", trainer)
    from experiments import grad_share

    monkeypatch.setattr(grad_share, "term_gradients", lambda *_a: ({}, 0.0))  # the load is what is tested
    argv = ["--checkpoint", str(tmp_path / "state.pt"), "--batches", "1"]
    for s in SMALL:
        argv += ["--set", s]
    assert grad_share.main(argv) in (0, None)
    assert '"step": 3' in capsys.readouterr().out


def test_credentials_in_a_uri_never_reach_messages_or_records():
    """User info and the query parameters pyarrow reads credentials from are masked; the rest stays."""
    uri = "s3://AKIA:s3cr3t@runs/exp?endpoint_override=127.0.0.1:9000&access_key=AKIA&secret_key=s3cr3t&scheme=http"
    assert storage.redact(uri) == (
        "s3://***@runs/exp?endpoint_override=127.0.0.1:9000&access_key=***&secret_key=***&scheme=http"
    )
    assert storage.redact("/data/runs/exp") == "/data/runs/exp" and storage.redact("s3://b/p") == "s3://b/p"
    record = {"run": "exp", "export": f"{uri}/x", "nested": {"all": [uri, 3]}, "steps": 8}
    clean = storage.redact_record(record)
    assert "s3cr3t" not in json.dumps(clean) and "AKIA" not in json.dumps(clean)
    assert clean["steps"] == 8 and clean["run"] == "exp" and clean["nested"]["all"][1] == 3
