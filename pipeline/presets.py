"""A composed config (or a preset name and overrides) made into the captioner's plain values.

The caption package reads no config; this is where a preset becomes a
:class:`~pipeline.caption.CaptionSpec`, for the command line and for library use::

    from pipeline.presets import captioner_from_preset
    with captioner_from_preset("llava16_mistral_7b", "model.dir=/models", "engine.parallel=2") as c:
        print(c.answer(rgb_frame, "What is shown?"))

The overrides are checked as the command line checks them (:mod:`pipeline.overrides`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from pipeline.caption import Captioner, CaptionSpec, EngineKnobs, GenerationSettings, ModelPreset
from pipeline.config import check_caption_values, compose_config, prompts_of
from pipeline.errors import ConfigError
from pipeline.overrides import checked_overrides, unknown_choice
from pipeline.paths import user_path

Record = TypeVar("Record")


def caption_spec(cfg: DictConfig, max_questions: int | None = None) -> CaptionSpec:
    """The captioner's spec from a composed config (the ``Config`` schema), paths made
    absolute (workers may run in another folder).

    Args:
        cfg: The config.
        max_questions: Most questions per frame; ``None``: the config's prompts.

    Raises:
        ConfigError: A value is out of range, or a model path is empty
            (:func:`pipeline.config.check_caption_values`).
    """
    check_caption_values(cfg)
    model = _plain(ModelPreset, cfg.model)
    model = dataclasses.replace(
        model, dir=_absolute(model.dir), text=_absolute(model.text), mmproj=_absolute(model.mmproj),
        stop=tuple(model.stop),
    )
    system = cfg.system_prompt if cfg.system_prompt is not None else model.system_prompt
    return CaptionSpec(
        model=model,
        generation=_plain(GenerationSettings, cfg.generation),
        engine=_plain(EngineKnobs, cfg.engine),
        system_prompt=system,
        max_questions=max_questions or len(prompts_of(cfg)),
    )


def captioner_from_config(cfg: DictConfig, max_questions: int | None = None) -> Captioner:
    """A captioner for a composed config (see :func:`caption_spec`); the model loads on
    ``setup()`` or ``with``.

    Raises:
        ConfigError: A bad setting.
        WeightsError: Files missing or not matching.
    """
    return Captioner.from_spec(caption_spec(cfg, max_questions))


def captioner_from_preset(preset: str = "tiny", *overrides: str, max_questions: int = 8) -> Captioner:
    """A captioner for a preset in ``conf/model`` plus Hydra-style overrides, e.g.
    ``captioner_from_preset("llava16_mistral_7b", "model.dir=/models", "engine.parallel=2")``,
    checked as the command line checks them (:func:`checked_overrides`).

    Args:
        preset: The model preset (``tiny``, ``llava16_mistral_7b``, ...).
        overrides: ``key=value`` settings, as on the command line.
        max_questions: Most prompts asked about one frame (:meth:`Captioner.ask`).

    Raises:
        ConfigError: An unknown preset, an override the command line would refuse (one line
            with the fix), or a bad setting.
        WeightsError: Files missing or not matching.
    """
    problem = unknown_choice("model", preset)
    if problem is not None:
        raise ConfigError(problem)
    # Checked with the preset last, so that no word without "=" reads as the rest of its value.
    *written, _ = checked_overrides([*overrides, f"model={preset}"])
    cfg = compose_config([f"model={preset}", "video=unused", *written])
    return captioner_from_config(cfg, max_questions=max_questions)


def _plain(record: type[Record], node: Any) -> Record:
    """The config node's keys that ``record`` names, as that record (plain values, picklable)."""
    values = OmegaConf.to_container(node, resolve=True)
    assert isinstance(values, dict)
    return record(**{f.name: values[f.name] for f in dataclasses.fields(record)})  # type: ignore[arg-type]


def _absolute(path: str | None) -> str | None:
    """A configured path made absolute; ``None`` stays."""
    return None if path is None else str(user_path(path).absolute())
