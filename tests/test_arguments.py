"""The command line people type (issue 16, points 2 and 7): ``--help`` and ``--version``,
prompts and file names that Hydra's grammar would eat, ``prompts_file``."""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from omegaconf import OmegaConf

from pipeline.arguments import KEYS, command_line
from pipeline.config import check_values, compose_config
from pipeline.errors import ConfigError
from pipeline.presets import caption_spec, captioner_from_preset
from pipeline.results import load_results
from tests.conftest import ROOT, RUN_TIMEOUT_S, SAMPLE_VIDEO, assert_one_line_error, cli_env, run_cli


def composed(*args: str) -> Any:
    """The job config ``python -m pipeline --cfg job ARGS`` prints."""
    result = run_cli("--cfg", "job", *args)
    assert result.returncode == 0, result.stderr
    return OmegaConf.to_container(OmegaConf.create(result.stdout))


def error_lines(stderr: str) -> list[str]:
    """The ERROR lines of stderr, in the one style the tool prints (``[hh:mm:ss ERROR] ...``)."""
    return [line for line in stderr.splitlines() if re.match(r"\[\d\d:\d\d:\d\d ERROR\] ", line)]


def suggested_argument(stderr: str) -> str:
    """The override an error line proposes ("write it as <shell word>"), as the shell passes it."""
    (line,) = error_lines(stderr)
    proposal = line.split("write it as ", 1)[1].split(", or ", 1)[0]
    (argument,) = shlex.split(proposal)
    return argument


def test_help_is_a_real_usage_text() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith("usage: python -m pipeline video=PATH [key=value ...]")
    for key, form, _ in KEYS:
        assert f"{key}={form}" in text
    assert "output_dir=DIR" in text and "[data/output]" in text  # defaults come from conf/
    assert "model=" in text and "llava16_34b, llava16_mistral_7b, llava16_vicuna_7b, tiny [llava16_34b]" in text
    assert "all, interval, scene [interval]" in text and "local, ray [local]" in text
    assert "_schema" not in text and "Hydra" in text and "Examples:" in text
    assert "prompts_file=questions.txt" in text and "Exit codes:" in text
    assert run_cli("-h").stdout == text


def test_help_names_every_setting_and_the_sub_commands() -> None:
    text = run_cli("--help").stdout
    # Every top-level key of the composed config, so that --help cannot drift from conf/.
    missing = [key for key in composed("video=x.mp4") if not re.search(rf"(?m)^  {key}[.=]", text)]
    assert missing == []
    for command in ("pipeline.download", "pipeline.export", "pipeline.report", "pipeline.status", "video-caption"):
        assert command in text


def test_version_names_the_package_llama_cpp_and_its_build() -> None:
    import llama_cpp

    result = run_cli("--version")
    assert result.returncode == 0
    first, second = result.stdout.strip().splitlines()
    assert first == f"video-caption-pipeline {metadata.version('video-caption-pipeline')}"
    assert second.startswith(f"llama-cpp-python {metadata.version('llama-cpp-python')}: ")
    # This machine's build (tests/test_cli.py: a CPU build) and the devices llama.cpp sees.
    build = "GPU build, devices: " if llama_cpp.llama_supports_gpu_offload() else "CPU-only build"
    assert build in second and "; CPU: " in second


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["sampler.intervall_s=2"], ["unknown setting sampler.intervall_s", "did you mean sampler.interval_s?"]),
        (["+sampler.intervall_s=2"], ["unknown setting sampler.intervall_s", "did you mean sampler.interval_s?"]),
        (["engine.paralel=2"], ["unknown setting engine.paralel", "did you mean engine.parallel?"]),
        (["interval_s=2"], ["unknown setting interval_s", "did you mean sampler.interval_s?"]),
        (["sampler=scene", "sampler.treshold=20"], ["did you mean sampler.threshold?"]),
        (["executor.address=x"], ["executor.address is a setting of executor=ray, not of executor=local"]),
        (["sampler=scene", "sampler.interval_s=3"], ["is a setting of sampler=interval, not of sampler=scene"]),
        (["sampler=all", "sampler/dedup=default"],
         ["sampler/dedup=default: sampler/dedup is a part of sampler=interval and sampler=scene, not of sampler=all"]),
        (["sampler/dedup=default", "sampler=all"], ["sampler/dedup is a part of", "not of sampler=all"]),
        (["+max_frames=2"], ["max_frames is a setting already", "without '+': max_frames=2"]),
        (["++model.n_ctx=4096"], ["without '+': model.n_ctx=4096"]),
        (["+sampler.dedup.extra=1"], ["unknown setting sampler.dedup.extra"]),
        (["~max_frames"], ["~max_frames would remove a setting", "max_frames=VALUE"]),
        (["sampler.interval_s=abc"], ["sampler.interval_s=abc: sampler.interval_s takes a number, not 'abc'"]),
        (["max_frames=many"], ["max_frames takes a whole number or null, not 'many'"]),
        (["dry_run=perhaps"], ["dry_run takes true or false, not 'perhaps'"]),
        (["prompts=5"], ["prompts takes a list"]),
        # what llama.cpp would take as another value (a C integer wrapped round), or as a random seed
        (["generation.seed=-1"], ["generation.seed=-1 is out of range", "must be >= 0 and <= 4294967294"]),
        (["generation.seed=4294967295"], ["generation.seed=4294967295 is out of range"]),
        (["generation.top_k=4294967301"], ["generation.top_k=4294967301 is out of range", "<= 2147483647"]),
        (["engine.n_threads=4294967297"], ["engine.n_threads=4294967297 is out of range", ">= 1 and <= 512, or null"]),
        (["engine.n_ubatch=4294967296"], ["engine.n_ubatch=4294967296 is out of range", ">= 1 and <= 4294967295"]),
    ],
)
def test_a_setting_mistake_is_one_line_naming_the_fix(args: list[str], needles: list[str]) -> None:
    result = run_cli("video=x.mp4", "model=tiny", "dry_run=true", *args)
    assert_one_line_error(result, 1, *needles)
    assert result.stderr.count("\n") == 1 and len(error_lines(result.stderr)) == 1
    assert "HYDRA_FULL_ERROR" not in result.stderr and "Exception" not in result.stderr


