"""Layers the official ID encoders of both families share, with the checkpoints' key layout."""

from __future__ import annotations

from torch import nn


def mapping_mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    """Linear-LN-LeakyReLU twice, then Linear: indices 0, 1, 3, 4, 6 carry the checkpoint's weights."""
    return nn.Sequential(
        nn.Linear(dim_in, hidden),
        nn.LayerNorm(hidden),
        nn.LeakyReLU(),
        nn.Linear(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.LeakyReLU(),
        nn.Linear(hidden, dim_out),
    )
