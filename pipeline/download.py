"""Fetch a model's weights ahead of the first run:
``python -m pipeline.download [model=PRESET] [model.dir=DIR] [key=value ...]``.

A nightly server downloads the default model's 25 GB at install time, while someone watches,
instead of during its first night; a run finds the files where this put them (the Hugging
Face cache, or ``model.dir``). The arguments are the run's own overrides, so the same
``model=``/``model.dir=``/``model.text=`` settings name the same files. Where a run on this
machine would load the text model's F16 copy (``model.text_type``: ``f16``, or ``auto`` on a GPU
with room for it), this writes the copy too. Prints the two paths a run loads once the pair is
there and checked to fit; exits 1 with one line when it cannot be fetched (or an argument or
setting is wrong: the run's own checks, or the two paths cannot be written: ``>/dev/full``), 130
after one line on Ctrl-C, and without a word when their reader stopped early (``| head``, 141).
"""

from __future__ import annotations

import logging
import re
import signal
import sys

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import check_values, compose_config
from pipeline.errors import UserError, WeightsError
from pipeline.options import asks_help, unknown_option
from pipeline.overrides import checked_overrides
from pipeline.presets import caption_spec
from pipeline.runlog import console_logging
from pipeline.signals import printing_command, say_stopped, show

log = logging.getLogger(__name__)

USAGE = "usage: python -m pipeline.download [model=PRESET] [model.dir=DIR] [key=value ...]"


@printing_command
def main(argv: list[str] | None = None) -> int:
    """Fetch (or generate) the model files the overrides name; returns the exit code (1 with
    one line also where its output cannot be written: the files stay fetched)."""
    args = sys.argv[1:] if argv is None else argv
    if asks_help(args, f"{USAGE}\n\n{__doc__}"):
        return 0
    console_logging()
    logging.getLogger("gguf").setLevel(logging.WARNING)  # the tiny model's writer, file by file
    dashed = next((arg for arg in args if arg.startswith("-")), None)  # no option but --help
    if dashed:
        log.error("%s", unknown_option(dashed, ("--help",)))
        return 1
    try:
        cfg = compose_config(["video=unused", *checked_overrides(args)])
        check_values(cfg)
        files, _ = caption_spec(cfg).prepare()
    except WeightsError as error:
        log.error("%s", _as_download_advice(str(error)))
        return 1
    except UserError as error:
        log.error("%s", error)
        return 1
    except (HydraException, OmegaConfBaseException) as error:
        log.error("%s", str(error).splitlines()[0])
        return 1
    except KeyboardInterrupt:
        return say_stopped(signal.SIGINT, "; run it again to fetch the rest")
    paths = f"{files.loaded_text}\n{files.mmproj}"
    return show(paths, f"the model files are there: {files.loaded_text}, {files.mmproj}")


def _as_download_advice(message: str) -> str:
    """A run's missing-weights message, worded for this command: it names this command as the
    way to fetch the files ahead of a run, and says only that nothing is downloaded offline."""
    message = re.sub(r" \(python -m pipeline\.download [^()]*does it ahead of a run\)", "", message)
    return message.replace(
        "(HF_HUB_OFFLINE is set: nothing is downloaded)",
        "(HF_HUB_OFFLINE is set: unset it, where huggingface.co can be reached, to download them here)",
    )


if __name__ == "__main__":
    sys.exit(main())
