"""The SSRF acceptance list (after fal's test_ssrf.py). Nothing here leaves the machine: names resolve
through a fake resolver, and every socket connect is checked to go to 127.0.0.1 (an address standing in
for a public one is routed to a local server)."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pulid_server.files import FetchError, fetch_bytes, post_json, validate_url
from pulid_server.files import fetch as fetch_module

from .servers import LocalServer, redirect, reply, start_server

PUBLIC = "93.184.216.34"  # stands in for "somewhere on the internet"; routed to a local server
PUBLIC_2 = "93.184.216.35"


@dataclass
class FakeNet:
    dns: dict[str, list[str] | Callable[[], list[str]]] = field(default_factory=dict)
    routes: dict[str, int] = field(default_factory=dict)  # public address -> local port
    lookups: list[str] = field(default_factory=list)
    connects: list[tuple[str, int]] = field(default_factory=list)
    violations: list[tuple[str, int]] = field(default_factory=list)

    def serve_as(self, address: str, http_server: LocalServer) -> None:
        self.routes[address] = http_server.port


@pytest.fixture(autouse=True)
def net(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNet]:
    fake = FakeNet()

    def resolve(host: str, port: int) -> list[str]:
        fake.lookups.append(host)
        answer = fake.dns.get(host)
        if answer is not None:
            return answer() if callable(answer) else list(answer)
        # Numeric forms (2130706433, 0x7f.1) resolve locally without DNS; names we did not plan for fail.
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
        return [str(i[4][0]) for i in infos]

    real_connect = socket.create_connection

    def guarded_connect(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        host, port = address[0], address[1]
        fake.connects.append((host, port))
        if host in fake.routes:
            return real_connect(("127.0.0.1", fake.routes[host]), *args, **kwargs)
        if not _is_loopback(host):  # a name here means something resolved it behind our back
            fake.violations.append((host, port))
            raise ConnectionRefusedError(f"test tried to leave the machine: {host}:{port}")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(fetch_module, "_getaddrinfo", resolve)
    monkeypatch.setattr(socket, "create_connection", guarded_connect)
    yield fake
    assert fake.violations == []


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetch(url: str, **kwargs: Any) -> tuple[bytes, str | None]:
    kwargs.setdefault("max_bytes", 1_000_000)
    kwargs.setdefault("timeout", 5.0)
    return fetch_bytes(url, **kwargs)


# --- addresses -------------------------------------------------------------------------------------

NON_ROUTABLE = [
    "10.0.0.1",  # RFC 1918
    "172.16.0.1",
    "192.168.1.1",
    "127.0.0.1",  # loopback
    "127.255.255.254",
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "0.0.0.0",  # unspecified
    "0.1.2.3",  # "this network"
    "224.0.0.1",  # multicast
    "239.255.255.250",
    "240.0.0.1",  # reserved
    "255.255.255.255",  # broadcast
    "192.0.2.10",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",  # IPv6 loopback
    "::",  # IPv6 unspecified
    "fe80::1",  # IPv6 link-local
    "fc00::1",  # unique local
    "fd00:ec2::254",  # AWS IPv6 metadata
    "ff02::1",  # IPv6 multicast
    "ff0e::1",  # global-scope multicast (is_global in Python, still refused)
    "::ffff:10.0.0.1",  # IPv4-mapped
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "2001:db8::1",  # documentation
]


@pytest.mark.parametrize("address", NON_ROUTABLE)
def test_non_routable_addresses_are_rejected(net: FakeNet, address: str) -> None:
    net.dns["target.test"] = [address]
    with pytest.raises(FetchError, match=f"address {ipaddress.ip_address(address)} is not allowed"):
        fetch("http://target.test/face.png")
    assert net.connects == []


@pytest.mark.parametrize(
    "address",
    [
        "93.184.216.34",
        "2606:4700:4700::1111",
        "64:ff9b::5db8:d822",
        "::ffff:93.184.216.34",
        "2002:5db8:d822::1",
    ],
)
def test_globally_routable_addresses_are_allowed(address: str) -> None:
    assert fetch_module.is_allowed_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "127.0.0.1", "::1", "fc00::1", "100.64.0.1", "::ffff:127.0.0.1"]
)
def test_allow_private_admits_private_and_loopback(address: str) -> None:
    assert fetch_module.is_allowed_address(ipaddress.ip_address(address), allow_private=True)
    assert not fetch_module.is_allowed_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "fe80::1",
        "0.0.0.0",
        "::",
        "224.0.0.1",
        "240.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64
        "2002:a9fe:a9fe::1",  # 6to4
        "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo, client 169.254.169.254
    ],
)
def test_allow_private_still_blocks_metadata_multicast_and_reserved(net: FakeNet, address: str) -> None:
    net.dns["target.test"] = [address]
    with pytest.raises(FetchError, match="is not allowed"):
        fetch("http://target.test/", allow_private=True)
    assert net.connects == []


def test_one_private_answer_among_public_ones_rejects_the_host(net: FakeNet) -> None:
    net.dns["mixed.test"] = [PUBLIC, "10.0.0.1"]
    with pytest.raises(FetchError, match="address 10.0.0.1 is not allowed"):
        fetch("http://mixed.test/")
    assert net.connects == []


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://10.0.0.1/", "10.0.0.1"),
        ("http://127.0.0.1:8080/", "127.0.0.1"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254"),
        ("http://[::1]/", "::1"),
        ("http://[::ffff:7f00:1]/", "127.0.0.1"),
        ("http://[fd00:ec2::254]/", "fd00:ec2::254"),
        ("http://2130706433/", "127.0.0.1"),  # decimal 127.0.0.1
        ("http://0x7f.1/", "127.0.0.1"),  # hex + short form
        ("http://0/", "0.0.0.0"),
    ],
)
def test_literal_address_urls_are_rejected(net: FakeNet, url: str, address: str) -> None:
    with pytest.raises(FetchError, match="is not allowed"):
        fetch(url)
    assert net.connects == []


def test_connection_goes_to_the_validated_address_dns_rebinding(
    net: FakeNet, http_server: LocalServer
) -> None:
    answers = iter([[PUBLIC], ["10.0.0.1"], ["169.254.169.254"]])
    net.dns["rebind.test"] = lambda: next(answers)  # public for the check, private for any second lookup
    net.serve_as(PUBLIC, http_server)
    http_server.routes["/face.png"] = reply(200, b"pixels", {"Content-Type": "image/png"})

    assert fetch("http://rebind.test/face.png") == (b"pixels", "image/png")
    assert net.lookups == ["rebind.test"]  # resolved exactly once
    assert net.connects == [(PUBLIC, 80)]  # to the checked address, not a fresh lookup
    assert http_server.seen[0].headers["host"] == "rebind.test"  # Host is still the name


def test_unresolvable_host(net: FakeNet) -> None:
    with pytest.raises(FetchError, match="could not resolve host nowhere.test"):
        fetch("http://nowhere.test/")


def test_slow_dns_counts_against_the_deadline(net: FakeNet) -> None:
    def slow() -> list[str]:
        time.sleep(1.0)
        return [PUBLIC]

    net.dns["slow-dns.test"] = slow
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out resolving slow-dns.test"):
        fetch("http://slow-dns.test/", timeout=0.3)
    assert time.monotonic() - start < 0.8


# --- URLs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.com/x.png",
        "gopher://example.com/",
        "data:image/png;base64,AAAA",
        "javascript:alert(1)",
        "dict://127.0.0.1:11211/",
        "//example.com/x.png",
        "example.com/x.png",
    ],
)
def test_non_http_schemes_are_rejected(net: FakeNet, url: str) -> None:
    with pytest.raises(FetchError, match="scheme"):
        fetch(url)
    assert net.connects == []


@pytest.mark.parametrize("url", ["http://user:pass@example.test/", "http://trusted.test@127.0.0.1/"])
def test_credentials_in_urls_are_rejected(net: FakeNet, url: str) -> None:
    with pytest.raises(FetchError, match="user name or password"):
        fetch(url)
    assert net.connects == []


def test_overlong_and_malformed_urls_are_rejected() -> None:
    with pytest.raises(FetchError, match="longer than"):
        fetch("http://example.test/" + "a" * 9000)
    with pytest.raises(FetchError, match="no host|malformed"):
        fetch("http:///path")
    with pytest.raises(FetchError, match="malformed"):
        fetch("http://[::1/")


# --- redirects ----------------------------------------------------------------------------------------


def test_redirect_hop_limit(net: FakeNet, http_server: LocalServer) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["hops.test"] = [PUBLIC]
    for i in range(7):
        http_server.routes[f"/r{i}"] = redirect(f"/r{i + 1}")
    http_server.routes["/r5"] = reply(200, b"five")
    assert fetch("http://hops.test/r0")[0] == b"five"  # exactly 5 redirects is fine

    http_server.routes["/r5"] = redirect("/r6")
    http_server.routes["/r6"] = reply(200, b"six")
    with pytest.raises(FetchError, match="too many redirects"):
        fetch("http://hops.test/r0")
    assert http_server.seen[-1].path == "/r5"  # the sixth redirect was never followed


def test_redirect_loop_ends(net: FakeNet, http_server: LocalServer) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["loop.test"] = [PUBLIC]
    http_server.routes["/loop"] = redirect("/loop", status=301)
    with pytest.raises(FetchError, match="too many redirects"):
        fetch("http://loop.test/loop")


@pytest.mark.parametrize(
    "location",
    [
        "http://10.0.0.1/secret",
        "http://169.254.169.254/latest/meta-data/",
        "http://internal.test/",
        "http://[::1]:1/",
    ],
)
def test_redirect_to_a_private_address_is_blocked(
    net: FakeNet, http_server: LocalServer, location: str
) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["public.test"] = [PUBLIC]
    net.dns["internal.test"] = ["192.168.0.5"]
    http_server.routes["/go"] = redirect(location)
    with pytest.raises(FetchError, match="is not allowed"):
        fetch("http://public.test/go")
    assert net.connects == [(PUBLIC, 80)]


@pytest.mark.parametrize("location", ["file:///etc/passwd", "gopher://x.test/"])
def test_redirect_to_another_scheme_is_blocked(net: FakeNet, http_server: LocalServer, location: str) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["public.test"] = [PUBLIC]
    http_server.routes["/go"] = redirect(location)
    with pytest.raises(FetchError, match="scheme"):
        fetch("http://public.test/go")


def test_redirect_to_a_malformed_url_is_an_error(net: FakeNet, http_server: LocalServer) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["public.test"] = [PUBLIC]
    http_server.routes["/go"] = redirect("http://[::1/")
    with pytest.raises(FetchError, match="malformed"):
        fetch("http://public.test/go")


SENSITIVE = {"Authorization": "Key secret", "Cookie": "session=1", "Proxy-Authorization": "Basic x"}


def test_cross_origin_redirect_strips_credentials(net: FakeNet, http_server: LocalServer) -> None:
    other, other_httpd = start_server()
    try:
        net.serve_as(PUBLIC, http_server)
        net.serve_as(PUBLIC_2, other)
        net.dns["a.test"] = [PUBLIC]
        net.dns["b.test"] = [PUBLIC_2]
        http_server.routes["/start"] = redirect("/same")  # same origin: credentials stay
        http_server.routes["/same"] = redirect("http://b.test/end")  # other origin: credentials go
        other.routes["/end"] = reply(200, b"done")

        body, _ = fetch("http://a.test/start", headers={**SENSITIVE, "X-Request-Id": "kept"})
        assert body == b"done"
        same = http_server.seen[1].headers
        assert same["authorization"] == "Key secret" and same["cookie"] == "session=1"
        crossed = other.seen[0].headers
        assert {"authorization", "cookie", "proxy-authorization"}.isdisjoint(crossed)
        assert crossed["x-request-id"] == "kept"
        assert crossed["host"] == "b.test"
    finally:
        other_httpd.shutdown()
        other_httpd.server_close()


def test_redirect_to_another_port_is_cross_origin(net: FakeNet, http_server: LocalServer) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["a.test"] = [PUBLIC]
    http_server.routes["/start"] = redirect("http://a.test:8080/end")
    net.routes[PUBLIC] = http_server.port  # both ports lead to the same local http_server
    http_server.routes["/end"] = reply(200, b"ok")
    fetch("http://a.test/start", headers=SENSITIVE)
    assert "authorization" not in http_server.seen[1].headers


# --- size ---------------------------------------------------------------------------------------------


def headers_then_hang(content_length: int, hold: float = 3.0) -> Callable[[BaseHTTPRequestHandler], None]:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(content_length))
        h.end_headers()
        h.wfile.flush()
        time.sleep(hold)  # a reader that waits for the body would hang here

    return route


def test_declared_oversized_body_is_rejected_before_reading(net: FakeNet, http_server: LocalServer) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["big.test"] = [PUBLIC]
    http_server.routes["/big"] = headers_then_hang(10_000_000_000)
    start = time.monotonic()
    with pytest.raises(FetchError, match="file is 10000000000 bytes, the limit is 1000"):
        fetch("http://big.test/big", max_bytes=1000, timeout=5.0)
    assert time.monotonic() - start < 1.0


def test_streamed_body_past_the_cap_is_aborted(net: FakeNet, http_server: LocalServer) -> None:
    sent: list[int] = []

    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        chunk = b"x" * 65536
        for _ in range(10_000):  # 640 MB if nobody stops reading
            h.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sent.append(len(chunk))

    net.serve_as(PUBLIC, http_server)
    net.dns["stream.test"] = [PUBLIC]
    http_server.routes["/endless"] = endless
    with pytest.raises(FetchError, match="larger than the limit of 100000 bytes"):
        fetch("http://stream.test/endless", max_bytes=100_000)
    time.sleep(0.2)
    assert sum(sent) < 50_000_000


def test_body_of_exactly_the_cap_is_accepted(net: FakeNet, http_server: LocalServer) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["exact.test"] = [PUBLIC]
    http_server.routes["/exact"] = reply(200, b"y" * 1000)
    assert fetch("http://exact.test/exact", max_bytes=1000)[0] == b"y" * 1000
    with pytest.raises(FetchError, match="limit"):
        fetch("http://exact.test/exact", max_bytes=999)


def test_short_body_is_an_error(net: FakeNet, http_server: LocalServer) -> None:
    def short(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "1000")
        h.send_header("Connection", "close")
        h.end_headers()
        h.wfile.write(b"only this")
        h.close_connection = True

    net.serve_as(PUBLIC, http_server)
    net.dns["short.test"] = [PUBLIC]
    http_server.routes["/short"] = short
    with pytest.raises(FetchError, match="failed"):
        fetch("http://short.test/short")


def test_compressed_responses_are_refused(net: FakeNet, http_server: LocalServer) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["gz.test"] = [PUBLIC]
    http_server.routes["/gz"] = reply(200, b"\x1f\x8b...", {"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match="Content-Encoding: gzip"):
        fetch("http://gz.test/gz")
    assert http_server.seen[0].headers["accept-encoding"] == "identity"


def test_http_errors_are_reported(net: FakeNet, http_server: LocalServer) -> None:
    net.serve_as(PUBLIC, http_server)
    net.dns["err.test"] = [PUBLIC]
    with pytest.raises(FetchError, match="err.test answered HTTP 404"):
        fetch("http://err.test/missing")


# --- time ---------------------------------------------------------------------------------------------


def test_total_deadline_against_a_slow_drip(net: FakeNet, http_server: LocalServer) -> None:
    def drip(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100")
        h.end_headers()
        for _ in range(100):  # each byte well inside any per-read timeout; the whole takes 20 s
            h.wfile.write(b"x")
            h.wfile.flush()
            time.sleep(0.2)

    net.serve_as(PUBLIC, http_server)
    net.dns["slow.test"] = [PUBLIC]
    http_server.routes["/drip"] = drip
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out fetching from slow.test"):
        fetch("http://slow.test/drip", timeout=1.0)
    assert 0.9 < time.monotonic() - start < 1.6


def test_total_deadline_spans_redirect_hops(net: FakeNet, http_server: LocalServer) -> None:
    def slow_redirect(h: BaseHTTPRequestHandler) -> None:
        time.sleep(0.4)
        redirect("/slow")(h)

    net.serve_as(PUBLIC, http_server)
    net.dns["hops.test"] = [PUBLIC]
    http_server.routes["/slow"] = slow_redirect
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch("http://hops.test/slow", timeout=1.0)  # each hop is fast enough; all of them are not
    assert time.monotonic() - start < 1.6


def test_slow_headers_time_out(net: FakeNet, http_server: LocalServer) -> None:
    def stall(h: BaseHTTPRequestHandler) -> None:
        time.sleep(3)

    http_server.routes["/stall"] = stall
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        fetch(http_server.url("/stall"), timeout=0.5, allow_private=True)
    assert time.monotonic() - start < 1.2


# --- proxies and allow_private --------------------------------------------------------------------------


def test_proxy_env_is_ignored(
    net: FakeNet, http_server: LocalServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    proxy, proxy_httpd = start_server()
    try:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url())
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        fetch_module._warn_once.cache_clear()
        net.serve_as(PUBLIC, http_server)
        net.dns["direct.test"] = [PUBLIC]
        http_server.routes["/img"] = reply(200, b"direct")
        with caplog.at_level(logging.WARNING, logger=fetch_module.__name__):
            assert fetch("http://direct.test/img")[0] == b"direct"
        assert proxy.seen == []
        assert net.connects == [(PUBLIC, 80)]
        assert "a proxy would bypass the address checks" in caplog.text
    finally:
        proxy_httpd.shutdown()
        proxy_httpd.server_close()


def test_allow_private_reaches_a_real_local_server(http_server: LocalServer) -> None:
    http_server.routes["/face.jpg"] = reply(200, b"jpeg bytes", {"Content-Type": "image/jpeg"})
    with pytest.raises(FetchError, match="address 127.0.0.1 is not allowed"):
        fetch(http_server.url("/face.jpg"))
    assert http_server.seen == []
    assert fetch(http_server.url("/face.jpg"), allow_private=True) == (b"jpeg bytes", "image/jpeg")


def test_allow_private_still_checks_redirects_against_metadata(
    net: FakeNet, http_server: LocalServer
) -> None:
    http_server.routes["/go"] = redirect("http://169.254.169.254/latest/meta-data/")
    with pytest.raises(FetchError, match="address 169.254.169.254 is not allowed"):
        fetch(http_server.url("/go"), allow_private=True)


def test_localhost_by_name(net: FakeNet, http_server: LocalServer) -> None:
    net.dns["localhost"] = ["127.0.0.1", "::1"]
    http_server.routes["/x"] = reply(200, b"ok")
    with pytest.raises(FetchError, match="is not allowed"):
        fetch(f"http://localhost:{http_server.port}/x")
    assert fetch(f"http://localhost:{http_server.port}/x", allow_private=True)[0] == b"ok"


def test_falls_back_to_the_next_checked_address(net: FakeNet, http_server: LocalServer) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()
    net.dns["multi.test"] = [PUBLIC_2, PUBLIC]
    net.routes[PUBLIC_2] = dead_port  # refuses connections
    net.serve_as(PUBLIC, http_server)
    http_server.routes["/x"] = reply(200, b"second")
    assert fetch("http://multi.test/x")[0] == b"second"
    assert net.connects == [(PUBLIC_2, 80), (PUBLIC, 80)]


def test_connection_refused_is_a_fetch_error(net: FakeNet) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(FetchError, match="could not connect to 127.0.0.1"):
        fetch(f"http://127.0.0.1:{port}/", allow_private=True)


# --- webhooks: post_json and validate_url --------------------------------------------------------------


def test_post_json_delivers_and_returns_status(http_server: LocalServer) -> None:
    http_server.routes["/hook"] = reply(202, b"")
    status = post_json(
        http_server.url("/hook"), b'{"a":1}', {"webhook-id": "x"}, timeout=5, allow_private=True
    )
    assert status == 202
    seen = http_server.seen[0]
    assert (seen.method, seen.body) == ("POST", b'{"a":1}')
    assert seen.headers["content-type"] == "application/json" and seen.headers["webhook-id"] == "x"


def test_post_json_does_not_follow_redirects(http_server: LocalServer) -> None:
    http_server.routes["/hook"] = redirect("/elsewhere", status=307)
    http_server.routes["/elsewhere"] = reply(200)
    assert post_json(http_server.url("/hook"), b"{}", {}, timeout=5, allow_private=True) == 307
    assert [s.path for s in http_server.seen] == ["/hook"]


def test_post_json_blocks_private_targets(net: FakeNet) -> None:
    net.dns["hook.test"] = ["10.1.2.3"]
    with pytest.raises(FetchError, match="address 10.1.2.3 is not allowed"):
        post_json("http://hook.test/", b"{}", {}, timeout=5)
    with pytest.raises(FetchError, match="is not allowed"):
        post_json("http://169.254.169.254/", b"{}", {}, timeout=5, allow_private=True)
    assert net.connects == []


def test_post_json_times_out(http_server: LocalServer) -> None:
    def stall(h: BaseHTTPRequestHandler) -> None:
        time.sleep(3)

    http_server.routes["/hook"] = stall
    start = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        post_json(http_server.url("/hook"), b"{}", {}, timeout=0.5, allow_private=True)
    assert time.monotonic() - start < 1.2


def test_post_json_does_not_read_a_huge_answer(http_server: LocalServer) -> None:
    http_server.routes["/hook"] = headers_then_hang(10_000_000_000, hold=3.0)
    start = time.monotonic()
    assert post_json(http_server.url("/hook"), b"{}", {}, timeout=5, allow_private=True) == 200
    assert time.monotonic() - start < 1.0


def test_validate_url(net: FakeNet) -> None:
    net.dns["hooks.example.test"] = [PUBLIC]
    net.dns["intranet.test"] = ["10.0.0.7"]
    validate_url("https://hooks.example.test/pulid")
    with pytest.raises(FetchError, match="address 10.0.0.7 is not allowed"):
        validate_url("https://intranet.test/hook")
    validate_url("https://intranet.test/hook", allow_private=True)
    with pytest.raises(FetchError, match="scheme"):
        validate_url("ftp://hooks.example.test/")
    with pytest.raises(FetchError, match="could not resolve"):
        validate_url("https://unknown.test/")
    assert net.connects == []


# --- TLS: pinned address, but SNI and certificate checks use the name ------------------------------------


@pytest.fixture
def tls_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[LocalServer, list[str | None]]]:
    """An https server for `secure.test` (self-signed), recording the SNI name of each handshake."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "secure.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("secure.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    sni: list[str | None] = []

    def record_sni(sock: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
        sni.append(server_name)

    server_ctx.sni_callback = record_sni
    client_ctx = ssl.create_default_context(cadata=cert_pem.decode())
    monkeypatch.setattr(fetch_module, "_ssl_context", lambda: client_ctx)
    state, httpd = start_server(lambda sock: server_ctx.wrap_socket(sock, server_side=True))
    yield state, sni
    httpd.shutdown()
    httpd.server_close()


def test_https_connects_to_the_pinned_address_with_the_hostname_for_tls(
    net: FakeNet, tls_server: tuple[LocalServer, list[str | None]]
) -> None:
    http_server, sni = tls_server
    net.dns["secure.test"] = [PUBLIC]
    net.routes[PUBLIC] = http_server.port
    http_server.routes["/face.png"] = reply(200, b"over tls")
    assert fetch("https://secure.test/face.png")[0] == b"over tls"
    assert net.connects == [(PUBLIC, 443)]
    assert sni == ["secure.test"]
    assert http_server.seen[0].headers["host"] == "secure.test"


def test_https_certificate_is_checked_against_the_hostname(
    net: FakeNet, tls_server: tuple[LocalServer, list[str | None]]
) -> None:
    http_server, sni = tls_server
    net.dns["impostor.test"] = [PUBLIC]
    net.routes[PUBLIC] = http_server.port
    http_server.routes["/x"] = reply(200, b"should not be read")
    with pytest.raises(FetchError, match="could not connect to impostor.test.*certificate"):
        fetch("https://impostor.test/x")
    assert sni == ["impostor.test"]
    assert http_server.seen == []
