"""When each answer shows: a cue from its frame's time until the next sampled frame (or the
shot's end, or the video's)."""

from __future__ import annotations

import itertools
import math

import pandas as pd

# When a video's end is unknown (older runs, or decoding stopped at max_frames), the last answer
# shows for the median gap between the track's frames, or this long with a single frame.
LAST_CUE_S = 1.0


def cue_ends(frames: pd.DataFrame, video_end_s: float | None) -> pd.Series:
    """When each sampled frame's answers stop showing.

    Args:
        frames: One row per sampled frame of one video and ``config_id`` (``timestamp_s``,
            ``shot_index``, ``shot_start_s``), in time order.
        video_end_s: The video's end (``duration_s`` of a video decoded to its end), or ``None``
            when unknown.

    Returns:
        ``end_s`` by the frames' index: the next frame's time; with shots, the next shot's start
        where the next frame is the first of the following shot; the last frame's, the video's
        end (else its time plus the median gap, or :data:`LAST_CUE_S`, capped by
        ``video_end_s``). Always after the frame's own time.
    """
    starts = frames["timestamp_s"].astype(float).to_numpy()
    ends = [math.nan] * len(starts)
    shots = frames["shot_index"].tolist()
    shot_starts = frames["shot_start_s"].tolist()
    for i in range(len(starts) - 1):
        end = starts[i + 1]
        this_shot, next_shot = shots[i], shots[i + 1]
        if not pd.isna(this_shot) and not pd.isna(next_shot) and next_shot == this_shot + 1:
            next_start = shot_starts[i + 1]
            if not pd.isna(next_start) and starts[i] < next_start < end:
                end = float(next_start)
        ends[i] = end
    if len(starts):
        last = starts[-1]
        if video_end_s is not None and video_end_s > last:
            ends[-1] = video_end_s
        else:
            gaps = [b - a for a, b in itertools.pairwise(starts) if b > a]
            ends[-1] = last + (float(pd.Series(gaps).median()) if gaps else LAST_CUE_S)
    # A cue needs a length a player can show: at least a millisecond. Rounded to the microsecond,
    # so that sums of float seconds read as written (3.0, not 3.0000000000000004).
    return pd.Series([round(max(end, start + 0.001), 6) for start, end in zip(starts, ends)], index=frames.index)


def with_cue_ends(df: pd.DataFrame, videos: pd.DataFrame | None = None) -> pd.DataFrame:
    """``df`` with an ``end_s`` column: when each answer's cue ends (see :func:`cue_ends`, per
    video and ``config_id``, a missing one included); null for video-level error records."""
    out = df.copy()
    out["end_s"] = math.nan
    answered = out[out["frame_index"].notna()]
    video_end = _video_ends(videos)
    for (video_id, _config_id), rows in answered.groupby(["video_id", "config_id"], sort=False, dropna=False):
        frames = (
            rows.sort_values(["timestamp_s", "frame_index"], kind="stable")
            .drop_duplicates("frame_index")
            .set_index("frame_index")
        )
        ends = cue_ends(frames, video_end.get(str(video_id)))
        out.loc[rows.index, "end_s"] = rows["frame_index"].map(ends).astype(float).to_numpy()
    return out


def _video_ends(videos: pd.DataFrame | None) -> dict[str, float]:
    """Each video's end, where it was decoded to its end."""
    if videos is None or videos.empty:
        return {}
    complete = videos[videos["frames_decoded"].notna() & videos["duration_s"].notna()]
    return {str(v): float(d) for v, d in zip(complete["video_id"], complete["duration_s"])}
