"""executor=ray on a real two-node Ray cluster on loopback: the same rows as a local run, and a
captioner actor killed mid-run loses nothing. The nodes run this checkout's code (a test checks
that), not whatever copy of the package is installed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    KEY,
    ROOT,
    RUN_TIMEOUT_S,
    answers,
    cli_env,
    last_run,
    make_night,
    night_args,
    run_cli,
    start_paused_run,
    wait_for_pause,
)

# Ray turns a loopback --node-ip-address into the machine's outward address; these tests
# keep every connection on 127.0.0.1: `ray start` runs with that rewrite switched off, and
# the drivers see loopback as their node address (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0).
# Token authentication is off for nodes and drivers alike: otherwise a ~/.ray/auth_token
# left by any local ray.init() turns it on for `ray start` only.
RAY_START = (
    "import sys, ray._private.services as services; "
    "services.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DEDUP_LOGS": "0", "RAY_AUTH_MODE": "disabled"}
DRIVER_ENV = {**RAY_ENV, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

# Run in a separate driver: the captioner actors' pids, once every actor answers.
ACTOR_PIDS = """
import sys, time, ray
ray.init(address=sys.argv[1], namespace="video-caption", logging_level="ERROR")
deadline = time.time() + 600
while time.time() < deadline:
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith("captioner-")]
    if len(names) >= int(sys.argv[2]):
        actors = {name: ray.get_actor(name, namespace="video-caption") for name in sorted(names)}
        print(" ".join(str(ray.get(actor.pid.remote())) for actor in actors.values()))
        break
    time.sleep(0.2)
"""


def free_port() -> int:
    """A free TCP port above Ray's worker port range (10002-19999)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port > 20000:
            return port


def _ray_start(*args: str) -> subprocess.Popen[bytes]:
    # PYTHONPATH: the workers import this checkout's pipeline, as the drivers (run from ROOT) do.
    python_path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-c", RAY_START, "start", "--block", "--node-ip-address=127.0.0.1",
         "--disable-usage-stats", *args],
        env={**os.environ, **RAY_ENV, "PYTHONPATH": python_path}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill the process group `ray start` made (raylet, GCS, agents, workers) and nothing else."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait()
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _driver(address: str, script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, address, *args], env={**os.environ, **DRIVER_ENV},
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A head node and one worker node, 2 logical CPUs each, on 127.0.0.1; yields the address."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: it holds Unix sockets
    nodes = [_ray_start("--head", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp_dir}",
                        "--include-dashboard=false")]
    try:
        deadline = time.time() + 600
        while not _listening(port):
            assert time.time() < deadline and nodes[0].poll() is None, "the Ray head did not start"
            time.sleep(0.2)
        nodes.append(_ray_start(f"--address={address}", "--num-cpus=2"))
        _driver(address, "import sys, time, ray\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
                "while ray.cluster_resources().get('CPU', 0) < 4: time.sleep(0.2)")
        yield address
    finally:
        for node in reversed(nodes):
            _stop(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


MAX_TOKENS = 24


def ray_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, env=cli_env(**DRIVER_ENV),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)


def test_workers_run_this_checkout(ray_cluster: str) -> None:
    where = _driver(ray_cluster, "import sys, ray\nray.init(address=sys.argv[1], logging_level='ERROR')\n"
                    "print(ray.get(ray.remote(lambda: __import__('pipeline').__file__).remote()))")
    assert Path(where).resolve() == ROOT / "pipeline" / "__init__.py"