@pytest.mark.parametrize(
    ("module", "args", "needles"),
    [
        ("pipeline.download", ["+model.dri=/models"], ["unknown setting model.dri", "did you mean model.dir?"]),
        ("pipeline.download", ["model.n_ctx=big"], ["model.n_ctx takes a whole number, not 'big'"]),
        ("pipeline.download", ["model=unknown"], ["unknown model=unknown; choose one of: llava16_34b", "tiny"]),
        ("pipeline.export", ["outptu_dir=/x", "format=vtt"], ["did you mean output_dir=...?"]),
        ("pipeline.report", ["+output_dir=/x"], ["did you mean output_dir=...?"]),
        ("pipeline.status", ["outdir=x"], ["did you mean output_dir=...?"]),
        ("pipeline.status", ["output_dir=/no/such/folder"], ["output_dir /no/such/folder is not a folder"]),
        ("pipeline", ["status", "runs=0", "output_dir=/x"], ["runs=0 is out of range: runs must be >= 1"]),
        ("pipeline", ["export", "outptu_dir=/x", "format=vtt"], ["did you mean output_dir=...?"]),
    ],
)
def test_sub_commands_word_mistakes_the_same_way(module: str, args: list[str], needles: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert_one_line_error(result, 1, *needles)
    assert len(error_lines(result.stderr)) == 1 and result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize(
    ("module", "args"), [("pipeline.report", []), ("pipeline.export", ["format=csv,vtt"]), ("pipeline", ["report"])]
)
def test_a_folder_no_run_wrote_to_is_refused_and_left_as_it_was(module: str, args: list[str], tmp_path: Path) -> None:
    """A mistyped output_dir (here a folder of someone's files) is no empty night: the report and
    the export say so in one line and write nothing into it."""
    folder = tmp_path / "holiday"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    (folder / "clips").mkdir()
    (folder / "clips" / "beach.parquet").write_bytes(b"not ours")  # a chunk sits one level down, named part-*
    result = subprocess.run(
        [sys.executable, "-m", module, *args, f"output_dir={folder}"], cwd=ROOT, env=cli_env(),
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert_one_line_error(result, 1, f"output_dir {folder} holds no run of the pipeline", "run the pipeline first")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [
        "clips", "clips/beach.parquet", "notes.txt",
    ]
    with pytest.raises(FileNotFoundError, match="holds no run of the pipeline"):
        load_results(folder)


@pytest.mark.parametrize(
    ("preset", "overrides"),
    [
        ("mistral", []),  # no file of conf/model
        ("config_schema", []),  # a schema Hydra knows, no preset
        ("tiny", ["engine.paralel=2"]),
        ("tiny", ["generation.temperature=warm"]),
        ("tiny", ["++engine.lanes=2"]),
        ("tiny", ["+colour=red"]),
        ("tiny", ["~engine.lanes"]),
        ("tiny", ["system_prompt=Who's there?"]),
        ("tiny", ["engine.parallel=2,4"]),
        ("tiny", ["sampler.pick=middle"]),
        ("tiny", ["n_ctx=4096"]),
        ("tiny", ["model=llava17"]),
    ],
)
def test_the_library_refuses_an_override_in_the_command_lines_one_line(
    tiny_model_dir: Path, preset: str, overrides: list[str]
) -> None:
    with pytest.raises(ConfigError) as library:
        captioner_from_preset(preset, f"model.dir={tiny_model_dir}", *overrides)
    with pytest.raises(ConfigError) as command:
        command_line(["video=x.mp4", f"model={preset}", f"model.dir={tiny_model_dir}", *overrides])
    assert str(library.value) == str(command.value)
    assert "\n" not in str(library.value) and "_schema" not in str(library.value).replace(preset, "")


def test_the_library_names_a_word_without_a_value_alone() -> None:
    with pytest.raises(ConfigError, match=r"^'Describe' is not key=value; see python -m pipeline --help$"):
        captioner_from_preset("tiny", "Describe")


@pytest.mark.parametrize(
    "override",
    ["generation.top_p=1.5", "generation.top_k=-1", "generation.seed=-1", "model.n_gpu_layers=-3", "model.dir=",
     "model.text="],
)
def test_the_library_refuses_a_model_setting_that_a_run_refuses(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: str
) -> None:
    monkeypatch.chdir(tmp_path)  # where an empty model path would point
    with pytest.raises(ConfigError) as library:
        captioner_from_preset("tiny", f"model.dir={tiny_model_dir}", override)
    cfg = compose_config(["video=x.mp4", "model=tiny", f"model.dir={tiny_model_dir}", override])
    with pytest.raises(ConfigError) as run:  # the run's two checks (pipeline.cli), in its order
        check_values(cfg)
        caption_spec(cfg)
    assert str(library.value) == str(run.value)
    assert list(tmp_path.iterdir()) == []


def test_the_library_takes_a_text_setting_as_typed(tiny_model_dir: Path) -> None:
    captioner = captioner_from_preset("tiny", f"model.dir={tiny_model_dir}", "system_prompt=TRUE")
    assert captioner.engine.settings.system_prompt == "TRUE"


def test_the_missing_weights_line_of_the_download_does_not_name_itself(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.download", "model=llava16_mistral_7b", f"model.dir={tmp_path}"],
        cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    assert_one_line_error(result, 1, "missing llava-v1.6-mistral-7b.Q5_K_M.gguf", "unset it")
    assert "python -m pipeline.download" not in result.stderr


def test_no_video_is_one_line_naming_the_key() -> None:
    result = run_cli("model=tiny")
    assert_one_line_error(result, 1, "video= is required: a video file, a folder, a glob or a manifest")


@pytest.mark.parametrize("word", ["clip.mp4", "/srv/incoming", "list.txt"])
def test_a_bare_path_suggests_video(word: str) -> None:
    result = run_cli(word)
    assert_one_line_error(result, 1, f"{word!r} is not key=value; to caption it write video={word}")


@pytest.mark.parametrize(
    ("argument", "key", "value"),
    [
        ("prompt=What's shown?", "prompt", "What's shown?"),
        ("prompt=Describe the scene (one sentence).", "prompt", "Describe the scene (one sentence)."),
        ("video=clip (1).mp4", "video", "clip (1).mp4"),
        ("video=a,b.mp4", "video", "a,b.mp4"),
        ("video=[2024] talk.mp4", "video", "[2024] talk.mp4"),
        ("video=café.mp4", "video", "café.mp4"),
        ("prompt=It's $5 (or \"five\")?", "prompt", "It's $5 (or \"five\")?"),
    ],
)
def test_an_unreadable_override_is_one_line_whose_fix_works(argument: str, key: str, value: str) -> None:
    result = run_cli("video=x.mp4", argument, "model=tiny")
    assert_one_line_error(result, 1, "write it as")
    assert "LexerNoViableAlt" not in result.stderr and "HYDRA_FULL_ERROR" not in result.stderr
    fixed = suggested_argument(result.stderr)
    assert composed(*(["video=x.mp4"] if key != "video" else []), "model=tiny", fixed)[key] == value


def test_a_comma_inside_a_prompt_is_an_error_showing_both_readings() -> None:
    result = run_cli("video=x.mp4", "model=tiny", "prompts=[What is shown?,Any text, e.g. signs?]")
    assert_one_line_error(result, 1, "ambiguous", "prompts_file=FILE")
    (line,) = error_lines(result.stderr)
    three, two = (shlex.split(word)[0] for word in re.findall(r" write ('[^']*')", line))
    assert composed("video=x.mp4", three)["prompts"] == ["What is shown?", "Any text", "e.g. signs?"]
    assert composed("video=x.mp4", two)["prompts"] == ["What is shown?", "Any text, e.g. signs?"]
    # Quoted prompts, with or without spaces after the separating commas, are not ambiguous.
    quoted = '["What is shown?", "Any text, e.g. signs?"]'
    assert composed("video=x.mp4", f"prompts={quoted}")["prompts"] == ["What is shown?", "Any text, e.g. signs?"]


def test_a_bare_path_on_disk_after_other_settings_suggests_video(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    result = run_cli(f"output_dir={tmp_path / 'out'}", "model=tiny", str(clip))
    assert_one_line_error(result, 1, f"{str(clip)!r} is not key=value; to caption it write video={clip}")


def test_unquoted_words_are_one_line_with_the_value_joined() -> None:
    result = run_cli("video=x.mp4", "prompt=What", "is", "shown?")
    assert_one_line_error(result, 1, "'is' is not key=value", "'prompt=What is shown?'")


PROMPTS_FILE = """\
# questions for the night (this line is a comment)
What is shown?

Any text, e.g. signs?
Describe the scene (one sentence).
What's written on the "EXIT" sign?
Qué se ve? Что изображено? 何が見えますか?
   Spaces around a prompt are dropped.\t
"""


def test_prompts_file_carries_prompts_unchanged_into_the_parquet(cli_base: list[str], tmp_path: Path) -> None:
    questions = tmp_path / "questions.txt"
    questions.write_text(PROMPTS_FILE, encoding="utf-8")
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"prompts_file={questions}", "max_frames=1")
    assert result.returncode == 0, result.stderr
    df = pd.read_parquet(tmp_path / "out")
    assert list(df.sort_values("prompt_id").drop_duplicates("prompt").prompt.sort_values()) == sorted([
        "What is shown?", "Any text, e.g. signs?", "Describe the scene (one sentence).",
        'What\'s written on the "EXIT" sign?', "Qué se ve? Что изображено? 何が見えますか?",
        "Spaces around a prompt are dropped.",
    ])
    assert (df.status == "ok").all() and len(df) == 6


@pytest.mark.parametrize(
    ("content", "extra", "needle"),
    [
        ("# only a comment\n\n", [], "holds no prompt"),
        ("What?\n", ["prompt=Why?"], "prompt and prompts_file are both set"),
        (None, [], "cannot be read"),
    ],
)
def test_bad_prompts_file_is_one_line(
    cli_base: list[str], tmp_path: Path, content: str | None, extra: list[str], needle: str
) -> None:
    questions = tmp_path / "questions.txt"
    if content is not None:
        questions.write_text(content)
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"prompts_file={questions}", *extra)
    assert_one_line_error(result, 1, needle)


@pytest.mark.parametrize("name", ["clip (1).mp4", "a,b.mp4", "[2024] talk.mp4", "café.mp4"])
def test_odd_file_names_run_as_the_readme_quotes_them(cli_base: list[str], tmp_path: Path, name: str) -> None:
    clip = tmp_path / name
    shutil.copy(SAMPLE_VIDEO, clip)
    result = run_cli(f"video='{clip}'", *cli_base, "max_frames=1")
    assert result.returncode == 0, result.stderr
    assert list(pd.read_parquet(tmp_path / "out").video_path) == [str(clip)]


def test_the_documented_quoting_table_means_what_it_says() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text()
    table = page.split("## Quoting", 1)[1].split("| you mean | write |", 1)[1].split("\n\n", 1)[0]
    rows = [row for row in table.splitlines() if row.startswith("| ") and not row.startswith("|---")]
    assert len(rows) == 8
    for row in rows:
        meaning, written = row.strip("|").split(" | ")
        expected = re.findall(r"`([^`]+)`", meaning)
        (argument,) = shlex.split(written.strip().strip("`"))
        key = argument.split("=", 1)[0]
        value = composed(*(["video=x.mp4"] if key != "video" else []), argument)[key]
        assert value == (expected[0] if len(expected) == 1 else expected), row


# -- options: one line and exit 1, never argparse's usage and its exit 2 ("some videos failed") ----


@pytest.mark.parametrize(
    ("module", "args", "needle"),
    [
        ("pipeline", ["--foo"], "unknown option --foo; settings are key=value, without dashes"),
        ("pipeline", ["-video=x.mp4"], "unknown option -video=x.mp4; settings take no dashes: write video=x.mp4"),
        ("pipeline", ["video=x.mp4", "--output_dir=/x"], "settings take no dashes: write output_dir=/x"),
        ("pipeline", ["-dash.mp4"], "a file whose name starts with '-' is given as video=./-dash.mp4"),
        ("pipeline", ["--mutlirun", "video=x.mp4"], "unknown option --mutlirun; did you mean --multirun?"),
        ("pipeline", ["video=x.mp4", "--cfg"], "argument --cfg/-c: expected one argument"),
        ("pipeline", ["--cfg", "yaml", "video=x.mp4"], "invalid choice: 'yaml'"),
        ("pipeline", ["--cfg", "job", "-m", "video=x.mp4"], "--cfg and --multirun do not go together"),
        ("pipeline", ["--resolve", "video=x.mp4"], "--resolve goes with --cfg"),
        ("pipeline", ["-p", "model", "video=x.mp4"], "--package (-p) goes with --cfg"),
        *[("pipeline", [*given, "video=x.mp4"], f"{said} is Hydra's and not this tool's") for given, said in (
            (["--config-name", "x"], "--config-name"), (["-cn", "x"], "--config-name"),
            (["--config-path", "/x"], "--config-path"), (["--config-dir", "/x"], "--config-dir"),
            (["--experimental-rerun", "x"], "--experimental-rerun"), (["-sc", "install=bash"], "--shell-completion"),
            (["--hydra-help"], "--hydra-help"))],
        ("pipeline", ["-m", "video=x.mp4", "model=glob(*)"], "'model=glob(*)' would also run model_schema, no choice"),
        ("pipeline", ["status", "--foo"], "unknown option --foo"),
        ("pipeline.status", ["--output_dir=/x"], "unknown option --output_dir=/x; settings take no dashes"),
        ("pipeline.report", ["-x", "output_dir=/x"], "unknown option -x"),
        ("pipeline.export", ["-dash.mp4", "output_dir=/x", "format=vtt"], "given as video=./-dash.mp4"),
        ("pipeline.download", ["--foo"], "unknown option --foo"),
        ("pipeline.download", ["model=tiny", "--model.dir=/x"], "settings take no dashes: write model.dir=/x"),
    ],
)
def test_an_unknown_option_is_one_line_and_exit_1(module: str, args: list[str], needle: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert_one_line_error(result, 1, needle)
    assert len(error_lines(result.stderr)) == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "unrecognized arguments" not in result.stderr and result.stdout == ""


def test_a_file_whose_name_starts_with_a_dash_runs_as_the_error_says(cli_base: list[str], tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(SAMPLE_VIDEO, work / "-dash.mp4")

    def run_here(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args, *cli_base, "max_frames=1"], cwd=work,
            env=cli_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        )

    refused = run_here("-dash.mp4")
    assert_one_line_error(refused, 1, "given as video=./-dash.mp4 (or video=-dash.mp4)")
    assert run_here("video=-dash.mp4", "dry_run=true").stdout.splitlines()[1].startswith("caption  -dash.mp4: 1 frame")
    done = run_here("video=./-dash.mp4")
    assert done.returncode == 0, done.stderr
    assert list(pd.read_parquet(tmp_path / "out").video_path) == ["-dash.mp4"]


def test_options_may_come_after_the_settings() -> None:
    result = run_cli("video=x.mp4", "--cfg", "job", "model=tiny")
    assert result.returncode == 0, result.stderr
    assert "chat_format: chatml" in result.stdout and "video: x.mp4" in result.stdout


# -- a list setting given twice; a text setting whose value Hydra would type -------------------------


@pytest.mark.parametrize(
    ("args", "key", "expected"),
    [
        (["video=a.mp4", "video=b.mp4"], "video", ["a.mp4", "b.mp4"]),
        (["video=a.mp4", "video=[b.mp4,c d.mp4]"], "video", ["a.mp4", "b.mp4", "c d.mp4"]),
        (["prompt=What is shown?", "prompt=Which colours?"], "prompts", ["What is shown?", "Which colours?"]),
        (["export=vtt", "export=srt"], "export", ["vtt", "srt"]),
    ],
)
def test_a_list_setting_given_twice_is_refused_with_the_list_that_holds_both(
    args: list[str], key: str, expected: list[str]
) -> None:
    result = run_cli("model=tiny", "dry_run=true", *args, *(["video=x.mp4"] if key != "video" else []))
    assert_one_line_error(result, 1, "is given twice and only the last would count; for all of them write")
    (line,) = error_lines(result.stderr)
    (fixed,) = shlex.split(line.rsplit("for all of them write ", 1)[1])
    assert composed(*(["video=x.mp4"] if key != "video" else []), fixed)[key] == expected
    # Any other setting given twice is an override: the last one counts, as Hydra has it.
    assert composed("video=x.mp4", "max_frames=1", "max_frames=2")["max_frames"] == 2


@pytest.mark.parametrize("value", ["true", "TRUE", "1.50", "1_000", "1e3", "null", "-inf"])
def test_a_path_is_taken_as_typed(tiny_model_dir: Path, tmp_path: Path, value: str) -> None:
    work = tmp_path / "work"
    work.mkdir()

    def dry_run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *args, "model=tiny", f"model.dir={tiny_model_dir}", "dry_run=true",
             "min_age_s=0"], cwd=work, env=cli_env(PYTHONPATH=str(ROOT)), capture_output=True, text=True,
            timeout=RUN_TIMEOUT_S,
        )

    assert_one_line_error(dry_run(f"video={value}"), 1, f"video={value} does not exist")
    shutil.copy(SAMPLE_VIDEO, work / value)
    found = dry_run(f"video={value}", f"output_dir={tmp_path / 'out'}")
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[1].startswith(f"caption  {value}: ")
    if value != "null":  # output_dir takes text, not null
        (work / value).unlink()
        into = dry_run(f"video={SAMPLE_VIDEO}", f"output_dir={value}")
        assert into.stdout.splitlines()[-1].endswith(f" -> {work / value}"), into.stderr


# -- a stop before the run begins: one line and its code, as later -------------------------------

# Sends the signal to itself when the command line first imports the module TRAP_AT: a stop that
# lands while Python loads the pipeline, at a known point rather than after a guessed time.
EARLY_STOP = """
import os, runpy, signal, sys
class Trap:
    def find_spec(self, name, path=None, target=None):
        if name == os.environ["TRAP_AT"]:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), getattr(signal, os.environ["TRAP_SIGNAL"]))
sys.meta_path.insert(0, Trap())
sys.argv[0] = "pipeline"
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize(("trap_at", "signal_name"), [
    ("hydra", "SIGINT"), ("omegaconf.nodes", "SIGINT"), ("numpy", "SIGTERM"), ("pipeline.config", "SIGHUP"),
])
def test_a_stop_while_the_pipeline_loads_is_one_line_and_its_code(trap_at: str, signal_name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", EARLY_STOP, "video=x.mp4", "model=tiny"], cwd=ROOT,
        env=cli_env(TRAP_AT=trap_at, TRAP_SIGNAL=signal_name), capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
    )
    code = 128 + getattr(signal, signal_name)
    assert_one_line_error(result, code, f"stopped by {signal_name} before the run began: nothing was written")
    assert result.stderr.count("\n") == 1, result.stderr


def test_ctrl_c_while_the_command_line_is_checked_is_one_line() -> None:
    code = (
        "import os, signal, sys\nimport pipeline.overrides as overrides\nchecked = overrides.config_error\n"
        "def interrupted(overrides):\n    os.kill(os.getpid(), signal.SIGINT)\n    return checked(overrides)\n"
        "overrides.config_error = interrupted\nsys.argv[0] = 'pipeline'\n"
        "from pipeline.__main__ import run\nrun()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "video=x.mp4", "model=tiny"], cwd=ROOT, env=cli_env(), capture_output=True,
        text=True, timeout=RUN_TIMEOUT_S,
    )
    assert_one_line_error(result, 130, "stopped by SIGINT before the run began: nothing was written")


def test_a_schema_prompt_hydra_cannot_read_points_to_a_prompts_file_not_to_a_quoted_list() -> None:
    result = run_cli("video=x.mp4", "model=tiny", "prompts=[{text: Q, schema: {type: object, properties: {ü: {}}}}]")
    assert_one_line_error(result, 1, "Hydra cannot read", "YAML or JSON list", "prompts_file=FILE.yaml")
    assert "write it as" not in result.stderr  # quoted, the list would be one text
