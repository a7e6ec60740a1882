"""GGUF type conversion with llama.cpp's quantize tool (the generated model's Q8_0 variant,
F16 copies of quantized text weights).

llama.cpp says what it does as it converts (a line per tensor) and why it failed, through its
log callback; here that goes nowhere while it converts, and its reason for a failure goes into
the one line that says so. Its file writes lose the ``errno``: a conversion that failed on a disk
left with no room is said as a full disk (``OSError`` ``ENOSPC``), which the callers say as the
folder that cannot be written, with its fix.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import WeightsError
from pipeline.paths import no_room
from pipeline.signals import quiet_callbacks

_LOG_ERROR = 4  # GGML_LOG_LEVEL_ERROR (0 none, 1 debug, 2 info, 3 warn, 5 continued)


def llama_quantize(source: Path, out: Path, file_type: int, threads: int = 0, requantize: bool = False) -> None:
    """Write the text model ``source`` as ``file_type`` (a ``LLAMA_FTYPE_*``) into ``out``.

    Args:
        source: A text-model GGUF.
        out: Where to write.
        file_type: The target type.
        threads: CPU threads (0: llama.cpp's choice, every hardware thread).
        requantize: Allow an already quantized source (its values are dequantized first).

    Raises:
        OSError: ``ENOSPC``: it failed, and the disk of ``out`` has no room left.
        WeightsError: llama.cpp reported another failure (its reason in the message).
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type
    params.nthread = threads
    params.allow_requantize = requantize
    with _llama_errors() as errors:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status == 0:
        return
    if no_room(out.parent):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))
    said = "".join(errors).strip().replace("\n", "; ")
    raise WeightsError(f"llama.cpp could not convert {source} (status {status}{f': {said}' if said else ''})")


@contextmanager
def _llama_errors() -> Iterator[list[str]]:
    """Keep what llama.cpp logs at error level in the list yielded, and drop the rest, for the
    ``with`` block; then its log callback is the one before again."""
    import llama_cpp

    errors: list[str] = []

    def keep(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == _LOG_ERROR:
            errors.append(text.decode("utf-8", errors="replace"))

    quiet_callbacks(keep)  # Ctrl-C meanwhile: no "Exception ignored" traceback
    callback = llama_cpp.llama_log_callback(keep)
    before, before_data = llama_cpp.llama_log_callback(), ctypes.c_void_p()
    llama_cpp.llama_log_get(ctypes.byref(before), ctypes.byref(before_data))
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    try:
        yield errors
    finally:
        llama_cpp.llama_log_set(before, before_data)
