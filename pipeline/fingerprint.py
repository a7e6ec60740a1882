"""A frame's fingerprint, which near-duplicate detection compares (:class:`pipeline.sampling.Dedup`)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.scenes import shrink

# The hash ignores colour and brightness: frames whose 8x8 thumbnails differ by more than this
# (mean, 0-255) are not duplicates whatever their hashes (two flat colours hash alike).
DUPLICATE_COLOUR_TOLERANCE = 16.0


@dataclass(frozen=True)
class Fingerprint:
    """What near-duplicate detection compares: a 64-bit difference hash and a colour thumbnail.

    Attributes:
        bits: dHash of a 9x8 grayscale: bit set where a pixel is brighter than its left one.
        thumbnail: 8x8 RGB thumbnail, int16.
    """

    bits: int
    thumbnail: np.ndarray

    @classmethod
    def of(cls, rgb: np.ndarray) -> Fingerprint:
        """Fingerprint of an RGB frame."""
        small = shrink(rgb, 64)
        gray = cv2.resize(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), (9, 8), interpolation=cv2.INTER_AREA)
        bits = np.packbits(gray[:, 1:] > gray[:, :-1]).tobytes()
        thumbnail = cv2.resize(small, (8, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
        return cls(int.from_bytes(bits, "big"), thumbnail)

    def distance(self, other: Fingerprint) -> int:
        """Hamming distance of the hashes, 0 to 64."""
        return (self.bits ^ other.bits).bit_count()

    def same_colours(self, other: Fingerprint) -> bool:
        """Whether the thumbnails agree within ``DUPLICATE_COLOUR_TOLERANCE``."""
        return float(np.abs(self.thumbnail - other.thumbnail).mean()) <= DUPLICATE_COLOUR_TOLERANCE
