"""File operations on a run's storage: a local path (or NFS mount) or a filesystem URI.

A location is a local path or a URI that pyarrow's filesystems resolve, the same strings
`--storage`, `--data` and `--checkpoint` take: `s3://bucket/runs/NAME`, or for an S3-compatible
store `s3://bucket/runs/NAME?endpoint_override=host:9000&scheme=http` (the query stays at the end
when a name is joined on; `is_uri`, `resolve` and `join` read locations as `hqjepa.data.shards`
does, without importing it, so that locks stay light). Local writes are atomic (temporary file,
fsync, rename); an object-store PUT is atomic by nature.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


def is_uri(location: str | Path) -> bool:
    """Whether `location` is a filesystem URI (`scheme://...`) rather than a local path."""
    return "://" in str(location)


def resolve(location: str | Path):
    """(pyarrow FileSystem, path within it) for a local path or a filesystem URI."""
    import pyarrow.fs as pafs

    if is_uri(location):
        return pafs.FileSystem.from_uri(str(location))
    return pafs.LocalFileSystem(), str(Path(location).absolute())


def join(location: str | Path, name: str) -> str:
    """`location/name` for a path or a URI (a URI's query string stays at the end)."""
    text = str(location)
    if is_uri(text):
        base, sep, query = text.partition("?")
        return f"{base.rstrip('/')}/{name}{sep}{query}"
    return str(Path(text) / name)


__all__ = [
    "is_uri",
    "join",
    "resolve",
    "split",
    "redact",
    "redact_record",
    "exists",
    "read_bytes",
    "write_bytes",
    "delete_file",
    "list_names",
    "upload",
    "download",
    "local_file",
    "remove_tree",
]


def split(location: str | Path) -> tuple[str, str]:
    """(parent, last name) of a path or URI; a URI's query string stays with the parent:
    `s3://b/runs/x?endpoint_override=h` -> (`s3://b/runs?endpoint_override=h`, `x`)."""
    text = str(location)
    if not is_uri(text):
        p = Path(text).absolute()
        return str(p.parent), p.name
    base, sep, query = text.partition("?")
    parent, _, name = base.rstrip("/").rpartition("/")
    return f"{parent}{sep}{query}", name


# query parameters of a pyarrow/fsspec URI that carry credentials (`s3://b/p?access_key=..&secret_key=..`)
SECRET_PARAMS = ("access_key", "secret_key", "session_token", "token", "password")


def redact(location: str | Path) -> str:
    """`location` for messages and records: credentials in a URI, as user info (`s3://KEY:SECRET@bucket/...`)
    or as query parameters (`?access_key=...&secret_key=...`), replaced by `***`."""
    text = str(location)
    if not is_uri(text):
        return text
    scheme, _, rest = text.partition("://")
    rest, q, query = rest.partition("?")
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    if query:
        params = [p.partition("=") for p in query.split("&")]
        query = "&".join(f"{k}{eq}***" if k.lower() in SECRET_PARAMS and eq else f"{k}{eq}{v}" for k, eq, v in params)
    return f"{scheme}://{authority}{slash}{tail}{q}{query}"


def redact_record(record: dict) -> dict:
    """`record` with every URI among its string values (also in nested dicts and lists) redacted."""

    def clean(value):
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return clean(record)


def _info(location: str | Path):
    fs, path = resolve(location)
    return fs, path, fs.get_file_info(path)


def exists(location: str | Path) -> bool:
    """Whether a file or directory (on an object store: any object under the prefix) is there."""
    import pyarrow.fs as pafs

    return _info(location)[2].type != pafs.FileType.NotFound


def read_bytes(location: str | Path) -> bytes:
    """The whole file; FileNotFoundError when it is not there."""
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, OSError) as e:
        if not exists(location):
            raise FileNotFoundError(str(location)) from None
        raise e


def write_bytes(location: str | Path, data: bytes) -> None:
    """Write a whole file atomically: locally through a hidden temporary file, fsync and rename; on
    an object store as one PUT (never visible half-written)."""
    if not is_uri(location):
        path = Path(location)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
    fs, path = resolve(location)
    with fs.open_output_stream(path) as f:
        f.write(data)


def delete_file(location: str | Path) -> None:
    """Delete one file; nothing happens if it is already gone."""
    fs, path = resolve(location)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_file(path)


def list_names(location: str | Path) -> list[str]:
    """Names of the entries directly inside a directory (an object-store prefix); [] if absent."""
    import pyarrow.fs as pafs

    fs, path = resolve(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    except FileNotFoundError:
        return []
    return sorted(i.base_name for i in infos)


def upload(local: str | Path, location: str | Path) -> None:
    """Copy a local file, or a directory tree, to `location` (local or URI)."""
    import pyarrow.fs as pafs

    local = Path(local)
    fs, path = resolve(location)
    if local.is_dir():
        fs.create_dir(path, recursive=True)
        pafs.copy_files(str(local.absolute()), path, destination_filesystem=fs, use_threads=False)
        return
    if not is_uri(location):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(str(local.absolute()), path, destination_filesystem=fs, use_threads=False)


def download(location: str | Path, local: str | Path) -> Path:
    """Copy a file (or a directory tree) at `location` to the local path `local`; returns it."""
    import pyarrow.fs as pafs

    local = Path(local)
    fs, path = resolve(location)
    local.parent.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(local.absolute()), source_filesystem=fs, use_threads=False)
    return local


@contextlib.contextmanager
def local_file(location: str | Path) -> Iterator[Path]:
    """A local path to read `location` from: the path itself, or for a URI a temporary copy
    (downloaded first, deleted afterwards). FileNotFoundError when it is not there."""
    if not is_uri(location):
        yield Path(location)
        return
    if not exists(location):
        raise FileNotFoundError(str(location))
    name = split(location)[1] or "download"
    with tempfile.TemporaryDirectory(prefix="hqjepa-fetch-") as tmp:
        yield download(location, Path(tmp) / name)


def remove_tree(location: str | Path) -> None:
    """Delete a directory (an object-store prefix) and everything in it; nothing if it is absent."""
    if not is_uri(location):
        shutil.rmtree(location, ignore_errors=True)
        return
    fs, path = resolve(location)
    with contextlib.suppress(FileNotFoundError):
        fs.delete_dir(path)
