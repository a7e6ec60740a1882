"""shard/num_shards: a night split over jobs without Ray (Hydra's submitit launcher)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd

from pipeline.inputs import in_shard, shard_videos
from tests.conftest import (
    KEY,
    RUN_TIMEOUT_S,
    kill,
    run_cli,
    start_paused_run,
    tinted,
    wait_for_pause,
    write_video,
)


def test_shards_split_by_content_disjoint_complete_and_stable(tmp_path: Path) -> None:
    videos = []
    for i in range(120):
        videos.append(tmp_path / f"clip{i:03}.mp4")
        videos[-1].write_bytes(f"video {i} ".encode() * (50 + i))
    shards = [shard_videos(videos, i, 4) for i in range(4)]
    assert sorted(p for s in shards for p in s) == sorted(videos)
    assert all(15 < len(s) < 45 for s in shards)
    # A function of each file alone: any order, any subset, any name or mount point.
    assert shard_videos(list(reversed(videos)), 1, 4) == list(reversed(shards[1]))
    assert shard_videos(videos[:50], 2, 4) == [p for p in shards[2] if p in videos[:50]]
    copy = tmp_path / "elsewhere" / "renamed copy.mp4"
    copy.parent.mkdir()
    copy.write_bytes(shards[3][0].read_bytes())
    assert shard_videos([copy], 3, 4) == [copy]
    # Pinned: a change of the key would move every night's videos between shards.
    assert [i for i in range(4) if shard_videos([videos[0]], i, 4)] == [0]
    # Unreadable entries go by their path, to exactly one shard.
    missing = [tmp_path / f"missing{i}.mp4" for i in range(8)]
    assert sorted(p for i in range(4) for p in shard_videos(missing, i, 4)) == missing
    assert shard_videos(videos, 0, 1) == videos


def test_bad_shard_is_one_line(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", n_frames=2)
    result = run_cli(f"video={video}", "model=tiny", "shard=3", "num_shards=3",
                     f"hydra.run.dir={tmp_path / 'hydra'}")
    assert result.returncode == 1
    assert "shard=3 is out of range: shard must be >= 0 and <= 2" in result.stderr and "Traceback" not in result.stderr


def test_submitit_shards_cover_every_video_once(tiny_model_dir: Path, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    frames = {f"v{v}.mp4": 2 + v % 3 for v in range(7)}
    for v, (name, n) in enumerate(frames.items()):
        write_video(videos / name, n_frames=n, colour_of=tinted(30 * v))
    # A copy under another name: same content, so same shard, which captions it once.
    (videos / "z copy of v0.mp4").write_bytes((videos / "v0.mp4").read_bytes())
    out = tmp_path / "out"
    result = run_cli(
        "-m", "hydra/launcher=submitit_local", "shard=range(0,3)", "num_shards=3",
        f"video={videos}", "model=tiny", f"model.dir={tiny_model_dir}", f"output_dir={out}",
        "generation.max_tokens=4", "sampler=all", "engine.n_threads=1", "report=false", "min_age_s=0",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", "hydra.launcher.timeout_min=5",
    )
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(out)
    assert not df.duplicated(KEY).any()
    assert (df.status == "ok").all()
    assert df.groupby(df.video_path.map(lambda p: Path(p).name)).frame_index.nunique().to_dict() == frames
    # Each shard summarised its own part; together they did each video once. They share the
    # one lock of output_dir, which lets shards of one night run at once.
    summaries = [json.loads((out / f"_last_run-shard{i}of3.json").read_text()) for i in range(3)]
    assert [s["exit_code"] for s in summaries] == [0, 0, 0]
    status = {Path(v["path"]).name: v["status"] for s in summaries for v in s["videos"]}
    assert status == {**{name: "done" for name in frames}, "z copy of v0.mp4": "skipped"}
    assert {p.name for p in out.glob("_lock*")} == {"_lock"}


# -- what a sharded night owes: written by the last shard to finish ------------------------------


def shard_videos_in(folder: Path, shards: list[int], tmp_path: Path) -> list[Path]:
    """One small clip ``s<shard>-<i>.mp4`` for each entry of ``shards``, made to fall in that
    shard of 2 (the shard comes from the content)."""
    folder.mkdir(parents=True, exist_ok=True)
    made: list[Path] = []
    for tint in range(200):
        want = shards[len(made)]
        clip = write_video(tmp_path / "clip.mp4", n_frames=2, colour_of=tinted(7 * tint))
        if in_shard(clip, want, 2):
            made.append(clip.rename(folder / f"s{want}-{len(made)}.mp4"))
            if len(made) == len(shards):
                return made
    raise AssertionError("no clip fell in the shard")


def owed_night(videos: Path, out: Path, model_dir: Path, tmp_path: Path) -> list[str]:
    """A night of 2 shards over ``videos`` that owes a report and a vtt export."""
    return [
        f"video={videos}", "model=tiny", f"model.dir={model_dir}", f"output_dir={out}", "generation.max_tokens=4",
        "sampler=all", "engine.n_threads=1", "min_age_s=0", "report=true", "export=vtt", "num_shards=2",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]


def owed_part(out: Path) -> str:
    """The Owed part of ``python -m pipeline.status output_dir=OUT``."""
    shown = run_cli("status", f"output_dir={out}")
    assert shown.returncode == 0, shown.stderr
    return shown.stdout[shown.stdout.index("Owed:"):]


def assert_written_for(out: Path, videos: list[Path]) -> None:
    """The report and the vtt tracks hold every one of ``videos``; nothing is owed."""
    report = (out / "_report.html").read_text()
    tracks = " ".join(str(path) for path in (out / "_export").rglob("*.vtt"))
    assert all(video.name in report and video.stem in tracks for video in videos), (report[:300], tracks)
    assert not (out / "_report-due").exists() and not (out / "_export-due").exists()
    assert owed_part(out).startswith("Owed: nothing"), owed_part(out)


def finish_paused_shard(first: subprocess.Popen[str], release: Path) -> str:
    """Let the shard that waits at its pause point go on to its end; its stderr."""
    release.touch()
    try:
        _, stderr = first.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if first.poll() is None:
            kill(first)
    assert first.returncode == 0, stderr
    return stderr


STAYS_OWED = ("the report and the export vtt stay owed: shard 0 of 2 is still captioning; "
              "the last shard to finish writes them "
              "(the report if it runs with report=true, else the next run with it)")


def test_concurrent_shards_the_last_to_finish_writes_the_report_and_exports_of_both(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Shard 0 has owed the report and the export and captions on (paused before its first
    video); shard 1 captions its video and ends first: it leaves them owed and says so, and
    status says they are owed. Shard 0 ends last and writes them with both shards' videos."""
    videos = tmp_path / "videos"
    made = shard_videos_in(videos, [0, 1], tmp_path)
    out = tmp_path / "out"
    night = owed_night(videos, out, tiny_model_dir, tmp_path)
    paused, release = tmp_path / "paused", tmp_path / "release"
    first = start_paused_run([*night, "shard=0"], "run", paused, release)
    try:
        wait_for_pause(first, paused)
        second = run_cli(*night, "shard=1")
        assert second.returncode == 0, second.stderr
        assert (out / "_report-due").exists() and (out / "_export-due").exists(), second.stderr
        owed = owed_part(out)
        assert "the report (owed since" in owed and "the export vtt (owed since" in owed, owed
        assert "finished: 1 done" in second.stderr and STAYS_OWED in second.stderr, second.stderr
        assert "report: " not in second.stderr and "export: " not in second.stderr
    finally:
        stderr = finish_paused_shard(first, release)
    assert "export: " in stderr and "report: " in stderr and "stay owed" not in stderr, stderr
    assert_written_for(out, made)


