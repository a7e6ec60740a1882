"""Native llama.cpp handles and their life cycle: the text model, its vocabulary, the lanes
(contexts on the one model, each with its own KV cache and batch), and the log callback.

llama_cpp is imported before numpy-using modules of this package on purpose: on images where
the compiler links libstdc++ statically, the import order mattered (BENCHMARKS.md, "Import
order"); the README's build flags make it safe either way.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import gguf
import llama_cpp
import llama_cpp.mtmd_cpp as mtmd
import numpy as np
from llama_cpp._ctypes_extensions import load_shared_library

from pipeline.caption.engine.records import EngineError, EngineStats
from pipeline.caption.weights import read_gguf
from pipeline.signals import quiet_callbacks

_NATIVE_LOG = logging.getLogger("pipeline.llama_cpp")
# ggml's levels: 1 debug, 2 info, 3 warn, 4 error, 5 continues the previous line's level.
_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_last_level = logging.DEBUG
_held = threading.local()  # .lines: this thread's llama.cpp error lines held by held_errors()


class Batch:
    """A ``llama_batch`` whose arrays are numpy arrays, filled without per-field ctypes calls."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.n_seq_id = np.ones(capacity, np.int32)
        self.seq = np.zeros(capacity, np.int32)
        self.logits = np.zeros(capacity, np.int8)
        seq_p = ctypes.POINTER(llama_cpp.llama_seq_id)
        base = self.seq.ctypes.data
        size = self.seq.itemsize
        self.seq_ptrs = (seq_p * capacity)(*(ctypes.cast(base + i * size, seq_p) for i in range(capacity)))
        self.struct = llama_cpp.llama_batch()
        self._token_p = self.token.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token))
        self._point(
            pos=self.pos.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_pos)),
            n_seq_id=self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
            seq_id=self.seq_ptrs,
            logits=self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
        )

    def as_tokens(self, n: int) -> llama_cpp.llama_batch:
        """The first ``n`` entries as a token batch."""
        self.struct.n_tokens = n
        self._point(token=self._token_p, embd=None)
        return self.struct

    def as_embeddings(self, embd: np.ndarray, n: int) -> llama_cpp.llama_batch:
        """``n`` rows of ``embd`` (float32, C order) as an embedding batch."""
        self.struct.n_tokens = n
        self._point(token=None, embd=embd.ctypes.data_as(ctypes.POINTER(ctypes.c_float)))
        return self.struct

    def _point(self, **pointers: object) -> None:
        # The struct's pointer fields take pointers into the numpy arrays; llama_cpp's ctypes
        # declarations type them as arrays, which a plain assignment would contradict.
        for name, pointer in pointers.items():
            setattr(self.struct, name, pointer)


@dataclass(eq=False)
class Lane:
    """One llama.cpp context on the shared model, with its sequence slots and counters.

    Attributes:
        ctx: The ``llama_context``.
        memory: Its KV memory handle.
        batch: Its reusable batch.
        free_seq_ids: A heap of free sequence ids (lowest first: see the decode step).
        kv_capacity: KV cells one frame may use (a stream, or the unified cache).
        stats: This lane's figures.
        kv_reserved: Cells reserved by frames in flight (unified cache only).
        embd_buffer: Scratch prefill rows (text and image embeddings) when CLIP runs at admission.
    """

    ctx: object
    memory: object
    batch: Batch
    free_seq_ids: list[int]
    kv_capacity: int
    stats: EngineStats = field(default_factory=EngineStats)
    kv_reserved: int = 0
    embd_buffer: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))

    def decode(self, n: int, what: str) -> None:
        """``llama_decode`` of the batch's first ``n`` token entries.

        Raises:
            EngineError: The decode failed.
        """
        status = llama_cpp.llama_decode(self.ctx, self.batch.as_tokens(n))
        if status != 0:
            raise EngineError(f"{what} decode failed (status {status})")

    def decode_embeddings(self, rows: np.ndarray, n_past: int, seq_id: int) -> int:
        """Evaluate embedding rows (float32, C order) into one sequence from position
        ``n_past``, ``n_batch`` at a time; only the last row's logits are kept. Returns that row's index
        in the last batch.

        Raises:
            EngineError: A decode failed.
        """
        batch = self.batch
        total = rows.shape[0]
        n = 0
        for start in range(0, total, batch.capacity):
            n = min(batch.capacity, total - start)
            batch.pos[:n] = np.arange(n_past + start, n_past + start + n, dtype=np.int32)
            batch.seq[:n] = seq_id
            batch.logits[:n] = 0
            batch.logits[n - 1] = start + n == total
            status = llama_cpp.llama_decode(self.ctx, batch.as_embeddings(rows[start:], n))
            if status != 0:
                raise EngineError(f"prefill decode failed (status {status})")
            self.stats.prefill_calls += 1
        return n - 1

    def forget(self, seq_id: int) -> None:
        """Drop a sequence's cells."""
        llama_cpp.llama_memory_seq_rm(self.memory, seq_id, -1, -1)


