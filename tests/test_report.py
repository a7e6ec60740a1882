"""Tests of the HTML report (``pipeline.report``), in the end as headless Chromium renders it.

Chromium runs without Selenium: the test opens a copy of the page with a small probe script
that, after ``onload``, writes what the browser saw (did every image load, which answer text
is on the page) into a ``<pre id="result">``, and reads it back with ``--dump-dom``.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import UserError
from pipeline.report import main, printable, render_report, write_report
from pipeline.results import load_results
from pipeline.store import StoreError, read_metadata
from tests.conftest import (
    SAMPLE_VIDEO,
    chromium,
    default_thumbnail,
    last_run,
    needs_chromium,
    probe_result,
    result_row,
    run_cli,
    run_without_results,
    write_results,
    write_video,
)

TRICKY = '<script>alert(1)</script> & \x18<|im_start|>\ufffd "quoted"\r\nline two'

PROBE = """<script>
// Thumbnails load lazily; make every one load now, so that onload waits for them all.
document.querySelectorAll("img").forEach((image) => { image.loading = "eager"; });
window.addEventListener("load", () => {
  const texts = (selector) => Array.from(document.querySelectorAll(selector), (e) => e.textContent);
  const pre = document.createElement("pre");
  pre.id = "result";
  pre.textContent = JSON.stringify({
    images: Array.from(document.images, (i) => ({ok: i.complete && i.naturalWidth > 0})),
    answers: texts(".answer"),
    header: document.querySelector("header.run") ? document.querySelector("header.run").innerText : "",
    errors: texts(".error-text, .video-error"),
    frames: Array.from(document.querySelectorAll(".frame"), (e) => e.id),
  });
  document.body.append(pre);
});
</script>"""


@pytest.fixture
def output_dir(tmp_path: Path) -> Path:
    """Two videos: ``b`` with 2 frames x 2 prompts (tricky answer text, one failed answer)
    and thumbnails; ``a`` with a video-level error only."""
    red, green = (
        default_thumbnail(np.full((360, 640, 3), c, np.uint8)) for c in ((200, 0, 0), (0, 200, 0))
    )
    rows = [
        result_row("b", 0, prompt_id="p1", answer=TRICKY, thumbnail=red),
        result_row(
            "b", 0, prompt_id="p2", prompt="Colour?", answer="red & <b>bold</b>", thumbnail=red
        ),
        result_row("b", 50, prompt_id="p1", answer="grass", thumbnail=green),
        result_row(
            "b",
            50,
            prompt_id="p2",
            prompt="Colour?",
            status="error",
            answer=None,
            error="sequence <failed>",
            thumbnail=green,
        ),
        result_row("a", None, error="not a readable video: /videos/a.mp4"),
    ]
    write_results(tmp_path / "out", rows)
    return tmp_path / "out"


def browse(page: Path, tmp_path: Path) -> dict[str, Any]:
    """What Chromium saw of ``page`` after onload (see ``PROBE``); the probe copy sits beside
    the page, so its relative links resolve."""
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(
        page.read_text(encoding="utf-8").replace("</body>", f"{PROBE}</body>"), encoding="utf-8"
    )
    return probe_result(tmp_path, probe)


def screenshot(page: Path, tmp_path: Path) -> Path:
    """A PNG of the page, kept as a test artifact (its path is printed)."""
    shot = tmp_path / f"{page.stem}.png"
    chromium(
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,1600",
        "--hide-scrollbars",
        page.as_uri(),
    )
    print(f"report screenshot: {shot}")
    assert shot.stat().st_size > 0
    return shot


def shown_answers(df: pd.DataFrame) -> list[str]:
    """The ok answers of ``df`` as the page shows them."""
    return sorted(printable(answer) for answer in df.loc[df["status"] == "ok", "answer"])


def test_answers_are_escaped(output_dir: Path) -> None:
    page = render_report(load_results(output_dir), "t")

    assert "<script>alert(1)</script>" not in page and "<b>bold</b>" not in page
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; \u2418&lt;|im_start|&gt;\ufffd"
    assert f"{escaped} &#34;quoted&#34;\u240d\nline two" in page
    assert "sequence &lt;failed&gt;" in page
    assert "\x18" not in page and "\r" not in page


def relative_links(page: Path) -> list[str]:
    """The page's href/src values that point at files beside it (not anchors, data, file://)."""
    values = re.findall(r'(?:href|src)="([^"]*)"', page.read_text(encoding="utf-8"))
    return [html.unescape(v) for v in values if not v.startswith(("#", "data:", "file:", "http"))]


