"""Where ``python -m pipeline.export`` puts subtitle tracks (issue 24, point 13): named as players
load them beside a video (``<video stem>.prompt<N>.vtt``), the stem as the file has it, prompts
numbered as the report numbers them, no two videos ever sharing a file, a ``beside`` layout to
copy over the videos' folders, and ``video=`` taking a path, a file name or a stem."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeline.export import main
from pipeline.export.names import select_video
from pipeline.paths import printable
from pipeline.report import write_report
from pipeline.store import read_results
from tests.conftest import result_row, run_cli, run_without_results, tinted, write_results, write_video
from tests.subtitles import parse_vtt


def rows_of(
    video_id: str, path: str, prompts: tuple[str, ...] = ("What is shown?",), **fields: Any
) -> list[dict[str, Any]]:
    """Two frames of one video, each asked ``prompts`` in that order; answers name the video."""
    return [
        result_row(video_id, frame, video_path=path, prompt_id=f"id-{prompt}", prompt=prompt,
                   answer=f"{video_id} frame {frame} {prompt}", **fields)
        for frame in (0, 25) for prompt in prompts
    ]


def export_files(output_dir: Path, *args: str) -> list[str]:
    """``python -m pipeline.export`` (its ``main``), then the files under the export folder."""
    assert main([f"output_dir={output_dir}", *args]) == 0
    folder = Path(next((a.split("=", 1)[1] for a in args if a.startswith("out=")), output_dir / "_export"))
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def first_cue(path: Path) -> str:
    _, cues = parse_vtt(path.read_text(encoding="utf-8"))
    return cues[0].text


def test_a_track_is_named_by_the_video_stem_as_it_is_and_the_prompt_number(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # A frame's prompts are numbered as asked (row order), not by their ids' order.
    write_results(out, [
        *rows_of("v1", "/srv/in/café talk №1 (final).mp4", ("Who speaks?", "A slide?")),
        *rows_of("v2", "/srv/in/back\\slash.mov", ("Who speaks?", "A slide?")),
    ])

    files = export_files(out, "format=vtt,srt")

    assert files == [
        "back_slash/back_slash.prompt1.srt", "back_slash/back_slash.prompt1.vtt",
        "back_slash/back_slash.prompt2.srt", "back_slash/back_slash.prompt2.vtt",
        "café talk №1 (final)/café talk №1 (final).prompt1.srt",
        "café talk №1 (final)/café talk №1 (final).prompt1.vtt",
        "café talk №1 (final)/café talk №1 (final).prompt2.srt",
        "café talk №1 (final)/café talk №1 (final).prompt2.vtt",
        "tracks.csv",
    ]
    folder = out / "_export" / "café talk №1 (final)"
    assert first_cue(folder / "café talk №1 (final).prompt2.vtt") == "v1 frame 0 A slide?"
    # The report lists the prompts in the same order, so "prompt2" is its second prompt.
    report = write_report(out).read_text(encoding="utf-8")
    listed = re.findall(r'<li value="(\d+)">([^<]*) <span', report.split("<ol>", 1)[1].split("</ol>", 1)[0])
    assert listed == [("1", "Who speaks?"), ("2", "A slide?")]


def test_two_videos_with_one_stem_never_share_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, [
        *rows_of("v1", "/srv/in/day1/clip.mp4"),
        *rows_of("v2", "/srv/in/day2/clip.mp4"),
        *rows_of("v3", "/srv/in/day2/clip.mkv"),
        *rows_of("v4", "/srv/in/day2/other.mp4"),
    ])

    by_video = export_files(out, "format=vtt")
    beside = export_files(out, "format=vtt", "layout=beside", f"out={tmp_path / 'beside'}")

    assert by_video == [
        "clip.v1/clip.v1.prompt1.vtt", "clip.v2/clip.v2.prompt1.vtt", "clip.v3/clip.v3.prompt1.vtt",
        "other/other.prompt1.vtt", "tracks.csv",
    ]
    # Beside the videos only the two in one folder need their ids; day1's clip keeps its stem.
    assert beside == [
        "day1/clip.prompt1.vtt", "day2/clip.v2.prompt1.vtt", "day2/clip.v3.prompt1.vtt",
        "day2/other.prompt1.vtt", "tracks.csv",
    ]
    for name, video_id in [("day1/clip.prompt1.vtt", "v1"), ("day2/clip.v2.prompt1.vtt", "v2"),
                           ("day2/clip.v3.prompt1.vtt", "v3")]:
        assert first_cue(tmp_path / "beside" / name).startswith(f"{video_id} frame 0")


def test_the_beside_layout_drops_onto_the_videos_folders(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    for name in ("talks/keynote.mp4", "talks/2024/panel.webm", "lobby.mp4"):
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        (videos / name).write_bytes(b"")
    out = tmp_path / "out"
    write_results(out, [
        *rows_of("k", str(videos / "talks/keynote.mp4"), ("What is shown?", "A slide?")),
        *rows_of("p", str(videos / "talks/2024/panel.webm")),
        *rows_of("l", str(videos / "lobby.mp4")),
    ])
    mine = videos / "talks" / "keynote.en.srt"  # a subtitle file the user had already
    mine.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n")

    export_files(out, "format=vtt,srt", "layout=beside")
    shutil.copytree(out / "_export", videos, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.csv"))

    for video in (videos / "talks/keynote.mp4", videos / "talks/2024/panel.webm", videos / "lobby.mp4"):
        track = video.with_name(f"{video.stem}.prompt1.vtt")
        assert track.is_file() and video.with_name(f"{video.stem}.prompt1.srt").is_file(), track
    assert (videos / "talks" / "keynote.prompt2.vtt").is_file()
    # Exported straight into the videos' folder, a later export removes only its own old tracks.
    for video_id in ("k", "p", "l"):  # the keynote now with one prompt; the others gone
        shutil.rmtree(out / video_id)
    write_results(out, rows_of("k", str(videos / "talks/keynote.mp4")))
    assert main([f"output_dir={out}", "format=vtt,srt", "layout=beside", f"out={videos / 'talks'}"]) == 0
    assert main([f"output_dir={out}", "format=vtt,srt", "layout=beside", f"out={videos / 'talks'}"]) == 0
    assert (videos / "talks" / "keynote.prompt1.vtt").is_file() and mine.is_file()


def test_a_stale_beside_track_is_removed_and_nothing_else(tmp_path: Path) -> None:
    out, target = tmp_path / "out", tmp_path / "videos"
    write_results(out, rows_of("k", "/srv/in/keynote.mp4", ("Who speaks?", "A slide?")))
    target.mkdir()
    mine = target / "keynote.en.vtt"
    mine.write_text("WEBVTT\n")
    export_files(out, "format=vtt", "layout=beside", f"out={target}")
    assert (target / "keynote.prompt2.vtt").is_file()

    shutil.rmtree(out / "k")
    write_results(out, rows_of("k", "/srv/in/keynote.mp4", ("Who speaks?",)))  # the second prompt is gone
    files = export_files(out, "format=vtt", "layout=beside", f"out={target}")

    assert files == ["keynote.en.vtt", "keynote.prompt1.vtt", "tracks.csv"]


def test_several_settings_of_one_video_get_their_own_tracks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, [*rows_of("v1", "/srv/in/clip.mp4"), *rows_of("v1", "/srv/in/clip.mp4", config_id="cfg2")])

    assert export_files(out, "format=vtt") == ["clip/clip.prompt1-cfg1.vtt", "clip/clip.prompt1-cfg2.vtt", "tracks.csv"]


def test_a_long_stem_is_cut_to_what_a_file_system_takes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stem = "é" * 200  # 400 bytes in UTF-8
    write_results(out, rows_of("v1", f"/srv/in/{stem}.mp4"))

    (track_path,) = [f for f in export_files(out, "format=vtt") if f != "tracks.csv"]
    folder, track = track_path.split("/")

    assert len(folder.encode()) <= 255 - 14 and len(track.encode()) <= 255 - 14  # room for a temporary name
    assert track.endswith(".prompt1.vtt") and stem.startswith(track.removesuffix(".prompt1.vtt"))


@pytest.mark.parametrize("given", ["/srv/in/day2/clip.mp4", "clip.mp4", "clip", "v2"])
def test_video_takes_a_path_a_file_name_a_stem_or_an_id(tmp_path: Path, given: str) -> None:
    out = tmp_path / "out"
    write_results(out, [*rows_of("v2", "/srv/in/day2/clip.mp4"), *rows_of("v9", "/srv/in/other.mp4")])

    files = export_files(out, "format=vtt,csv", f"video={given}")

    assert files == ["clip/captions.csv", "clip/clip.prompt1.vtt", "clip/tracks.csv"]
    table = list(csv.DictReader(io.StringIO((out / "_export" / "clip" / "captions.csv").read_text(encoding="utf-8"))))
    assert {row["video_id"] for row in table} == {"v2"}


STAMP = re.compile(r"^\[\d\d:\d\d:\d\d ERROR\] ")


def test_a_video_that_names_several_or_none_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    write_results(out, [*rows_of("v1", "/srv/in/day1/clip.mp4"), *rows_of("v2", "/srv/in/day2/clip.mp4")])

    assert main([f"output_dir={out}", "format=vtt", "video=clip"]) == 1
    err = capsys.readouterr().err
    assert STAMP.match(err), err  # the one line style of every message: [hh:mm:ss ERROR]
    assert STAMP.sub("", err) == (
        "video=clip matches 2 videos: /srv/in/day1/clip.mp4 (v1); /srv/in/day2/clip.mp4 (v2); "
        "give its path or video_id\n"
    )
    assert main([f"output_dir={out}", "format=vtt", "video=nope.mp4"]) == 1
    assert STAMP.sub("", capsys.readouterr().err).startswith("video=nope.mp4 is not in the results (they have: ")
    assert main([f"output_dir={out}", "format=vtt", "layout=flat"]) == 1
    assert STAMP.sub("", capsys.readouterr().err) == "unknown layout=flat; choose by_video or beside\n"


def test_video_in_a_folder_without_results_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_without_results(tmp_path / "out")

    for given in ("video=clip.mp4", "video_id=abc"):
        assert main([f"output_dir={out}", "format=vtt", given]) == 1
        value = given.partition("=")[2]
        assert STAMP.sub("", capsys.readouterr().err) == f"video={value} is not in the results (they have: none)\n"


@pytest.mark.parametrize("repeated", [["video=clip", "video=other"], ["format=vtt", "format=srt"]])
def test_a_key_given_twice_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], repeated: list[str]) -> None:
    """``video=a video=b`` would export ``b`` alone, unseen."""
    out = tmp_path / "out"
    write_results(out, [*rows_of("v2", "clips/clip.mp4"), *rows_of("v9", "clips/other.mp4")])
    args = [f"output_dir={out}", *repeated] + ([] if repeated[0].startswith("format") else ["format=vtt"])

    assert main(args) == 1

    assert STAMP.sub("", capsys.readouterr().err).startswith(
        f"{repeated[0].partition('=')[0]}= is given twice ({repeated[0]}, {repeated[1]}); give it once; usage:")
    assert not (out / "_export").exists()


def test_a_name_that_is_not_utf8_names_its_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Latin-1 name from an old share: the results keep it as ``caf\\xe9.mp4``; the shell
    passes its bytes."""
    out = tmp_path / "out"
    name = os.fsdecode(b"caf\xe9.mp4")
    write_results(out, [*rows_of("v2", printable(f"/srv/{name}")), *rows_of("v9", "/srv/other.mp4")])

    assert main([f"output_dir={out}", "format=csv", f"video={name}"]) == 0
    other = os.fsdecode(b"n\xe9e.mp4")
    assert main([f"output_dir={out}", "format=csv", f"video={other}"]) == 1
    assert STAMP.sub("", capsys.readouterr().err).startswith("video=n\\xe9e.mp4 is not in the results")


