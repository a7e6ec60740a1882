"""What the report's pages are made from, beyond the rows: the run records, the settings of each
``config_id``, the videos' facts and files, the subtitle tracks and the thumbnails the pages
reference; and the header's figures, as plain values for the templates (:mod:`pipeline.report.pages`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.export import Track
from pipeline.inputs import holds_other_content
from pipeline.results import counts, prompt_numbers
from pipeline.summary import FINISHED, engine_lines, worked


@dataclass
class ReportData:
    """What the pages show besides the rows, and where they go.

    Attributes:
        output_dir: The results' folder (``None``: rows given directly, nothing linked).
        assets: The folder of the page's files (thumbnails, video pages); ``None``: inline.
        configs: Each ``config_id``'s Parquet metadata (config, model files, SHA-256).
        runs: The recorded runs, oldest first (:func:`pipeline.summary.read_runs`), the run
            that writes the report among them as it stands then.
        videos: Per-video facts (duration, size, codec).
        tracks: Each video's subtitle tracks whose files were written.
        thumbnails: File name → JPEG, filled in as the pages reference them.
        schemas: The JSON Schema of each schema prompt, by ``prompt_id``
            (:func:`pipeline.results.load_schemas`).
        asked: Every prompt's ``prompt_id`` in the order first asked, which numbers them
            (:func:`pipeline.store.prompt_order`).
        files: Each answered ``(video_id, video_path)``'s file on this machine and whether it
            is known to hold that video (:func:`video_files`); a path not in it is taken as
            it resolves from the current folder.
    """

    output_dir: Path | None = None
    assets: Path | None = None
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    videos: pd.DataFrame | None = None
    tracks: dict[str, list[Track]] = field(default_factory=dict)
    thumbnails: dict[str, bytes] = field(default_factory=dict)
    schemas: dict[str, dict[str, Any]] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    files: dict[tuple[str, str], tuple[Path, bool]] = field(default_factory=dict)

    def video_file(self, video_id: str, video_path: str) -> tuple[Path, bool]:
        """The file a row's recorded ``video_path`` names here, and whether it may be played
        (it is there and, where the path had to be placed, holds the video's content)."""
        found = self.files.get((str(video_id), str(video_path)))
        if found is not None:
            return found
        path = resolved(Path(video_path))
        return path, path.is_file()

    def facts(self, video_id: str) -> dict[str, Any] | None:
        """The video's facts, if it was decoded."""
        if self.videos is None or self.videos.empty:
            return None
        found = self.videos[self.videos["video_id"] == video_id]
        return None if found.empty else {str(k): v for k, v in found.iloc[0].items()}


def video_files(
    df: pd.DataFrame, runs: Sequence[Mapping[str, Any]], here: Path | None = None
) -> dict[tuple[str, str], tuple[Path, bool]]:
    """Where the videos of the answered rows are on this machine, for the links and players.

    A row's ``video_path`` is kept as the night was given it, so a relative one is relative to
    the folder the night ran in (the ``cwd`` of the run records that list it, newest first), not
    to the folder the report is written from (``here``, the process's by default; the only
    place left for a night that recorded no folder). The first of these places where the file
    is and holds the video's content (:func:`pipeline.inputs.holds_other_content`) is it; where
    none does, the night's folder (the file has moved or gone), with no player.

    Returns:
        ``(video_id, video_path)`` → (the file, whether it may be played).
    """
    here = Path.cwd() if here is None else here
    pairs = df.loc[df["frame_index"].notna(), ["video_id", "video_path"]].dropna().drop_duplicates()
    recorded = _run_folders(runs)
    found: dict[tuple[str, str], tuple[Path, bool]] = {}
    for key in zip(pairs["video_id"].astype(str), pairs["video_path"].astype(str)):
        video_id, video_path = key
        if os.path.isabs(video_path):
            path = resolved(Path(video_path))
            found[key] = (path, path.is_file())
        else:
            found[key] = _placed(video_id, video_path, recorded.get(key, []), here)
    return found


def _placed(video_id: str, video_path: str, folders: list[Path], here: Path) -> tuple[Path, bool]:
    for folder in [*folders, here]:
        path = resolved(folder / video_path)
        if path.is_file() and not holds_other_content(path, video_id):
            return path, True
    return resolved((folders[0] if folders else here) / video_path), False


def resolved(path: Path) -> Path:
    """``path`` made absolute, its links followed where they can be (not in a loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return Path(os.path.abspath(path))


def _run_folders(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[Path]]:
    """``(video_id, path)`` → the ``cwd`` of each run record that lists it, newest first."""
    folders: dict[tuple[str, str], list[Path]] = {}
    for record in reversed(runs):
        cwd = record.get("cwd")
        if not isinstance(cwd, str) or not os.path.isabs(cwd):
            continue
        for video in record.get("videos") or []:
            if isinstance(video, dict):
                folders.setdefault((str(video.get("video_id")), str(video.get("path"))), []).append(Path(cwd))
    return folders


def with_run(runs: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    """``runs`` with ``run`` (a record as it stands now) in place of its recorded state."""
    others = [r for r in runs if (r.get("started"), r.get("pid")) != (run.get("started"), run.get("pid"))]
    return sorted([*others, run], key=lambda r: str(r.get("started", "")))


def header(df: pd.DataFrame, data: ReportData) -> dict[str, Any]:
    """The header's figures: each ``config_id``'s model, files, sampler and generation; the
    prompts, numbered as the tracks are; the counts; the last run, the last run that captioned
    something where that is an earlier one, and the totals of all runs."""
    answered = df[df["frame_index"].notna()]
    numbers = prompt_numbers(df, data.asked)
    prompts = [  # dropna=False: an answer without a prompt_id is listed too, last
        {"number": numbers.get(str(prompt_id), len(numbers) + 1), "id": prompt_id, "text": rows["prompt"].iloc[0],
         "answers": int(rows["status"].eq("ok").sum())}
        for prompt_id, rows in answered.groupby("prompt_id", sort=False, dropna=False)
    ]
    settings = [
        {"config_id": config_id, **_settings(metadata)}
        for config_id, metadata in data.configs.items()
        if df["config_id"].eq(config_id).any()
    ]
    last = data.runs[-1] if data.runs else None
    with_work = next((r for r in reversed(data.runs) if worked(r)), None)
    return {
        "settings": settings,
        "several_settings": len(data.configs) > 1,
        "models": ", ".join(sorted(df["model"].dropna().unique())),
        "prompts": sorted(prompts, key=lambda p: p["number"]),
        "counts": counts(df),
        "last_run": None if last is None else _run(last),
        "last_work": None if with_work is None or with_work is last else _run(with_work),
        "all_runs": {
            "runs": len(data.runs),
            "frames": sum(int(r.get("frames") or 0) for r in data.runs),
            "wall_s": sum(float(r.get("wall_s") or 0.0) for r in data.runs),
        },
    }


def _run(record: dict[str, Any]) -> dict[str, Any]:
    state = str(record.get("state") or FINISHED)
    return {
        "started": str(record.get("started", "?"))[:19].replace("T", " "),
        "done": int(record.get("videos_done") or 0),
        "skipped": int(record.get("videos_skipped") or 0),
        "failed": int(record.get("videos_failed") or 0),
        "frames": int(record.get("frames") or 0),
        "wall_s": float(record.get("wall_s") or 0.0),
        "frames_per_s": float(record.get("frames_per_s") or 0.0),
        "ending": f"exit {record.get('exit_code', '?')}" if state == FINISHED else state,
        "finished": state == FINISHED,
        "engines": engine_lines(record),
    }


def _settings(metadata: dict[str, Any]) -> dict[str, Any]:
    config = metadata.get("config") or {}
    files = metadata.get("model_files") or {}
    digests = metadata.get("model_sha256") or {}
    sampler = dict(config.get("sampler") or {})
    kind = str(sampler.pop("_target_", "?")).rsplit(".", 1)[-1].removesuffix("Sampler").lower() or "?"
    dedup = sampler.pop("dedup", None)
    sampler_settings = [f"{k}={v}" for k, v in sampler.items()]
    if isinstance(dedup, dict) and dedup.get("enabled"):
        sampler_settings.append(f"dedup threshold {dedup.get('threshold')}")
    generation = config.get("generation") or {}
    generation_settings = [
        f"max_tokens {generation.get('max_tokens', '?')}", f"temperature {generation.get('temperature', '?')}"
    ]
    if config.get("max_frames") is not None:
        generation_settings.append(f"max_frames {config['max_frames']}")
    return {
        "model": (config.get("model") or {}).get("name", "?"),
        "files": [
            {"name": Path(str(path)).name, "sha256": digests.get(key)} for key, path in files.items()
        ],
        "sampler": kind + (f" ({', '.join(sampler_settings)})" if sampler_settings else ""),
        "generation": ", ".join(generation_settings),
    }
