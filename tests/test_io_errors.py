"""Writes that fail for reasons outside the program: a full disk or quota under the user cache
(the generated model, its Q8_0 copy through llama.cpp, the projector's copies), a standard
output that cannot be written (``>/dev/full``, ``>&-``) or a closed stderr, a read-only
``output_dir``, and the names a run or a sub-command writes in ``output_dir`` (the lock, logs,
run records, markers, report, export) taken by something of the wrong kind. Each is one line
naming it and the fix, with the exit code the README's table gives, never a traceback, and
what stands in the way is left as it was."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import gguf
import pytest

from pipeline.caption.convert import llama_quantize
from pipeline.caption.projector import read_projector, reference_copies
from pipeline.caption.tiny import FILE_TYPES, TINY_MMPROJ_FILE, TINY_TEXT_FILE
from pipeline.errors import StoreError, WeightsError
from pipeline.export import main as export_main
from pipeline.lock import RunLock
from pipeline.paths import cannot_write, not_writable, unwritable
from pipeline.presets import captioner_from_preset
from pipeline.report.command import main as report_main
from pipeline.runlog import run_log
from pipeline.status import main as status_main
from tests.conftest import (
    ROOT,
    RUN_TIMEOUT_S,
    SAMPLE_VIDEO,
    assert_one_line_error,
    cli_env,
    run_cli,
    run_without_results,
    small_disk,
)
from tests.full_disk_run import gguf_files_full_under

FULL = os.strerror(errno.ENOSPC)
QUOTA = os.strerror(errno.EDQUOT)


# -- a full user cache -----------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_or_quota_is_a_folder_that_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VIDEO_CAPTION_CACHE", str(cache))
    error = OSError(code, os.strerror(code), str(cache / "tiny" / ".x.tmp"))
    assert not_writable(error)
    room = "free space within your disk quota" if code == errno.EDQUOT else "free space on its disk"
    line = unwritable(cache / "tiny", error, "the generated tiny model")
    assert line == (f"cannot write the generated tiny model into {cache / 'tiny'} ({os.strerror(code)}): {room}, "
                    "or set VIDEO_CAPTION_CACHE to a folder on another disk")
    elsewhere = unwritable(tmp_path / "models", error, "the F16 copy")
    assert elsewhere.endswith(f"({os.strerror(code)}): {room}") and "VIDEO_CAPTION_CACHE" not in elsewhere


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_reference_copies_on_a_full_cache_are_one_line_naming_the_folder_and_the_fix(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("VIDEO_CAPTION_CACHE", str(cache))
    monkeypatch.setattr(gguf.GGUFWriter, "open_output_file", gguf_files_full_under(cache, 1000, code))
    projector = read_projector(tiny_model_dir / TINY_MMPROJ_FILE)
    with pytest.raises(WeightsError) as raised:
        reference_copies(projector, cache)
    line = str(raised.value)
    what = f"the reference-layout copies of {TINY_MMPROJ_FILE}"
    assert line.startswith(f"cannot write {what} into {cache / 'projectors'} ({os.strerror(code)}): free space"), line
    assert line.endswith("or set VIDEO_CAPTION_CACHE to a folder on another disk")
    assert list((cache / "projectors").iterdir()) == []  # no half copy left


def test_a_short_write_of_the_generated_model_says_why(tmp_path: Path) -> None:
    """numpy's ``tofile``, which gguf writes tensors with, says only ``N requested and M
    written`` when a write comes up short, without the reason; the pipeline's writes keep it
    (here the size limit of ``ulimit -f``, as a disk that fills mid-file)."""
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from pipeline.caption.tiny import ensure_tiny_model\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.RLIM_INFINITY))\n"
        "try:\n"
        "    ensure_tiny_model(Path(sys.argv[1]))\n"
        "except OSError as error:\n"
        "    print(error.errno, error)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, env=cli_env(),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.stdout.split()[0] == str(errno.EFBIG), done.stdout + done.stderr
    assert list(tmp_path.iterdir()) == []


def full_cache_run(cache: Path, *args: str, code: str = "ENOSPC") -> subprocess.CompletedProcess[str]:
    """A run whose user cache ``cache`` is full, through :mod:`tests.full_disk_run`."""
    env = cli_env(PYTHONPATH=str(ROOT), VIDEO_CAPTION_CACHE=str(cache), FULL_DISK_UNDER=str(cache),
                  FULL_DISK_ROOM="1000", FULL_DISK_ERRNO=code)
    return subprocess.run([sys.executable, "-m", "tests.full_disk_run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


@pytest.mark.allow_error_logs
@pytest.mark.parametrize(("what", "code"), [("tiny", "ENOSPC"), ("projector", "ENOSPC"), ("projector", "EDQUOT")])
def test_a_full_cache_stops_the_run_with_one_line(cli_base: list[str], tmp_path: Path, what: str, code: str) -> None:
    cache = tmp_path / "cache"
    args = [f"video={SAMPLE_VIDEO}", *cli_base]
    if what == "tiny":  # the generated model goes into the cache, where none is yet
        args = [a for a in args if not a.startswith("model.dir=")]
    result = full_cache_run(cache, *args, code=code)
    folder = cache / ("tiny" if what == "tiny" else "projectors")
    reason = FULL if code == "ENOSPC" else QUOTA
    assert_one_line_error(result, 1, f"into {folder} ({reason}): free space", "VIDEO_CAPTION_CACHE to a folder on")
    assert "crashed" not in result.stderr


@pytest.mark.allow_error_logs
@pytest.mark.parametrize("what", ["tiny", "projector"])
def test_a_small_full_disk_under_the_cache_is_one_line(cli_base: list[str], tmp_path: Path, what: str) -> None:
    """The same on a real disk (a 64 KiB tmpfs: root only), where the kernel cuts a write short."""
    with small_disk(tmp_path / "disk", "64k") as disk:
        args = [f"video={SAMPLE_VIDEO}", *cli_base]
        if what == "tiny":
            args = [a for a in args if not a.startswith("model.dir=")]
        result = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                                env=cli_env(PYTHONPATH=str(ROOT), VIDEO_CAPTION_CACHE=str(disk)), timeout=RUN_TIMEOUT_S)
        folder = disk / ("tiny" if what == "tiny" else "projectors")
        assert_one_line_error(result, 1, f"into {folder} ({FULL}): free space on its disk, or set VIDEO_CAPTION_CACHE")
        assert "crashed" not in result.stderr


# -- standard output that cannot be written ----------------------------------------------------


class FullStream:
    """Standard output on a full disk (``>/dev/full``)."""

    def write(self, text: str) -> int:
        """Fail as a full disk."""
        raise OSError(errno.ENOSPC, FULL)

    def flush(self) -> None:
        """Fail as a full disk."""
        raise OSError(errno.ENOSPC, FULL)


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    return run_without_results(tmp_path / "out")


def sub_commands(output_dir: Path) -> dict[str, tuple[Any, list[str], str]]:
    """Each sub-command's main, arguments, and what it says it wrote (where it writes)."""
    return {
        "status": (status_main, [f"output_dir={output_dir}"], ""),
        "report": (report_main, [f"output_dir={output_dir}"],
                   f"; the report is written: {output_dir / '_report.html'}"),
        "export": (export_main, [f"output_dir={output_dir}", "format=vtt"],
                   f"; the export is written: {output_dir / '_export'}"),
    }


