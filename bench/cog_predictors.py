"""Cog predictors equivalent to bench/noop and bench/sleep, for the Cog peer in bench/bench_peer.py. Loaded only
by Cog's own server (`python -m cog.server.http` in its own venv, .venv-cog): cog pins its own fastapi, so it
is never installed into the project's venv.

Noop  {"input": {"value": "x"}} -> "x"
Sleep {"input": {"ms": 200, "steps": 4}} -> 200.0, sleeping ms/steps per step as bench/sleep does
"""

import time

from cog import BasePredictor, Input  # type: ignore[import-not-found]


class Noop(BasePredictor):  # type: ignore[misc]
    def predict(self, value: str = Input(default="x")) -> str:
        return value


class Sleep(BasePredictor):  # type: ignore[misc]
    def predict(
        self, ms: float = Input(default=200.0, ge=0, le=10_000), steps: int = Input(default=4, ge=1, le=100)
    ) -> float:
        for _ in range(steps):
            time.sleep(ms / 1000 / steps)
        return ms
