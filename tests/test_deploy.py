"""deploy/ (issue 16, point 9): the service starts after the network, logs to the journal, runs
offline, fails where a night failed outright (exit 1 or 3); the shipped command lines are
valid runs; a night where every video failed exits 3."""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

from tests.conftest import ROOT, assert_one_line_error, last_run, run_cli, write_video

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
    assert unit["Service"]["SuccessExitStatus"].split() == ["2", "75"]  # 1 and 3 fail the unit


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