@pytest.mark.parametrize("command", ["status", "report", "export"])
@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_an_output_that_cannot_be_written_is_one_line_and_exit_1(
    output_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, stdout: str
) -> None:
    main, args, written = sub_commands(output_dir)[command]
    monkeypatch.setattr(sys, "stdout", FullStream() if stdout == "full" else None)
    assert main(args) == 1
    reason = FULL if stdout == "full" else "it is closed"
    line = capsys.readouterr().err.splitlines()[-1]
    assert line.endswith(f"ERROR] cannot write to standard output: {reason}{written}"), line
    if command == "report":
        assert (output_dir / "_report.html").is_file()
    assert main(["--help"]) == 1  # nor its help


def sub_command(
    module: str, *args: str, redirect: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS REDIRECT`` through ``sh`` (``>/dev/full``, ``>&-``, ``2>&-``)."""
    return subprocess.run(["sh", "-c", f'exec "$@" {redirect}', "sh", sys.executable, "-m", module, *args],
                          cwd=ROOT, env=env or cli_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)


@pytest.mark.parametrize("buffered", [False, True])
@pytest.mark.parametrize("redirect", [">/dev/full", ">&-"])
def test_the_commands_say_in_one_line_that_their_output_cannot_be_written(
    output_dir: Path, cli_base: list[str], redirect: str, buffered: bool
) -> None:
    """Through the shell, as the user types it; buffered: as under cron (no
    ``PYTHONUNBUFFERED``), where Python would fail only at exit (``Exception ignored``, exit 120)."""
    env = cli_env(PYTHONPATH=str(ROOT))
    if buffered:
        env.pop("PYTHONUNBUFFERED")
    reason = FULL if redirect == ">/dev/full" else "it is closed"
    dry_run = [f"video={SAMPLE_VIDEO}", *cli_base, "dry_run=true"]
    for module, args in [
        ("pipeline.status", [f"output_dir={output_dir}"]), ("pipeline", ["status", f"output_dir={output_dir}"]),
        ("pipeline.report", [f"output_dir={output_dir}"]),
        ("pipeline.export", [f"output_dir={output_dir}", "format=vtt"]),
        ("pipeline.status", ["--help"]), ("pipeline.download", ["--help"]), ("pipeline", dry_run),
        ("pipeline", ["--help"]), ("pipeline", ["--version"]),
    ]:
        result = sub_command(module, *args, redirect=redirect, env=env)
        assert_one_line_error(result, 1, f"ERROR] cannot write to standard output: {reason}")
        assert len(result.stderr.splitlines()) == 1 and result.stdout == "", result.stderr


def test_a_closed_or_full_stderr_changes_nothing_but_what_is_seen(output_dir: Path) -> None:
    for module, args in [
        ("pipeline.status", [f"output_dir={output_dir}"]), ("pipeline.report", [f"output_dir={output_dir}"]),
        ("pipeline.export", [f"output_dir={output_dir}", "format=vtt"]),
    ]:
        for redirect in ("2>&-", "2>/dev/full"):
            done = sub_command(module, *args, redirect=redirect)
            assert done.returncode == 0 and done.stdout.strip(), done.stdout
            missing = sub_command(module, *[a.replace("/out", "/missing") for a in args], redirect=redirect)
            assert missing.returncode == 1 and missing.stdout == "", missing.stdout  # the error is not on stdout


# -- names in output_dir taken by the wrong kind -------------------------------------------------


def test_a_file_named_logs_is_one_line_that_says_so(output_dir: Path) -> None:
    (output_dir / "_logs").write_text("not a folder")
    with pytest.raises(StoreError) as raised, run_log(output_dir / "_logs" / "night.log"):
        pass
    logs = output_dir / "_logs"
    assert str(raised.value) == (
        f"cannot write the run's log file into {logs} ({logs} is a file, not a folder): "
        f"that must be a writable folder; move or rename {logs}"
    )


@pytest.mark.parametrize(("kind", "make"), [("a folder", os.mkdir), ("a named pipe", os.mkfifo)])
def test_a_lock_file_that_is_no_file_is_one_line_that_says_what_stands_there(
    output_dir: Path, kind: str, make: Any
) -> None:
    make(output_dir / "_lock")
    with pytest.raises(StoreError) as raised, RunLock(output_dir, 0, 1, None):
        pass
    assert str(raised.value) == (
        f"cannot use the lock file {output_dir / '_lock'}: {kind} stands there, where the runs keep their lock file; "
        "move or rename it, then run again"
    )


@pytest.mark.allow_error_logs
@pytest.mark.parametrize(("name", "needle"), [
    ("_logs", "{out}/_logs is a file, not a folder): that must be a writable folder; move or rename {out}/_logs"),
    ("_lock", "cannot use the lock file {out}/_lock: a folder stands there"),
])
def test_a_run_into_a_folder_whose_names_are_taken_stops_with_one_line(
    cli_base: list[str], tmp_path: Path, name: str, needle: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    if name == "_logs":
        (out / name).write_text("not a folder")
    else:
        (out / name).mkdir()
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base)
    assert_one_line_error(result, 1, needle.format(out=out))
    assert "crashed" not in result.stderr and "free space" not in result.stderr
    assert not list(out.rglob("*.parquet"))


# -- every write into output_dir: what stands in the way, what the folder lacks ------------------


@pytest.mark.parametrize(
    "case", ["a folder", "a named pipe", "a file as its folder", "ENOSPC", "EDQUOT", "EROFS", "EIO"]
)
def test_a_file_that_cannot_be_written_is_said_with_what_is_in_the_way_and_the_fix(tmp_path: Path, case: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path, code = out / "_report.html", errno.EISDIR
    if case == "a folder":
        path.mkdir()
    elif case == "a named pipe":
        os.mkfifo(path)
    elif case == "a file as its folder":
        (out / "_runs").write_text("not a folder")
        path, code = out / "_runs" / "night.json", errno.ENOTDIR
    else:
        path, code = out / "_export" / "clip" / "clip.vtt", getattr(errno, case)
    expected = {
        "a folder": f"{case} stands there; move or rename it",
        "a named pipe": f"{case} stands there; move or rename it",
        "a file as its folder": f"{out / '_runs'} is a file, not a folder; move or rename it",
        "ENOSPC": f"{FULL}; free space on its disk",
        "EDQUOT": f"{QUOTA}; free space within your disk quota",
        "EROFS": f"{os.strerror(errno.EROFS)}; make {out} writable (its permissions, or a read-only mount)",
        "EIO": os.strerror(errno.EIO),  # no fix guessed for what the disk itself says
    }[case]
    assert cannot_write(path, OSError(code, os.strerror(code), str(path))) == f"cannot write {path}: {expected}"


@pytest.mark.allow_error_logs
@pytest.mark.parametrize("command", ["report", "export"])
def test_a_sub_command_whose_file_is_taken_is_one_line_naming_it(
    output_dir: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    main, args, _ = sub_commands(output_dir)[command]
    if command == "report":
        (output_dir / "_report.html").mkdir()
        said = f"cannot write {output_dir / '_report.html'}: a folder stands there; move or rename it"
    else:
        (output_dir / "_export").write_text("not a folder")
        said = f": {output_dir / '_export'} is a file, not a folder; move or rename it"
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ERROR] cannot write" in err and err.rstrip().endswith(said), err
    assert (output_dir / "_report.html").is_dir() if command == "report" else (output_dir / "_export").is_file()


@pytest.mark.allow_error_logs
@pytest.mark.parametrize(("name", "code", "needles"), [
    ("_report-due", 1, ["ERROR] cannot use {out}/_report-due: a folder stands there, where a night keeps what it owes; "
                        "move or rename it"]),
    ("_export-due", 1, ["ERROR] cannot use {out}/_export-due: a folder stands there, where a night keeps what it owes; "
                        "move or rename it"]),
    ("_last_run.json", 0,
     ["WARNING] run summary not written: cannot write {out}/_last_run.json: a folder stands there; move or rename"]),
    ("_runs", 0, ["WARNING] run summary not written: cannot write {out}/_runs/",
                  ": {out}/_runs is a file, not a folder; move or rename it"]),
])
def test_a_run_record_or_marker_whose_name_is_taken_is_one_line_naming_it(
    cli_base: list[str], tmp_path: Path, name: str, code: int, needles: list[str]
) -> None:
    """A marker of owed work taken by a folder stops the night before it captions, whether or not
    it asks for a report or an export (it could not owe one, nor say truly what is owed); the
    night's record is best effort: the night captions, with one warning."""
    out = tmp_path / "out"
    out.mkdir()
    if name == "_runs":
        (out / name).write_text("not a folder")
    else:
        (out / name).mkdir()
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base)
    assert_one_line_error(result, code, *(needle.format(out=out) for needle in needles))
    assert sum(name in line for line in result.stderr.splitlines()) == 1, result.stderr  # said once, nothing else
    assert (out / name).is_file() if name == "_runs" else (out / name).is_dir()  # left as it was
    assert bool(list(out.rglob("*.parquet"))) == (code == 0)