class TextModel:
    """The loaded text model: vocabulary, tokenization, and contexts on it.

    Args:
        path: The text GGUF.
        n_gpu_layers: Layers to offload (-1: all).

    Raises:
        EngineError: The file does not load.
    """

    def __init__(self, path: str, n_gpu_layers: int) -> None:
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        with held_errors() as said:
            self.handle = llama_cpp.llama_model_load_from_file(path.encode(), params)
            if not self.handle:
                raise EngineError(f"text model failed to load: {path}{said_by_llama_cpp(said)}")
        self.vocab = llama_cpp.llama_model_get_vocab(self.handle)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.n_embd = llama_cpp.llama_model_n_embd_inp(self.handle)
        self.n_layer = llama_cpp.llama_model_n_layer(self.handle)
        self.on_gpu = runs_on_gpu(n_gpu_layers)
        self.gpu_layers = (self.n_layer if n_gpu_layers < 0 else min(n_gpu_layers, self.n_layer)) if self.on_gpu else 0
        self.path = path

    def close(self) -> None:
        """Free the model (safe to call twice)."""
        if self.handle:
            llama_cpp.llama_model_free(self.handle)
            self.handle = None

    def end_of_generation_ids(self) -> np.ndarray:
        """Every end-of-generation token id."""
        return np.array([t for t in range(self.n_vocab) if self.is_eog(t)], dtype=np.int64)

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends generation."""
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        """Token ids of ``text``, control tokens parsed (``add_special``: with BOS).

        Raises:
            EngineError: The text does not tokenize.
        """
        data = text.encode()
        size = len(data) + 16
        buffer = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buffer, size, add_special, True)
        if n < 0:
            raise EngineError(f"prompt does not tokenize: {text[:60]!r}")
        return list(buffer[:n])

    def token_rows(self, tokens: list[int]) -> np.ndarray:
        """The input embeddings of ``tokens``, ``len(tokens) x n_embd`` float32.

        Read from the file's ``token_embd.weight`` and dequantized the way llama.cpp's own
        lookup does (bit for bit on the CPU, tests/test_engine.py), so that a prompt's text can
        go into the same embedding batches as its image: one prefill pass per frame instead
        of three (text before the image, image, question), each of which costs a pass over
        all weights on a GPU.

        Raises:
            EngineError: The file has no ``token_embd.weight``.
        """
        table = next((t for t in read_gguf(self.path).tensors if t.name == "token_embd.weight"), None)
        if table is None:
            raise EngineError(f"{self.path}: no token_embd.weight tensor")
        rows = gguf.quants.dequantize(np.asarray(table.data[tokens]), table.tensor_type)
        return np.ascontiguousarray(rows.reshape(len(tokens), self.n_embd), dtype=np.float32)

    def piece(self, token: int) -> bytes:
        """The bytes of one token."""
        buffer = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, 64, 0, True)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, -n, 0, True)
        return buffer.raw[:n]

    def new_lane(
        self, n_seq: int, n_ctx_seq: int, kv_unified: bool, n_batch: int, n_ubatch: int, n_threads: int, flash_attn: int
    ) -> Lane:
        """A context for ``n_seq`` sequences of ``n_ctx_seq`` cells each.

        Raises:
            EngineError: The context does not start (usually: not enough memory).
        """
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx_seq * (1 if kv_unified else n_seq)
        params.n_batch = n_batch
        params.n_ubatch = min(n_ubatch, n_batch)
        params.n_seq_max = n_seq
        params.kv_unified = kv_unified
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.flash_attn_type = flash_attn
        params.no_perf = True
        with held_errors() as said:
            ctx = llama_cpp.llama_init_from_model(self.handle, params)
            if not ctx:
                raise EngineError(
                    f"llama context failed to start (n_ctx={params.n_ctx}{said_by_llama_cpp(said)}); "
                    "lower engine.parallel or model.n_ctx"
                )
        # Unified: cells for all frames in flight; per-sequence streams: cells of one stream.
        capacity = llama_cpp.llama_n_ctx(ctx) if kv_unified else llama_cpp.llama_n_ctx_seq(ctx)
        return Lane(ctx, llama_cpp.llama_get_memory(ctx), Batch(n_batch), list(range(n_seq)), capacity)


def free_lane(lane: Lane) -> None:
    """Free a lane's context."""
    llama_cpp.llama_free(lane.ctx)


