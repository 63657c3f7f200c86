"""The one way this service talks to a URL a user gave it (reference images, webhooks).

Server-side request forgery defence, after fal's `toolkit/utils/ssrf.py`:

- Each connection resolves its host once, checks every answer, and connects to a checked address. The
  name is never resolved again, so DNS rebinding cannot swap in an internal address between check and
  connect. TLS SNI, certificate checks and the `Host` header still use the original hostname.
- Redirects are followed by hand (at most 5); every hop opens its connection through the same check.
- Proxy environment variables are ignored: a proxy would resolve the name itself, past our check.
- Bodies are capped by `Content-Length` and again while streaming; one deadline covers the whole call
  (DNS, connect, TLS, every read and write, every hop), not just each socket operation.

`allow_private` (an operator setting) lets private and loopback targets through for tests and
intranets; link-local (cloud metadata at 169.254.169.254), multicast, reserved and unspecified addresses
stay blocked even then.

ssrfguard and httpx-secure were considered: httpx-secure only wraps async clients, and ssrfguard guards
the connection but leaves the size cap and deadline to the caller and is young (0.x, single author, no
audit) for 6,000 lines. What we need fits in this file over httpcore's network-backend seam.
"""

from __future__ import annotations

import concurrent.futures
import functools
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

__all__ = ["FetchError", "fetch_bytes", "is_allowed_address", "post_json", "validate_url"]

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
MAX_URL_LENGTH = 8192
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SENSITIVE_HEADERS = ("authorization", "cookie", "proxy-authorization")
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
_USER_AGENT = "pulid-server"
_CHUNK = 64 * 1024

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "0.x.x.x" reaches the local host on Linux
_CGNAT = ipaddress.ip_network("100.64.0.0/10")

# getaddrinfo cannot be given a timeout, so it runs here and the caller waits only until its deadline.
_resolver_pool = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="pulid-dns")


class FetchError(Exception):
    """A URL that may not or could not be fetched; `str()` is a reason safe to show to the user."""


# --- public API ----------------------------------------------------------------------------------


def fetch_bytes(
    url: str,
    *,
    max_bytes: int,
    timeout: float,
    allow_private: bool = False,
    headers: Mapping[str, str] | None = None,
) -> tuple[bytes, str | None]:
    """GET `url` and return `(body, content type)`, following up to 5 redirects.

    Raises FetchError for a refused address or scheme, a non-2xx answer, a body over `max_bytes`,
    or when the whole exchange takes longer than `timeout` seconds. `headers` (e.g. Authorization)
    are sent to the first origin only: they are dropped as soon as a redirect leaves it.
    """
    deadline = _Deadline(timeout)
    current = _parse_url(url)
    request_headers = {"User-Agent": _USER_AGENT, "Accept": "*/*", "Accept-Encoding": "identity"}
    request_headers.update(headers or {})
    with _PinnedTransport(allow_private, deadline) as transport:
        for hops in range(MAX_REDIRECTS + 1):
            request = httpx.Request("GET", current, headers=request_headers, extensions=deadline.extensions())
            with _send(transport, request, deadline) as response:
                location = response.headers.get("location")
                if response.status_code in _REDIRECT_STATUSES and location:
                    if hops == MAX_REDIRECTS:
                        raise FetchError(f"too many redirects (more than {MAX_REDIRECTS})")
                    target = _redirect_target(current, location)
                    if _origin(target) != _origin(current):
                        request_headers = {
                            k: v for k, v in request_headers.items() if k.lower() not in _SENSITIVE_HEADERS
                        }
                    current = target
                    continue
                if not 200 <= response.status_code < 300:
                    raise FetchError(f"{current.host} answered HTTP {response.status_code}")
                body = _read_body(response, max_bytes)
                return body, response.headers.get("content-type")
    raise AssertionError("unreachable")  # pragma: no cover


