from pulid_server import client


def test_all_lists_the_public_names() -> None:
    assert client.__all__ == [
        "DEFAULT_URL",
        "AsyncClient",
        "AsyncRequestHandle",
        "Completed",
        "InProgress",
        "PulidClientError",
        "PulidConnectionError",
        "PulidHTTPError",
        "PulidTimeoutError",
        "Queued",
        "RequestFailed",
        "Retry",
        "RetryPolicy",
        "Status",
        "SyncClient",
        "SyncRequestHandle",
        "encode",
        "encode_file",
        "encode_image",
    ]
    for name in client.__all__:
        assert getattr(client, name) is not None, name


def test_error_hierarchy() -> None:
    for error in (
        client.PulidHTTPError,
        client.PulidTimeoutError,
        client.RequestFailed,
        client.PulidConnectionError,
    ):
        assert issubclass(error, client.PulidClientError)
    assert issubclass(client.PulidTimeoutError, TimeoutError)
