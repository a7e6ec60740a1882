"""Tests of ``pipeline.thumbnails`` and of what thumbnails cost in the Parquet output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.thumbnails import decode_thumbnail, make_thumbnail, thumbnailer
from tests.conftest import default_thumbnail, result_row, write_results


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Uniform RGB noise: the hardest frame for JPEG, so the largest thumbnail."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        (360, 640, (144, 256)),
        (640, 360, (256, 144)),
        (1080, 1920, (144, 256)),
        (300, 300, (256, 256)),
        (100, 200, (100, 200)),  # already small: never enlarged
    ],
)
def test_thumbnail_fits_the_long_side_and_keeps_the_aspect_ratio(
    height: int, width: int, expected: tuple[int, int]
) -> None:
    thumbnail = decode_thumbnail(default_thumbnail(noise(height, width)))

    assert thumbnail.shape == (*expected, 3)


def test_thumbnail_long_side_is_configurable() -> None:
    assert decode_thumbnail(make_thumbnail(noise(360, 640), long_side_px=64, quality=80)).shape == (36, 64, 3)


def test_thumbnail_round_trip_keeps_colours_in_rgb_order() -> None:
    y, x = np.mgrid[0:360, 0:640]
    frame = np.stack([x * 255 // 639, y * 255 // 359, np.full_like(x, 40)], axis=-1).astype(
        np.uint8
    )

    thumbnail = decode_thumbnail(make_thumbnail(frame, long_side_px=640, quality=95))

    assert thumbnail.dtype == np.uint8
    assert np.abs(thumbnail.astype(int) - frame).mean() < 2


def test_thumbnail_is_a_jpeg_whose_size_follows_quality() -> None:
    low, high = (make_thumbnail(noise(360, 640), long_side_px=256, quality=q) for q in (30, 95))

    assert low.startswith(b"\xff\xd8\xff") and high.startswith(b"\xff\xd8\xff")
    assert len(low) < len(high)


@pytest.mark.parametrize(
    ("frame", "settings", "error", "message"),
    [
        (np.zeros((10, 10), np.uint8), {}, ValueError, "HxWx3 uint8"),
        (np.zeros((10, 10, 4), np.uint8), {}, ValueError, "HxWx3 uint8"),
        (np.zeros((10, 10, 3), np.float32), {}, ValueError, "HxWx3 uint8"),
        ([[0, 0, 0]], {}, ValueError, "HxWx3 uint8"),
        (np.zeros((0, 10, 3), np.uint8), {}, ValueError, "HxWx3 uint8"),
        (np.zeros((10, 10, 3), np.uint8), {"long_side_px": 0}, ConfigError, "long_side_px"),
        (np.zeros((10, 10, 3), np.uint8), {"quality": 0}, ConfigError, "quality"),
        (np.zeros((10, 10, 3), np.uint8), {"quality": 101}, ConfigError, "quality"),
    ],
)
def test_make_thumbnail_rejects_bad_input(
    frame: object, settings: dict[str, int], error: type[Exception], message: str
) -> None:
    # A bad frame is the caller's bug (ValueError); a bad setting is the user's (ConfigError).
    with pytest.raises(error, match=message):
        make_thumbnail(frame, **{"long_side_px": 256, "quality": 80, **settings})  # type: ignore[arg-type]


def test_thumbnailer_follows_the_run_settings() -> None:
    small = thumbnailer(enabled=True, long_side_px=32, quality=50)
    assert small is not None and decode_thumbnail(small(noise(360, 640))).shape == (18, 32, 3)
    assert thumbnailer(enabled=False, long_side_px=32, quality=50) is None
    with pytest.raises(ConfigError, match="quality"):  # checked before the first frame
        thumbnailer(enabled=True, long_side_px=32, quality=0)


@pytest.mark.parametrize("data", [b"", b"not a jpeg"])
def test_decode_thumbnail_rejects_non_images(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a decodable image"):
        decode_thumbnail(data)


@pytest.mark.parametrize("prompts_per_frame", [1, 3])
def test_parquet_with_default_thumbnails_stays_under_30_kb_per_row(
    tmp_path: Path, prompts_per_frame: int
) -> None:
    """Acceptance: default-size thumbnails of noisy 640x360 frames (the worst case for JPEG)
    keep the Parquet output under ~30 KB per row; rows of one frame share its bytes."""
    answer = "A noisy frame of random coloured pixels with no clear subject. " * 16  # ~1 KB
    rows = []
    for frame in range(40):
        thumbnail = default_thumbnail(noise(360, 640, seed=frame))
        rows += [
            result_row("v1", frame, prompt_id=f"p{prompt}", answer=answer, thumbnail=thumbnail)
            for prompt in range(prompts_per_frame)
        ]
    (chunk,) = write_results(tmp_path, rows)

    bytes_per_row = chunk.stat().st_size / len(rows)

    print(f"{prompts_per_frame} prompt(s) per frame: {bytes_per_row:,.0f} bytes per row")
    assert bytes_per_row < 30_000
