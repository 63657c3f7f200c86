"""What `pulid serve` puts between uvicorn and the app, against clients that open connections and never finish
a request (slow loris), which uvicorn alone lets sit forever until the process runs out of descriptors.

- Deadlines: a request's line and headers must arrive within `http_head_timeout_seconds` of the
  connection (or of the first byte of a keep-alive request), and its body may not pause for longer than
  `http_body_timeout_seconds`; past either the connection gets a 408 and is closed. Idle keep-alive
  connections close after uvicorn's 5 s.
- A cap on open connections (`max_connections`, by default what the open-files limit leaves after a
  reserve for the database, files and pipes): at the cap, a new connection first sheds the connection
  that has been idle longest (one waiting for a request: a half-open one, or an idle keep-alive one);
  only when every connection is busy with a request is the new one refused. So a hostile client holding
  many half-open connections cannot keep others out, and accept() never fails for lack of descriptors.
- The soft open-files limit is raised to the hard limit at start-up.

Behind a reverse proxy, set the same kind of limits there too (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import OrderedDict
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pulid_server.config import Settings

log = logging.getLogger("pulid.http")

# Descriptors kept back from the connection cap: database connections, blob files, worker pipes, logs.
FD_RESERVE = 256
MIN_CONNECTIONS = 64
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 36\r\nconnection: close\r\n\r\nThe request did not arrive in time.\n"
)


def raise_open_files_limit() -> int:
    """Lift the soft RLIMIT_NOFILE to the hard limit; the soft limit in force after that."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else target
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    except (ValueError, OSError):  # e.g. a hard limit above the kernel's nr_open
        return soft


class ConnectionGuard:
    """The open connections of one process (all listeners), idle ones in the order they became idle."""

    def __init__(self, max_connections: int, head_timeout: float, body_timeout: float):
        self.max_connections = max_connections
        self.head_timeout = head_timeout
        self.body_timeout = body_timeout
        self.open = 0
        self._idle: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self._dropped = {"timed out": 0, "shed at the cap": 0, "refused at the cap": 0}
        self._reported = time.monotonic()

    def opened(self, conn: GuardedProtocol) -> bool:
        """Count a new connection; False when it must be closed (the cap is reached, none is idle)."""
        if self.open >= self.max_connections:
            oldest = next(iter(self._idle), None)
            if oldest is None:
                self.dropped("refused at the cap")
                return False
            self.dropped("shed at the cap")
            oldest.drop()  # still counted until its connection_lost
        self.open += 1
        self._idle[conn] = None
        return True

    def closed(self, conn: GuardedProtocol) -> None:
        self.open -= 1
        self._idle.pop(conn, None)

    def busy(self, conn: GuardedProtocol) -> None:
        self._idle.pop(conn, None)

    def idle(self, conn: GuardedProtocol) -> None:
        self._idle[conn] = None
        self._idle.move_to_end(conn)

    def dropped(self, why: str) -> None:
        """Count a dropped connection; report the counts once a minute, not a log line per connection."""
        self._dropped[why] += 1
        if time.monotonic() - self._reported >= 60.0:
            self._reported = time.monotonic()
            counts = ", ".join(f"{n} {why}" for why, n in self._dropped.items() if n)
            log.warning("connections dropped in the last minute: %s (%d open)", counts, self.open)
            self._dropped = dict.fromkeys(self._dropped, 0)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with request deadlines and the connection cap of `guard`."""

    guard: ClassVar[ConnectionGuard]
    _deadline: asyncio.TimerHandle | None = None
    _counted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._counted = self.guard.opened(self)
        if not self._counted:
            transport.abort()
            return
        self._arm(self.guard.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self.guard.closed(self)
        super().connection_lost(exc)

    def drop(self) -> None:
        """Close an idle connection to make room (the cap is reached)."""
        self.guard.busy(self)
        self.transport.abort()

    # httptools parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm(self.guard.head_timeout)  # a keep-alive connection's next request has begun

    def on_headers_complete(self) -> None:
        self._disarm()
        self.guard.busy(self)
        super().on_headers_complete()
        self._arm(self.guard.body_timeout)  # ends at once for a request without a body

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._disarm()
        self._arm(self.guard.body_timeout)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._counted and not self.transport.is_closing():
            self.guard.idle(self)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.guard.dropped("timed out")
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedProtocol]:
    """The protocol class for uvicorn.Config(http=...): every listener of this process shares its guard.
    Raises the open-files limit first: the connection cap is taken from it."""
    limit = raise_open_files_limit()
    cap = settings.max_connections or max(MIN_CONNECTIONS, limit - FD_RESERVE)
    guard = ConnectionGuard(cap, settings.http_head_timeout_seconds, settings.http_body_timeout_seconds)
    log.info("at most %d connections; request heads within %g s", cap, guard.head_timeout)
    return type("PulidHttpProtocol", (GuardedProtocol,), {"guard": guard})
