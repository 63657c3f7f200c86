from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3  # type: ignore[import-untyped]
import botocore.exceptions  # type: ignore[import-untyped]
import httpx
import pytest

from pulid_server.files import (
    Blob,
    BlobKeyError,
    LocalBlobStore,
    S3BlobStore,
    delete_prefix,
    open_blob_store,
)

BAD_KEYS = [
    "../escape",
    "a/../../escape",
    "/etc/passwd",
    "a//b",
    "a/./b",
    ".",
    "..",
    "",
    "a\\..\\b",
    "a/b/",
    "with space",
    "nul\x00byte",
    "~content-type",
    "x" * 600,
    "%2e%2e/escape",
]


@pytest.fixture
def local(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "files")


def test_local_round_trip(local: LocalBlobStore) -> None:
    local.put("uploads/abc/face.png", b"\x89PNG data", "image/png")
    assert local.get("uploads/abc/face.png") == Blob(b"\x89PNG data", "image/png")
    assert local.download_url("uploads/abc/face.png") is None


def test_local_missing_key_is_none(local: LocalBlobStore) -> None:
    assert local.get("nothing/here") is None
    local.put("dir/file", b"x", "text/plain")
    assert local.get("dir") is None  # a directory is not a blob
    assert local.get("dir/file/deeper") is None


def test_local_overwrite_replaces_data_and_type(local: LocalBlobStore) -> None:
    local.put("k", b"one", "text/plain")
    local.put("k", b"two", "application/json")
    assert local.get("k") == Blob(b"two", "application/json")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_local_traversal_and_odd_keys_are_rejected(local: LocalBlobStore, tmp_path: Path, key: str) -> None:
    with pytest.raises(BlobKeyError):
        local.put(key, b"x", "text/plain")
    with pytest.raises(BlobKeyError):
        local.get(key)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []


def test_content_type_file_cannot_be_read_as_a_blob(local: LocalBlobStore) -> None:
    local.put("k", b"data", "text/plain")
    with pytest.raises(BlobKeyError):
        local.get("k~content-type")


def test_local_write_is_atomic(local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    local.put("k", b"old", "text/plain")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk vanished"):
        local.put("k", b"new" * 1000, "text/plain")
    monkeypatch.undo()
    assert local.get("k") == Blob(b"old", "text/plain")  # the old blob is intact
    leftovers = [p.name for p in local.root.iterdir()]
    assert sorted(leftovers) == ["k", "k~content-type"]  # and no temp file is left behind


def test_local_write_goes_through_a_temp_file_in_the_same_folder(
    local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    moves: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        moves.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    local.put("a/b", b"data", "text/plain")
    assert [Path(dst).name for _, dst in moves] == ["b~content-type", "b"]
    assert all(Path(src).parent == Path(dst).parent for src, dst in moves)


def test_open_blob_store(tmp_path: Path) -> None:
    store = open_blob_store("local", tmp_path)
    assert isinstance(store, LocalBlobStore)
    assert store.root == (tmp_path / "files").resolve()
    with pytest.raises(ValueError, match="local"):
        open_blob_store("gs://bucket", tmp_path)


# --- S3 against moto's in-process server -------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


@pytest.fixture
def bucket(moto_endpoint: str, s3_env: None, request: pytest.FixtureRequest) -> str:
    name: str = "bucket-" + request.node.name.lower().replace("_", "-")[:40]
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return name


def test_s3_round_trip_under_prefix(moto_endpoint: str, bucket: str) -> None:
    store = open_blob_store(f"s3://{bucket}/outputs", Path("unused"), moto_endpoint)
    assert isinstance(store, S3BlobStore)
    store.put("job/1/image.png", b"\x89PNG bytes", "image/png")
    assert store.get("job/1/image.png") == Blob(b"\x89PNG bytes", "image/png")
    assert store.get("job/1/missing.png") is None
    keys = [
        o["Key"]
        for o in boto3.client("s3", endpoint_url=moto_endpoint).list_objects_v2(Bucket=bucket)["Contents"]
    ]
    assert keys == ["outputs/job/1/image.png"]
    assert store.download_url("job/1/image.png") is None  # not configured to redirect


def test_s3_presigned_download_url(moto_endpoint: str, bucket: str) -> None:
    store = S3BlobStore(f"s3://{bucket}", endpoint_url=moto_endpoint, presign_seconds=60)
    store.put("a.txt", b"hello", "text/plain")
    url = store.download_url("a.txt")
    assert url is not None and "X-Amz-Signature" in url and url.startswith(moto_endpoint)
    response = httpx.get(url, trust_env=False)
    assert response.status_code == 200 and response.content == b"hello"


def test_s3_client_uses_when_required_checksums(moto_endpoint: str, s3_env: None) -> None:
    store = S3BlobStore("s3://any-bucket/p", endpoint_url=moto_endpoint)
    config = store._client.meta.config
    assert config.request_checksum_calculation == "when_required"
    assert config.response_checksum_validation == "when_required"
    assert config.s3["addressing_style"] == "path"


def test_s3_creates_nothing(moto_endpoint: str, s3_env: None) -> None:
    store = S3BlobStore("s3://never-created", endpoint_url=moto_endpoint)
    with pytest.raises(botocore.exceptions.ClientError, match="NoSuchBucket"):
        store.put("k", b"x", "text/plain")


@pytest.mark.parametrize("key", BAD_KEYS)
def test_s3_rejects_bad_keys(moto_endpoint: str, s3_env: None, key: str) -> None:
    store = S3BlobStore("s3://b/p", endpoint_url=moto_endpoint)
    with pytest.raises(BlobKeyError):
        store.put(key, b"x", "text/plain")


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "http://bucket/x", "s3://b/../x", "s3://b/p?x=1"])
def test_s3_url_must_be_well_formed(url: str, s3_env: None) -> None:
    with pytest.raises(ValueError):
        S3BlobStore(url, client=object())