@pytest.mark.allow_error_logs
def test_a_read_only_output_dir_is_one_line_with_the_fix(cli_base: list[str], tmp_path: Path) -> None:
    """A read-only mount (a bind mount: root only; as root, permissions would not stop a write)."""
    out = tmp_path / "out"
    out.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(out), str(out)], capture_output=True).returncode == 0
    if not mounted:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(out)], check=True, capture_output=True)
        result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base)
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)
    assert_one_line_error(result, 1, f"output_dir {out} is not writable ({os.strerror(errno.EROFS)}); "
                          f"make {out} writable (its permissions, or a read-only mount), or choose another output_dir")


# -- a path the user gave, or a file above it, in the way: choose another ------------------------


@pytest.mark.parametrize("where", ["output_dir", "output_dir a device", "model.dir", "VIDEO_CAPTION_CACHE"])
def test_a_file_at_or_above_a_path_the_user_gave_is_to_choose_another_never_to_move(
    cli_base: list[str], tmp_path: Path, where: str
) -> None:
    """Where the file in the way is the user's (a video, a system file, a device), the line
    never tells to move or rename it: the fix is another path (the option that names it)."""
    video = tmp_path / "vids" / "v0.mp4"  # the user's own video, where a folder would have to be
    video.parent.mkdir()
    shutil.copy(SAMPLE_VIDEO, video)
    given, blocked = video / "out", f"{video} is a file, not a folder"
    if where == "output_dir a device":
        given = tmp_path / "null"
        os.mknod(given, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        blocked = f"{given} is not a folder"
    key = where.removesuffix(" a device")
    what, fix = {
        "output_dir": ("the results", "choose another output_dir"),
        "model.dir": ("the model files (model.dir)", "choose another model.dir"),
        "VIDEO_CAPTION_CACHE": ("the pipeline's cache", "set VIDEO_CAPTION_CACHE to a writable folder"),
    }[key]
    env = {key: str(given)} if key == "VIDEO_CAPTION_CACHE" else {}
    args = [a for a in cli_base if not a.startswith(f"{key}=")] + ([] if env else [f"{key}={given}"])
    result = subprocess.run([sys.executable, "-m", "pipeline", f"video={SAMPLE_VIDEO}", *args], cwd=ROOT,
                            env=cli_env(PYTHONPATH=str(ROOT), **env), capture_output=True, text=True,
                            timeout=RUN_TIMEOUT_S)

    said = f"cannot write {what} into {given} ({blocked}): that must be a writable folder; {fix}"
    assert_one_line_error(result, 1, said)
    assert "move or rename" not in result.stderr
    assert video.read_bytes() == SAMPLE_VIDEO.read_bytes()
    if where == "output_dir a device":
        assert stat.S_ISCHR(os.lstat(given).st_mode)


def test_the_library_says_to_choose_another_model_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("the user's")
    with pytest.raises(WeightsError) as raised:
        captioner_from_preset("tiny", f"model.dir={blocker / 'tiny'}")
    assert str(raised.value).endswith(f"({blocker} is a file, not a folder): that must be a writable folder; "
                                      "choose another model.dir"), raised.value


@pytest.mark.allow_error_logs
@pytest.mark.parametrize("case", ["a file above it", "a folder at it", "the report's own name given"])
def test_the_reports_out_in_the_way_is_to_choose_another_out(
    output_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    """``out=`` is the user's: a file above it, or a folder at it, calls for another ``out=``;
    ``output_dir/_report.html`` is a name the report keeps only where ``out=`` does not give it
    (a folder there without ``out=``: move or rename it, above)."""
    mine = tmp_path / "mine"
    if case == "a file above it":
        mine.write_text("the user's")
        out, said = mine / "r.html", f"{mine} is a file, not a folder"
    elif case == "a folder at it":
        mine.mkdir()
        out, said = mine, "a folder stands there"
    else:
        out, said = output_dir / "_report.html", "a folder stands there"
        out.mkdir()

    assert report_main([f"output_dir={output_dir}", f"out={out}"]) == 1

    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.rstrip().endswith(f"ERROR] cannot write {out}: {said}; choose another out="), err
    assert not (tmp_path / "mine_files").exists() and not (output_dir / "_report_files").exists()


# -- llama.cpp's conversions (the generated Q8_0 model, F16 copies) ------------------------------


def test_a_conversion_that_fails_says_llama_cpps_reason_in_its_line_and_prints_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "broken.gguf"
    source.write_text("not a model")
    with pytest.raises(WeightsError) as raised:
        llama_quantize(source, tmp_path / "out.gguf", FILE_TYPES["Q8_0"])
    assert str(raised.value).startswith(f"llama.cpp could not convert {source} (status 1: "), raised.value
    assert "invalid magic characters" in str(raised.value)
    assert capfd.readouterr() == ("", "")  # llama.cpp's own lines went into that one, not to the console


@pytest.mark.allow_error_logs
def test_a_full_disk_under_the_generated_q8_model_is_one_line(
    cli_base: list[str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    """llama.cpp's quantize loses the errno of its writes; a disk left with no room is said as
    full (a real one: a tmpfs, root only)."""
    with small_disk(tmp_path / "disk", "2m") as disk:
        (disk / "tiny").mkdir()
        for name in (TINY_TEXT_FILE, TINY_MMPROJ_FILE):  # the F32 model is there; its Q8_0 copy is not
            shutil.copy(tiny_model_dir / name, disk / "tiny" / name)
        (disk / "filler").write_bytes(b"x" * (shutil.disk_usage(disk).free - 100_000))  # less than the copy needs
        in_cache = [a for a in cli_base if not a.startswith("model.dir=")]  # the generated model, in the cache
        args = [f"video={SAMPLE_VIDEO}", *in_cache, "model.quantized=true"]
        result = subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                                env=cli_env(PYTHONPATH=str(ROOT), VIDEO_CAPTION_CACHE=str(disk)), timeout=RUN_TIMEOUT_S)
        assert_one_line_error(
            result, 1, f"cannot write the generated tiny model into {disk / 'tiny'} ({FULL}): free space on its disk"
        )
        assert "llama_model" not in result.stderr  # nor its chatter, a line per tensor
        assert sorted(p.name for p in (disk / "tiny").iterdir()) == sorted([TINY_TEXT_FILE, TINY_MMPROJ_FILE])


@pytest.mark.allow_error_logs
@pytest.mark.parametrize(("command", "marker"), [
    ("status", "_export-due"), ("status", "_report-due"), ("report", "_report-due"), ("export", "_export-due"),
])
def test_the_commands_name_a_marker_taken_by_a_folder_in_one_line(output_dir: Path, command: str, marker: str) -> None:
    (output_dir / marker).mkdir()
    args = ["format=vtt"] if command == "export" else []

    result = run_cli(command, f"output_dir={output_dir}", *args)

    assert_one_line_error(result, 1, f"cannot use {output_dir}/{marker}: a folder stands there")
    assert (output_dir / marker).is_dir()
