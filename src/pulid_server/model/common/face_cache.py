"""One cache of face-analysis results per process, shared by every family that uses the same face stack.

PuLID v1 (SDXL) and PuLID-FLUX run the same analysis on a reference image (antelopev2 ArcFace, facexlib
alignment and parsing, EVA02-CLIP-L-336 with its 5 taps); only the encoder after it differs. A process
serving both endpoints therefore analyses an image once. Entries are keyed by the face stack (which
weights, which device) and the sha256 of the image bytes, kept on the CPU (one entry is ~12 MB: five
[577, 1024] fp32 taps), least recently used first out.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch

Features = tuple[torch.Tensor, list[torch.Tensor]]  # (id_cond [1, 512 + eva_dim], taps)


class FaceFeatureCache:
    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[tuple[str, str], Features] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, stack: str, data: bytes, compute: Callable[[], Features]) -> tuple[Features, bool]:
        """(features on the device `compute` uses, whether they came from the cache)."""
        key = (stack, hashlib.sha256(data).hexdigest())
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
        if hit is not None:
            return hit, True
        id_cond, taps = compute()
        with self._lock:
            self._entries[key] = (id_cond.cpu(), [t.cpu() for t in taps])
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return (id_cond, taps), False

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


FACE_FEATURES = FaceFeatureCache()
