"""``${...}`` in a setting typed on the command line is text, not an OmegaConf interpolation: a
prompt, a path, an item of a list setting gets exactly the characters typed (``prompt=Cost in
${USD}?``), where OmegaConf would put a variable or another setting in their place, or stop the
run at one it cannot find; a number or a boolean with one is refused in one line. The conf/
files' own interpolations (``hydra.sweep.dir: ${output_dir}/...``) and Hydra's ``hydra.*`` keys
keep theirs. A prompts file is read by the pipeline itself, never by OmegaConf: as written."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from pipeline.arguments import command_line
from pipeline.config import compose_config, prompts_of
from pipeline.overrides import as_written
from pipeline.presets import captioner_from_preset
from tests.conftest import SAMPLE_VIDEO, assert_one_line_error, run_cli
from tests.test_arguments import suggested_argument

# What OmegaConf would read otherwise: a variable that is set (rewritten), a key that is not
# there (the run stopped), one inside another, a backslash (its escape) before one.
TEXTS = [
    "Where is ${oc.env:HOME}?",
    "Cost in ${missing}?",
    "${oc.env:HOME}",
    "${a:${b}} and ${",
    "C:\\dir\\${missing}",
]


def resolved(*args: str) -> dict[str, Any]:
    """The job config ``python -m pipeline --cfg job --resolve ARGS`` prints: what the run reads."""
    result = run_cli("--cfg", "job", "--resolve", *args)
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)  # as YAML, not OmegaConf: it would read each ${...} again
    assert isinstance(printed, dict)
    return printed


def run_reads(key: str, *args: str) -> Any:
    """The value of a dotted ``key`` in the config a run composes from the command line ``args``
    (checked, as ``python -m pipeline`` passes them to Hydra), resolved: what the run reads."""
    node = OmegaConf.select(compose_config(command_line(list(args))), key)
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


# The command line (through the CLI, as the user types it): the setting, the argument, and
# the value it must have, for each text with ${oc.env:HOME} and with ${missing}.
CLI_CASES = [
    (key, argument, value)
    for text in ("Where is ${oc.env:HOME}?", "Cost in ${missing}?")
    for key, argument, value in [
        ("prompt", f"prompt={text}", text),
        ("video", f"video=/srv/in/x{text}.mp4", f"/srv/in/x{text}.mp4"),
        ("prompts", f"prompts=[What is shown?,{text}]", ["What is shown?", text]),
        ("output_dir", f"output_dir=/srv/out/{text}", f"/srv/out/{text}"),
    ]
]


@pytest.mark.parametrize(("key", "argument", "value"), CLI_CASES)
def test_a_text_setting_with_an_interpolation_is_composed_as_typed(key: str, argument: str, value: Any) -> None:
    video = [] if key == "video" else ["video=x.mp4"]
    assert resolved(*video, "model=tiny", argument)[key] == value


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize(
    ("key", "template", "wanted"),
    [
        ("prompt", "prompt='{}'", "{}"),
        ("system_prompt", "system_prompt='{}'", "{}"),
        ("video", "video='/srv/in/{}.mp4'", "/srv/in/{}.mp4"),
        ("video", "video=[a.mp4,'/srv/in/{}.mp4']", ["a.mp4", "/srv/in/{}.mp4"]),
        ("prompts", "prompts=[What is shown?,'{}']", ["What is shown?", "{}"]),
        ("prompts", "prompts=[{{text: '{}', schema: {{type: object}}}}]",
         [{"text": "{}", "schema": {"type": "object"}}]),
        ("prompts_file", "prompts_file='/srv/{}.txt'", "/srv/{}.txt"),
        ("output_dir", "output_dir='/srv/out/{}'", "/srv/out/{}"),
        ("model.dir", "model.dir='/models/{}'", "/models/{}"),
        ("model.text", "model.text='/models/{}.gguf'", "/models/{}.gguf"),
        ("export", "export=[vtt,'{}']", ["vtt", "{}"]),
        ("video_extensions", "video_extensions=[.mp4,'.{}']", [".mp4", ".{}"]),
        ("model.stop", "model.stop=['{}']", ["{}"]),
    ],
)
def test_every_text_setting_and_list_item_is_read_as_typed(key: str, template: str, wanted: Any, text: str) -> None:
    # Each text in quotes for Hydra (its grammar has no bare "${" and no unbalanced "{"), which
    # keeps a backslash that is not before a quote.
    def filled(form: Any) -> Any:
        if isinstance(form, str):
            return form.replace("{}", text)
        if isinstance(form, list):
            return [filled(item) for item in form]
        return {name: filled(item) for name, item in form.items()}

    argument = template.format(text)
    assert OverridesParser.create().parse_overrides([argument])[0].value() == filled(wanted), "the test's own quoting"
    video = [] if key == "video" else ["video=x.mp4"]
    assert run_reads(key, *video, "model=tiny", argument) == filled(wanted)


@pytest.mark.parametrize(
    ("argument", "key", "value"),
    [
        ("prompt=It's ${oc.env:HOME}?", "prompt", "It's ${oc.env:HOME}?"),
        ("prompt=Qué ${missing}?", "prompt", "Qué ${missing}?"),
        ("video=/srv/in/x${y.mp4", "video", "/srv/in/x${y.mp4"),  # no closing brace: not Hydra's ${...}
        ("prompt=${a:${missing}}", "prompt", "${a:${missing}}"),
    ],
)
def test_the_fix_of_an_unreadable_override_keeps_its_interpolation_as_text(argument: str, key: str, value: str) -> None:
    result = run_cli("video=x.mp4", argument, "model=tiny")
    assert_one_line_error(result, 1, "write it as")
    fixed = suggested_argument(result.stderr)
    # Not --cfg job --resolve: OmegaConf.resolve, which it calls, reads a resolved text once more
    # (omry/omegaconf#1112), and "${y.mp4" is no interpolation it can read. A run never calls it.
    assert run_reads(key, *(["video=x.mp4"] if key != "video" else []), "model=tiny", fixed) == value


def test_a_missing_interpolation_in_video_is_the_file_not_found(tmp_path: Path) -> None:
    result = run_cli(f"video={tmp_path}/x${{y}}.mp4", "model=tiny", "dry_run=true")
    assert_one_line_error(result, 1, f"video={tmp_path}/x${{y}}.mp4 does not exist")
    assert "Interpolation" not in result.stderr


def test_a_video_named_with_an_interpolation_is_that_file(tmp_path: Path) -> None:
    video = shutil.copyfile(SAMPLE_VIDEO, tmp_path / "x${oc.env:HOME}.mp4")
    result = run_cli(f"video={video}", "model=tiny", "dry_run=true", f"output_dir={tmp_path / 'out'}")
    assert result.returncode == 0, result.stderr
    assert f"caption  {video}: " in result.stdout


def test_the_prompt_stored_is_the_prompt_typed(cli_base: list[str], tmp_path: Path) -> None:
    typed = ["Where is ${oc.env:HOME}?", "Cost in ${USD}?"]
    result = run_cli(f"video={SAMPLE_VIDEO}", *cli_base, f"prompts=[{','.join(typed)}]", "max_frames=1")
    assert result.returncode == 0, result.stderr
    assert sorted(set(pd.read_parquet(tmp_path / "out").prompt)) == sorted(typed)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("questions.txt", "Where is ${oc.env:HOME}?\nCost in ${missing}?\n"),
        ("questions.yaml", "- Where is ${oc.env:HOME}?\n- 'Cost in ${missing}?'\n"),
        ("questions.json", '["Where is ${oc.env:HOME}?", "Cost in ${missing}?"]'),
    ],
)
def test_a_prompts_file_is_read_as_written(tmp_path: Path, name: str, content: str) -> None:
    questions = tmp_path / name
    questions.write_text(content, encoding="utf-8")
    cfg = compose_config(command_line(["video=x.mp4", "model=tiny", f"prompts_file={questions}"]))
    assert prompts_of(cfg) == ["Where is ${oc.env:HOME}?", "Cost in ${missing}?"]


def test_the_library_takes_an_interpolation_as_text(tiny_model_dir: Path) -> None:
    captioner = captioner_from_preset("tiny", f"model.dir={tiny_model_dir}", "system_prompt=Say ${oc.env:HOME}")
    assert captioner.engine.settings.system_prompt == "Say ${oc.env:HOME}"


def test_each_choice_of_a_sweep_is_a_text_as_typed() -> None:
    (written,) = as_written(["prompt=Where is ${oc.env:HOME}?,Cost in ${missing}?"])
    (override,) = OverridesParser.create().parse_overrides([written])
    # As Hydra's basic sweeper gives each job its choice.
    jobs = [compose_config(["video=x.mp4", f"prompt={choice}"]).prompt for choice in override.sweep_string_iterator()]
    assert jobs == ["Where is ${oc.env:HOME}?", "Cost in ${missing}?"]


@pytest.mark.parametrize(
    ("argument", "form"),
    [("max_frames=${checkpoint_frames}", "a whole number or null"), ("dry_run=${oc.env:DRY}", "true or false"),
     ("sampler.interval_s=${missing}", "a number")],
)
def test_a_number_or_boolean_with_an_interpolation_is_one_line(argument: str, form: str) -> None:
    result = run_cli("video=x.mp4", "model=tiny", argument)
    key, value = argument.split("=", 1)
    assert_one_line_error(result, 1, f"{key} takes {form}, not '{value}'", "not an interpolation")


@pytest.mark.parametrize(
    ("group", "argument"), [("sampler=scene", "sampler.pick=${missing}"), ("executor=ray", "executor.address=${x}")]
)
def test_a_setting_of_a_built_object_with_an_interpolation_is_one_line(group: str, argument: str) -> None:
    # Hydra resolves a sampler's or an executor's node once more as it builds it: no text survives.
    result = run_cli("video=x.mp4", "model=tiny", group, argument, "dry_run=true")
    key = argument.split("=", 1)[0]
    assert_one_line_error(result, 1, f"{key} cannot hold ${{...}}", "give the value itself")


def test_the_conf_and_hydras_own_keys_keep_their_interpolations(tmp_path: Path) -> None:
    assert as_written(["hydra.run.dir=${output_dir}/run"]) == ["hydra.run.dir=${output_dir}/run"]
    # conf/config.yaml: hydra.sweep.dir: ${output_dir}/_logs/sweeps/${now:%Y%m%dT%H%M%S}
    out = tmp_path / "out${missing}"
    shards = ["-m", f"video={SAMPLE_VIDEO}", "model=tiny", f"output_dir={out}", "shard=0,1", "num_shards=2"]
    planned = run_cli(*shards, "dry_run=true")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.count(f"-> {out}") == 2
    assert not out.exists()  # a dry run writes nothing, not the sweep's own files either
    result = run_cli(*shards, "max_frames=1", "generation.max_tokens=4", "report=false")
    assert result.returncode == 0, result.stderr
    (sweep,) = (out / "_logs" / "sweeps").iterdir()
    assert sweep.name.startswith("2") and (sweep / "multirun.yaml").is_file()
