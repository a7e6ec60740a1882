"""What the GPU's free memory decides: F16 text weights, and how many frames fit in flight.

Both are decided once per process where the engine runs (:meth:`pipeline.caption.CaptionSpec.prepare`,
for the local executor and for each Ray actor on its own machine), from the model, the settings
and that machine's GPU, and recorded in the run summary.

**Text weights** (``model.text_type``). With the README's CUDA build (``GGML_CUDA_FORCE_CUBLAS``),
llama.cpp multiplies quantized weights (Q5_K_M, Q8_0) by first dequantizing all of them to
F16, in every ``llama_decode`` of more than 8 tokens: every prefill, and every decode step of
more than 8 sequences. F16 weights skip that pass: on an H200, 5.2 -> 6.4 frames/s with one
prompt and 3.0 -> 4.8 with three (BENCHMARKS.md, "F16 text weights"). The copy holds the values
the quantized file stands for (llama.cpp's own quantize tool dequantizes them once, on the
CPU, to the same F16 values that pass makes), at 2 bytes a weight: about 14.5 GB for a 7B
model, 69 GB for the 34B. It is the same model: its answers are those of the file it was made
from, so ``config_id`` does not tell the two apart (:func:`pipeline.config.config_id`).

* ``keep``: load the file as it is;
* ``f16``: load its F16 copy, made once and kept in ``model.dir`` (else in the user cache,
  :func:`pipeline.paths.user_cache_dir`) as ``<name>.<fingerprint>.F16.gguf``: named by the
  source's content (:func:`~pipeline.caption.weights.model_fingerprint`), so two models of one
  file name never share a copy, and a changed file gets a new one;
* ``auto`` (the default): ``f16`` when the text model runs on a GPU whose free memory holds
  the copy, the projector (a copy per CLIP context), a margin and the KV cache of the default
  frames in flight with one prompt, and the disk has room for the copy; else ``keep``, with a
  line in the log saying why. The prompts do not count, so ``python -m pipeline.download`` makes
  the copy that a run with any prompts loads.

**Frames in flight** (``engine.parallel: null``). ``engine.parallel_gpu`` with layers on a GPU,
where their KV cache fits in the free memory beside the weights; else the largest half of it
that fits, so that the context starts instead of failing. ``engine.parallel_cpu`` on a CPU.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from pipeline.caption.convert import llama_quantize
from pipeline.caption.engine import LoadSettings
from pipeline.caption.engine.lanes import clip_thread_count, lane_count
from pipeline.caption.engine.native import gpu_free_bytes, runs_on_gpu, usable_cores
from pipeline.caption.projector import ARRANGEMENTS
from pipeline.caption.tiny import FILE_TYPES
from pipeline.caption.weights import ModelFiles, model_fingerprint, quantized_weights, read_gguf, text_model_number
from pipeline.errors import WeightsError
from pipeline.files import write_atomic
from pipeline.paths import not_writable, unwritable

log = logging.getLogger(__name__)

TEXT_TYPES = ("auto", "keep", "f16")

# Beyond weights and KV cache on the GPU: compute buffers of the lanes and of CLIP (measured
# 2-3 GB with a 7B on an H200), and what other processes may take meanwhile.
GPU_MARGIN_BYTES = 4 << 30
# Free disk the copy leaves behind.
DISK_MARGIN_BYTES = 1 << 30
# A temporary copy file untouched this long was left by a writer that was killed.
ABANDONED_S = 600.0


def pick_text_weights(files: ModelFiles, setting: str, settings: LoadSettings, copy_dir: Path) -> ModelFiles:
    """The model files to load under ``model.text_type`` = ``setting``.

    Args:
        files: The model pair as found.
        setting: ``auto``, ``keep`` or ``f16``.
        settings: The engine settings the model will run with (GPU layers, the default frames
            in flight, context: they size the KV cache that must fit beside the weights; the
            number of questions does not count).
        copy_dir: Where the F16 copy is kept.

    Returns:
        ``files`` with :attr:`~ModelFiles.f16_copy` set where the copy is loaded.

    Raises:
        WeightsError: ``f16`` asked and the copy cannot be made (no room on the disk, a folder
            that cannot be written, or llama.cpp failed).
    """
    if setting == "keep" or not quantized_weights(files.text_model):
        return files
    copy = copy_dir / f"{files.text_model.stem}.{model_fingerprint(files.text_model)}.F16.gguf"
    unkeyed = copy_dir / f"{files.text_model.stem}.F16.gguf"  # named by an earlier version
    if unkeyed.is_file():
        log.info("%s is an F16 copy named by an earlier version, no longer loaded (copies are named by "
                 "their source's content now); delete it to free %.1f GB", unkeyed, unkeyed.stat().st_size / 1e9)
    need = f16_bytes(files.text_model)
    if setting == "auto":
        one_prompt = replace(settings, max_questions=1)
        fits, why = f16_fits(
            runs_on_gpu(settings.n_gpu_layers),
            need + kv_bytes(files.text_model, one_prompt) + clip_bytes(files.mmproj, one_prompt) + GPU_MARGIN_BYTES,
            gpu_free_bytes(),
        )
        if fits and not copy.is_file():
            fits, why = _disk_fits(copy_dir, need)
        if not fits:
            if why:
                log.info("model.text_type=auto: keeping %s as it is: %s", files.text_model.name, why)
            return files
        try:
            return replace(files, f16_copy=_f16_copy(files.text_model, copy, need))
        except WeightsError as error:  # a disk that filled meanwhile: the file as it is
            log.warning("model.text_type=auto: keeping %s as it is: %s", files.text_model.name, error)
            return files
    if not copy.is_file():
        fits, why = _disk_fits(copy_dir, need)
        if not fits:
            raise WeightsError(f"model.text_type=f16: {why}; free some space, or set model.text_type=keep")
    return replace(files, f16_copy=_f16_copy(files.text_model, copy, need))


def frames_in_flight(settings: LoadSettings, files: ModelFiles) -> int:
    """Frames in flight for ``engine.parallel: null`` (``settings.parallel`` holds the device's
    default): on a GPU, the default where its KV cache fits in the free memory beside the
    weights loaded, else the largest half of it that does; where none fits, the default
    (llama.cpp then says what failed). Elsewhere the default."""
    default = settings.parallel
    if not runs_on_gpu(settings.n_gpu_layers):
        return default
    free = gpu_free_bytes()
    fixed = files.loaded_text.stat().st_size + clip_bytes(files.mmproj, settings) + GPU_MARGIN_BYTES
    for parallel in (default >> shift for shift in range(default.bit_length())):
        if fixed + kv_bytes(files.text_model, replace(settings, parallel=parallel)) <= free:
            if parallel != default:
                log.warning(
                    "engine.parallel: %d frames in flight instead of %d, for the GPUs' %.1f GB free "
                    "(KV cache of %d prompts a frame)", parallel, default, free / 1e9, settings.max_questions,
                )
            return parallel
    return default


def clip_bytes(mmproj: Path, settings: LoadSettings) -> int:
    """GPU memory the projector's weights take: one copy per mtmd context, that is per image
    arrangement (two in the reference layout, one in llama.cpp's) for each CLIP encoder
    (:func:`~pipeline.caption.engine.lanes.clip_thread_count` on a GPU)."""
    arrangements = len(ARRANGEMENTS) if settings.image_layout == "reference" else 1
    lanes = lane_count(settings.lanes, settings.lanes_gpu, True, settings.max_questions, settings.parallel)
    return mmproj.stat().st_size * arrangements * clip_thread_count(settings.clip_threads, True, lanes)


def f16_fits(on_gpu: bool, need_bytes: int, free_bytes: int) -> tuple[bool, str]:
    """Whether ``auto`` takes F16 weights: on a GPU whose free memory holds ``need_bytes``
    (F16 weights, KV cache, projector and margin); with the reason when not ("" on a CPU)."""
    if not on_gpu:
        return False, ""
    if need_bytes > free_bytes:
        return False, (
            f"F16 weights with the KV cache would need {need_bytes / 1e9:.1f} GB of the GPUs' "
            f"{free_bytes / 1e9:.1f} GB free"
        )
    return True, ""


def f16_bytes(path: Path) -> int:
    """Bytes of the text model with its matrices in F16 (vectors stay F32)."""
    return sum(int(t.n_elements) * (2 if len(t.shape) > 1 else 4) for t in read_gguf(path).tensors)


def kv_bytes(path: Path, settings: LoadSettings) -> int:
    """Bytes of the engine's KV cache (F16 keys and values) for this text model: a stream of
    ``n_ctx`` cells per sequence slot, or with ``kv_unified`` ``n_ctx`` cells per frame."""
    n_layer, n_head_kv = text_model_number(path, "block_count"), text_model_number(path, "attention.head_count_kv")
    head_dim = text_model_number(path, "embedding_length") // text_model_number(path, "attention.head_count")
    per_cell = n_layer * n_head_kv * head_dim * 2 * 2  # keys and values, 2 bytes each
    cells = settings.n_ctx * settings.parallel * (1 if settings.kv_unified else settings.max_questions)
    return cells * per_cell


def _f16_copy(source: Path, copy: Path, size: int) -> Path:
    """``copy`` (``size`` bytes), written from ``source`` first unless it is there (its name
    holds the source's fingerprint: a copy there is of this content).

    Raises:
        WeightsError: It cannot be written (llama.cpp failed, the disk, or a folder that
            cannot be written).
    """
    if copy.is_file():
        return copy
    log.info(
        "writing an F16 copy of %s for the GPU (%.1f GB, once) to %s; model.text_type=keep loads the file as it is",
        source.name, size / 1e9, copy,
    )
    t0 = time.perf_counter()
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(copy)
        write_atomic(copy, lambda out: llama_quantize(source, out, FILE_TYPES["F16"], usable_cores(), requantize=True))
    except OSError as error:
        if not_writable(error):
            line = unwritable(copy.parent, error, "the F16 copy")
            raise WeightsError(f"{line}; or set model.text_type=keep") from error
        raise WeightsError(
            f"the F16 copy {copy} could not be written ({error.strerror or error}); free some space, "
            "or set model.text_type=keep"
        ) from error
    log.info("F16 copy written in %.0f s", time.perf_counter() - t0)
    return copy


def _remove_abandoned(copy: Path) -> None:
    """Remove what a killed writer of ``copy`` left: its temporary files (``write_atomic``'s
    names) untouched for :data:`ABANDONED_S`; one being written is touched all the time."""
    for temporary in copy.parent.glob(f".{copy.name}.*.tmp"):
        try:
            if time.time() - temporary.stat().st_mtime > ABANDONED_S:
                temporary.unlink()
                log.info("removed %s, left by a conversion that did not finish", temporary.name)
        except FileNotFoundError:  # its writer finished or removed it meanwhile
            continue


def _disk_fits(folder: Path, need: int) -> tuple[bool, str]:
    """Whether ``folder`` (or its nearest existing parent) has room for ``need`` bytes and the margin."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need + DISK_MARGIN_BYTES > free:
        return False, f"its F16 copy needs {need / 1e9:.1f} GB in {folder}, which has {free / 1e9:.1f} GB free"
    return True, ""