def test_missing_boto3_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_boto(name: str, *args: object, **kwargs: object) -> object:
        if name == "boto3" or name.startswith("botocore"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_boto)
    with pytest.raises(RuntimeError, match=r"pip install 'pulid-server\[s3\]'"):
        S3BlobStore("s3://bucket/prefix")


# --- scan and delete (retention) ---------------------------------------------------------------------------


def test_local_scan_and_delete_leave_no_empty_folders(local: LocalBlobStore) -> None:
    local.put("outputs/r1/a.png", b"aaaa", "image/png")
    local.put("outputs/r1/b.png", b"bb", "image/png")
    local.put("outputs/r2/c.png", b"c", "image/png")
    found = sorted((i.key, i.size) for i in local.scan("outputs/r1/"))
    assert found == [("outputs/r1/a.png", 4), ("outputs/r1/b.png", 2)]  # no content-type files
    assert delete_prefix(local, "outputs/r1/") == (2, 6)
    assert not (local.root / "outputs" / "r1").exists()  # its folder went with its last file
    assert [i.key for i in local.scan("")] == ["outputs/r2/c.png"]
    local.delete("outputs/r2/c.png")
    local.delete("outputs/r2/c.png")  # nothing to delete: no error
    assert list(local.root.iterdir()) == []  # the root stays
    assert list(local.scan("missing/")) == []
    with pytest.raises(BlobKeyError):
        list(local.scan("outputs"))  # a folder prefix ends with '/'


def test_s3_scan_and_delete_under_prefix(moto_endpoint: str, bucket: str) -> None:
    store = S3BlobStore(f"s3://{bucket}/pulid", endpoint_url=moto_endpoint)
    store.put("outputs/r1/a.png", b"aaaa", "image/png")
    store.put("outputs/r10/b.png", b"bb", "image/png")
    store.put("uploads/t/c.png", b"c", "image/png")
    assert [(i.key, i.size) for i in store.scan("outputs/r1/")] == [("outputs/r1/a.png", 4)]
    assert delete_prefix(store, "outputs/") == (2, 6)
    assert [i.key for i in store.scan()] == ["uploads/t/c.png"]
    store.delete("uploads/t/c.png")
    assert store.get("uploads/t/c.png") is None and list(store.scan()) == []
