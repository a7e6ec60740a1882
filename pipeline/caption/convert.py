"""GGUF type conversion with llama.cpp's quantize tool (the generated model's Q8_0 variant,
F16 copies of quantized text weights)."""

from __future__ import annotations

import ctypes
from pathlib import Path

from pipeline.errors import WeightsError


def llama_quantize(source: Path, out: Path, file_type: int, threads: int = 0, requantize: bool = False) -> None:
    """Write the text model ``source`` as ``file_type`` (a ``LLAMA_FTYPE_*``) into ``out``.

    Args:
        source: A text-model GGUF.
        out: Where to write.
        file_type: The target type.
        threads: CPU threads (0: llama.cpp's choice, every hardware thread).
        requantize: Allow an already quantized source (its values are dequantized first).

    Raises:
        WeightsError: llama.cpp reported a failure.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type
    params.nthread = threads
    params.allow_requantize = requantize
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0:
        raise WeightsError(f"llama.cpp could not convert {source} (status {status})")