def runs_on_gpu(n_gpu_layers: int) -> bool:
    """Whether this process's llama.cpp puts layers on a GPU with ``model.n_gpu_layers``."""
    return n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())


def max_parallel_sequences() -> int:
    """llama.cpp's limit on sequences per context."""
    return int(llama_cpp.llama_max_parallel_sequences())


def cublas_build() -> bool:
    """Whether llama.cpp's CUDA backend was built with ``GGML_CUDA_FORCE_CUBLAS``."""
    return b"FORCE_CUBLAS = 1" in (llama_cpp.llama_print_system_info() or b"")


# Threads the pipeline itself keeps busy beside llama.cpp's: the decode thread. (The thread
# that prepares the next frames works in short bursts between them.)
PIPELINE_THREADS = 1


def default_threads(n_threads: int | None) -> int:
    """CPU threads for llama.cpp: the setting, else the usable physical cores less the
    pipeline's own busy threads (:data:`PIPELINE_THREADS`), at least 1.

    Not every core: llama.cpp's threads wait for each other at every step, so one of them
    that shares its core with the decode thread or another job holds all the others up (on a
    busy 2-core machine, 2 threads were 3-20x slower than 1; README "CPU threads").
    """
    return n_threads or max(1, usable_cores() - PIPELINE_THREADS)


