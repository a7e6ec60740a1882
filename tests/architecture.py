"""The house's parts, their rooms and the arrows allowed between them: the one table that
``tests/test_architecture.py`` checks the imports against and ``docs/architecture.md`` is
generated from (``python -m tests.architecture --write`` rewrites the doc's generated part).

A room is one module (``pipeline/cli.py``), named with what it owns; every room in the table
exists. A room may import any room of its own part and of the parts its part lists, all of them
further down the table, except what :data:`NEVER` forbids.
"""

from __future__ import annotations

import argparse
import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
BELOW = "anything below"


@dataclass(frozen=True)
class Part:
    """One row of the table.

    Attributes:
        name: The part's name.
        job: What the part as a whole is for.
        may_import: Part names (or single rooms of another part) it may import; :data:`BELOW`:
            every part further down.
        rooms: Its rooms, each with what it owns.
    """

    name: str
    job: str
    may_import: tuple[str, ...]
    rooms: dict[str, str]


PARTS: tuple[Part, ...] = (
    Part("Face", "what a person runs: the command line and the sub-commands' mains", (BELOW,), {
        "pipeline/__main__.py": "`python -m pipeline`: hands over to the command line",
        "pipeline/cli.py": "the run's command line: config, videos, lock, executor, exit code",
        "pipeline/sweeps.py": "a sweep's job that failed in a launcher's process of its own (JobFailed)",
        "pipeline/arguments.py": "the command line before Hydra: `--help`, `--version`, options and overrides",
        "pipeline/dry_run.py": "`dry_run=true`: what a run would do, from its plan",
        "pipeline/download.py": "`python -m pipeline.download`: fetch a preset's weights ahead of a run",
        "pipeline/status.py": "`python -m pipeline.status`: where a night stands, from its record",
        "pipeline/report/__main__.py": "`python -m pipeline.report`",
        "pipeline/export/__main__.py": "`python -m pipeline.export`",
    }),
    Part("Look", "reading results back for people: notebooks, pages, subtitle tracks",
         ("Stages", "Store", "pipeline/summary.py", "Base"), {
        "pipeline/results.py": "results as DataFrames for notebooks: counts, coverage, per-video summary",
        "pipeline/report/__init__.py": "the HTML report's public names: write_report, render_report, main",
        "pipeline/report/command.py": "the report's `key=value` arguments and its main",
        "pipeline/report/data.py": "what the pages are made from: run records, settings, video facts, tracks",
        "pipeline/report/pages.py": "rows and data made into pages through the Jinja2 templates (`templates/`)",
        "pipeline/report/write.py": "writing it: rows gathered, pages and their files written, stale ones removed",
        "pipeline/export/__init__.py": "exports: what is asked, for which videos, written where; its main",
        "pipeline/export/cues.py": "when each answer shows: a cue from its frame until the next",
        "pipeline/export/flat.py": "JSON Lines with the exact text, CSV safe in a spreadsheet",
        "pipeline/export/names.py": "where a subtitle track goes: names players load, the two layouts",
        "pipeline/video_files.py": "where a result's video file is here: the night's folder, its content checked",
        "pipeline/owed.py": "the report and exports a night owes (`_report-due`, `_export-due`) until written",
    }),
    Part("Loop", "one run: what to do, doing it, and its record",
         ("Exec", "Stages", "Caption", "Store", "Settings", "Base"), {
        "pipeline/plan.py": "the plan: what a run captions, skips (done, failed before) or leaves (still arriving)",
        "pipeline/run.py": "the run loop: rows, chunked commits, done markers, error records",
        "pipeline/summary.py": "the run record: written at start, finished at end, read by report and status",
    }),
    Part("Exec", "where frames are decoded and captioned", ("Settings", "Stages", "Caption", "Store", "Base"), {
        "pipeline/executors/__init__.py": "the executors package (how to add one)",
        "pipeline/executors/base.py": "the contract: Work, DecodeJob, FrameJob, Decoded, Captioned, Decoder, Executor",
        "pipeline/executors/frames.py": "what every executor does: VideoDecoder, answer_frames, this_process",
        "pipeline/executors/local.py": "`executor=local`: a decode thread feeding one captioner",
        "pipeline/executors/ray.py": "`executor=ray`: decode tasks and captioner actors",
        "pipeline/executors/ray_cluster.py": "`executor=ray`: finding and connecting to the cluster",
    }),
    Part("Settings", "the config: its schema, and a preset made into plain values",
         ("Caption", "Base"), {
        "pipeline/config.py": (
            "the Hydra schemas, their ConfigStore, composing without the command line, what goes into config_id"
        ),
        "pipeline/presets.py": "a composed config or preset made into a CaptionSpec or Captioner",
        "pipeline/overrides.py": "`key=value` overrides checked before Hydra, for the command line and the library",
        "pipeline/override_words.py": "a value as an override Hydra reads back as meant, and as one shell word",
    }),
    Part("Stages", "videos in, sampled frames out", ("Base",), {
        "pipeline/inputs.py": "finding videos (file, folder, glob, manifest), ids, shards, readiness",
        "pipeline/decode.py": "OpenCV decoding: VideoInfo, Frame, timestamps, VideoFacts",
        "pipeline/sampling.py": "samplers (all, interval, scene) and dedup: Sample",
        "pipeline/fingerprint.py": "a frame's fingerprint (hash and colours), which dedup compares",
        "pipeline/scenes.py": "shot detection and frame features for the scene sampler",
        "pipeline/thumbnails.py": "a frame's JPEG thumbnail, made and read back",
        "pipeline/probe.py": "what a file OpenCV cannot open is, from its first bytes",
    }),
    Part("Caption", "frames and questions in, answers out: knows no video, config or store", ("Base",), {
        "pipeline/caption/__init__.py": "Captioner, CaptionSpec (what a worker builds one from), questions",
        "pipeline/caption/settings.py": "a captioner's plain settings: ModelPreset, GenerationSettings, EngineKnobs",
        "pipeline/caption/formats.py": "chat formats of the LLaVA 1.6 variants",
        "pipeline/caption/weights.py": "model files: where they are, fetching, checking the pair, identity",
        "pipeline/caption/gpu_fit.py": "what fits the GPU: frames in flight, the F16 copy",
        "pipeline/caption/projector.py": "the CLIP projector GGUF: reading it, the reference copies",
        "pipeline/caption/convert.py": "llama.cpp's quantize, for the F16 copy and the tiny model",
        "pipeline/caption/layout.py": "LLaVA 1.6's anyres image layout: tiles, grid, token places",
        "pipeline/caption/tiny.py": "the generated tiny test model",
        "pipeline/caption/engine/__init__.py": "the engine's public names",
        "pipeline/caption/engine/records.py": "LoadSettings, AnswerSettings, Question, Answer, EngineStats",
        "pipeline/caption/engine/native.py": "llama.cpp itself: text model, lanes (contexts), devices, its log",
        "pipeline/caption/engine/scheduler.py": "Engine: admission and the batched decode step",
        "pipeline/caption/engine/sequence.py": "one answer's life: state, sampler, stops, finish reason",
        "pipeline/caption/engine/lanes.py": "the lane threads that share the frames in flight",
        "pipeline/caption/engine/grammar.py": "constrained answers (a grammar for structured output)",
        "pipeline/caption/engine/prompts.py": "the questions as the model sees them: template, tokens, embeddings",
        "pipeline/caption/engine/frames.py": "a frame's way in: prepared, each question fitted to a lane's cells",
        "pipeline/caption/engine/vision.py": "frame preparation and CLIP, in either image layout",
        "pipeline/caption/engine/source.py": "frames prepared ahead on background threads",
    }),
    Part("Store", "results on disk: Parquet chunks, markers, locks, digests", ("Base",), {
        "pipeline/chunks.py": "what a chunk file is: its name, strays, twins, the record of chunks read whole",
        "pipeline/store.py": "the Parquet schema, writing chunks, reading back (a chunk read whole)",
        "pipeline/video_facts.py": "per-video facts: each decode's `_video.json`, gathered in `_videos.parquet`",
        "pipeline/committed.py": "committed keys, chunks checked (damaged, twins, strays set aside), done markers",
        "pipeline/checksums.py": "SHA-256 of model files, cached by size and time",
        "pipeline/lock.py": "one run at a time per output_dir",
    }),
    Part("Base", "what every part may use; imports nothing of ours but Base", (), {
        "pipeline/__init__.py": "the package",
        "pipeline/files.py": "the one atomic writer, and the one opener of what it keeps (never blocking)",
        "pipeline/errors.py": "UserError and its kinds: one line for the user",
        "pipeline/ranges.py": "the numbers a setting takes (Range), and the one way a number outside them is said",
        "pipeline/paths.py": "paths as given, the user cache, why a path cannot be written (one line, the fix)",
        "pipeline/signals.py": "SIGINT/SIGTERM/SIGHUP as a clean stop; an unwritable stdout as one line",
        "pipeline/watchdog.py": "the stall watch",
        "pipeline/progress.py": "the progress bar",
        "pipeline/runlog.py": "the run's log file and crash records",
        "pipeline/listfile.py": "reading a list file: one item a line, or a YAML or JSON list",
        "pipeline/options.py": "the one `key=value` parser of the sub-commands, and the reading of Hydra's options",
        "pipeline/words.py": "counts and durations in the words every message uses, and text made safe to print",
        "pipeline/shapes.py": "what a record the pipeline keeps in output_dir must hold, checked before it is read",
        "pipeline/structured.py": "structured answers: prompt entries with a JSON Schema, their checks, column types",
    }),
)

