"""Fetch a model's weights ahead of the first run:
``python -m pipeline.download [model=PRESET] [model.dir=DIR] [key=value ...]``.

A nightly server downloads the default model's 25 GB at install time, while someone watches,
instead of during its first night; a run finds the files where this put them (the Hugging
Face cache, or ``model.dir``). The arguments are the run's own overrides, so the same
``model=``/``model.dir=``/``model.text=`` settings name the same files. Where a run on this
machine would load the text model's F16 copy (``model.text_type``: ``f16``, or ``auto`` on a GPU
with room for it), this writes the copy too. Prints the two paths a run loads once the pair is
there and checked to fit; exits 1 with one line when it cannot be fetched.
"""

from __future__ import annotations

import logging
import sys

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import compose_config
from pipeline.errors import UserError
from pipeline.presets import caption_spec

USAGE = "usage: python -m pipeline.download [model=PRESET] [model.dir=DIR] [key=value ...]"


def main(argv: list[str] | None = None) -> int:
    """Fetch (or generate) the model files the overrides name; returns the exit code."""
    args = sys.argv[1:] if argv is None else argv
    if any(arg in ("-h", "--help") for arg in args):
        print(f"{USAGE}\n\n{__doc__}")
        return 0
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(levelname)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gguf").setLevel(logging.WARNING)  # the tiny model's writer, file by file
    try:
        spec = caption_spec(compose_config(["video=unused", *args]))
        files, _ = spec.prepare()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (HydraException, OmegaConfBaseException) as error:
        print(f"error: {str(error).splitlines()[0]}\n{USAGE}", file=sys.stderr)
        return 1
    print(files.loaded_text)
    print(files.mmproj)
    return 0


if __name__ == "__main__":
    sys.exit(main())