def usable_cores(cpus: Iterable[int] | None = None, sys_root: Path = Path("/sys")) -> int:
    """Physical CPU cores this process may use, at least 1.

    The distinct cores (hyper-threads of one core count once) of ``cpus`` (default: the
    process's CPU affinity), capped by the CPU quota of a container's cgroup
    (``/sys/fs/cgroup/cpu.max``, or cgroup v1's ``cpu.cfs_quota_us``). Where the topology is
    not readable, each CPU counts as a core.

    Args:
        cpus: CPU numbers; ``None``: those this process may run on.
        sys_root: Where sysfs is mounted (tests point it at a copy).
    """
    if cpus is None:
        cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = sys_root / "devices" / "system" / "cpu" / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            cores.add((package, (topology / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    quota = _cgroup_cpu_quota(sys_root / "fs" / "cgroup")
    return max(1, min(len(cores), quota) if quota else len(cores))


def _cgroup_cpu_quota(cgroup: Path) -> int | None:
    """Whole CPUs of the cgroup's quota (rounded up), or ``None`` when it has none."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
    except (OSError, ValueError):
        try:
            quota = (cgroup / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (cgroup / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
        if int(quota) <= 0:
            return None
    return max(1, -(-int(quota) // int(period)))


# ggml_backend_dev_type: CPU, GPU, IGPU (integrated), ACCEL, META.
_GPU_DEVICE_TYPES = (1, 2)


def _ggml() -> ctypes.CDLL | None:
    """ggml's library with the device-registry functions typed; ``None`` where this build's
    library does not expose them."""
    try:
        ggml = load_shared_library("ggml", Path(llama_cpp.__file__).parent / "lib")
        ggml.ggml_backend_dev_count.restype = ctypes.c_size_t
        ggml.ggml_backend_dev_get.restype = ctypes.c_void_p
        ggml.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
        for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
            getattr(ggml, name).restype = ctypes.c_char_p
            getattr(ggml, name).argtypes = [ctypes.c_void_p]
        ggml.ggml_backend_dev_type.restype = ctypes.c_int
        ggml.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
        ggml.ggml_backend_dev_memory.restype = None
        size_p = ctypes.POINTER(ctypes.c_size_t)
        ggml.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, size_p, size_p]
    except (OSError, AttributeError, RuntimeError):
        return None
    return ggml


def devices() -> tuple[list[str], str]:
    """The GPUs llama.cpp sees (``CUDA0 (NVIDIA H200)``, ...) and the CPU's name, from ggml's
    device registry; empty and ``""`` where this build's library does not expose it."""
    ggml = _ggml()
    if ggml is None:
        return [], ""
    gpus, cpu = [], ""
    for index in range(ggml.ggml_backend_dev_count()):
        device = ggml.ggml_backend_dev_get(index)
        name = ggml.ggml_backend_dev_name(device).decode(errors="replace")
        description = ggml.ggml_backend_dev_description(device).decode(errors="replace")
        kind = ggml.ggml_backend_dev_type(device)
        if kind in _GPU_DEVICE_TYPES:
            gpus.append(f"{name} ({description})")
        elif kind == 0 and not cpu:
            cpu = description
    return gpus, cpu


def gpu_free_bytes() -> int:
    """Free memory of all GPUs llama.cpp sees, summed (0 without a GPU or a readable registry)."""
    ggml = _ggml()
    if ggml is None:
        return 0
    total = 0
    for index in range(ggml.ggml_backend_dev_count()):
        device = ggml.ggml_backend_dev_get(index)
        if ggml.ggml_backend_dev_type(device) in _GPU_DEVICE_TYPES:
            free, size = ctypes.c_size_t(0), ctypes.c_size_t(0)
            ggml.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(size))
            total += free.value
    return total


def flash_attn_type(setting: str, on_gpu: bool) -> int:
    """llama.cpp's flash-attention switch for ``engine.flash_attn`` (auto: GPU only)."""
    on = setting == "on" or (setting == "auto" and on_gpu)
    return llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if on else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED


def _forward_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    global _last_level
    # Called from C, where no exception can leave: a logging failure is dropped here, and a
    # signal's exception (Ctrl-C) is dropped quietly and delivered again by pipeline.signals.
    try:
        if level != 5:
            _last_level = _LEVELS.get(level, logging.DEBUG)
        if not _NATIVE_LOG.isEnabledFor(_last_level):
            return
        message = text.decode("utf-8", errors="replace").strip()
        held = getattr(_held, "lines", None)
        if message and held is not None and _last_level >= logging.ERROR:
            held.append(message)
        elif message:
            _NATIVE_LOG.log(_last_level, message)
    except Exception:  # noqa: BLE001  (see above)
        pass


_log_callback = llama_cpp.llama_log_callback(_forward_log)


@contextmanager
def held_errors() -> Iterator[list[str]]:
    """Hold the error lines llama.cpp and mtmd log on this thread while the block runs, for the
    block's own error to say (:func:`said_by_llama_cpp`): a context that does not start would
    otherwise print llama.cpp's line and then ours, two errors for one problem. A block that
    ends without an exception logs them as they came."""
    lines: list[str] = []
    _held.lines = lines
    try:
        yield lines
    finally:
        _held.lines = None
    for line in lines:
        _NATIVE_LOG.error(line)


def said_by_llama_cpp(lines: list[str]) -> str:
    """``lines`` held by :func:`held_errors`, as a clause of one error line (empty if none)."""
    return f"; llama.cpp said: {' / '.join(lines)}" if lines else ""


def route_native_logs() -> None:
    """Send llama.cpp's and mtmd's console chatter to Python logging (DEBUG unless a problem)."""
    quiet_callbacks(_forward_log)
    llama_cpp.llama_log_set(_log_callback, ctypes.c_void_p(0))
    mtmd.mtmd_log_set(_log_callback, ctypes.c_void_p(0))
    mtmd.mtmd_helper_log_set(_log_callback, ctypes.c_void_p(0))
