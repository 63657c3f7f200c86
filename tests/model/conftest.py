from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from pulid_server.model.sdxl.pipeline import PulidPipeline
from pulid_server.model.sdxl.presets import build_tiny


def as_ref(array: np.ndarray) -> tuple[bytes, Image.Image]:
    image = Image.fromarray(array).convert("RGB")
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue(), image


@pytest.fixture(scope="session")
def make_ref() -> object:
    return as_ref


@pytest.fixture(scope="session")
def tiny() -> PulidPipeline:
    return build_tiny(torch.device("cpu"))


@pytest.fixture(scope="session")
def astronaut() -> tuple[bytes, Image.Image]:
    return as_ref(data.astronaut())


@pytest.fixture(scope="session")
def coffee() -> tuple[bytes, Image.Image]:
    return as_ref(data.coffee())