def assert_links_resolve(page: Path) -> None:
    for link in relative_links(page):
        target = (page.parent / unquote(link.split("#", 1)[0])).resolve()
        assert target.is_file(), f"{page.name} links {link}, which is not there"


def test_page_is_self_contained(output_dir: Path) -> None:
    page = render_report(load_results(output_dir), "t")

    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == 2  # one thumbnail per frame, shared by its prompts
    assert all(source.startswith("data:image/jpeg;base64,") for source in sources)
    assert not re.search(r"https?://|<script|<link|<iframe|@import", page)


def test_frames_have_anchors_and_links_to_their_time(output_dir: Path) -> None:
    page = render_report(load_results(output_dir), "t")

    assert 'id="vb-f50"' in page and 'href="#vb-f50"' in page
    assert 'href="file:///videos/b.mp4#t=2.000"' in page
    assert page.index("00:00:00.000") < page.index("00:00:02.000")
    assert "config cfg1" not in page  # one config_id: no need to name it


def test_answers_name_their_settings_when_a_video_has_several(tmp_path: Path) -> None:
    write_results(tmp_path, [result_row(config_id="cfgA"), result_row(config_id="cfgB", model="llava16_34b")])

    page = render_report(load_results(tmp_path), "t")

    assert "tiny config cfgA · " in page and "llava16_34b config cfgB · " in page


def test_errors_are_highlighted(output_dir: Path) -> None:
    page = render_report(load_results(output_dir), "t")

    assert page.count('class="frame has-error"') == 1
    assert '<div class="video-error">video error: not a readable video: /videos/a.mp4</div>' in page
    assert '<span class="bad">1 error</span>' in page


def test_write_report_writes_beside_the_results_where_parquet_readers_skip_it(
    output_dir: Path,
) -> None:
    before = load_results(output_dir)

    page = write_report(output_dir)

    assert page == output_dir / "_report.html"
    assert page.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    pd.testing.assert_frame_equal(load_results(output_dir), before)


def test_write_report_for_one_video(output_dir: Path) -> None:
    page = write_report(output_dir, video_id="a")

    assert page.name == "_report-a.html"
    text = page.read_text(encoding="utf-8")
    assert "/videos/a.mp4" in text and "/videos/b.mp4" not in text
    with pytest.raises(UserError, match=r"video_id=zz is not in .* \(it has: a, b\)"):
        write_report(output_dir, video_id="zz")


def test_thumbnails_are_stored_once_and_referenced(output_dir: Path) -> None:
    page = write_report(output_dir)

    text = page.read_text(encoding="utf-8")
    thumbs = sorted((output_dir / "_report_files" / "thumbs").iterdir())
    sources = re.findall(r'<img src="([^"]+)" loading="lazy"', text)
    assert len(thumbs) == 2  # two frames, four rows: a file per distinct JPEG
    assert sorted((page.parent / s).resolve() for s in sources) == thumbs
    assert "data:image" not in text
    assert_links_resolve(page)


def test_one_jpeg_shared_by_two_frames_is_one_file(tmp_path: Path) -> None:
    same = default_thumbnail(np.full((90, 160, 3), 128, np.uint8))
    write_results(tmp_path, [result_row("v", 0, thumbnail=same), result_row("v", 25, thumbnail=same)])

    write_report(tmp_path)

    assert len(list((tmp_path / "_report_files" / "thumbs").iterdir())) == 1


