"""Hydra-style ``key=value`` overrides checked before Hydra sees them, the same for the command line
(:mod:`pipeline.arguments`) and for library use (:func:`pipeline.presets.captioner_from_preset`), so that a mistake
ends in one line that shows the fix (a :class:`~pipeline.errors.ConfigError`).

Hydra's override grammar gives quotes, commas, brackets, parentheses and spaces a meaning and takes only ASCII letters
unquoted, so everyday prompts (``What's shown?``) and file names (``clip (1).mp4``, ``café.mp4``) fail in its lexer,
and an unquoted comma quietly splits a prompt in two. :func:`argument_error` finds these and words the fix: the
override quoted so that both the shell and Hydra read it as meant, or ``prompts_file=``; also a list setting given
twice, of which Hydra would keep the last, and a config group's choice it has not (``model=``: with the choices).
:func:`config_error` finds an override that names no setting, adds or removes one, or gives one a value of the wrong
type; :func:`as_written` quotes the text settings that Hydra would type (``video=true``) and keeps a ``${...}`` in
them as text, where OmegaConf would read an interpolation (``prompt=Cost in ${USD}?``).
"""

from __future__ import annotations

import difflib
import functools
import re
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Glob, Override, OverrideType
from hydra.errors import HydraException, OverrideParseException
from hydra.grammar.gen.OverrideLexer import InputStream, OverrideLexer  # type: ignore[attr-defined]
from omegaconf import DictConfig, ListConfig
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode

from pipeline.config import compose_config, config_dir
from pipeline.errors import ConfigError
from pipeline.override_words import ambiguous_comma, hydra_value, reads_as, shell_word, top_level_commas

GROUPS = ("model", "sampler", "executor")
# Settings whose repetition reads as "these too" (video=a.mp4 video=b.mp4), where Hydra keeps the
# last alone; any other given twice is an override (the last wins), as Hydra has it.
_LISTS = {"video": "video", "prompt": "prompts", "prompts": "prompts", "export": "export"}


def checked_overrides(overrides: list[str], multirun: bool = False) -> list[str]:
    """``overrides`` as a run reads them (:func:`as_written`), once checked as the command line
    checks them (:func:`argument_error`, :func:`config_error`; ``multirun``: under ``-m``).

    Raises:
        ConfigError: One line for the first mistake, with its fix.
    """
    if (problem := argument_error(overrides, multirun) or config_error(overrides)) is not None:
        raise ConfigError(problem)
    return as_written(overrides)


def group_choices(group: str) -> list[str]:
    """The options of a config group: its YAML files in ``conf/``, or Hydra's (``hydra/launcher``)."""
    if group.startswith("hydra/"):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    return sorted(path.stem for path in (config_dir() / group).glob("*.yaml"))