def test_a_shard_with_nothing_to_do_leaves_what_a_captioning_sibling_owes(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A night after a finished one: a new video for shard 0, which owes the report and the
    export again; shard 1, with nothing to do, ends first and pays nothing."""
    videos = tmp_path / "videos"
    made = shard_videos_in(videos, [0, 1, 0], tmp_path)
    late = made[2].rename(tmp_path / made[2].name)  # arrives after the first night
    out = tmp_path / "out"
    night = owed_night(videos, out, tiny_model_dir, tmp_path)
    for shard in (0, 1):
        assert run_cli(*night, f"shard={shard}").returncode == 0
    assert_written_for(out, made[:2])
    late.rename(videos / late.name)
    paused, release = tmp_path / "paused", tmp_path / "release"
    first = start_paused_run([*night, "shard=0"], "run", paused, release)
    try:
        wait_for_pause(first, paused)
        second = run_cli(*night, "shard=1")
        assert second.returncode == 0, second.stderr
        assert (out / "_report-due").exists() and (out / "_export-due").exists(), second.stderr
        assert "the report (owed since" in owed_part(out)
        assert "nothing to do: 1 video already done" in second.stderr and STAYS_OWED in second.stderr, second.stderr
    finally:
        finish_paused_shard(first, release)
    assert_written_for(out, made)


def test_a_killed_shard_is_not_waited_for_and_what_it_committed_is_in_what_is_paid(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Shard 0 owes the report and the export and commits its video's first frame. While it runs,
    ``python -m pipeline.report`` writes the report but leaves it owed. Shard 0 is killed
    (``kill -9``: its record still says running): the report command now pays the report, and
    shard 1, ending last, writes the export (and the report it owes again) with both shards'
    captions, without waiting; status says nothing is owed and that shard 0 did not finish."""
    videos = tmp_path / "videos"
    made = shard_videos_in(videos, [0, 1], tmp_path)
    out = tmp_path / "out"
    night = [*owed_night(videos, out, tiny_model_dir, tmp_path), "checkpoint_frames=1"]
    paused = tmp_path / "paused"
    first = start_paused_run([*night, "shard=0"], "commit:1:before", paused)  # waits until killed
    try:
        wait_for_pause(first, paused)
        early = run_cli("report", f"output_dir={out}")
        assert early.returncode == 0 and (out / "_report-due").exists(), early.stderr  # shard 0 still captions
    finally:
        kill(first)
    assert "did not finish" in run_cli("status", f"output_dir={out}").stdout
    paid = run_cli("report", f"output_dir={out}")
    assert paid.returncode == 0 and not (out / "_report-due").exists(), paid.stderr
    assert "the export vtt (owed since" in owed_part(out)
    second = run_cli(*night, "shard=1")
    assert second.returncode == 0, second.stderr
    assert "export: " in second.stderr and "report: " in second.stderr and "owed" not in second.stderr, second.stderr
    assert_written_for(out, made)
