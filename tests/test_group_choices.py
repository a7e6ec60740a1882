"""A config group given no choice (``model=``, an unset variable in a cron line), one it does not
have, ours, nested (``sampler/dedup=``) or Hydra's (``hydra/launcher=``), a group there is not,
a group removed or chosen twice (``~model``, ``+model=``), several choices without ``-m``, and
any setting given no value (``prompts=``) are one line naming the fix (the choices), exit 1
(bad input), nothing written; through ``python -m pipeline``. A sweep over a group's choices
(``-m model=a,b``) is checked choice by choice."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.overrides import checked_overrides
from tests.conftest import assert_one_line_error, run_cli

CHOICES = {
    "model": "llava16_34b, llava16_mistral_7b, llava16_vicuna_7b, tiny",
    "sampler": "all, interval, scene",
    "executor": "local, ray",
    "sampler/dedup": "default",
    "hydra/launcher": "basic, submitit_local, submitit_slurm",
}
MODELS = f"choose one of: {CHOICES['model']}"
EMPTY = {"model=": "model", "sampler=": "sampler", "executor=": "executor", "sampler/dedup=": "sampler/dedup",
         "hydra/launcher=": "hydra/launcher", "model= ": "model", "model=''": "model"}  # '': quoted, as typed

BAD = {
    **{arg: f"{group}= is empty (an unset variable?); choose one of: {CHOICES[group]}" for arg, group in EMPTY.items()},
    "sampler/dedup=nope": f"unknown sampler/dedup=nope; choose one of: {CHOICES['sampler/dedup']}",
    "hydra/launcher=slurm": f"unknown hydra/launcher=slurm; choose one of: {CHOICES['hydra/launcher']}",
    "model=tiny,llava99": f"unknown model=llava99; {MODELS}",
    "hydra/launchr=basic": "hydra/launchr=basic: there is no config group hydra/launchr; python -m pipeline --help",
    "~model": f"~model: a run has one model, chosen as model=NAME; {MODELS}",
    "+model=tiny": f"+model=tiny: a run has one model, chosen as model=NAME; {MODELS}",
    "model=tiny,llava16_34b": "model=tiny,llava16_34b reads as a sweep over model choices (-m, a run each); a run "
    "takes one",
    "prompts=": "prompts= is empty (an unset variable?); prompts takes a list ([a,b])",
    "shard=": "shard= is empty (an unset variable?); shard takes a whole number",
}


@pytest.mark.parametrize("arg", list(BAD))
def test_a_bad_group_choice_or_an_empty_value_is_one_line_with_the_fix_and_writes_nothing(
    arg: str, tmp_path: Path
) -> None:
    result = run_cli("video=clip.mp4", arg, f"output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_line_error(result, 1, BAD[arg])
    assert "Could not" not in result.stderr and "Hydra" not in result.stderr, result.stderr
    assert list(tmp_path.iterdir()) == []  # no output_dir, no Hydra outputs/ in the working folder


def test_a_sweep_over_a_groups_choices_is_checked_choice_by_choice() -> None:
    assert checked_overrides(["model=tiny,llava16_34b", "shard=range(0,2)"], multirun=True)
    with pytest.raises(ConfigError, match=r"^unknown model=llava99; choose one of: llava16_34b, "):
        checked_overrides(["model=tiny,llava99"], multirun=True)


@pytest.mark.parametrize(("arg", "said"), [
    ("model=tiny,", f"Hydra cannot read model=tiny,; model takes one of: {CHOICES['model']}"),
    ("sampler=all, ", f"Hydra cannot read 'sampler=all, '; sampler takes one of: {CHOICES['sampler']}"),
    (" model=tiny", "Hydra cannot read ' model=tiny'; write it without the space: model=tiny"),
])
def test_an_unreadable_choice_names_the_choices_not_a_quoting_that_would_fail(
    arg: str, said: str, tmp_path: Path
) -> None:
    """``model=$A,$B`` with ``B`` unset: quoted (``model='tiny,'``) it would be no choice either."""
    result = run_cli("video=clip.mp4", arg, f"output_dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_line_error(result, 1, said)
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_hydra_expands_itself_is_left_to_each_job() -> None:
    """``glob(...)`` over a group's choices: Hydra picks them; each job's own config is checked
    as it runs. A glob that takes what Hydra lists besides the choices (the schema stored for the
    group: ``sampler=glob(*)`` ran ``all_schema``, ``model=glob(*)`` crashed) is refused."""
    assert checked_overrides(["model=glob(ti*)", "sampler=glob(*,exclude=*_schema)"], multirun=True)
    with pytest.raises(ConfigError, match=r"^'sampler=glob\(\*\)' would also run all_schema, no choice of sampler; "
                                          r"name them: -m sampler=all,interval,scene$"):
        checked_overrides(["sampler=glob(*)"], multirun=True)