def test_report_links_each_videos_subtitle_tracks(output_dir: Path) -> None:
    page = write_report(output_dir)

    text = page.read_text(encoding="utf-8")
    assert 'href="_export/b/b.prompt1.vtt" title="Describe this frame."' in text
    assert 'href="_export/b/b.prompt2.vtt" title="Colour?"' in text
    assert (output_dir / "_export" / "b" / "b.prompt1.vtt").read_text(encoding="utf-8").startswith("WEBVTT")
    # The videos are not on this machine: no player, only the links.
    assert "<video" not in text


def test_a_report_is_written_even_where_the_tracks_cannot_be(
    output_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def cannot_write(*args: object, **kwargs: object) -> None:
        raise StoreError(f"cannot write {output_dir}/_export: Read-only file system")

    monkeypatch.setattr("pipeline.report.write.write_tracks", cannot_write)

    page = write_report(output_dir, tmp_path / "elsewhere" / "report.html")

    text = page.read_text(encoding="utf-8")
    assert "<article" in text and "_export/" not in text  # no links to files that are not there
    assert "subtitle tracks not written, so not linked: cannot write" in caplog.text
    assert_links_resolve(page)


def test_a_large_report_gets_pages_per_video(tmp_path: Path) -> None:
    thumbs = [default_thumbnail(np.full((90, 160, 3), (i * 40, 90, 200), np.uint8)) for i in range(5)]
    rows = [result_row("b", 25 * i, thumbnail=thumbs[i]) for i in range(5)]
    rows += [result_row("c", 25 * i, thumbnail=thumbs[i]) for i in range(3)]
    write_results(tmp_path, rows)

    page = write_report(tmp_path, page_frames=2)

    files = tmp_path / "_report_files"
    pages = sorted(p.name for p in files.glob("*.html"))
    assert pages == ["b-2.html", "b-3.html", "b.html", "c-2.html", "c.html"]
    index = page.read_text(encoding="utf-8")
    assert "<article" not in index
    assert 'href="_report_files/b.html">1</a> <a href="_report_files/b-2.html">2</a>' in index
    frames = []
    for name in pages:
        text = (files / name).read_text(encoding="utf-8")
        cards = re.findall(r'<article class="frame[^"]*" id="([^"]+)"', text)
        assert 1 <= len(cards) <= 2
        frames += cards
        assert '<a href="../_report.html">← all videos</a>' in text
        assert_links_resolve(files / name)
    assert sorted(frames) == sorted([f"vb-f{25 * i}" for i in range(5)] + [f"vc-f{25 * i}" for i in range(3)])
    assert len(list((files / "thumbs").iterdir())) == 5
    assert_links_resolve(page)

    # Written again on one page, the video pages of the paged report go.
    write_report(tmp_path)
    assert not list(files.glob("*.html"))
    assert len(list((files / "thumbs").iterdir())) == 5
    assert index != page.read_text(encoding="utf-8")


def test_inline_report_is_one_self_contained_file(output_dir: Path) -> None:
    page = write_report(output_dir, page_frames=1, inline=True)

    text = page.read_text(encoding="utf-8")
    assert text.count('src="data:image/jpeg;base64,') == 2
    assert not (output_dir / "_report_files").exists()
    assert text.count("<article") == 2


def test_report_of_an_empty_output_dir_says_so(tmp_path: Path) -> None:
    assert "No results yet." in write_report(run_without_results(tmp_path)).read_text(encoding="utf-8")


def test_command_line(output_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pages" / "report.html"

    assert main([f"output_dir={output_dir}", f"out={out}", "video_id=b"]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert out.is_file()
    assert main(["output_dir"]) == 1
    assert "bad argument 'output_dir'" in capsys.readouterr().err
    assert main(["out=x.html"]) == 1
    assert "output_dir=... is required" in capsys.readouterr().err
    assert main([f"output_dir={output_dir}", "page_frames=0"]) == 1
    assert "page_frames=0 is out of range: page_frames must be >= 1" in capsys.readouterr().err
    assert main([f"output_dir={output_dir}", "inline=maybe"]) == 1
    assert "inline must be true or false" in capsys.readouterr().err
    assert main([f"output_dir={tmp_path / 'missing'}"]) == 1
    assert "is not a folder" in capsys.readouterr().err
    folder = tmp_path / "not yet"
    assert main([f"output_dir={output_dir}", f"out={folder}/"]) == 1  # a folder to be, not a page
    assert f"out={folder}/ names a folder (it ends in /); give the page's file name" in capsys.readouterr().err
    assert not folder.exists()


def test_python_dash_m(output_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.report", f"output_dir={output_dir}"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert (output_dir / "_report.html").is_file()


def header_text(page: Path) -> str:
    """The page's header as text: a ``label`` line, then its value, for each item."""
    found = re.search(r'<header class="run">(.*?)</header>', page.read_text(encoding="utf-8"), re.DOTALL)
    assert found, page
    text = re.sub(r"</dt>\s*<dd>", "\n", found[1])
    text = re.sub(r"</dd>\s*", "\n", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def run_shown(run: dict[str, Any]) -> str:
    """How the header shows a run's start and counts."""
    return (
        f"{run['started'][:19].replace('T', ' ')} UTC · videos: {run['videos_done']} done, "
        f"{run['videos_skipped']} skipped, {run['videos_failed']} failed · {run['frames']} frame"
    )


def test_the_run_line_counts_the_videos_a_night_left_waiting(cli_base: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(SAMPLE_VIDEO, inbox / "old.mp4")
    os.utime(inbox / "old.mp4", (time.time() - 7200, time.time() - 7200))
    write_video(inbox / "fresh.mp4", n_frames=3)  # just written: a copy under way, for all a night knows

    night = run_cli(*cli_base, f"video={inbox}", "max_frames=1", "min_age_s=3600", "report=true")

    assert night.returncode == 0, night.stderr
    record = last_run(out)
    assert (record["videos_done"], record["videos_waiting"]) == (1, 1)
    started = record["started"][:19].replace("T", " ")
    counts = "1 done, 0 skipped, 0 failed, 1 waiting (left for the next run) · 1 frame in "
    shown = f"last run\n{started} UTC · videos: {counts}"
    assert shown in header_text(out / "_report.html")


def test_two_sampled_configs_show_what_tells_them_apart(cli_base: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    for seed in (1, 2):  # top_k, top_p and seed are in the config_id of a sampled answer
        night = run_cli(*cli_base, f"video={SAMPLE_VIDEO}", "max_frames=1", "generation.temperature=0.7",
                        f"generation.seed={seed}", "report=true")
        assert night.returncode == 0, night.stderr
    header = header_text(out / "_report.html")
    for seed in (1, 2):
        assert f"max_tokens 8, temperature 0.7, top_k 40, top_p 0.95, seed {seed}, max_frames 1" in header


def test_the_report_shows_the_run_that_wrote_it_and_an_idle_night_does_not_hide_it(
    cli_base: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    first = run_cli(*cli_base, f"video={SAMPLE_VIDEO}", "max_frames=2")
    assert first.returncode == 0, first.stderr
    writer = last_run(out)

    header = header_text(out / "_report.html")
    (engine,) = writer["engines"]  # the engine's decisions, read from the run's record
    assert f"last run\n{run_shown(writer)}" in header and header.endswith(
        f"exit 0engine local on {engine['host']}: text weights as they are, "
        f"{engine['frames_in_flight']} frames in flight, 1 lane, 1 CLIP thread"
    )
    assert "last run that captioned" not in header and "all runs" not in header

    idle = run_cli(*cli_base, f"video={SAMPLE_VIDEO}", "max_frames=2")
    assert "nothing to do" in idle.stderr, idle.stderr
    idle_run = last_run(out)
    # The sub-command of the video-caption script, as python -m pipeline.report.
    made = run_cli("report", f"output_dir={out}")
    assert made.returncode == 0, made.stderr

    header = header_text(out / "_report.html")
    assert f"last run\n{run_shown(idle_run)}" in header
    assert f"last run that captioned\n{run_shown(writer)}" in header
    assert "all runs\n2 runs recorded: 2 frames in" in header

    # A night whose every video failed captioned nothing either: it is not the one shown as captioning.
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n")
    assert run_cli(*cli_base, f"video={notes}").returncode == 3
    assert run_cli(*cli_base, f"video={notes}").returncode == 0  # failed before: nothing to do
    assert run_cli("report", f"output_dir={out}").returncode == 0
    assert f"last run that captioned\n{run_shown(writer)}" in header_text(out / "_report.html")


def test_track_labels_follow_the_numbered_prompts(tmp_path: Path) -> None:
    # Prompt ids sort unlike the prompts' order: the tracks are numbered as the list is.
    prompts = [("p9", "First question?"), ("p1", "Second question?")]
    rows = [result_row("v", frame, prompt_id=pid, prompt=text) for frame in (0, 25) for pid, text in prompts]
    write_results(tmp_path, rows)

    page = write_report(tmp_path).read_text(encoding="utf-8")

    numbered = re.findall(r'<li value="(\d+)">([^<]*) <span', page)
    assert numbered == [("1", "First question?"), ("2", "Second question?")]
    links = re.findall(r'<a href="[^"]*" title="([^"]*)">VTT (\d+)</a>', page)
    # In the overview and in the video's section.
    assert sorted((number, title) for title, number in links) == [
        ("1", "First question?"), ("1", "First question?"), ("2", "Second question?"), ("2", "Second question?")
    ]


def test_a_cards_answers_carry_their_prompts_numbers_in_order(tmp_path: Path) -> None:
    # One text asked twice (say with two schemas): the numbers tell the answers apart, and each
    # card lists them in the header's order, however the rows were stored.
    rows = [
        result_row("v", 0, prompt_id="p9", prompt="How many?", answer="first at 0"),
        result_row("v", 0, prompt_id="p1", prompt="How many?", answer="second at 0"),
        result_row("v", 25, prompt_id="p1", prompt="How many?", answer="second at 25"),
        result_row("v", 25, prompt_id="p9", prompt="How many?", answer="first at 25"),
    ]
    write_results(tmp_path, rows)

    page = write_report(tmp_path).read_text(encoding="utf-8")

    shown = re.findall(r'<div class="prompt">([^<]*)</div><div class="answer">([^<]*)</div>', page)
    assert shown == [
        ("1. How many?", "first at 0"), ("2. How many?", "second at 0"),
        ("1. How many?", "first at 25"), ("2. How many?", "second at 25"),
    ]


def test_an_unreadable_file_gets_its_error_and_no_player(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")  # it is here, but nothing of it could be read
    write_results(tmp_path / "out", [result_row("a", None, video_path=str(bad), error="not a readable video")])

    page = write_report(tmp_path / "out").read_text(encoding="utf-8")

    assert "video error: not a readable video" in page
    assert "<video" not in page


def test_prompt_tokens_say_what_they_count(output_dir: Path) -> None:
    page = render_report(load_results(output_dir), "t")

    assert "400 prompt tokens (summed over answers: a frame's image counts once per prompt)" in page


@needs_chromium
def test_chromium_shows_thumbnails_and_answers(output_dir: Path, tmp_path: Path) -> None:
    page = write_report(output_dir)
    df = load_results(output_dir)

    seen = browse(page, tmp_path)
    screenshot(page, tmp_path)

    assert len(seen["images"]) == 2 and all(image["ok"] for image in seen["images"]), seen["images"]
    assert sorted(seen["answers"]) == shown_answers(df)
    assert seen["errors"] == [
        "video error: not a readable video: /videos/a.mp4",
        "error: sequence <failed>",
    ]
    assert sorted(seen["frames"]) == ["vb-f0", "vb-f50"]


@needs_chromium
def test_report_of_a_tiny_run_in_chromium(cli_base: list[str], tmp_path: Path) -> None:
    done = run_cli(*cli_base, f"video={SAMPLE_VIDEO}", "max_frames=3")
    assert done.returncode == 0, done.stderr
    df = load_results(tmp_path / "out")
    page = write_report(tmp_path / "out", tmp_path / "report.html")

    seen = browse(page, tmp_path)
    screenshot(page, tmp_path)

    assert sorted(seen["answers"]) == shown_answers(df)
    assert len(seen["images"]) == df["frame_index"].nunique() == 3
    assert all(image["ok"] for image in seen["images"]), seen["images"]
    # The header: the run's model (and its files' SHA-256), settings, prompt, counts and speed.
    (part,) = (tmp_path / "out").glob("*/part-*.parquet")
    metadata = read_metadata(part)
    header = seen["header"]
    text_model = Path(metadata["model_files"]["text_model"]).name
    assert header.startswith(f"model\ntiny · {text_model} sha256 ")
    assert f"sha256 {metadata['model_sha256']['text_model'][:12]}…" in header
    assert "sampler\ninterval (interval_s=1.0)" in header
    assert "generation\nmax_tokens 8, temperature 0.0, max_frames 3" in header
    assert "prompts\nDescribe this frame in one sentence. (3 answers, id " in header
    assert f"results\n1 video · 3 frames · 3 answers ({int(df.finish_reason.eq('length').sum())} cut" in header
    run = last_run(tmp_path / "out")
    shown = re.search(r"3 frames in ([0-9.]+) s wall · ([0-9.]+) frames/s · exit 0", header)
    assert shown, header
    # Short runs show two decimals, longer ones one: compare the value, not a format (a tenth
    # rounded is off by up to 0.05, and by a hair more in binary: 1.25 shows as "1.2").
    assert float(shown[1]) == pytest.approx(run["wall_s"], abs=0.051)
    assert shown[2] == f"{run['frames_per_s']:.2f}"


@needs_chromium
def test_a_report_of_2000_frames_opens_in_chromium(tmp_path: Path) -> None:
    """4 videos x 500 frames x 2 prompts, written directly (a real run of this size is the
    benchmark in BENCHMARKS.md): the report pages per video, and a video's page of 500 cards
    opens with every thumbnail and answer."""
    rows = []
    for v in range(4):
        for i in range(500):
            thumbnail = default_thumbnail(np.full((144, 256, 3), ((v * 60 + i) % 256, i % 200, 90), np.uint8))
            for p, prompt in (("p1", "Describe this frame."), ("p2", "What colours dominate?")):
                rows.append(result_row(f"cam{v}", i, prompt_id=p, prompt=prompt,
                                       answer=f"cam {v} frame {i}: {prompt.lower()} " * 3, thumbnail=thumbnail))
    write_results(tmp_path / "out", rows)

    page = write_report(tmp_path / "out")

    files = tmp_path / "out" / "_report_files"
    assert sorted(p.name for p in files.glob("*.html")) == [f"cam{v}.html" for v in range(4)]
    sizes = {p.name: p.stat().st_size for p in [page, *files.glob("*.html")]}
    thumbs = list((files / "thumbs").iterdir())
    print(f"2,000 frames: pages {sizes}, {len(thumbs)} thumbnails, {sum(t.stat().st_size for t in thumbs):,} bytes")
    assert len(thumbs) == len({row["thumbnail"] for row in rows})  # a file per distinct JPEG
    index = browse(page, tmp_path)
    assert index["frames"] == [] and index["images"] == []
    seen = browse(files / "cam1.html", tmp_path)
    assert len(seen["frames"]) == 500 and len(seen["answers"]) == 1000
    assert len(seen["images"]) == 500 and all(image["ok"] for image in seen["images"])