@pytest.fixture(scope="module")
def night(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Six small videos and the answers of a local run over them."""
    tmp = tmp_path_factory.mktemp("ray-night")
    videos = make_night(tmp / "videos", n_videos=6, n_frames=6)
    out = tmp / "local"
    result = run_cli(*night_args(videos, out, tiny_model_dir, tmp, MAX_TOKENS))
    assert result.returncode == 0, result.stderr
    return {"videos": videos, "answers": answers(out), "out": out}


def test_ray_run_equals_local_run_and_mixes_with_one(
    ray_cluster: str, night: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = night_args(night["videos"], out, tiny_model_dir, tmp_path, MAX_TOKENS)
    # Half the night done locally first: the Ray run skips those videos and does the rest.
    half = tmp_path / "half.txt"
    half.write_text("".join(f"{night['videos']}/v{v}.mp4\n" for v in range(3)))
    local = run_cli(*[f"video={half}" if a.startswith("video=") else a for a in args])
    assert local.returncode == 0, local.stderr
    result = ray_cli(*args, "executor=ray", f"executor.address={ray_cluster}", "executor.num_actors=2")
    assert result.returncode == 0, result.stderr
    ray_answers = answers(out)
    assert not ray_answers.duplicated(KEY).any()
    assert ray_answers[KEY].equals(night["answers"][KEY])
    assert ray_answers.answer.tolist() == night["answers"].answer.tolist()
    summary = last_run(out)
    assert (summary["videos_skipped"], summary["videos_done"], summary["exit_code"]) == (3, 3, 0)
    workers = {w["worker"]: w for w in summary["workers"]}
    assert set(workers) == {"actor-0", "actor-1"}
    assert sum(w["frames"] for w in workers.values()) == summary["frames"] == 9 + 10 + 11
    assert all(w["frames_per_s"] > 0 for w in workers.values())
    # Each actor's engine settled its frames in flight (here engine.parallel=2) and text
    # weights on its machine, as a local run's does, and the summary records them.
    engines = {e["worker"]: e for e in summary["engines"]}
    assert set(engines) == {"actor-0", "actor-1"}
    assert all(e["frames_in_flight"] == 2 and e["text_weights"] == "as is" for e in engines.values())


def test_ray_run_adding_a_prompt_keeps_the_old_rows(
    ray_cluster: str, night: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(night["out"], out)
    three = "prompts=[What is shown?,Which colours?,Anyone there?]"
    night_run = night_args(night["videos"], out, tiny_model_dir, tmp_path, MAX_TOKENS)
    args = [three if a.startswith("prompts=") else a for a in night_run if a != "engine.parallel=2"]
    # A null engine.parallel is settled by each actor for its own machine, from the config,
    # as a local run settles it (here a CPU: engine.parallel_cpu).
    result = ray_cli(*args, "engine.parallel=null", "engine.parallel_cpu=3", "executor=ray",
                     f"executor.address={ray_cluster}", "executor.num_actors=2")
    assert result.returncode == 0, result.stderr
    engines = last_run(out)["engines"]
    assert sorted(e["worker"] for e in engines) == ["actor-0", "actor-1"]
    assert all(e["frames_in_flight"] == 3 for e in engines)
    df = answers(out)
    assert not df.duplicated(KEY).any()
    assert (df.groupby(["video_id", "frame_index"]).prompt.nunique() == 3).all()
    old = df[df.prompt != "Anyone there?"].reset_index(drop=True)
    assert old[KEY].equals(night["answers"][KEY])
    assert old.answer.tolist() == night["answers"].answer.tolist()


@pytest.mark.allow_error_logs
def test_killed_actor_loses_nothing(
    ray_cluster: str, night: dict[str, Any], tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = [*night_args(night["videos"], out, tiny_model_dir, tmp_path, MAX_TOKENS),
            "executor=ray", f"executor.address={ray_cluster}", "executor.num_actors=2"]
    # The driver stops dispatching once actor-0 has answered a frame, and waits there while
    # the test kills that actor; most of the night's 51 frames are still to do when it goes on.
    marker, release = tmp_path / "paused", tmp_path / "release"
    run = start_paused_run(args, "answer:actor-0:1", marker, release, **DRIVER_ENV)
    try:
        wait_for_pause(run, marker)
        pids = [int(p) for p in _driver(ray_cluster, ACTOR_PIDS, "2").split()]
        os.kill(pids[0], signal.SIGKILL)
        release.touch()
        _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, stderr
    resumed = answers(out)
    assert not resumed.duplicated(KEY).any()
    assert resumed[KEY].equals(night["answers"][KEY])
    assert resumed.answer.tolist() == night["answers"].answer.tolist()
    workers = {w["worker"]: w for w in last_run(out)["workers"]}
    assert len(workers["actor-0"]["processes"]) == 2  # restarted once, in a new process


@pytest.mark.allow_error_logs
def test_missing_ray_is_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from pipeline.cli import run_from_config
    from pipeline.config import compose_config

    monkeypatch.setitem(sys.modules, "ray", None)
    cfg = compose_config([f"video={tmp_path}", "model=tiny", "executor=ray", f"output_dir={tmp_path / 'out'}"])
    with caplog.at_level("ERROR", logger="pipeline"):
        code = run_from_config(cfg)
    assert code == 1
    assert [r.getMessage() for r in caplog.records] == ['executor=ray needs Ray: pip install ".[ray]"']
