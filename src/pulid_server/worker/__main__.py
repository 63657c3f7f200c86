"""A supervised worker process: `python -m pulid_server.worker`, its WorkerConfig as JSON on stdin."""

import sys

from pulid_server.worker.config import WorkerConfig
from pulid_server.worker.loop import run

sys.exit(run(WorkerConfig.from_json(sys.stdin.read())))