def test_a_name_is_matched_without_reading_any_video(tmp_path: Path) -> None:
    """A video_id, recorded path, file name or stem names the video before any file is placed
    (placing one reads its content: slow on a large share, stuck on a dead mount)."""
    out = tmp_path / "out"
    write_results(out, [*rows_of("v2", "clips/clip.mp4"), *rows_of("v9", "clips/other.mp4")])
    df = read_results(out)

    def unread() -> dict[tuple[str, str], tuple[Path, bool]]:
        raise AssertionError("placed the videos")

    assert [select_video(df, given, unread) for given in ("v9", "clips/clip.mp4", "clip.mp4", "other")] == [
        "v9", "v2", "v2", "v9"]


def test_a_video_whose_folder_is_renamed_leaves_no_old_tracks(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_results(out, rows_of("v1", "/srv/in/day1/clip.mp4"))
    assert export_files(out, "format=vtt") == ["clip/clip.prompt1.vtt", "tracks.csv"]

    write_results(out, rows_of("v2", "/srv/in/day2/clip.mp4"))  # a second video named clip

    assert export_files(out, "format=vtt") == [
        "clip.v1/clip.v1.prompt1.vtt", "clip.v2/clip.v2.prompt1.vtt", "tracks.csv",
    ]


@pytest.mark.parametrize("layout", ["by_video", "beside"])
def test_tracks_of_names_a_spreadsheet_would_run_are_replaced_like_any_other(tmp_path: Path, layout: str) -> None:
    """tracks.csv makes its cells inert for spreadsheets (``'-dash/...``); the next export reads
    them back as the paths it wrote, so a stale track is removed whatever its name."""
    stems = ["-dash", "=eq", "+plus", "@at", "'-quoted", "''=quoted twice", "'tis", "plain"]
    out = tmp_path / "out"
    write_results(out, [row for i, stem in enumerate(stems) for row in rows_of(f"a{i}", f"/in/{stem}.mp4")])
    export_files(out, "format=vtt", f"layout={layout}")

    # The same stems again, other videos: each old track moves to a name with its video's id.
    write_results(out, [row for i, stem in enumerate(stems) for row in rows_of(f"b{i}", f"/in/{stem}.mkv")])
    files = export_files(out, "format=vtt", f"layout={layout}")

    tracks = [
        f"{stem}.{video}/{stem}.{video}.prompt1.vtt" if layout == "by_video" else f"{stem}.{video}.prompt1.vtt"
        for i, stem in enumerate(stems) for video in (f"a{i}", f"b{i}")
    ]
    assert files == sorted([*tracks, "tracks.csv"])


HOSTILE = "evil\n[22:00:00 INFO] finished: 9 done, 0 skipped, 0 failed\r\x1b[2K\t\x01\x7f\x85\u2028\u2029\x9b"


def test_what_the_export_says_stays_one_line_whatever_a_name_holds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    write_results(out, [*rows_of("v1", f"/srv/in/{HOSTILE}.mp4"), *rows_of("v2", "/srv/in/plain.mp4")])

    assert main([f"output_dir={out}", "format=vtt", "video=nope.mp4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and STAMP.match(err), err
    assert "\r" not in err and "\x1b" not in err and "\x85" not in err and "\u2028" not in err
    assert "/srv/in/evil␊[22:00:00 INFO] finished: 9 done, 0 skipped, 0 failed␍␛[2K␉␁␡" in err
    assert "\\u0085\\u2028\\u2029\\u009b.mp4 (v1)" in err

    assert main([f"output_dir={out}", "format=vtt", f"out={tmp_path / HOSTILE}"]) == 0
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and said.startswith("wrote 3 files") and "evil␊[22:00:00" in said


def test_a_prompt_keeps_its_number_whatever_later_nights_ask(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Prompts are numbered in the order they were first asked, so a track file keeps its
    meaning when a later night asks fewer prompts, reorders them, or adds a video whose path
    sorts first."""
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    write_video(videos / "b.mp4", n_frames=2)
    base = [
        "model=tiny", f"model.dir={tiny_model_dir}", f"output_dir={out}", "generation.max_tokens=4",
        "engine.n_threads=1", "sampler=all", "export=vtt", "min_age_s=0", f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    first = run_cli(*base, f"video={videos / 'b.mp4'}", "prompts=[Xray?,Yellow?]")
    assert first.returncode == 0, first.stderr
    write_video(videos / "a.mp4", n_frames=2, colour_of=tinted(120))
    later = run_cli(*base, f"video={videos}", "prompts=[Yellow?,Zebra?]")
    assert later.returncode == 0, later.stderr

    def prompt_of(track: Path) -> str:
        return re.search(r"NOTE prompt: (.*)", track.read_text()).group(1)  # type: ignore[union-attr]

    tracks = {p.name: prompt_of(p) for p in (out / "_export").rglob("*.vtt")}
    assert tracks == {
        "b.prompt1.vtt": "Xray?", "b.prompt2.vtt": "Yellow?", "b.prompt3.vtt": "Zebra?",
        "a.prompt2.vtt": "Yellow?", "a.prompt3.vtt": "Zebra?",
    }
    page = (out / "_report.html").read_text()
    assert [item.strip() for item in re.findall(r'<li value="\d">([^<]*)', page)] == [
        "Xray?", "Yellow?", "Zebra?"
    ]


@pytest.mark.parametrize("name", ["tracks.csv", "captions.csv", "captions.jsonl"])
def test_a_video_named_like_a_file_the_export_writes_gets_a_folder_of_its_own(tmp_path: Path, name: str) -> None:
    out = tmp_path / "out"
    write_results(out, [*rows_of("v1", f"/srv/in/{name}.mp4"), *rows_of("v2", "/srv/in/other.mp4")])

    files = export_files(out, "format=vtt,csv,jsonl")
    again = export_files(out, "format=vtt,csv,jsonl")  # the next night's export too

    assert files == again == sorted([
        "captions.csv", "captions.jsonl", "tracks.csv",
        f"{name}.v1/{name}.v1.prompt1.vtt", "other/other.prompt1.vtt",
    ])
