"""Names that a library reads as something else: FFmpeg's protocols (``file:``, ``pipe:``),
a home folder (``~name``), a NUL byte or a name longer than a file system takes. Each video is
read from its own file, and one odd name never ends a night."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.inputs import video_id_of
from tests.conftest import assert_one_line_error, last_run, run_cli, tinted, write_video

# name → frames: each its own length and colour, so a video read from another file shows.
NAMES = {"clip.mp4": 3, "file:clip.mp4": 5, "pipe:0.mp4": 4, "~clip.mp4": 6, "~root.mp4": 2}


def odd_folder(folder: Path) -> Path:
    folder.mkdir()
    for i, (name, n_frames) in enumerate(NAMES.items()):
        write_video(folder / name, n_frames=n_frames, colour_of=tinted(50 * i))
    return folder


def quick(cli_base: list[str]) -> list[str]:
    return [*cli_base, "sampler=all", "generation.max_tokens=2", "engine.n_threads=1"]


def test_each_odd_name_is_read_from_its_own_file_and_the_report_is_written(cli_base: list[str], tmp_path: Path) -> None:
    folder = odd_folder(tmp_path / "in")
    out = tmp_path / "out"

    first = run_cli("video=.", *quick(cli_base), "report=true", cwd=folder)
    again = run_cli("video=.", *quick(cli_base), "report=true", cwd=folder)

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0 and "nothing to do" in again.stderr, again.stderr
    assert (out / "_report.html").is_file() and not (out / "_report-due").exists()
    df = pd.read_parquet(out)
    frames = df.groupby(df.video_path.map(lambda p: Path(p).name)).frame_index.nunique().to_dict()
    assert frames == NAMES
    ids = df.groupby(df.video_path.map(lambda p: Path(p).name)).video_id.unique().map(list).to_dict()
    assert ids == {name: [video_id_of(folder / name)] for name in NAMES}


def test_a_manifest_line_no_file_can_match_fails_alone(
    cli_base: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = odd_folder(tmp_path / "in")
    too_long = "x" * 300 + ".mp4"
    home = tmp_path / "home"
    home.mkdir()
    write_video(home / "at-home.mp4", n_frames=2)
    (folder / "list.txt").write_text(f"~clip.mp4\nbad\0name.mp4\n{too_long}\nclip.mp4\n~/at-home.mp4\n",
                                     encoding="utf-8")
    out = tmp_path / "out"

    monkeypatch.setenv("HOME", str(home))
    result = run_cli(f"video={folder / 'list.txt'}", *quick(cli_base), "report=false")

    assert result.returncode == 2, result.stderr  # one video failed, the night went on
    assert "Traceback" not in result.stderr and "NUL byte" in result.stderr
    record = last_run(out)
    assert record["exit_code"] == 2
    df = pd.read_parquet(out)
    done = df[df.status == "ok"].video_path.map(lambda p: Path(p).name)
    assert set(done) == {"~clip.mp4", "clip.mp4", "at-home.mp4"}  # ~/ as in a shell
    (failed,) = df[df.frame_index.isna()].video_path
    assert Path(failed).name == too_long


def test_a_name_no_file_can_have_or_a_glob_without_its_folder_is_one_line(cli_base: list[str], tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 300 + ".mp4")
    assert_one_line_error(run_cli(f"video={too_long}", *cli_base), 1, "cannot be looked at (File name too long)")
    unmounted = run_cli(f"video={tmp_path / 'share' / '*.mp4'}", *cli_base)
    assert_one_line_error(unmounted, 1, f"its folder {tmp_path / 'share'} does not exist", "share not mounted")
    (tmp_path / "share").mkdir()
    empty = run_cli(f"video={tmp_path / 'share' / '*.mp4'}", *cli_base)
    assert empty.returncode == 0 and "nothing to do" in empty.stderr, empty.stderr  # an empty inbox


def test_a_dot_dot_through_a_symlink_is_read_where_the_link_leads(cli_base: list[str], tmp_path: Path) -> None:
    """``lnk/../x.mp4`` is ``x.mp4`` beside the link's target, as the OS resolves it: the file
    whose content id the plan took, not ``x.mp4`` beside the link."""
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "here").mkdir()
    write_video(tmp_path / "real" / "x.mp4", n_frames=6, colour_of=tinted(0))
    write_video(tmp_path / "here" / "x.mp4", n_frames=3, colour_of=tinted(200))
    (tmp_path / "here" / "lnk").symlink_to(tmp_path / "real" / "sub")
    (tmp_path / "here" / "list.txt").write_text("lnk/../x.mp4\n", encoding="utf-8")

    named = run_cli("video=lnk/../x.mp4", *quick(cli_base), "report=false", cwd=tmp_path / "here")
    listed = run_cli(f"video={tmp_path / 'here' / 'list.txt'}", *quick(cli_base), "report=false",
                     f"output_dir={tmp_path / 'listed'}")

    for result, out in ((named, tmp_path / "out"), (listed, tmp_path / "listed")):
        assert result.returncode == 0, result.stderr
        df = pd.read_parquet(out)
        assert df.frame_index.nunique() == 6 and set(df.video_id) == {video_id_of(tmp_path / "real" / "x.mp4")}
