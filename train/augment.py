"""Training-time augmentation of 28x28 uint8 images: random shifts and horizontal flips.

An :class:`Augment` is written ``shift:S,flip`` (either part optional, ``none`` for neither).
Each training image of a batch is, independently:

* shifted by ``(dy, dx)`` drawn uniformly from ``{-S .. S}^2``: pixel ``(y, x)`` of the result
  is pixel ``(y - dy, x - dx)`` of the original, and 0 (background) where that lies outside;
* mirrored left-right with probability 1/2 if ``flip`` is set (the flip comes first).

The test set is never augmented, and the draws come from the trainer's own generator, so a
seed still fixes every weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class AugmentError(ValueError):
    """An augmentation spec that cannot be parsed; the message names the text."""


@dataclass(frozen=True)
class Augment:
    """Random shift of up to ``shift`` pixels per axis, and optional left-right flips."""

    shift: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        """Whether this changes any image."""
        return self.shift > 0 or self.flip

    @property
    def spec(self) -> str:
        """The text form, ``shift:S,flip`` or ``none``; :func:`parse_augment` reads it back."""
        parts = ([f"shift:{self.shift}"] if self.shift else []) + (["flip"] if self.flip else [])
        return ",".join(parts) or "none"

    def apply(self, images: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
        """Augmented copies of ``images`` (N, side * side) uint8 (see the module docstring)."""
        n = images.shape[0]
        maps = images.reshape(n, side, side)
        if self.flip:
            mirror = rng.random(n) < 0.5
            maps = np.where(mirror[:, None, None], maps[:, :, ::-1], maps)
        if self.shift:
            s = self.shift
            offsets = rng.integers(-s, s + 1, size=(n, 2))
            padded = np.pad(maps, ((0, 0), (s, s), (s, s)))
            windows = np.lib.stride_tricks.sliding_window_view(padded, (side, side), axis=(1, 2))
            maps = windows[np.arange(n), s - offsets[:, 0], s - offsets[:, 1]]
        return np.ascontiguousarray(maps).reshape(n, side * side)


def parse_augment(text: str | None) -> Augment:
    """Read ``shift:S,flip`` (``S`` in 0..8), ``flip``, ``shift:S`` or ``none``/empty."""
    if text is None or text.strip() in ("", "none"):
        return Augment()
    shift, flip = 0, False
    for part in text.split(","):
        part = part.strip()
        if part == "flip":
            flip = True
        elif part.startswith("shift:"):
            try:
                shift = int(part[len("shift:"):])
            except ValueError:
                raise AugmentError(f"augmentation {text!r}: shift must be an integer, "
                                   f"got {part!r}") from None
            if not 0 <= shift <= 8:
                raise AugmentError(f"augmentation {text!r}: shift must lie in 0..8, got {shift}")
        else:
            raise AugmentError(f"augmentation {text!r}: unknown part {part!r}; use shift:S, "
                               f"flip or none")
    return Augment(shift, flip)
