"""Something other than a regular file at a name the pipeline keeps in ``output_dir`` or the
cache (a named pipe, a device node): no reader opens it (a named pipe would block the night,
``pipeline.status``, the report and the export for ever) and no atomic writer replaces it (the
report's ``out=/dev/null`` once replaced the device). Each command ends with its code and, where
it matters, one line naming what stands there and the fix; what stands there is left as it was.

Every command runs as a subprocess whose ``timeout`` is only a guard: on the broken code it
blocked for ever."""

from __future__ import annotations

import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline.caption.tiny import TINY_TEXT_FILE
from pipeline.files import open_file
from pipeline.paths import NotAFile
from tests.conftest import ROOT, assert_one_line_error, cli_env, make_night

# A guard, not a timing: each command here ends within seconds, or never (a blocked open).
GUARD_S = 600


def run_guarded(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m pipeline ARGS`` (a sub-command's name first for one), as :func:`run_cli`,
    failing the test where it has not ended within :data:`GUARD_S` (it blocked)."""
    command = [sys.executable, "-m", "pipeline", *args]
    try:
        return subprocess.run(command, cwd=ROOT, env=cli_env(PYTHONPATH=str(ROOT), **env),
                              capture_output=True, text=True, timeout=GUARD_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args[:1])} blocked: it had not ended after {GUARD_S} s")


def a_video_folder(out: Path) -> Path:
    """The folder of one of the night's videos (it holds chunks and a done marker)."""
    return next(path.parent for path in sorted(out.glob("*/part-*.parquet")))


def made(path: Path, kind: str) -> Path:
    """``path`` made a named pipe (``fifo``) or a character device (``device``: /dev/null's
    numbers, made here), in place of what was there."""
    if path.is_file():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    return path


def still(path: Path, kind: str) -> bool:
    """Whether ``path`` is still the named pipe or device :func:`made` made."""
    mode = os.lstat(path).st_mode
    if kind == "fifo":
        return stat.S_ISFIFO(mode)
    return stat.S_ISCHR(mode) and os.lstat(path).st_rdev == os.makedev(1, 3)


def words(kind: str) -> str:
    return "a named pipe" if kind == "fifo" else "a device"


# -- readers: the run records ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["status", "report", "export", "sharded night"])
def test_a_named_pipe_among_the_run_records_is_skipped_with_one_warning(night: dict[str, Any], command: str) -> None:
    out = night["out"]
    pipe = made(out / "_runs" / "zz.json", "fifo")
    args = {
        "status": ["status", f"output_dir={out}"],
        "report": ["report", f"output_dir={out}"],
        # a path to the video that is not as recorded: found through the runs' records
        "export": ["export", f"output_dir={out}", "format=vtt", f"video={night['videos']}/./v0.mp4"],
        # a shard that finds itself the last to finish reads its siblings' records
        "sharded night": [*night["args"], "shard=0", "num_shards=2", "report=true"],
    }[command]

    result = run_guarded(*args)

    assert_one_line_error(result, 0, f"WARNING] not a run record, skipped: {pipe} (a named pipe); move or rename it")
    assert still(pipe, "fifo")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_last_run_record_that_is_no_file_is_skipped_and_left_as_it_is(night: dict[str, Any], kind: str) -> None:
    """Status reads the night from ``_runs/`` (``_last_run.json`` repeats it); a night that
    cannot write it says so, once."""
    out = night["out"]
    last = made(out / "_last_run.json", kind)

    status = run_guarded("status", f"output_dir={out}")
    again = run_guarded(*night["args"])

    assert status.returncode == 0 and "exit 0" in status.stdout, status.stdout + status.stderr
    said = f"WARNING] run summary not written: cannot write {last}: {words(kind)} stands there; move or rename it"
    assert_one_line_error(again, 0, said)
    assert sum(str(last) in line for line in again.stderr.splitlines()) == 1, again.stderr
    assert still(last, kind)


# -- readers and writers: a video's records, the waiting files, the table of videos --------------


@pytest.mark.parametrize("name", ["_verified.json", "_video.json", "_done"])
def test_a_named_pipe_as_a_record_of_a_video_stops_the_run_with_one_line(night: dict[str, Any], name: str) -> None:
    """``_verified.json`` is read for every video a run plans (it blocked the plan, which then
    was said to have stalled); ``_video.json`` where a video is decoded; the done marker where
    the video is done."""
    folder = a_video_folder(night["out"])
    marker = next(folder.glob("_done-*"))
    if name == "_video.json":
        marker.unlink()  # the video is looked at again, and decoded
    pipe = made(marker if name == "_done" else folder / name, "fifo")

    result = run_guarded(*night["args"])

    assert_one_line_error(result, 1, f"ERROR] cannot write {pipe}: a named pipe stands there; move or rename it")
    assert "stalled" not in result.stderr and "crashed" not in result.stderr
    assert still(pipe, "fifo")


def test_a_named_pipe_as_the_record_of_waiting_files_is_one_warning(night: dict[str, Any], tmp_path: Path) -> None:
    waiting = made(night["out"] / "_waiting.json", "fifo")
    inbox = make_night(tmp_path / "inbox", n_videos=1, n_frames=3)  # just written: left waiting
    args = [f"video={inbox}" if a.startswith("video=") else a for a in night["args"]]

    result = run_guarded(*args, "min_age_s=3600")

    said = f"WARNING] {waiting} not written (cannot write {waiting}: a named pipe stands there; move or rename it)"
    assert_one_line_error(result, 0, said)
    assert still(waiting, "fifo")


def test_a_named_pipe_as_the_table_of_videos_is_one_warning_and_stays(night: dict[str, Any]) -> None:
    table = made(night["out"] / "_videos.parquet", "fifo")
    shutil.rmtree(a_video_folder(night["out"]))  # a video to caption again: the table is gathered after

    result = run_guarded(*night["args"])

    assert_one_line_error(
        result, 0, f"WARNING] the table of videos is not written: cannot write {table}: a named pipe stands there"
    )
    assert still(table, "fifo")


# -- readers: chunk files ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["report", "export", "night"])
def test_a_named_pipe_named_like_a_chunk_is_left_out_and_a_run_moves_it_aside(
    night: dict[str, Any], command: str
) -> None:
    out = night["out"]
    chunk = sorted(out.glob("*/part-*.parquet"))[0]
    config_id = chunk.name.split("-")[1]
    pipe = made(chunk.with_name(f"part-{config_id}-1-0000abcd.parquet"), "fifo")
    args = {"report": ["report", f"output_dir={out}"], "export": ["export", f"output_dir={out}", "format=vtt"],
            "night": night["args"]}[command]

    result = run_guarded(*args)

    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    if command == "night":
        moved = out / "_quarantine" / pipe.parent.name / pipe.name
        assert f"damaged chunk {pipe} (a named pipe stands there) moved to {moved}" in result.stderr
        assert still(moved, "fifo") and not os.path.lexists(pipe)
    else:
        assert still(pipe, "fifo")


# -- the cache ---------------------------------------------------------------------------------


def test_a_named_pipe_in_the_cache_is_never_read(night: dict[str, Any], tmp_path: Path) -> None:
    """The SHA-256 record of the model files (read by every run): left as it is, the digests
    made again; the generated tiny model: one line, as a folder that cannot be written."""
    cache = tmp_path / "cache"
    cache.mkdir()
    record = made(cache / "sha256.json", "fifo")
    assert run_guarded(*night["args"], VIDEO_CAPTION_CACHE=str(cache)).returncode == 0
    assert still(record, "fifo")

    (cache / "tiny").mkdir()
    model = made(cache / "tiny" / TINY_TEXT_FILE, "fifo")
    in_cache = [a for a in night["args"] if not a.startswith("model.dir=")]
    result = run_guarded(*in_cache, VIDEO_CAPTION_CACHE=str(cache))

    assert_one_line_error(
        result, 1, f"cannot write the generated tiny model into {cache / 'tiny'} ({model}: a named pipe stands there): "
        "move or rename it; or set VIDEO_CAPTION_CACHE to a writable folder"
    )
    assert still(model, "fifo")


# -- writers: what the atomic writers replace ----------------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "device", "link to a device"])
def test_the_reports_out_a_named_pipe_or_a_device_is_left_as_it_is(
    night: dict[str, Any], tmp_path: Path, kind: str
) -> None:
    place = tmp_path / "elsewhere"
    place.mkdir()
    node = made(place / "page.html", "fifo" if kind == "fifo" else "device")
    out = node
    if kind == "link to a device":
        out = place / "link.html"
        out.symlink_to(node)
    before = sorted(os.listdir(place))

    result = run_guarded("report", f"output_dir={night['out']}", f"out={out}")

    said = words("fifo" if kind == "fifo" else "device")
    assert_one_line_error(result, 1, f"ERROR] cannot write {node}: {said} stands there; choose another out=")
    assert still(node, "fifo" if kind == "fifo" else "device")
    assert sorted(os.listdir(place)) == before  # no page_files/ beside it either


def test_an_export_track_that_is_a_named_pipe_is_left_as_it_is(night: dict[str, Any]) -> None:
    out = night["out"]
    assert run_guarded("export", f"output_dir={out}", "format=vtt").returncode == 0
    pipe = made(sorted((out / "_export").rglob("*.vtt"))[0], "fifo")

    result = run_guarded("export", f"output_dir={out}", "format=vtt")

    assert_one_line_error(result, 1, f"ERROR] cannot write {pipe}: a named pipe stands there; move or rename it")
    assert still(pipe, "fifo")


# -- what the user names: a prompts file ----------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), [("fifo", "prompts.txt"), ("fifo", "prompts.yaml"), ("device", "p.txt")])
def test_a_prompts_file_that_is_no_file_stops_the_run_with_one_line(
    night: dict[str, Any], tmp_path: Path, kind: str, name: str
) -> None:
    node = made(tmp_path / name, kind)
    chunks = sorted(night["out"].rglob("*.parquet"))

    result = run_guarded(*night["args"], f"prompts_file={node}")

    assert_one_line_error(result, 1, f"ERROR] prompts_file={node} cannot be read ({words(kind)} stands there); give")
    assert still(node, kind)
    assert sorted(night["out"].rglob("*.parquet")) == chunks


def test_a_named_pipe_among_an_exports_old_tracks_is_not_removed(night: dict[str, Any]) -> None:
    out = night["out"]
    assert run_guarded("export", f"output_dir={out}", "format=vtt").returncode == 0
    track = sorted((out / "_export").rglob("*.vtt"))[0]
    pipe = made(track.parent / "an old prompt.vtt", "fifo")  # not a track this export writes: stale

    result = run_guarded("export", f"output_dir={out}", "format=vtt")

    assert result.returncode == 0, result.stderr
    assert still(pipe, "fifo") and track.is_file()


@pytest.mark.parametrize("command", ["night", "download"])
def test_a_named_pipe_in_place_of_a_model_file_is_said_not_missing(
    night: dict[str, Any], tmp_path: Path, command: str
) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "mmproj-model-f16.gguf").write_bytes(b"")
    pipe = made(weights / "llava-v1.6-mistral-7b.Q5_K_M.gguf", "fifo")
    preset = ["model=llava16_mistral_7b", f"model.dir={weights}"]
    args = {"night": [*night["args"], *preset], "download": ["download", *preset]}[command]

    result = run_guarded(*args, HF_HUB_OFFLINE="1")

    assert_one_line_error(result, 1, f"{pipe.name} in {weights} is a named pipe, not a file; move it aside")
    assert still(pipe, "fifo")


def test_the_error_reads_the_same_after_crossing_to_another_process(tmp_path: Path) -> None:
    with pytest.raises(NotAFile) as raised:
        open_file(made(tmp_path / "x.mp4", "fifo"))
    back = pickle.loads(pickle.dumps(raised.value))  # as a Ray worker's error reaches the driver
    pipe = str(tmp_path / "x.mp4")
    assert (str(back), back.kind, back.filename) == ("a named pipe stands there", "a named pipe", pipe)