def post_json(
    url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool = False
) -> int:
    """POST `body` as JSON and return the status code. Redirects are returned, never followed.

    The answer's body is not read. Raises FetchError when the address is refused or the request
    cannot be completed within `timeout` seconds.
    """
    deadline = _Deadline(timeout)
    target = _parse_url(url)
    request_headers = {"User-Agent": _USER_AGENT, "Content-Type": "application/json", **headers}
    with _PinnedTransport(allow_private, deadline) as transport:
        request = httpx.Request(
            "POST", target, content=body, headers=request_headers, extensions=deadline.extensions()
        )
        with _send(transport, request, deadline) as response:
            return response.status_code


def validate_url(url: str, *, allow_private: bool = False, timeout: float = 10.0) -> None:
    """Check a URL before accepting it (e.g. a webhook at submit time): scheme, shape, and where its host
    resolves now. Fetching re-checks at connect time, so this is for early, friendly errors only."""
    deadline = _Deadline(timeout)
    parsed = _parse_url(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    _resolve_checked(parsed.host, port, allow_private, deadline)


# --- address policy --------------------------------------------------------------------------------


def is_allowed_address(ip: IPAddress, *, allow_private: bool = False) -> bool:
    """Whether a connection to `ip` may be opened. Addresses embedded in IPv6 forms are judged too."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # the kernel talks IPv4 to the embedded address
            return is_allowed_address(ip.ipv4_mapped, allow_private=allow_private)
        if ip in _NAT64:  # a NAT64 gateway forwards to the embedded IPv4 address
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            return is_allowed_address(embedded, allow_private=allow_private)
        inner: list[ipaddress.IPv4Address] = []
        if ip.sixtofour is not None:
            inner.append(ip.sixtofour)
        if ip.teredo is not None:
            inner.extend(ip.teredo)  # (server, client): either one being internal is a way in
        if not all(is_allowed_address(a, allow_private=allow_private) for a in inner):
            return False
    if ip.is_loopback:  # before is_reserved: Python counts ::1 in the reserved ::/8
        return allow_private
    if ip.is_unspecified or ip.is_multicast or ip.is_link_local or ip.is_reserved:
        return False
    if isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK:
        return False
    if allow_private:
        return True
    return ip.is_global and not (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)


def _getaddrinfo(host: str, port: int) -> list[str]:
    """Resolve with the system resolver. The seam tests replace to make names resolve where they choose."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _resolve_checked(host: str, port: int, allow_private: bool, deadline: _Deadline) -> list[IPAddress]:
    """Every address `host` resolves to, or FetchError if any one of them is not allowed."""
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        future = _resolver_pool.submit(_getaddrinfo, host, port)
        try:
            answers = future.result(timeout=deadline.remaining())
        except concurrent.futures.TimeoutError:
            raise FetchError(f"timed out resolving {host}") from None
        except (OSError, UnicodeError):
            raise FetchError(f"could not resolve host {host}") from None
        addresses = [ipaddress.ip_address(a) for a in answers]
    if not addresses:
        raise FetchError(f"could not resolve host {host}")
    # One bad answer rejects the host: otherwise a retry or a second connection could land on it.
    for ip in addresses:
        if not is_allowed_address(ip, allow_private=allow_private):
            raise FetchError(f"address {ip} is not allowed")
    return addresses


# --- URLs ----------------------------------------------------------------------------------------


def _parse_url(url: str) -> httpx.URL:
    if len(url) > MAX_URL_LENGTH:
        raise FetchError(f"URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("URL is malformed") from None
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"URL scheme {parsed.scheme!r} is not allowed, use http or https")
    if not parsed.host:
        raise FetchError("URL has no host")
    if parsed.userinfo:
        raise FetchError("URLs with a user name or password are not allowed")
    return parsed


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    try:
        joined = str(current.join(location))
    except (httpx.InvalidURL, TypeError, ValueError):
        raise FetchError("redirect to a malformed URL") from None
    return _parse_url(joined)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80)


# --- transport: resolve once, check, connect to the checked address -------------------------------


