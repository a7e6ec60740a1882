"""Write ``data/sample.mp4``: a 6-second 640x360 25 fps clip of three synthetic shots.

Run ``python data/make_sample.py`` to regenerate it (deterministic content; the committed clip
was made this way). Each two-second shot has its own background colour and a moving shape, so
answers and the later scene sampler have something to tell apart.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT, FPS, SECONDS = 640, 360, 25, 6
SHOTS = [((40, 90, 200), "circle"), ((30, 160, 60), "square"), ((200, 200, 200), "triangle")]


def frame_at(index: int) -> np.ndarray:
    """The BGR frame number ``index`` of the clip."""
    shot_length = FPS * SECONDS // len(SHOTS)
    colour, shape = SHOTS[min(index // shot_length, len(SHOTS) - 1)]
    image = np.full((HEIGHT, WIDTH, 3), colour, np.uint8)
    x = 80 + (index % shot_length) * 8
    if shape == "circle":
        cv2.circle(image, (x, HEIGHT // 2), 60, (255, 255, 255), -1)
    elif shape == "square":
        cv2.rectangle(image, (x - 50, 130), (x + 50, 230), (0, 0, 0), -1)
    else:
        points = np.array([[x, 100], [x - 70, 260], [x + 70, 260]], np.int32)
        cv2.fillPoly(image, [points], (20, 20, 160))
    cv2.putText(image, f"frame {index}", (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1, (0, 0, 0), 2)
    return image


def main(path: Path) -> None:
    """Write the clip to ``path``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    for index in range(FPS * SECONDS):
        writer.write(frame_at(index))
    writer.release()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("sample.mp4"))
