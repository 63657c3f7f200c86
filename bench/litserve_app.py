"""LitServe serving a trivial endpoint equivalent to bench/noop: the peer in bench/bench_peer.py.

Settings comparable to `pulid serve --workers 1`: one uvicorn API process, one inference worker process
(CPU), default queue (multiprocessing), default 30 s timeout, log level warning. Input and output are
pydantic models like ours, so both servers validate the request body and the response.

Run: .venv/bin/python bench/litserve_app.py PORT   (POST /predict {"value": "x"} -> {"value": "x"})
"""

# No `from __future__ import annotations`: LitServe reads the real annotation of `request` to build the route.
import sys
from typing import Any

import litserve as ls
from pydantic import BaseModel


class NoopIn(BaseModel):
    value: str = "x"


class NoopOut(BaseModel):
    value: str


class Noop(ls.LitAPI):  # type: ignore[misc]
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request: NoopIn, **kwargs: Any) -> str:
        return request.value

    def predict(self, x: str, **kwargs: Any) -> str:
        return x

    def encode_response(self, output: str, **kwargs: Any) -> NoopOut:
        return NoopOut(value=output)


if __name__ == "__main__":
    server = ls.LitServer(Noop(), accelerator="cpu", devices=1, workers_per_device=1, timeout=30)
    server.run(
        host="127.0.0.1",
        port=int(sys.argv[1]),
        num_api_servers=1,
        log_level="warning",
        generate_client_file=False,
    )
