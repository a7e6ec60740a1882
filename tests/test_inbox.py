"""What ``video=`` names, when it is not what it seems: an inbox the night cannot list is no
empty inbox, a folder below it that cannot be listed is said in the run's own log, a name
with brackets is a name before it is a glob, a list quoted into one text is said as such, a
named pipe (``<(...)``) is refused with the fix, and a folder search leaves hidden names out as
a glob does."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import InputError
from pipeline.inputs import find_videos
from tests.conftest import SAMPLE_VIDEO, assert_one_line_error, last_run, run_cli

EXTENSIONS = [".mp4"]


@pytest.fixture
def unlistable(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[Path]]:
    """Folders whose listing fails as for a user without read permission (the tests run as
    root, whom permissions do not stop)."""
    denied: set[Path] = set()
    scandir = os.scandir

    def refusing(path: os.PathLike[str] | str = ".") -> object:
        if Path(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    yield denied


def test_an_inbox_that_cannot_be_listed_is_no_empty_inbox(tmp_path: Path, unlistable: set[Path]) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    unlistable.add(inbox)
    for spec in (str(inbox), f"{inbox}/*.mp4", f"{inbox}/**/*.mp4"):
        with pytest.raises(InputError, match=r"^cannot list .*inbox \(Permission denied\): its videos cannot be "
                                             r"found; give the user this night runs as \(.+\) read and search"):
            find_videos(spec, EXTENSIONS)


def test_a_folder_below_the_inbox_that_cannot_be_listed_is_left_out_with_a_warning(
    tmp_path: Path, unlistable: set[Path], caplog: pytest.LogCaptureFixture
) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "locked").mkdir(parents=True)
    shutil.copy(SAMPLE_VIDEO, inbox / "a.mp4")
    shutil.copy(SAMPLE_VIDEO, inbox / "locked" / "b.mp4")
    unlistable.add(inbox / "locked")
    with caplog.at_level(logging.WARNING):
        assert find_videos(str(inbox), EXTENSIONS) == [inbox / "a.mp4"]
    (warning,) = [r.getMessage() for r in caplog.records]
    assert warning.startswith(f"cannot list {inbox / 'locked'} (Permission denied): its videos are not found; give")


def test_what_finding_the_videos_said_is_in_the_runs_log_file(cli_base: list[str], tmp_path: Path) -> None:
    shutil.copy(SAMPLE_VIDEO, tmp_path / "a.mp4")
    listed = tmp_path / "videos.txt"
    listed.write_text("a.mp4\na.mp4\n")
    night = run_cli(f"video={listed}", *cli_base, "max_frames=1")
    assert night.returncode == 0, night.stderr
    said = f"{listed} lists {tmp_path / 'a.mp4'} 2 times: it is taken once"
    assert said in night.stderr
    assert said in Path(last_run(tmp_path / "out")["log_file"]).read_text()


def test_a_folder_search_leaves_hidden_names_out_as_a_glob_does(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / ".sync").mkdir(parents=True)
    shutil.copy(SAMPLE_VIDEO, inbox / "clip.mp4")
    shutil.copy(SAMPLE_VIDEO, inbox / ".sync" / "tmp.mp4")  # a sync tool's copy under way
    (inbox / "._clip.mp4").write_bytes(b"\0\5\26\7" + bytes(100))  # a Mac's AppleDouble file on a share
    assert find_videos(str(inbox), EXTENSIONS) == find_videos(f"{inbox}/**/*.mp4", EXTENSIONS) == [inbox / "clip.mp4"]


def test_a_name_with_brackets_is_a_name_and_one_not_there_is_an_error(tmp_path: Path) -> None:
    talk = tmp_path / "[2024] talk.mp4"
    with pytest.raises(InputError, match=r"\[2024\] talk.mp4 does not exist; pass a video file"):
        find_videos(str(talk), EXTENSIONS)
    shutil.copy(SAMPLE_VIDEO, talk)
    assert find_videos(str(talk), EXTENSIONS) == [talk]
    folder = tmp_path / "[2024] talks"
    folder.mkdir()
    shutil.copy(SAMPLE_VIDEO, folder / "a.mp4")
    assert find_videos(f"{folder}/*.mp4", EXTENSIONS) == [folder / "a.mp4"]  # its brackets as written
    assert find_videos(f"{tmp_path}/[0-9]*.mp4", EXTENSIONS) == []  # a wildcard matching nothing: an empty inbox


@pytest.mark.parametrize("name", ["x" * 300 + ".mp4", "d" * 300 + "/x.mp4"])
def test_a_name_this_system_cannot_have_is_said_so(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError, match=r"cannot be looked at \(File name too long\); pass another video="):
        find_videos(str(tmp_path / name), EXTENSIONS)


def test_a_list_quoted_into_one_text_is_said_as_such_and_the_fix_works(cli_base: list[str], tmp_path: Path) -> None:
    shutil.copy(SAMPLE_VIDEO, tmp_path / "a=b.mp4")
    shutil.copy(SAMPLE_VIDEO, tmp_path / "good.mp4")
    unread = run_cli("video=[a=b.mp4,good.mp4]", *cli_base, "dry_run=true", cwd=tmp_path)
    assert_one_line_error(unread, 1, "Hydra cannot read", """write it as "video=['a=b.mp4','good.mp4']\"""")
    quoted = run_cli("video='[a=b.mp4,good.mp4]'", *cli_base, "dry_run=true", cwd=tmp_path)
    assert_one_line_error(quoted, 1, "video=[a=b.mp4,good.mp4] does not exist (a list quoted into one name?")
    fixed = run_cli("video=['a=b.mp4','good.mp4']", *cli_base, "dry_run=true", cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert "2 videos, 1 to caption" in fixed.stdout  # the same content twice: one video
    assert not (tmp_path / "out").exists()


def test_a_named_pipe_given_as_video_is_refused_with_the_fix(cli_base: list[str], tmp_path: Path) -> None:
    pipe = tmp_path / "list"
    os.mkfifo(pipe)  # what video=<(ls *.mp4) hands over: /dev/fd/63, a new pipe each night
    for dry_run in ("false", "true"):
        refused = run_cli(f"video={pipe}", *cli_base, f"dry_run={dry_run}")
        assert_one_line_error(refused, 1, f"video={pipe} is a named pipe", "write the list to a file")
    assert not (tmp_path / "out").exists()


def test_a_name_that_is_not_utf8_is_shown_in_a_fix_that_bash_takes_as_it_is(
    cli_base: list[str], tmp_path: Path
) -> None:
    name = os.fsdecode(b"caf\xe9.mp4")  # Latin-1: a byte no UTF-8 has, which Python keeps as a surrogate
    shutil.copy(SAMPLE_VIDEO, tmp_path / name)
    unread = run_cli(f"video={name},x", *cli_base, "dry_run=true", cwd=tmp_path)
    assert_one_line_error(unread, 1, r"""write it as $'video=\'caf\xe9.mp4,x\''""")
    fix = unread.stderr.split("write it as ", 1)[1].split(", or list")[0]
    typed = subprocess.run(["bash", "-c", f"printf '%s' {fix}"], capture_output=True, check=True).stdout
    assert typed == os.fsencode(f"video='{name},x'")  # what bash hands over is the name's own bytes


@pytest.mark.parametrize("look", [[1, 2], [1, 2, "x"], [1, 2, None], {"size": 1}])
def test_a_waiting_record_edited_by_hand_costs_one_more_wait_not_a_crash(
    cli_base: list[str], tmp_path: Path, look: object
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLE_VIDEO, inbox / "a.mp4")  # just copied in: it waits for min_age_s
    out = tmp_path / "out"
    out.mkdir()
    (out / "_waiting.json").write_text(json.dumps({str(inbox / "a.mp4"): look}))
    night = run_cli(f"video={inbox}", *cli_base, "min_age_s=3600")
    assert night.returncode == 0, night.stderr
    assert f"waiting {inbox / 'a.mp4'}: modified " in night.stderr  # its look written again, whole:
    assert json.loads((out / "_waiting.json").read_text())[str(inbox / "a.mp4")][0] == (inbox / "a.mp4").stat().st_size
