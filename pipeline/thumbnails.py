"""Frame thumbnails: small JPEGs stored next to the answers so people can see what was asked about.

A 640x360 frame at the default 256 px long side and quality 80 takes 2-15 KB (15 KB for pure
noise, the worst case), small enough to keep one in every Parquet row.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import cv2
import numpy as np

from pipeline.ranges import Range


def thumbnailer(*, enabled: bool, long_side_px: int, quality: int) -> Callable[[np.ndarray], bytes] | None:
    """:func:`make_thumbnail` with a run's ``thumbnails.*`` settings, checked now; ``None``
    when ``enabled`` is false.

    Raises:
        ConfigError: A setting is out of range.
    """
    if not enabled:
        return None
    check_thumbnail_settings(long_side_px, quality)
    return partial(make_thumbnail, long_side_px=long_side_px, quality=quality)


def make_thumbnail(rgb: np.ndarray, *, long_side_px: int, quality: int) -> bytes:
    """Shrink a frame so its longer side is at most ``long_side_px`` and encode it as JPEG.

    The aspect ratio is kept and a frame that is already small enough is not enlarged.

    Args:
        rgb: The frame, an ``HxWx3`` uint8 RGB array.
        long_side_px: Longest side of the thumbnail in pixels.
        quality: JPEG quality, 1-100.

    Returns:
        The JPEG file's bytes.

    Raises:
        ValueError: The frame is not ``HxWx3`` uint8.
        ConfigError: A setting is out of range.
    """
    is_rgb = isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size > 0
    if not is_rgb or rgb.dtype != np.uint8:
        raise ValueError(f"a thumbnail needs an HxWx3 uint8 RGB array, got {_describe(rgb)}")
    check_thumbnail_settings(long_side_px, quality)
    height, width = rgb.shape[:2]
    scale = long_side_px / max(height, width)
    if scale < 1:
        size = (max(round(width * scale), 1), max(round(height * scale), 1))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode a {width}x{height} frame as JPEG")
    return encoded.tobytes()


def check_thumbnail_settings(long_side_px: int, quality: int) -> None:
    """Check the ``thumbnails.*`` settings before any frame is decoded.

    Raises:
        ConfigError: A setting is out of range.
    """
    Range(1).check("thumbnails.long_side_px", long_side_px)
    Range(1, high=100).check("thumbnails.quality", quality)


def decode_thumbnail(data: bytes) -> np.ndarray:
    """Decode a thumbnail made by :func:`make_thumbnail`.

    Args:
        data: JPEG bytes.

    Returns:
        The image as an ``HxWx3`` uint8 RGB array.

    Raises:
        ValueError: The bytes are not an image OpenCV can decode.
    """
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None
    if bgr is None:
        raise ValueError(f"not a decodable image ({len(data)} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__
