"""What a chunk of results is, and whether it is whole, as the night and the readers see it:
a stray copy (a backup, a Syncthing conflict copy, a renamed chunk) is no chunk for either; a
chunk damaged inside a page is left out by every reader as the night leaves it out; a chunk
copied under another chunk's name, over one, or in from another video's folder is never read
twice. Each end to end: ``python -m pipeline``, ``status`` and ``load_results``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.chunks import chunk_files
from pipeline.results import load_results
from tests.conftest import KEY, make_night, night_args, run_cli

ROW_KEY = [*KEY, "config_id"]


def night(args: list[str]) -> str:
    """A night's stderr (it must finish with exit 0)."""
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stderr


def read(out: Path, caplog: pytest.LogCaptureFixture) -> tuple[pd.DataFrame, list[str]]:
    """``load_results`` of ``out`` and the WARNING lines it logged."""
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline"):
        df = load_results(out)
    return df, [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def status(out: Path) -> str:
    """What ``python -m pipeline status`` prints."""
    done = run_cli("status", f"output_dir={out}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def keys(df: pd.DataFrame) -> list[tuple[object, ...]]:
    """The row keys of ``df``, sorted, each as often as it is there."""
    return sorted(df[ROW_KEY].itertuples(index=False, name=None), key=str)


def a_done_night(tiny_model_dir: Path, tmp_path: Path, n_videos: int = 1) -> tuple[list[str], Path, pd.DataFrame]:
    """A finished night over ``n_videos`` clips of 7 frames and more (chunks of 3 frames, 2
    prompts): its arguments, ``output_dir`` and rows."""
    folder = make_night(tmp_path / "videos", n_videos=n_videos, n_frames=7)
    out = tmp_path / "out"
    args = night_args(folder, out, tiny_model_dir, tmp_path)
    night(args)
    return args, out, load_results(out)


@pytest.mark.parametrize("stray", ["backup", "rename", "sync-conflict"])
def test_a_stray_copy_is_no_chunk_for_the_night_or_the_readers(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, stray: str
) -> None:
    """A copy left beside a chunk (then the chunk damaged), a chunk renamed, a Syncthing
    conflict copy of a chunk deleted: the readers read none of them, and say so; the night
    moves each aside (never deleting it) and captions the frames they held again."""
    args, out, whole = a_done_night(tiny_model_dir, tmp_path)
    chunk = chunk_files(out / whole.video_id[0], kinds=("part",))[0]
    base = str(chunk).removesuffix(".parquet")
    copy = Path({
        "backup": f"{base}-backup.parquet",
        "rename": f"{base}-old.parquet",
        "sync-conflict": f"{base}.sync-conflict-20261207-101010-ABCDEFG.parquet",
    }[stray])
    shutil.copy(chunk, copy)
    if stray == "backup":
        with open(chunk, "r+b") as damaged:
            damaged.truncate(100)
    else:
        chunk.unlink()

    df, warnings = read(out, caplog)
    assert len(df) < len(whole)
    assert any(line.startswith(f"{copy}: not a chunk") and "_quarantine/" in line for line in warnings), warnings
    assert f"    {copy}: not a chunk" in status(out)

    said = night(args)
    moved = out / "_quarantine" / copy.parent.name / copy.name
    assert f"{copy} is not a chunk" in said and f"moved to {moved}" in said
    assert moved.is_file() and not copy.exists()
    df, warnings = read(out, caplog)
    assert keys(df) == keys(whole) and warnings == []
    assert "nothing to do" in night(args)


def silently_altered(chunk: Path) -> list[bytes]:
    """``chunk`` with one byte of its ``answer`` column flipped, each way that a reader that
    checks no page checksum reads without an error, as other answers."""
    file = pq.ParquetFile(chunk)
    column = file.metadata.row_group(0).column(file.schema_arrow.names.index("answer"))
    start = column.dictionary_page_offset or column.data_page_offset
    answers = pq.read_table(chunk, columns=["answer"])
    data, found = chunk.read_bytes(), []
    for position in range(start, start + column.total_compressed_size):
        altered = bytearray(data)
        altered[position] ^= 0xFF
        try:
            if not pq.read_table(pa.BufferReader(bytes(altered)), columns=["answer"]).equals(answers):
                found.append(bytes(altered))
        except (pa.ArrowException, OSError):
            continue
    return found


@pytest.mark.parametrize("which", [0, 1, -1])
def test_a_byte_flipped_in_a_page_is_left_out_by_every_reader_as_by_the_night(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, which: int
) -> None:
    """One byte flipped inside the data of a chunk's ``answer`` column (the first, second and
    last of the bytes whose flip a reader unchecked reads as another answer): the Parquet
    still parses, but its page checksum fails. The readers leave the chunk out with a WARNING
    naming it (they never show the altered answer), status lists it, and the night moves it
    aside and captions those frames again."""
    args, out, whole = a_done_night(tiny_model_dir, tmp_path)
    chunk = chunk_files(out / whole.video_id[0], kinds=("part",))[0]
    chunk.write_bytes(silently_altered(chunk)[which])

    df, warnings = read(out, caplog)
    held = len(whole) - len(df)
    assert held > 0 and set(df.answer) <= set(whole.answer)
    assert len(warnings) == 1 and warnings[0].startswith(f"{chunk}: damaged (") and "CRC" in warnings[0]
    assert f"    {chunk}: damaged (" in status(out)

    said = night(args)
    assert f"damaged chunk {chunk}" in said and f"{held // 2} frames captioned" in said
    df, warnings = read(out, caplog)
    assert keys(df) == keys(whole) and warnings == []


def test_a_chunk_copied_under_another_name_is_read_once_and_set_aside(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk copied to another valid chunk name in its folder: every key is read once, one
    WARNING names both files; the night moves the copy aside and has nothing else to do."""
    args, out, whole = a_done_night(tiny_model_dir, tmp_path)
    chunk = chunk_files(out / whole.video_id[0], kinds=("part",))[1]
    config_id = chunk.name.split("-")[1]
    copy = chunk.with_name(f"part-{config_id}-1796667459999999999-deadbeef.parquet")
    shutil.copy(chunk, copy)

    df, warnings = read(out, caplog)
    assert keys(df) == keys(whole)
    assert len(warnings) == 1 and warnings[0].startswith(f"{copy}: holds answers that {chunk} also holds")
    assert f"    {copy}: holds answers that {chunk} also holds" in status(out)

    said = night(args)
    assert f"chunk {copy} holds answers that {chunk} also holds" in said and "nothing to do" in said
    assert (out / "_quarantine" / copy.parent.name / copy.name).is_file() and not copy.exists()
    df, warnings = read(out, caplog)
    assert keys(df) == keys(whole) and warnings == []


def test_a_chunk_copied_over_another_loses_nothing_for_good(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk copied over another (a swap): the readers read the copied keys once and say
    so; the night moves the copy aside and captions the frames of the chunk it replaced."""
    args, out, whole = a_done_night(tiny_model_dir, tmp_path)
    first, second = chunk_files(out / whole.video_id[0], kinds=("part",))[:2]
    shutil.copy(first, second)

    df, warnings = read(out, caplog)
    assert not df.duplicated(ROW_KEY).any() and len(df) < len(whole)
    assert len(warnings) == 1 and warnings[0].startswith(f"{second}: holds answers that {first} also holds")

    said = night(args)
    assert f"chunk {second} holds answers" in said and "3 frames captioned" in said
    df, warnings = read(out, caplog)
    assert keys(df) == keys(whole) and warnings == []


def test_a_chunk_copied_in_from_another_video_is_none_of_its_own(
    tiny_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A chunk of v0 copied into v1's folder under a chunk's name, in place of one of v1's
    that was deleted: the readers leave it out (its rows are v0's, read from v0's folder), and
    the night moves it aside and captions v1's missing frames, not taking v0's for v1's."""
    args, out, whole = a_done_night(tiny_model_dir, tmp_path, n_videos=2)
    v0, v1 = sorted(set(whole.video_id))
    theirs = chunk_files(out / v0, kinds=("part",))[0]
    mine = chunk_files(out / v1, kinds=("part",))[0]
    mine.unlink()
    copy = out / v1 / theirs.name
    shutil.copy(theirs, copy)

    df, warnings = read(out, caplog)
    assert not df.duplicated(ROW_KEY).any()
    assert len(warnings) == 1 and warnings[0].startswith(f"{copy}: damaged (it holds rows of video_id {v0}")

    said = night(args)
    assert f"damaged chunk {copy}" in said and "3 frames captioned" in said
    df, warnings = read(out, caplog)
    assert keys(df) == keys(whole) and warnings == []
