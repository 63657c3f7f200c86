"""Errors every model family raises that the service must turn into clear messages. No torch here."""

from __future__ import annotations


class NoFaceError(ValueError):
    """No usable face in reference image number `index` (0 for single-image endpoints)."""

    def __init__(self, index: int, message: str = "") -> None:
        self.index = index
        self.detail = message
        text = f"no face found in reference_images[{index}]"
        super().__init__(f"{text}: {message}" if message else text)


class WeightsMissingError(RuntimeError):
    """Official weight files are not on disk; the message lists them and says how to fetch them."""


class WeightsMismatchError(RuntimeError):
    """A state dict does not match the model: names the file and the first mismatching keys/shapes."""
