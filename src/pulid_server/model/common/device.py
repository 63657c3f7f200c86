"""Device and dtype policy shared by every family."""

from __future__ import annotations

from typing import Any

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` is the first CUDA device when there is one, else the CPU; a named CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; use --device cpu")
    return device


def place(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """Move, then cast with .half(): diffusers logs a warning on every `.to(dtype)` of a model."""
    module.to(device)
    return module.half() if dtype == torch.float16 else module
