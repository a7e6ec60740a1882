"""shard/num_shards: a night split over jobs without Ray (Hydra's submitit launcher)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from pipeline.inputs import shard_videos
from tests.conftest import KEY, run_cli, tinted, write_video


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
    assert "shard must be in 0..num_shards-1" in result.stderr and "Traceback" not in result.stderr


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