class _Deadline:
    """One absolute deadline, applied to every blocking step."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._at = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._at - time.monotonic())

    def clamp(self, timeout: float | None, exc: type[Exception]) -> float:
        left = self._at - time.monotonic()
        if left <= 0:
            raise exc("deadline exceeded")
        return left if timeout is None else min(timeout, left)

    def extensions(self) -> dict[str, Any]:
        left = self.remaining()
        return {"timeout": {"connect": left, "read": left, "write": left, "pool": left}}


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by the deadline, however slowly bytes trickle in."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: _Deadline) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        # server_hostname is the URL's hostname (httpcore passes the origin's), so SNI and certificate
        # checks are against the name even though the socket was opened to a pinned address.
        clamped = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, clamped), self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _PinnedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend, except each connection goes to an address we resolved and checked."""

    def __init__(self, allow_private: bool, deadline: _Deadline) -> None:
        self._inner = httpcore.SyncBackend()
        self._allow_private = allow_private
        self._deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = _resolve_checked(host, port, self._allow_private, self._deadline)
        error: Exception | None = None
        for ip in addresses:  # all checked already; try them in resolver order
            try:
                stream = self._inner.connect_tcp(
                    str(ip),  # a literal address: no second lookup anywhere below this line
                    port,
                    timeout=self._deadline.clamp(timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as e:
                error = e
                continue
            return _DeadlineStream(stream, self._deadline)
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise FetchError("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, self._deadline.remaining()))


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def _ssl_context() -> ssl.SSLContext:
    """Certificate store for https (certifi, or SSL_CERT_FILE/SSL_CERT_DIR). Tests replace it."""
    return _default_ssl_context()


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, response: httpcore.Response) -> None:
        self._response = response

    def __iter__(self) -> Iterator[bytes]:
        yield from self._response.iter_stream()

    def close(self) -> None:
        self._response.close()


class _PinnedTransport(httpx.BaseTransport):
    """A one-call transport: it reads no environment (no proxies) and knows no cookies."""

    def __init__(self, allow_private: bool, deadline: _Deadline) -> None:
        _warn_about_proxy_env()
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            network_backend=_PinnedBackend(allow_private, deadline),
            max_connections=4,
            retries=0,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response),
            extensions=response.extensions,
            request=request,
        )

    def close(self) -> None:
        self._pool.close()


@contextmanager
def _send(
    transport: _PinnedTransport, request: httpx.Request, deadline: _Deadline
) -> Iterator[httpx.Response]:
    """Send one request; turn every transport failure, now or while the body streams, into FetchError."""
    host = request.url.host
    response: httpx.Response | None = None
    try:
        response = transport.handle_request(request)
        yield response
    except httpcore.TimeoutException:
        raise FetchError(f"timed out fetching from {host} (limit {deadline.seconds:g}s)") from None
    except httpcore.ConnectError as e:  # includes TLS handshake and certificate failures
        raise FetchError(
            f"could not connect to {host}: {e}" if str(e) else f"could not connect to {host}"
        ) from None
    except (httpcore.NetworkError, httpcore.ProtocolError) as e:
        raise FetchError(f"connection to {host} failed: {e or type(e).__name__}") from None
    finally:
        if response is not None:
            response.close()


def _read_body(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"file is {int(declared)} bytes, the limit is {max_bytes}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # We asked for identity; decoding a compressed body is a decompression bomb waiting to happen.
        raise FetchError(f"compressed responses (Content-Encoding: {encoding}) are not accepted")
    body = bytearray()
    for chunk in response.iter_raw(_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"file is larger than the limit of {max_bytes} bytes")
    return bytes(body)


@functools.cache
def _warn_once(names: tuple[str, ...]) -> None:
    log.warning("ignoring %s for user URLs: a proxy would bypass the address checks", ", ".join(names))


def _warn_about_proxy_env() -> None:
    names = tuple(n for n in _PROXY_VARS if os.environ.get(n))
    if names:
        _warn_once(names)
