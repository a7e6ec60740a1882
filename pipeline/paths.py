"""Where the pipeline keeps files of its own that are not results: the user's cache."""

from __future__ import annotations

import os
from pathlib import Path


def user_cache_dir() -> Path:
    """The per-user cache folder (not created here).

    ``$VIDEO_CAPTION_CACHE`` when set, else ``$XDG_CACHE_HOME/video-caption-pipeline``, else
    ``~/.cache/video-caption-pipeline``.
    """
    explicit = os.environ.get("VIDEO_CAPTION_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "video-caption-pipeline"
