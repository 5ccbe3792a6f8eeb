"""One live process per run name or output directory: a lock file, or a lease object on an object store.

    with lock_for(storage.join(out, ".convert.lock"), what=f"conversion into {out}"):
        ...                                          # LockHeld (one line) if another process holds it

Local paths and NFS (`FileLock`): the lock is a file created with O_CREAT|O_EXCL (atomic on local
filesystems and on NFSv3+), holding JSON {token, pid, host, started, what}. While the holder lives a
daemon thread refreshes the file's mtime every `heartbeat_s` (default a quarter of `timeout_s`).
A lock is stale, and is taken over, when its holder ran on this host and its pid is gone, or when
its mtime is older than `timeout_s` (default 60 s; a holder on another host, or a frozen one).
Taking over renames the stale file to a unique name first, so of two processes breaking one stale
lock only one succeeds. Clocks of the hosts sharing the storage must agree to well within
`timeout_s` (NTP).

Object stores (`LeaseLock`, any pyarrow URI, e.g. s3://): the lock is a lease object holding the
same JSON plus `expires` (writer's clock + `timeout_s`), renewed every `heartbeat_s`. A new lease is
created with a conditional PUT (`If-None-Match: *`, through boto3 when it is installed and the URI is
s3://; AWS S3 and recent MinIO honour it, moto too): of two creators one gets 412 and is refused.
Where that is not available (no boto3, another scheme, a server that answers 501) and when an expired
lease is taken over, the lease is written unconditionally and read back after `settle_s` (1 s): a
writer that does not find its own token lost the race and is refused. This relies on the store's
read-after-write consistency (AWS S3 has it since 2020) and on two writers not racing within
`settle_s`; it is simple, not a consensus protocol.

A holder that finds its lock taken by someone else on a heartbeat (e.g. it was frozen past the
timeout) sets `lost` and logs a warning; it never deletes a lock that is not its own.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from hqjepa.runs import storage

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
LEASE_SETTLE_S = 1.0


class LockHeld(RuntimeError):
    """The lock belongs to another live process; the message (one line) names it and the lock file."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _age(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class RunLock:
    """Common part of `FileLock` and `LeaseLock`: holder record, acquire with retries, heartbeat
    thread, context manager. `lost` is set when a heartbeat finds the lock no longer ours."""

    def __init__(
        self, location: str | Path, *, what: str, timeout_s: float = DEFAULT_TIMEOUT_S, heartbeat_s: float | None = None
    ) -> None:
        self.location = str(location)
        self.what = what
        self.timeout_s = float(timeout_s)
        self.heartbeat_s = float(heartbeat_s) if heartbeat_s else self.timeout_s / 4
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.held = False
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder_record(self) -> dict:
        """What this process writes into the lock."""
        return {
            "token": self.token,
            "pid": os.getpid(),
            "host": self.host,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "what": self.what,
        }

    def describe(self, holder: dict | None, age_s: float | None) -> str:
        """The one-line refusal: who holds the lock, since when, and what to do."""
        if holder is None:
            who = "a process that has not written its record yet"
        else:
            who = f"pid {holder.get('pid')} on {holder.get('host')} (started {holder.get('started')})"
        beat = f", last heartbeat {_age(age_s)} ago" if age_s is not None else ""
        return (
            f"{self.what} is locked by {who}{beat}: {storage.redact(self.location)}; wait for it to finish, or if "
            f"that process is gone delete the lock (stale after {_age(self.timeout_s)} without a heartbeat)"
        )

    def acquire(self, wait_s: float = 0.0) -> RunLock:
        """Take the lock, retrying every 0.5 s for up to `wait_s`; LockHeld when it stays taken."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._try_acquire()
                break
            except LockHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)
        self.held = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat_loop, name=f"lock-heartbeat {self.what}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop the heartbeat and remove the lock if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.held:
            self.held = False
            with contextlib.suppress(OSError):
                self._release()

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                ours = self._beat()
            except OSError as e:  # storage briefly unreachable: try again next beat
                log.warning("lock %s: heartbeat failed (%s)", self.location, e)
                continue
            if not ours:
                self.lost.set()
                log.warning("lock %s: taken over by another process; %s is unprotected", self.location, self.what)
                return

    def __enter__(self) -> RunLock:
        return self if self.held else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # implemented by the two kinds
    def _try_acquire(self) -> None:
        raise NotImplementedError

    def _beat(self) -> bool:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError


class FileLock(RunLock):
    """A lock file on a local or NFS path (module docstring)."""

    def _read(self, path: Path) -> tuple[dict | None, float] | None:
        """(holder record or None if unreadable/empty, age of the last heartbeat) or None if absent."""
        try:
            mtime = path.stat().st_mtime
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            holder = None
        return (holder if isinstance(holder, dict) else None), max(0.0, time.time() - mtime)

    def is_stale(self, holder: dict | None, age_s: float) -> bool:
        """Holder on this host with its pid gone, or no heartbeat for `timeout_s`."""
        if age_s > self.timeout_s:
            return True
        if holder is not None and holder.get("host") == self.host and isinstance(holder.get("pid"), int):
            return not pid_alive(holder["pid"])
        return False

    def _try_acquire(self) -> None:
        path = Path(self.location)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                found = self._read(path)
                if found is None:
                    continue  # released meanwhile: try again
                holder, age = found
                if not self.is_stale(holder, age):
                    raise LockHeld(self.describe(holder, age)) from None
                self._break(path, holder)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self.holder_record()))
                f.flush()
                os.fsync(f.fileno())
            return
        found = self._read(path)
        raise LockHeld(self.describe(*(found or (None, None))))

    def _break(self, path: Path, judged: dict | None) -> None:
        """Remove a stale lock; of two breakers only one renames it away, and a lock that turned
        out to be fresh (replaced between our read and the rename) is put back."""
        aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = None
        token = (judged or {}).get("token")
        if isinstance(moved, dict) and moved.get("token") != token:
            with contextlib.suppress(OSError):
                os.link(aside, path)  # not the lock we judged stale: restore it unless one exists now
        aside.unlink(missing_ok=True)
        log.warning("lock %s: took over a stale lock of %s", self.location, judged)

    def _ours(self) -> bool:
        found = self._read(Path(self.location))
        return bool(found and found[0] and found[0].get("token") == self.token)

    def _beat(self) -> bool:
        if not self._ours():
            return False
        os.utime(self.location)
        return True

    def _release(self) -> None:
        if self._ours():
            Path(self.location).unlink(missing_ok=True)


class LeaseLock(RunLock):
    """A lease object on an object store (module docstring)."""

    def __init__(self, location: str | Path, *, settle_s: float = LEASE_SETTLE_S, **kwargs) -> None:
        super().__init__(location, **kwargs)
        self.settle_s = settle_s

    def _read(self) -> dict | None:
        try:
            raw = storage.read_bytes(self.location)
        except FileNotFoundError:
            return None
        try:
            lease = json.loads(raw)
        except ValueError:
            return {}  # garbled: treated as expired
        return lease if isinstance(lease, dict) else {}

    def _lease(self) -> bytes:
        return json.dumps({**self.holder_record(), "expires": time.time() + self.timeout_s}).encode()

    def _try_acquire(self) -> None:
        current = self._read()
        if current:
            left = float(current.get("expires", 0)) - time.time()
            if left > 0 and current.get("token") != self.token:
                raise LockHeld(self.describe(current, max(0.0, self.timeout_s - left)))
        created = self._conditional_create(self._lease()) if current is None else None
        if created is False:
            raise LockHeld(self.describe(self._read(), None))
        if created is None:
            storage.write_bytes(self.location, self._lease())
        time.sleep(self.settle_s)
        back = self._read()
        if not back or back.get("token") != self.token:
            raise LockHeld(self.describe(back, None))

    def _conditional_create(self, body: bytes) -> bool | None:
        """PUT with If-None-Match: * through boto3: True created, False someone else's lease exists,
        None when not available here (no boto3, not s3://, the server does not support it)."""
        parts = urlsplit(self.location)
        if parts.scheme != "s3":
            return None
        try:
            import boto3
            from botocore.exceptions import ClientError
        except ImportError:
            return None
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        endpoint = q.get("endpoint_override")
        if endpoint and "://" not in endpoint:
            endpoint = f"{q.get('scheme', 'https')}://{endpoint}"
        bucket = parts.netloc.rpartition("@")[2]  # s3://KEY:SECRET@bucket/... as pyarrow reads it
        try:
            client = boto3.client(
                "s3",
                endpoint_url=endpoint or None,
                region_name=q.get("region") or None,
                aws_access_key_id=parts.username or q.get("access_key") or None,
                aws_secret_access_key=parts.password or q.get("secret_key") or None,
            )
            client.put_object(Bucket=bucket, Key=parts.path.lstrip("/"), Body=body, IfNoneMatch="*")
        except ClientError as e:
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = e.response.get("Error", {}).get("Code")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            if status == 501 or code == "NotImplemented":
                return None
            raise OSError(f"{self.location}: {code or status}: {e}") from None
        except Exception as e:  # noqa: BLE001 - no credentials, bad endpoint: the plain path reports it
            log.debug("conditional create unavailable for %s: %s", self.location, e)
            return None
        return True

    def _beat(self) -> bool:
        current = self._read()
        if not current or current.get("token") != self.token:
            return False
        storage.write_bytes(self.location, self._lease())
        return True

    def _release(self) -> None:
        current = self._read()
        if current and current.get("token") == self.token:
            storage.delete_file(self.location)


def lock_for(location: str | Path, *, what: str, timeout_s: float = DEFAULT_TIMEOUT_S, **kwargs) -> RunLock:
    """A `FileLock` for a local path, a `LeaseLock` for a URI (not yet acquired: `with` or `.acquire()`)."""
    cls = LeaseLock if storage.is_uri(location) else FileLock
    return cls(location, what=what, timeout_s=timeout_s, **kwargs)


def run_lock_location(run_dir: str | Path) -> str:
    """Where a run's lock lives: `.NAME.lock` beside the run directory, so that starting over
    (moving the directory aside) never touches the lock."""
    parent, name = storage.split(run_dir)
    return storage.join(parent, f".{name}.lock")
