"""Shards read straight from S3 through pyarrow's filesystem, as cluster/aws-gpu.yaml runs do.

The S3 endpoint is moto's server (a real S3 HTTP API on localhost), so the manifest, footer
validation, corrupt-shard errors and the Ray Data stream all go through pyarrow's S3 client."""

from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("moto.server")
pafs = pytest.importorskip("pyarrow.fs")

from hqjepa.data.convert import convert_archive  # noqa: E402
from hqjepa.data.shards import ShardError, load_manifest, read_shard_meta, shard_files  # noqa: E402
from hqjepa.data.synth_archive import write_archive  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from moto.server import ThreadedMotoServer

    mp = pytest.MonkeyPatch()
    for k, v in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        mp.setenv(k, v)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    local = tmp_path_factory.mktemp("s3src")
    write_archive(local / "archive", 12, layout="v2", seed=3)
    convert_archive(local / "archive", local / "shards", shard_size=5)
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
        access_key="test",
        secret_key="test",
        allow_bucket_creation=True,
    )
    fs.create_dir("ben")
    pafs.copy_files(str(local / "shards"), "ben/shards", destination_filesystem=fs)
    query = f"endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    yield f"s3://ben/shards?{query}", local / "shards", fs, query
    server.stop()
    mp.undo()


def test_manifest_and_footers_from_s3(s3):
    uri, local, _, query = s3
    assert load_manifest(uri) == load_manifest(local)
    files = shard_files(uri)  # every footer validated over S3
    assert len(files) == len(shard_files(local)) and all(f.startswith("s3://ben/shards/part-") for f in files)
    assert all(f.endswith(query) for f in files)


def test_a_truncated_object_is_named(s3):
    uri, local, fs, query = s3
    data = (local / "part-00000.parquet").read_bytes()
    with fs.open_output_stream("ben/broken/part-00000.parquet") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(ShardError, match=r"s3://ben/broken/part-00000.parquet.*corrupt or truncated"):
        read_shard_meta(f"s3://ben/broken/part-00000.parquet?{query}")


def test_ray_data_streams_the_same_rows_from_s3(s3, ray_local):
    from ray_jobs._data import training_dataset

    uri, local, _, _ = s3

    def rows(location):
        ds = training_dataset(location, split=None, shuffle_files=False, compact=False)  # decoded rows
        out = {}
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for key, s2 in zip(b["key"], b["s2"], strict=True):
                out[int(key)] = s2
        return out

    remote, here = rows(uri), rows(local)
    assert set(remote) == set(here) and len(remote) == load_manifest(local)["pairs"]
    for key in here:
        np.testing.assert_array_equal(remote[key], here[key])
