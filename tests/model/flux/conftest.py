from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pulid_server.model.flux.pipeline import PulidFluxPipeline
from pulid_server.model.flux.presets import build_tiny

TABLES = Path(__file__).with_name("official_tables.json")


@pytest.fixture(scope="session")
def official_tables() -> dict[str, dict[str, list[int]]]:
    """Key -> shape tables recorded from the official module definitions (record_official_tables.py)."""
    tables: dict[str, dict[str, list[int]]] = json.loads(TABLES.read_text())
    return tables


@pytest.fixture(scope="session")
def flux() -> PulidFluxPipeline:
    return build_tiny(torch.device("cpu"))
