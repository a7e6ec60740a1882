"""What the report's pages are made from, beyond the rows: the run records, the settings of each
``config_id``, the videos' facts and files, the subtitle tracks and the thumbnails the pages
reference; and the header's figures, as plain values for the templates (:mod:`pipeline.report.pages`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.export import Track
from pipeline.results import counts, prompt_numbers
from pipeline.summary import DID_NOT_FINISH, FINISHED, engine_lines, started_s, worked
from pipeline.video_files import resolved


@dataclass
class ReportData:
    """What the pages show besides the rows, and where they go.

    Attributes:
        output_dir: The results' folder (``None``: rows given directly, nothing linked).
        assets: The folder of the page's files (thumbnails, video pages); ``None``: inline.
        configs: Each ``config_id``'s Parquet metadata (config, model files, SHA-256).
        runs: The recorded runs, oldest first (:func:`pipeline.summary.read_runs`), the run
            that writes the report among them as it stands then.
        run: The record of the run that writes the report (the header's last run, whatever
            the dates of the others: a host whose clock runs fast records a start in the
            future); ``None``: the newest recorded run is the last.
        videos: Per-video facts (duration, size, codec).
        tracks: Each video's subtitle tracks whose files were written.
        thumbnails: File name → JPEG, filled in as the pages reference them.
        schemas: The JSON Schema of each schema prompt, by ``prompt_id``
            (:func:`pipeline.results.load_schemas`).
        asked: Every prompt's ``prompt_id`` in the order first asked, which numbers them
            (:func:`pipeline.store.prompt_order`).
        files: Each answered ``(video_id, video_path)``'s file on this machine and whether it
            is known to hold that video (:func:`pipeline.video_files.video_files`); a path not in it is taken as
            it resolves from the current folder.
    """

    output_dir: Path | None = None
    assets: Path | None = None
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] | None = None
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


def with_run(runs: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    """``runs`` with ``run`` (a record as it stands now) in place of its recorded state."""
    others = [r for r in runs if (r.get("started"), r.get("pid")) != (run.get("started"), run.get("pid"))]
    return sorted([*others, run], key=started_s)


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
    last = data.run or (data.runs[-1] if data.runs else None)
    with_work = next((r for r in reversed(data.runs) if worked(r)), None) if last and not worked(last) else None
    return {
        "settings": settings,
        "several_settings": len(data.configs) > 1,
        "models": ", ".join(sorted(df["model"].dropna().unique())),
        "prompts": sorted(prompts, key=lambda p: p["number"]),
        "counts": counts(df),
        "last_run": None if last is None else _run(last),
        "last_work": None if with_work is None else _run(with_work),
        "all_runs": {
            "runs": len(data.runs),
            "unfinished": sum(r.get("state") == DID_NOT_FINISH for r in data.runs),  # their figures: at least
            "frames": sum(r.get("frames") or 0 for r in data.runs),
            "wall_s": sum(float(r.get("wall_s") or 0.0) for r in data.runs),
        },
    }


def _run(record: dict[str, Any]) -> dict[str, Any]:
    """A run's line (``record`` fits :data:`pipeline.summary.RUN_FIELDS`)."""
    state = str(record.get("state") or FINISHED)
    return {
        "started": record["started"][:19].replace("T", " "),
        "done": record.get("videos_done") or 0,
        "skipped": record.get("videos_skipped") or 0,
        "failed": record.get("videos_failed") or 0,
        "waiting": record.get("videos_waiting") or 0,
        "frames": record.get("frames") or 0,
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
        f"{key} {generation.get(key, '?')}" for key in ("max_tokens", "temperature", "top_k", "top_p", "seed")
        if key in ("max_tokens", "temperature") or _samples(generation)
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


def _samples(generation: dict[str, Any]) -> bool:
    """Whether answers were sampled (temperature above 0), so that top_k, top_p and seed, in
    their config_id, tell two such configs apart; greedy decoding never reads them."""
    temperature = generation.get("temperature")
    return isinstance(temperature, int | float) and temperature > 0
