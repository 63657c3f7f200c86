"""Everything that touches user-supplied bytes or URLs: SSRF-safe fetching, data URIs, image decoding
with limits, and blob storage (local folder or S3-compatible)."""

from pulid_server.files.blobs import (
    Blob,
    BlobInfo,
    BlobKeyError,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    delete_prefix,
    file_key_of,
    inputs_prefix,
    open_blob_store,
    outputs_prefix,
)
from pulid_server.files.datauri import DataURIError, decode_data_uri
from pulid_server.files.fetch import FetchError, fetch_bytes, post_json, validate_url
from pulid_server.files.images import ImageDecodeError, check_image, encode_png, open_image

__all__ = [
    "Blob",
    "BlobInfo",
    "BlobKeyError",
    "BlobStore",
    "DataURIError",
    "FetchError",
    "ImageDecodeError",
    "LocalBlobStore",
    "S3BlobStore",
    "check_image",
    "decode_data_uri",
    "delete_prefix",
    "encode_png",
    "fetch_bytes",
    "file_key_of",
    "inputs_prefix",
    "open_blob_store",
    "outputs_prefix",
    "open_image",
    "post_json",
    "validate_url",
]
