"""Upload URLs work once, CDN tokens for a bounded number of files, and neither outlives its key (issue #12)."""

from __future__ import annotations

import httpx

from pulid_server.api.storage import CDN_TOKEN_UPLOADS
from tests.servers import Server, pulid


def test_an_upload_url_stores_one_file_once(server: Server) -> None:
    with server.client() as c:
        urls = c.post(
            "/rest/storage/upload/initiate", json={"file_name": "a.png", "content_type": "image/png"}
        ).json()
    assert httpx.put(urls["upload_url"], content=b"\0" * (21 << 20)).status_code == 413  # a failed upload ...
    assert httpx.put(urls["upload_url"], content=b"first").status_code == 200  # ... leaves the URL usable
    again = httpx.put(urls["upload_url"], content=b"replaced")
    assert again.status_code == 404
    assert httpx.get(urls["file_url"]).content == b"first"  # served as immutable: it must never change


def test_a_cdn_token_uploads_a_bounded_number_of_files(server: Server) -> None:
    with server.client() as c:
        token = c.post("/rest/storage/auth/token", json={}).json()["token"]
    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "image/png"}
    with httpx.Client(base_url=server.url, headers=bearer) as cdn:
        codes = [
            cdn.post("/cdn/files/upload", content=b"x").status_code for _ in range(CDN_TOKEN_UPLOADS + 1)
        ]
    assert codes == [200] * CDN_TOKEN_UPLOADS + [401]


def test_upload_grants_die_with_their_key(server: Server) -> None:
    key = server.new_key()
    with server.client(key) as c:
        urls = c.post("/rest/storage/upload/initiate", json={"file_name": "b.png"}).json()
        token = c.post("/rest/storage/auth/token", json={}).json()["token"]
    pulid("keys", "revoke", key, "--data-dir", str(server.data_dir))
    assert httpx.put(urls["upload_url"], content=b"late").status_code == 404
    r = httpx.post(
        f"{server.url}/cdn/files/upload", content=b"late", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 401
    assert httpx.get(urls["file_url"]).status_code == 404
