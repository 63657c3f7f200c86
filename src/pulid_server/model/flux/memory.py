"""GPU memory options of the FLUX family: CPU offload of whole components, weight-only quantization.

Offload follows the official `--offload`: every component lives on the CPU and is moved to the GPU only
while it runs (text encoders, then the face stack + IDFormer, then the transformer + ID attention, then
the AE), so the peak is the largest component rather than the sum. Moves are explicit (`Residency.use`)
instead of accelerate hooks: our pipeline is not a DiffusionPipeline, and the order is then visible in
pipeline.py.

Quantization stores the transformer blocks' linear weights as int8 or float8 e4m3 with one scale per
output channel (torchao `Int8WeightOnlyConfig` / `Float8WeightOnlyConfig`); activations stay bf16. It is
applied block by block on the target device, so the GPU never holds the whole bf16 transformer. The
embedders, final layer and the PuLID modules stay bf16 (as the official fp8 path leaves `pulid_ca`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from pulid_server.model.flux.request import Quantize

CPU = torch.device("cpu")


class Residency:
    """Where components live. Without offload everything stays on `device` and `use` does nothing."""

    def __init__(self, device: torch.device, offload: bool) -> None:
        self.device = device
        self.offload = offload
        self.history: list[str] = []  # groups made resident, in order (tests and logs read it)

    @property
    def storage(self) -> torch.device:
        return CPU if self.offload else self.device

    @contextmanager
    def use(self, name: str, *modules: Any) -> Iterator[None]:
        if not self.offload:
            yield
            return
        self.history.append(name)
        for m in modules:
            m.to(self.device)
        try:
            yield
        finally:
            for m in modules:
                m.to(CPU)
            if self.device.type == "cuda":
                torch.cuda.empty_cache()


def quantize_blocks(transformer: Any, mode: Quantize, device: torch.device, storage: torch.device) -> None:
    """Weight-only quantization of every double and single block, one block at a time on `device`."""
    if mode == "none":
        return
    logging.getLogger("torchao").setLevel(logging.ERROR)  # its optional C++ kernels are not needed here
    try:
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig, quantize_
    except ImportError as exc:
        raise RuntimeError(
            "flux_quantize needs torchao: pip install 'pulid-server[quantize]' (or pip install torchao)"
        ) from exc
    config = Int8WeightOnlyConfig() if mode == "int8" else Float8WeightOnlyConfig()
    for block in [*transformer.transformer_blocks, *transformer.single_transformer_blocks]:
        block.to(device)
        quantize_(block, config)
        block.to(storage)