# A module longer than this is doing more than one job: split it by reason to change.
MAX_MODULE_LINES = 500

CONCRETE_EXECUTORS = ("pipeline/executors/local.py", "pipeline/executors/ray.py", "pipeline/executors/ray_cluster.py")

# (importers, imported, why): part names or rooms on either side.
NEVER: tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...] = (
    (("Caption", "Stages"), ("Settings", "Store", "Loop", "Exec", "Face"), "the core knows no application"),
    (
        ("Loop", "pipeline/executors/base.py"),
        CONCRETE_EXECUTORS,
        "the run loop and the contract know executors only through the contract",
    ),
)


@dataclass(frozen=True)
class Imported:
    """One import in a module: the module it names, the names it takes, where it is."""

    module: str
    names: tuple[str, ...]
    line: int


def module_of(path: Path, package_root: Path) -> str:
    """The dotted name of the module at ``path`` (``package_root`` holds the package folder)."""
    parts = path.relative_to(package_root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def file_of(module: str, package_root: Path) -> str:
    """The room-style path of ``module`` (``pipeline/x.py`` or ``pipeline/x/__init__.py``)."""
    base = package_root / module.replace(".", "/")
    if base.is_dir():
        return f"{module.replace('.', '/')}/__init__.py"
    return f"{module.replace('.', '/')}.py"


def imports_in(path: Path, package_root: Path) -> list[Imported]:
    """The ``pipeline`` modules that the file at ``path`` imports, anywhere in it (functions
    and ``TYPE_CHECKING`` blocks too); ``from package import module`` names that module (not
    the package, which every import of one of its modules runs first anyway)."""
    module = module_of(path, package_root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [Imported(alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*anchor, *([source] if source else [])])
            folder = package_root / source.replace(".", "/")
            names = tuple(alias.name for alias in node.names)
            modules = [n for n in names if (folder / n).is_dir() or (folder / f"{n}.py").is_file()]
            found += [Imported(f"{source}.{name}", (), node.lineno) for name in modules]
            if len(modules) < len(names):
                found.append(Imported(source, tuple(n for n in names if n not in modules), node.lineno))
    return [i for i in found if i.module == "pipeline" or i.module.startswith("pipeline.")]


def room_of(file: str, parts: Iterable[Part] = PARTS) -> tuple[Part, str] | None:
    """The part and room (the module itself) that hold ``file`` (``pipeline/x/y.py``), or ``None``."""
    for part in parts:
        if file in part.rooms:
            return part, file
    return None


def _matches(side: str, part: Part, room: str) -> bool:
    return side in (part.name, room)


def violations(package_root: Path, parts: tuple[Part, ...] = PARTS) -> list[str]:
    """Every breach of the table in the ``pipeline`` package under ``package_root``: a module
    outside the table, an arrow the table does not allow (up it, or to a part not listed),
    one of :data:`NEVER`, a private name taken across rooms, a circle, a module over
    :data:`MAX_MODULE_LINES` lines."""
    order = {part.name: index for index, part in enumerate(parts)}
    files = sorted((package_root / "pipeline").rglob("*.py"))
    problems = []
    graph: dict[str, set[str]] = {}
    for path in files:
        file = path.relative_to(package_root).as_posix()
        held = room_of(file, parts)
        if held is None:
            problems.append(f"{file} is in no room of the table (tests/architecture.py PARTS)")
            continue
        part, room = held
        n_lines = len(path.read_text().splitlines())
        if n_lines > MAX_MODULE_LINES:
            problems.append(f"{file} has {n_lines} lines, over {MAX_MODULE_LINES}: split it by reason to change")
        module = module_of(path, package_root)
        graph.setdefault(module, set())
        for imported in imports_in(path, package_root):
            if imported.module == module:
                continue
            graph[module].add(imported.module)
            target_file = file_of(imported.module, package_root)
            where = f"{file}:{imported.line} imports {imported.module}"
            private = [n for n in imported.names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{where}: private name {', '.join(private)} taken across rooms")
            target = room_of(target_file, parts)
            if target is None:
                problems.append(f"{where}, which is in no room of the table")
                continue
            target_part, target_room = target
            nevers = [
                f"{where}: {part.name} never imports {high} ({why})"
                for lows, highs, why in NEVER
                for low in lows
                for high in highs
                if _matches(low, part, room) and _matches(high, target_part, target_room)
            ]
            problems += nevers
            if nevers or target_part is part:
                continue
            if order[target_part.name] < order[part.name]:
                problems.append(f"{where}: an arrow up the table ({part.name} -> {target_part.name})")
            elif BELOW not in part.may_import and not {target_part.name, target_room} & set(part.may_import):
                problems.append(
                    f"{where}: {part.name} may import only {', '.join(part.may_import) or 'nothing of ours'}"
                )
    problems += [f"circle: {' -> '.join(cycle)}" for cycle in circles(graph)]
    return problems


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (first module repeated at the end) for each strongly connected group of
    modules in ``graph`` (module -> the modules it imports) that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the package is small enough to recurse
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(sorted(group), graph) for group in groups]


def _cycle_in(group: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A path from the group's first module back to it, inside the group."""
    members = set(group)
    start = group[0]
    path = [start]
    seen = {start}
    while True:
        here = path[-1]
        following = sorted(graph.get(here, set()) & members)
        if start in following:
            return [*path, start]
        step = next((m for m in following if m not in seen), following[0])
        path.append(step)
        seen.add(step)


# -- the doc ---------------------------------------------------------------------------------

BEGIN = "<!-- generated from tests/architecture.py by `python -m tests.architecture --write`: edit the table there -->"
END = "<!-- end of the generated part -->"


def generated_doc(parts: tuple[Part, ...] = PARTS) -> str:
    """The doc's generated part: the parts with their arrows, the nevers, every room."""
    lines = [BEGIN, "", "| part | what it is for | may import |", "|---|---|---|"]
    for part in parts:
        allowed = ", ".join(f"`{p}`" if "/" in p else p for p in part.may_import) or "nothing of ours"
        lines.append(f"| {part.name} | {part.job} | {allowed} |")
    lines += ["", "Never:", ""]
    for lows, highs, why in NEVER:
        lines.append(f"- {_either(lows)} importing {_either(highs)}: {why};")
    lines += [
        "- an arrow up the table, a circle between modules, or a private name (`_x`) taken from "
        "another room;",
        f"- a module over {MAX_MODULE_LINES} lines: split it by reason to change.",
        "",
    ]
    for part in parts:
        lines += [f"### {part.name}", ""]
        lines += [f"- `{room}`: {owns}" for room, owns in part.rooms.items()]
        lines.append("")
    lines.append(END)
    return "\n".join(lines)


def _either(sides: tuple[str, ...]) -> str:
    names = [f"`{side}`" if "/" in side else side for side in sides]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def doc_part(text: str) -> str | None:
    """The generated part of the doc's text, or ``None`` when its markers are missing."""
    if BEGIN not in text or END not in text:
        return None
    return text[text.index(BEGIN) : text.index(END) + len(END)]


def main() -> None:
    """Print the generated part, or with ``--write`` put it into the doc."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help=f"rewrite the generated part of {DOC}")
    if not parser.parse_args().write:
        print(generated_doc())
        return
    text = DOC.read_text()
    old = doc_part(text)
    if old is None:
        raise SystemExit(f"{DOC} has no generated part; put the markers {BEGIN!r} and {END!r} in it")
    DOC.write_text(text.replace(old, generated_doc()))


if __name__ == "__main__":
    main()
