"""A dead webhook receiver delays only its own webhooks, never another key's (issue #12)."""

from __future__ import annotations

import socket
import time

from tests.integration.test_files_and_webhooks import Receiver
from tests.servers import Server, wait_completed

TIMEOUT = 4.0  # seconds one attempt on the dead receiver may take


def test_a_dead_receiver_does_not_delay_other_webhooks(fresh_server: Server) -> None:
    fresh_server.env = {"PULID_WEBHOOK_TIMEOUT_SECONDS": str(TIMEOUT), "PULID_WORKER_ENDPOINTS": "test/echo"}
    srv = fresh_server.start()
    dead = socket.socket()  # accepts connections (the kernel does) and never answers a byte
    dead.bind(("127.0.0.1", 0))
    dead.listen(64)
    dead_url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
    alive = Receiver(failures=0)
    try:
        with srv.client() as attacker, srv.client(srv.new_key()) as victim:
            hanging = [
                attacker.post("/queue/test/echo", params={"fal_webhook": dead_url}, json={}).json()
                for _ in range(6)
            ]
            for sub in hanging:
                wait_completed(attacker, sub["status_url"])
            sub = victim.post("/queue/test/echo", params={"fal_webhook": alive.url}, json={}).json()
            wait_completed(victim, sub["status_url"])
            completed = time.monotonic()
            alive.wait(1, timeout=6 * TIMEOUT)
            # Sent one after another, six hanging attempts would come first: 24 s.
            assert time.monotonic() - completed < TIMEOUT
            assert sub["request_id"].encode() in alive.calls[0][1]
    finally:
        alive.close()
        dead.close()