def _not_choices(group: str) -> list[str]:
    """What Hydra lists in a group besides its choices (``model_schema``: the schema stored for it)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        listed = GlobalHydra.instance().config_loader().get_group_options(group)
    return sorted(set(listed) - set(group_choices(group)))


def unknown_choice(group: str, value: Any) -> str | None:
    """``unknown GROUP=VALUE; choose one of: ...`` where ``value`` is none of the group's options
    (``GROUP= is empty (an unset variable?); ...`` where it is empty), ``None`` where it is one."""
    text, choices = "null" if value is None else str(value), group_choices(group)
    wrong = f"{group}= is empty (an unset variable?)" if not text.strip() else f"unknown {group}={text}"
    return None if text in choices else f"{wrong}; choose one of: {', '.join(choices)}"


def _group_error(arg: str, override: Override, multirun: bool) -> str | None:
    """The error for a group's choice (``model=``, ``sampler/dedup=``, ``hydra/launcher=``): no such group, a
    removal or a second (``~model``, ``+model=``), an empty or unknown choice (a sweep's each), several without -m."""
    group, picked, choices = override.key_or_group, _choices(override) or [], group_choices(override.key_or_group)
    if not choices:
        return f"{shell_word(arg)}: there is no config group {group}; python -m pipeline --help lists them"
    if override.type != OverrideType.CHANGE:  # ~model: none; +model=tiny: a second
        return f"{shell_word(arg)}: a run has one {group}, chosen as {group}=NAME; choose one of: {', '.join(choices)}"
    if isinstance(glob := override.value(), Glob) and (hidden := glob.filter(_not_choices(group))):
        # Hydra globs its own list of the group, which holds the schema too: a run of no choice
        return f"{shell_word(arg)} would also run {hidden[0]}, no choice of {group}; name them: -m {group}=" \
            + ",".join(glob.filter(choices) or choices[:2])
    several = f"{shell_word(arg)} reads as a sweep over {group} choices (-m, a run each); a run takes one"
    unknown = next(filter(None, (unknown_choice(group, choice) for choice in picked)), None)
    return unknown or (several if override.is_sweep_override() and not multirun else None)  # quoted: no such choice


def argument_error(overrides: list[str], multirun: bool = False) -> str | None:
    """One line naming the first override Hydra would reject or misread (a config group's choice: one it has not),
    and its fix; ``None`` when all are fine (``multirun``: under ``-m``, where a sweep is meant)."""
    parser = OverridesParser.create()
    parsed = []
    for index, arg in enumerate(overrides):
        if "=" not in arg and not arg.startswith("~"):  # ~key: a removal (config_error refuses it)
            return _bare_word(overrides, index)
        key, _, value = arg.partition("=")
        try:
            (override,) = parser.parse_overrides([arg])
        except OverrideParseException:
            return f"Hydra cannot read {shell_word(arg)}{_with_fix(key, value)}"
        if _is_group(override) and (problem := _group_error(arg, override, multirun)):
            return problem
        if override.is_sweep_override() and not multirun:
            return f"{shell_word(arg)} reads as a sweep over values (-m){_with_fix(key, value)}"
        if key.lstrip("+~") == "prompts" and ambiguous_comma(value):
            return _ambiguous_prompts(key, value)
        parsed.append((arg, override))
    return _given_twice(parsed)


def _given_twice(parsed: list[tuple[str, Override]]) -> str | None:
    """The error for a list setting given twice (``video=a.mp4 video=b.mp4``: Hydra keeps b alone), with one list."""
    given: dict[str, list[tuple[str, Override]]] = {}
    for arg, override in parsed:
        given.setdefault(override.key_or_group, []).append((arg, override))
    for key, pairs in given.items():
        if key not in _LISTS or len({arg for arg, _ in pairs}) < 2:
            continue
        raws = [arg.partition("=")[2] for arg, _ in pairs]
        items = [item for raw in raws for item in (_list_items(raw) if raw.startswith("[") else [raw])]
        values = [override.value() for _, override in pairs]
        wanted = [item for value in values for item in (value if isinstance(value, list) else [value])]
        merged = f"{_LISTS[key]}=[{','.join(dict.fromkeys(items))}]"
        fix = shell_word(merged) if reads_as(merged, list(dict.fromkeys(wanted))) else f"one list: {_LISTS[key]}=[...]"
        times = "twice" if len(pairs) == 2 else f"{len(pairs)} times"
        shown = " ".join(shell_word(arg) for arg, _ in pairs)
        return f"{shown}: {key} is given {times} and only the last would count; for all of them write {fix}"
    return None


def _list_items(value: str, commas: list[int] | None = None) -> list[str]:
    """The items of a ``[...]`` value as written, split at ``commas`` (positions; by default its
    top-level commas)."""
    cuts = top_level_commas(value) if commas is None else commas
    return [value[start + 1 : end].strip() for start, end in zip([0, *cuts], [*cuts, len(value) - 1])]


def as_written(overrides: list[str]) -> list[str]:
    """The overrides, so that the run gets a text setting (a path, a prompt, a list of them) as typed: quoted
    where Hydra would read a number, a boolean or null (``video=true``, ``output_dir=1.50``), and each ``${`` in it
    escaped (:func:`_kept_as_text`), where OmegaConf would read an interpolation and put another value or a
    variable in its place. The overrides must have passed :func:`config_error`.

    Raises:
        ConfigError: A text with ``${`` that Hydra's grammar cannot carry (not seen in practice).
    """
    parser = OverridesParser.create()
    parsed = [(arg, parser.parse_overrides([arg])[0]) for arg in overrides]
    base = _base_config(_group_args(parsed))
    written = []
    for arg, override in parsed:
        key, value = override.key_or_group, override.value() if not override.is_sweep_override() else ""
        text = isinstance(_node(base, key), StringNode) or key == "video"
        typed = isinstance(value, (bool, int, float)) or (value is None and key == "video")
        quoted = f"{key}={hydra_value(arg.partition('=')[2])}" if text and typed else None
        kept = _kept_as_text(arg) if _takes_text(base, key) else None
        written.append(quoted or kept or arg)
    return written


# ``${`` with the backslashes before it: OmegaConf reads ``${...}`` in a text as an interpolation
# (another setting, ``${oc.env:VAR}``), ``\${`` as the text ``${`` and ``\\`` before it as ``\``.
_INTERPOLATION = re.compile(r"(\\*)\$\{")


def _takes_text(cfg: DictConfig, key: str) -> bool:
    """Whether ``key`` is a text setting, or a list or a setting of any form (``video``,
    ``export``) whose texts are to be kept as typed; not Hydra's own ``hydra.*``."""
    return isinstance(_node(cfg, key), (StringNode, AnyNode, ListConfig))


def _has_interpolation(value: Any) -> bool:
    """Whether a text of ``value`` (a text, or a list or mapping of them) holds ``${``."""
    if isinstance(value, str):
        return "${" in value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return any(_has_interpolation(item) for item in items)


def _escaped(value: Any) -> Any:
    """``value`` with every ``${`` of its texts escaped for OmegaConf, which then reads it as typed."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda found: 2 * found.group(1) + "\\${", value)
    if isinstance(value, list):
        return [_escaped(item) for item in value]
    if isinstance(value, dict):
        return {key: _escaped(item) for key, item in value.items()}
    return value


def _kept_as_text(arg: str) -> str | None:
    """The override of a text setting written so that OmegaConf reads each ``${`` in its value as text, as are
    the backslashes typed before one (:func:`_as_typed`); ``None`` where there is none. Every text in the value
    (a list's items, a sweep's choices under ``-m``) is written in quotes.

    Raises:
        ConfigError: Hydra would not read the override written so back as that value.
    """
    choices = _choices(OverridesParser.create().parse_overrides([_as_typed(arg)])[0])
    if choices is None or not _has_interpolation(choices):
        return None
    wanted = [_escaped(choice) for choice in choices]
    written = f"{arg.partition('=')[0]}={','.join(hydra_value(choice) for choice in wanted)}"
    try:
        (read,) = OverridesParser.create().parse_overrides([written])
    except OverrideParseException:
        read = None
    if read is not None and _choices(read) == wanted:
        return written
    raise ConfigError(f"{shell_word(arg)}: Hydra cannot carry its text with ${{ as typed; leave out the $ or put "
                      "the text in a file (prompts_file=FILE, a manifest video=FILE.txt)")


def _as_typed(arg: str) -> str:
    r"""``arg`` with each run of backslashes before a ``${`` outside quotes doubled, which Hydra halves
    (``\\${`` is ``\${`` to it): a ``${``, and so the backslashes typed before one, are text as typed."""
    key, _, value = arg.partition("=")
    lexer = OverrideLexer(InputStream(value))
    lexer.mode(OverrideLexer.VALUE_MODE)
    starts = {token.start for token in lexer.getAllTokens() if token.type == OverrideLexer.INTERPOLATION}
    return key + "=" + re.sub(r"\\+(?=\$\{)", lambda run: run[0] * (1 + (run.end() in starts)), value)


def _choices(override: Override) -> list[Any] | None:
    """The values an override gives its key: one, or a sweep's choices (``-m``); ``None`` for a
    sweep of another kind (a range, an interval, a shuffled choice)."""
    value = override.value()
    if not override.is_sweep_override():
        return [value]
    if isinstance(value, ChoiceSweep) and not value.shuffle:
        return [Override._convert_value(choice) for choice in value.list]
    return None


@functools.lru_cache(maxsize=4)
def _base_config(groups: tuple[str, ...]) -> DictConfig:
    """The config with only these group choices (its keys and their types)."""
    return compose_config(list(groups))


def config_error(overrides: list[str]) -> str | None:
    """One line for the first override that names no setting, adds or removes one (``+key=``, ``++key=``,
    ``~key``), or gives a setting a value of the wrong type (or none: ``shard=``), with the fix; ``None`` when the
    config composes. (Hydra prints several lines for these, and its advice, a ``+`` form, adds a key that no part
    of the run reads, or that a sampler rejects as a crash.) Keys under ``hydra`` are Hydra's own and left to it;
    the overrides must have passed :func:`argument_error`.
    """
    parser = OverridesParser.create()
    parsed = [(arg, parser.parse_overrides([arg])[0]) for arg in overrides]
    try:  # the keys that exist depend on the groups chosen (sampler=scene has its own)
        base = _base_config(groups := _group_args(parsed))
    except (HydraException, OmegaConfBaseException) as error:
        return _of_another_group_choice(parsed, groups) or _first_line(error)
    for arg, override in parsed:
        key = override.key_or_group
        if key.startswith("hydra"):
            continue
        if override.type == OverrideType.DEL:
            return f"{shell_word(arg)} would remove a setting, which a run cannot do; set it instead: {key}=VALUE"
        if _is_group(override):
            continue
        if _node(base, key) is None:
            return _of_another_choice(arg, key, list(groups)) or _unknown_key(arg, key, base)
        if override.type != OverrideType.CHANGE:
            fixed = shell_word(f"{key}={arg.partition('=')[2]}")
            return f"{shell_word(arg)}: {key} is a setting already; set it without '+': {fixed}"
        if _has_interpolation(_choices(override)) and (problem := _interpolation_error(arg, key, base)):
            return problem
    try:  # as the run will have them: a text's ${ escaped, which OmegaConf checks otherwise
        compose_config(as_written([arg for arg, override in parsed if not override.is_sweep_override()]))
    except ConfigError as error:
        return str(error)
    except (HydraException, OmegaConfBaseException) as error:
        return _composition_error(error, parsed, base)
    return None


def _interpolation_error(arg: str, key: str, cfg: DictConfig) -> str | None:
    """The error for a ``${...}`` (text on the command line: :func:`as_written`) in a number or a boolean, or in a
    setting of a node that Hydra builds an object of (``sampler``, ``executor``: it resolves the node once more,
    reading the text as an interpolation after all)."""
    if isinstance(_node(cfg, key), (BooleanNode, FloatNode, IntegerNode)):
        value, form = arg.partition("=")[2], _value_form(cfg, key)
        return f"{shell_word(arg)}: {key} takes {form}, not {value!r} (${{...}} is text here, not an interpolation)"
    parts = key.split(".")
    if any("_target_" in _node(cfg, ".".join(parts[:end])) for end in range(1, len(parts))):
        return f"{shell_word(arg)}: {key} cannot hold ${{...}}, which building the {parts[0]} would read as an " \
            "interpolation; give the value itself"
    return None


def _is_group(override: Override) -> bool:
    """A choice of a config group (``sampler=scene``, ``hydra/launcher=...``)."""
    return override.key_or_group in GROUPS or "/" in override.key_or_group


def _group_args(parsed: list[tuple[str, Override]]) -> tuple[str, ...]:
    """The group choices (they say which settings exist), a sweep's (``-m model=a,b``) as its
    first (the group's first for ``glob(*)``: each job is checked as it runs)."""
    return tuple(f"{o.key_or_group}={(_choices(o) or group_choices(o.key_or_group))[0]}" if o.is_sweep_override()
                 else a for a, o in parsed if _is_group(o))


def _node(cfg: DictConfig, key: str) -> Any:
    """The node of a dotted key (its type and whether it takes null), ``None`` if there is none."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return None
        node = node._get_node(part)
    return node


def setting_names(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every key of a composed config, dotted (``sampler.interval_s``), nodes and leaves."""
    names = []
    for key in (key for key in map(str, cfg.keys()) if not key.startswith("_")):  # _target_: not a setting
        names.append(f"{prefix}{key}")
        if isinstance(node := cfg._get_node(key), DictConfig):
            names += setting_names(node, f"{prefix}{key}.")
    return names


def _of_another_choice(arg: str, key: str, group_overrides: list[str]) -> str | None:
    """``KEY is a setting of sampler=interval, not of sampler=scene`` where the key belongs to other choices of
    its group than the one this run has, else ``None``."""
    group = key.split(".", 1)[0]
    if group not in GROUPS:
        return None
    owners = [f"{group}={c}" for c in group_choices(group) if _node(compose_config([f"{group}={c}"]), key) is not None]
    if not owners:
        return None
    this_run = _choices_of(group_overrides)[group]
    return f"{shell_word(arg)}: {key} is a setting of {' and '.join(owners)}, not of {this_run}"


def _of_another_group_choice(parsed: list[tuple[str, Override]], group_overrides: tuple[str, ...]) -> str | None:
    """``sampler/dedup=default: sampler/dedup is a part of sampler=interval and sampler=scene, not of sampler=all``
    where a choice of a group inside a group (``sampler/dedup``) is given with a choice of the outer one that has no
    such part (Hydra says only ``No match in the defaults list``), else ``None``."""
    for arg, override in parsed:
        outer, _, _ = (group := override.key_or_group).rpartition("/")
        if outer not in GROUPS:
            continue
        others = [other for other in group_overrides if other != arg]
        try:
            this_run = _choices_of(others)[outer]
        except (HydraException, OmegaConfBaseException):
            continue  # the outer choice is wrong itself: Hydra's line says so
        owners = [f"{outer}={c}" for c in group_choices(outer) if group in _choices_of([f"{outer}={c}"])]
        if this_run not in owners:
            return f"{shell_word(arg)}: {group} is a part of {' and '.join(owners)}, not of {this_run}"
    return None


def _choices_of(group_overrides: list[str]) -> dict[str, str]:
    """The group choices a run with these overrides has, as ``{"sampler": "sampler=interval", "sampler/dedup":
    "sampler/dedup=default", ...}``.

    Raises:
        hydra.errors.HydraException: An override names no choice its group has.
    """
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        chosen = compose(config_name="config", overrides=group_overrides, return_hydra_config=True)
    return {group: f"{group}={choice}" for group, choice in chosen.hydra.runtime.choices.items()}


def _unknown_key(arg: str, key: str, cfg: DictConfig) -> str:
    """``unknown setting KEY; did you mean CLOSEST?`` (difflib over the config's keys, then over their last parts,
    so that ``interval_s=2`` finds ``sampler.interval_s``)."""
    names = setting_names(cfg) + list(GROUPS)
    closest = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if not closest:
        by_leaf = {name.rsplit(".", 1)[-1]: name for name in names}
        leaf = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_leaf), n=1, cutoff=0.75)
        closest = [by_leaf[leaf[0]]] if leaf else []
    where = f" (in {shell_word(arg)})" if arg.startswith(("+", "~")) else ""
    hint = f"did you mean {closest[0]}?" if closest else "python -m pipeline --help lists the settings"
    return f"unknown setting {key}{where}; {hint}"


def _composition_error(
    error: HydraException | OmegaConfBaseException, parsed: list[tuple[str, Override]], cfg: DictConfig
) -> str:
    """A wrong type as ``KEY=VALUE: KEY takes <type>, not 'VALUE'`` (none: ``KEY= is empty``); anything else as
    the first line of Hydra's message."""
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    key = getattr(cause, "full_key", None)
    arg = next((arg for arg, override in reversed(parsed) if override.key_or_group == key), None)
    if key is None or arg is None or _node(cfg, key) is None:
        return _first_line(error)
    if not (value := arg.partition("=")[2]).strip():  # shard=$SHARD, the variable unset
        return f"{key}= is empty (an unset variable?); {key} takes {_value_form(cfg, key)}"
    return f"{shell_word(arg)}: {key} takes {_value_form(cfg, key)}, not {value!r}"


def _value_form(cfg: DictConfig, key: str) -> str:
    """What a value of ``key`` looks like, in words (``a number``, ``true or false``, ...)."""
    node = _node(cfg, key)
    words = {FloatNode: "a number", IntegerNode: "a whole number", BooleanNode: "true or false",
             StringNode: "text", ListConfig: "a list ([a,b])", DictConfig: "a group of settings"}
    if (form := next((word for kind, word in words.items() if isinstance(node, kind)), None)) is None:
        return "a value of another form"  # video, export, ...: any form of value
    return f"{form} or null" if node._is_optional() else form


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def _with_fix(key: str, value: str) -> str:
    """``; write it as KEY="VALUE"`` (checked to parse back to ``value``), plus the way around
    quoting that the key has."""
    if key != key.strip():  # ' model=tiny': a space the shell kept in the word
        return f"; write it without the space: {shell_word(f'{key.strip()}={value}')}"
    if key in GROUPS or "/" in key:  # quoted, a choice is no choice either (model='a,')
        return f"; {key} takes one of: {', '.join(group_choices(key))}"
    if key.lstrip("+~") == "prompts" and "{" in value:
        # Quoted, the list would be one text; Hydra reads no key that is not a plain word.
        return "; put the prompts in a file, a YAML or JSON list of texts and {text: ..., schema: ...}: " \
            "prompts_file=FILE.yaml"
    fix = f"; write it as {shell_word(f'{key}={hydra_value(value)}')}"
    if value.startswith("[") and value.endswith("]"):  # quoted whole, a list would be one text, one name
        items = [item if item[:1] in "'\"" else hydra_value(item) for item in _list_items(value)]
        fix = f"; write it as {shell_word(key + '=[' + ','.join(items) + ']')}"
    if key.lstrip("+~") in ("prompt", "prompts"):
        return f"{fix}, or put the prompts in a file, one per line: prompts_file=FILE"
    if key.lstrip("+~") == "video":
        return f"{fix}, or list the videos in a manifest, one path per line: video=FILE.txt"
    return fix


def _ambiguous_prompts(key: str, value: str) -> str:
    """The error for :func:`pipeline.override_words.ambiguous_comma`, with both readings written
    out: every comma a separator, or a comma followed by a space part of its prompt (that prompt quoted)."""
    commas = top_level_commas(value)
    separate = _list_items(value, commas)
    joined = _list_items(value, [p for p in commas if not value[p + 1 : p + 2].isspace()])
    joined = [hydra_value(item, '"') if ", " in item and item[:1] not in "'\"" else item for item in joined]
    as_separate, as_joined = (shell_word(key + "=[" + ",".join(items) + "]") for items in (separate, joined))
    return (
        f"{shell_word(f'{key}={value}')} is ambiguous: Hydra splits prompts at every comma, also at one in a "
        f"sentence; for {len(separate)} prompts write {as_separate}, for {len(joined)} write {as_joined} "
        "(a comma inside a prompt needs quotes), or put the prompts in a file, one per line: prompts_file=FILE"
    )


def _bare_word(args: list[str], index: int) -> str:
    """The error for a word that is not ``key=value``: a path on disk is one to caption
    wherever it stands; else the rest of an unquoted value, or a path not there yet."""
    word = args[index]
    if _on_disk(word):
        return _caption_it(word)
    start = index
    while start > 0 and "=" not in args[start - 1] and not args[start - 1].startswith("-"):
        start -= 1
    if start > 0 and "=" in args[start - 1] and not args[start - 1].startswith("-"):
        end = index
        while end + 1 < len(args) and "=" not in args[end + 1] and not args[end + 1].startswith("-"):
            end += 1
        whole = " ".join(args[start - 1 : end + 1])
        return f"{args[index]!r} is not key=value; a value with spaces must be one argument: {shell_word(whole)}"
    if Path(word).suffix or "/" in word:  # a path: a video, folder, glob or list
        return _caption_it(word)
    return f"{word!r} is not key=value; see python -m pipeline --help"


def _on_disk(word: str) -> bool:
    try:
        return Path(word).exists()
    except OSError:  # not a name this system can have (too long)
        return False


def _caption_it(word: str) -> str:
    return f"{word!r} is not key=value; to caption it write {shell_word(f'video={word}')}"
