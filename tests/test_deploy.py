"""deploy/ (issue 16, point 9): the service starts after the network, logs to the journal, runs
offline, fails where a night failed outright (exit 1 or 3); the shipped command lines are
valid runs; a night where every video failed exits 3."""

from __future__ import annotations

import configparser
import os
import pwd
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, RUN_TIMEOUT_S, assert_one_line_error, last_run, run_cli, write_video

DEPLOY = ROOT / "deploy"


def service() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, comment_prefixes=("#",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "video-caption.service").read_text().replace("\\\n", " "))
    return parser


def test_service_waits_for_the_network_logs_to_the_journal_and_fails_on_a_failed_night() -> None:
    unit = service()
    assert unit["Unit"]["Wants"] == "network-online.target" and unit["Unit"]["After"] == "network-online.target"
    assert unit["Service"]["StandardOutput"] == "journal" and unit["Service"]["StandardError"] == "journal"
    assert unit["Service"]["Environment"] == "HF_HUB_OFFLINE=1"
    # 1 and 3 fail the unit; a deliberate stop (SIGTERM: 143) does not page anyone.
    assert unit["Service"]["SuccessExitStatus"].split() == ["2", "75", "143"]


def test_the_shipped_command_lines_are_valid_runs() -> None:
    service_args = shlex.split(service()["Service"]["ExecStart"])[3:]
    cron_line = next(line for line in (DEPLOY / "crontab").read_text().splitlines() if not line.startswith("#"))
    cron_args = shlex.split(cron_line.split("-m pipeline ", 1)[1].split(" >>", 1)[0])
    for args in (service_args, cron_args):
        result = run_cli("--cfg", "job", *args)
        assert result.returncode == 0, (args, result.stderr)
        assert "output_dir: /srv/captions" in result.stdout


def test_install_script_is_valid_bash() -> None:
    assert subprocess.run(["bash", "-n", str(DEPLOY / "install.sh")]).returncode == 0


def test_a_night_where_every_video_failed_exits_3(cli_base: list[str], tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.mp4").write_text("not a video")
    (inbox / "b.mp4").write_bytes(b"")
    result = run_cli(f"video={inbox}", *cli_base)
    assert_one_line_error(result, 3, "not a readable video")
    assert last_run(tmp_path / "out")["exit_code"] == 3
    write_video(inbox / "c.mp4", n_frames=5)  # one good video the next night: some failed, exit 2
    again = run_cli(f"video={inbox}", *cli_base, "retry_failed=true")
    assert again.returncode == 2, again.stderr


def cron_night(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The shipped crontab line's command, run as cron runs it: ``sh -c`` (dash on Debian), a
    bare environment (``HOME``, ``PATH``, ``SHELL``, ``LOGNAME``), no TTY; this checkout's code
    and interpreter, and ``args`` in place of the line's videos, output_dir and model."""
    line = next(line for line in (DEPLOY / "crontab").read_text().splitlines() if line and not line.startswith("#"))
    command = line.split(None, 5)[5]  # after the five time fields
    run_args = command.split("-m pipeline ", 1)[1].split(" >>", 1)[0]
    command = (
        command.replace(run_args, " ".join(shlex.quote(a) for a in args))
        .replace("/opt/video-caption-pipeline", str(ROOT))
        .replace(".venv/bin/python", shlex.quote(sys.executable))
    )
    env = {
        "HOME": str(home), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "captioner",
        "VIDEO_CAPTION_CACHE": os.environ["VIDEO_CAPTION_CACHE"],  # the session's user cache
    }
    return subprocess.run(["sh", "-c", command], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT_S)


def test_cron_with_a_log_it_cannot_write_reports_it_and_does_not_run(
    user_cache: Path, cli_base: list[str], tmp_path: Path
) -> None:
    inbox, home = tmp_path / "inbox", tmp_path / "no-home"
    inbox.mkdir()
    write_video(inbox / "a.mp4", n_frames=5)
    # A home that does not exist: the redirect fails for any user, root included.
    result = cron_night(home, f"video={inbox}", *cli_base)

    assert result.returncode != 0 and result.stderr == ""
    user = pwd.getpwuid(os.getuid()).pw_name
    assert result.stdout == (
        f"video-caption: cannot write {home}/video-caption-cron.log (HOME={home}, user {user}); "
        "the night did not run\n"
    )
    assert not (tmp_path / "out").exists()


def test_cron_is_silent_on_a_good_night_and_says_when_one_failed(
    user_cache: Path, cli_base: list[str], tmp_path: Path
) -> None:
    inbox, home = tmp_path / "inbox", tmp_path / "home"
    inbox.mkdir()
    home.mkdir()
    write_video(inbox / "a.mp4", n_frames=5)

    good = cron_night(home, f"video={inbox}", *cli_base)
    failed = cron_night(home, f"video={tmp_path / 'missing'}", *cli_base)

    assert (good.returncode, good.stdout, good.stderr) == (0, "", "")
    assert last_run(tmp_path / "out")["exit_code"] == 0
    assert failed.returncode != 0 and failed.stderr == ""
    assert failed.stdout == (
        f"video-caption: the night failed (exit 1); see {home}/video-caption-cron.log and /srv/captions/_logs/\n"
    )
    log = (home / "video-caption-cron.log").read_text()
    assert "finished:" in log and "does not exist" in log


def install_prerequisites(
    tmp_path: Path, python: str | None, *tools: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """``deploy/install.sh`` on a PATH that holds only ``tools`` (links to the real ones) and, if
    given, a ``python3`` made of the shell script ``python``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    for tool in ("dirname", "id", *tools):
        real = shutil.which(tool)
        assert real is not None, tool
        (bin_dir / tool).symlink_to(real)
    if python is not None:
        (bin_dir / "python3").write_text(f"#!/bin/sh\n{python}\n")
        (bin_dir / "python3").chmod(0o755)
    return subprocess.run(["/bin/bash", str(DEPLOY / "install.sh")], env={"PATH": str(bin_dir), **env},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_install_names_each_missing_prerequisite_in_one_line_before_doing_anything(tmp_path: Path) -> None:
    old_python = 'case "$2" in *version_info*) exit 1;; *platform*) echo 3.9.2;; esac'
    result = install_prerequisites(tmp_path / "a", old_python, "git")

    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "deploy/install.sh: python3 is 3.9.2: 3.10 or newer is needed"
    assert [line.split(":")[1].strip() for line in lines[1:]] == [
        "runuser not found", "cc not found", "c++ not found", "nvcc not found",
    ]
    assert all(line.startswith("deploy/install.sh: ") for line in lines)
    assert result.stdout.strip() == "== prerequisites"  # no user, no copy, no build

    no_venv = 'case "$2" in *ensurepip*) exit 1;; esac; exit 0'
    cpu_cron = install_prerequisites(tmp_path / "b", no_venv, "git", "runuser", "cc", "c++", GPU="no",
                                     SCHEDULER="cron")
    assert cpu_cron.stderr.splitlines() == [
        "deploy/install.sh: python3 has no venv module: apt-get install python3-venv (python3.X-venv for your python3)",
        "deploy/install.sh: crontab not found: apt-get install cron, or SCHEDULER=systemd",
    ]


def test_install_passes_the_callers_cmake_args_to_the_build() -> None:
    script = (DEPLOY / "install.sh").read_text()
    builds = [line for line in script.splitlines() if line.lstrip().startswith('CMAKE_ARGS="')]
    assert len(builds) == 2 and all(line.split('"')[1].endswith(" $CMAKE_ARGS") for line in builds)
    assert "CMAKE_ARGS=${CMAKE_ARGS:-}" in script
