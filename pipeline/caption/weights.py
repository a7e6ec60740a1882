"""Find the model files of a preset: on disk, from Hugging Face, or generated (``tiny``).

Where they are looked up and kept: ``model.dir`` when given; else a preset's files are in the
Hugging Face cache (``HF_HOME``, by default ``~/.cache/huggingface``) and the generated tiny
model in the user cache (:func:`pipeline.paths.user_cache_dir`), so that no working folder
collects copies. ``model.text``/``model.mmproj`` name a file directly instead.

Also checks, before any frame is decoded, that the pair is what LLaVA 1.6 needs
(:func:`check_pair`): files that llama.cpp loads without a word but that answer garbage.

**Model identity.** A model is its content, not its file name: :func:`model_fingerprint` is a
cheap digest of a GGUF file's size, its whole header (metadata, tokenizer, tensor index) and a
sample of every tensor's data (its first, middle and last 4 KiB). It goes into ``config_id``
and keys the copies made from a file (the F16 text weights, the projector's reference
copies). Its modification time is not part of it, so the same bytes downloaded again, copied
without ``-p`` or kept on another machine are the same model; the time only tells when a
file must be read again. The full SHA-256 of the user's files is recorded beside it in every
Parquet file (:mod:`pipeline.checksums`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import gguf

from pipeline.caption.tiny import TINY_MMPROJ_FILE, TINY_TEXT_FILE, TINY_TEXT_Q8_FILE, ensure_tiny_model
from pipeline.errors import WeightsError
from pipeline.files import check_file, open_file
from pipeline.paths import Chosen, in_place_of_a_file, user_cache_dir, writing_into

log = logging.getLogger(__name__)

_FLOAT_TYPES = (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16)
# Bytes of each tensor's data taken into a fingerprint, at its start, middle and end.
_SAMPLE_BYTES = 4096
# LLaVA 1.6's vision tower is CLIP ViT-L/14 (1024 wide, 24 layers); LLaVA takes the output of
# its second-to-last layer, so llama.cpp's LLaVA converter stores 23 and drops the last.
_VIT_L_WIDTH = 1024
_VIT_L_STORED_LAYERS = 23


@dataclass(frozen=True)
class ModelFiles:
    """The two files of a LLaVA model pair, as the user gave them.

    Attributes:
        text_model: The user's text-model file.
        mmproj: The user's projector file.
        f16_copy: The F16 copy of ``text_model`` loaded instead of it (``model.text_type``),
            or ``None``: the file is loaded as it is.
    """

    text_model: Path
    mmproj: Path
    f16_copy: Path | None = None

    @property
    def loaded_text(self) -> Path:
        """The text-model file the engine loads."""
        return self.f16_copy or self.text_model

    def as_dict(self) -> dict[str, str]:
        """The user's files as text, for the Parquet metadata (their SHA-256 is recorded)."""
        return {"text_model": str(self.text_model), "mmproj": str(self.mmproj)}

    def fingerprints(self) -> dict[str, str]:
        """The content identity of the user's files (:func:`model_fingerprint`).

        Raises:
            WeightsError: A file is not readable GGUF.
        """
        return {"text_model": model_fingerprint(self.text_model), "mmproj": model_fingerprint(self.mmproj)}


@dataclass(frozen=True)
class ModelSource:
    """Where a preset's files are, or come from (the ``model`` config node, resolved).

    Attributes:
        name: Preset name, for messages.
        model_dir: Where the files live (``model.dir``), absolute; ``None``: the Hugging Face
            cache, or for the generated model the user cache.
        text_file: File name of the text model.
        mmproj_file: File name of the projector.
        repo_id: Hugging Face repository to fetch missing files from.
        download: Whether fetching is allowed.
        generated: The preset is the project's own generated tiny model.
        quantized: For the generated model, use its Q8_0 text model.
        text_path: ``model.text``: this text-model file instead of the preset's, absolute.
        mmproj_path: ``model.mmproj``: this projector file instead of the preset's, absolute.
    """

    name: str
    model_dir: Path | None
    text_file: str
    mmproj_file: str
    repo_id: str | None
    download: bool
    generated: bool
    quantized: bool
    text_path: Path | None = None
    mmproj_path: Path | None = None

    def locate(self) -> ModelFiles | None:
        """The files where they are kept, if every one is there; nothing fetched or generated."""
        kept: tuple[Path | None, Path | None]
        if self.generated:
            folder = self.model_dir or user_cache_dir() / "tiny"
            kept = folder / (TINY_TEXT_Q8_FILE if self.quantized else TINY_TEXT_FILE), folder / TINY_MMPROJ_FILE
        else:
            kept = self._local(self.text_file), self._local(self.mmproj_file)
        text, mmproj = self.text_path or kept[0], self.mmproj_path or kept[1]
        if text is None or mmproj is None or not (text.is_file() and mmproj.is_file()):
            return None
        return ModelFiles(text, mmproj)

    def resolve(self) -> ModelFiles:
        """The files, the preset's generated or downloaded when missing.

        Raises:
            WeightsError: A file is missing and cannot be fetched, or the generated model cannot
                be written (:func:`pipeline.paths.writing_into`: permissions, a full disk).
        """
        for key, path in (("text", self.text_path), ("mmproj", self.mmproj_path)):
            if path is not None and not path.is_file():
                raise WeightsError(f"model.{key}={path} is not a file; give the path of a GGUF file")
        if self.generated:
            folder = self.model_dir or user_cache_dir() / "tiny"
            chosen = Chosen(self.model_dir, "choose another model.dir") if self.model_dir else None
            with writing_into(folder, "the generated tiny model", WeightsError, chosen):  # a full disk too
                text, mmproj = ensure_tiny_model(folder, quantized=self.quantized)
            return ModelFiles(self.text_path or text, self.mmproj_path or mmproj)
        roles = ((self.text_file, self.text_path), (self.mmproj_file, self.mmproj_path))
        found = self._fetch([name for name, given in roles if given is None])
        return ModelFiles(self.text_path or found[self.text_file], self.mmproj_path or found[self.mmproj_file])

    def _fetch(self, names: list[str]) -> dict[str, Path]:
        """The preset's files ``names``, downloaded when missing and allowed."""
        found = {name: self._local(name) for name in names}
        missing = [name for name, path in found.items() if path is None]
        if not missing:
            return {name: path for name, path in found.items() if path is not None}
        if not (self.download and self.repo_id):
            raise WeightsError(self._missing_message(missing))
        from huggingface_hub import hf_hub_download

        _print_hub_warnings_once()
        self._check_hub(self.repo_id, missing)
        result = {name: path for name, path in found.items() if path is not None}
        try:
            for filename in missing:
                log.info("downloading %s from %s into %s", filename, self.repo_id, self._where())
                path = hf_hub_download(repo_id=self.repo_id, filename=filename, local_dir=self.model_dir)
                result[filename] = Path(path)
        except Exception as error:  # unknown repo, disk full, dropped connection: all end the same way
            raise WeightsError(f"{self._missing_message(missing)} (download failed: {type(error).__name__})") from error
        return result

    def _local(self, name: str) -> Path | None:
        """``name`` where it is kept (``model.dir`` or the Hugging Face cache), if it is there."""
        if self.model_dir is not None:
            path = self.model_dir / name
            kind = in_place_of_a_file(path)
            if kind is not None:  # a download would replace it; reading it would block
                raise WeightsError(
                    f"model {self.name!r}: {name} in {self.model_dir} is {kind}, not a file; move it aside, "
                    "or set model.dir to the folder where the files are"
                )
            return path if path.is_file() else None
        if self.repo_id is None:
            return None
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(self.repo_id, name)
        return Path(cached) if isinstance(cached, str) else None

    def _check_hub(self, repo_id: str, missing: list[str]) -> None:
        """Fail at once, with the missing-files message, when the hub cannot be reached:
        offline mode, or no answer to one request within ``HF_HUB_ETAG_TIMEOUT`` (without
        this, ``huggingface_hub`` retries for about 23 s)."""
        from huggingface_hub import constants, hf_hub_url
        from huggingface_hub.utils import get_session

        if constants.HF_HUB_OFFLINE:
            raise WeightsError(f"{self._missing_message(missing)} (HF_HUB_OFFLINE is set: nothing is downloaded)")
        try:
            get_session().head(hf_hub_url(repo_id, missing[0]), timeout=constants.HF_HUB_ETAG_TIMEOUT)
        except Exception as error:  # requests' or httpx's own error types, by version
            raise WeightsError(
                f"{self._missing_message(missing)} (the hub cannot be reached: {type(error).__name__}; "
                "when offline, set HF_HUB_OFFLINE=1)"
            ) from error

    def _where(self) -> str:
        """Where the preset's files are kept, in words."""
        if self.model_dir is not None:
            return str(self.model_dir)
        from huggingface_hub import constants

        return f"the Hugging Face cache ({constants.HF_HUB_CACHE})"

    def _missing_message(self, missing: list[str]) -> str:
        source = f" from https://huggingface.co/{self.repo_id}" if self.repo_id else ""
        # The download command names the same files and folder, also where a run overrode them.
        names = [f"model={self.name}", f"model.text_file={self.text_file}", f"model.mmproj_file={self.mmproj_file}"]
        if self.model_dir is not None:
            names.append(f"model.dir={self.model_dir}")
        return (
            f"model {self.name!r}: missing {', '.join(missing)} in {self._where()}; "
            f"download {'them' if len(missing) > 1 else 'it'}{source} "
            f"(python -m pipeline.download {' '.join(names)} does it ahead of a run), "
            "or set model.dir to the folder where they are"
        )


def _print_hub_warnings_once() -> None:
    """Drop the console handler ``huggingface_hub`` gives its logger: its records also reach
    the root logger's handlers (the console and the run's log file), so each of its warnings
    (a retried download) showed twice. Without root handlers, Python still prints warnings."""
    hub_logger = logging.getLogger("huggingface_hub")
    for handler in list(hub_logger.handlers):
        hub_logger.removeHandler(handler)


def check_pair(files: ModelFiles, image_layout: str) -> None:
    """Refuse a pair that llama.cpp would load but that answers garbage: a projector whose
    output size is not the text model's embedding size; a text model without ``output.weight``
    (llama.cpp then reuses the token embeddings as the output layer, which LLaVA 1.6's text
    models were not trained with); for the reference image layout, a ViT-L CLIP that does not
    store the 23 layers whose last output LLaVA takes (:mod:`pipeline.caption.projector` runs
    every stored layer).

    Raises:
        WeightsError: A file is not GGUF, or the pair does not fit (one line naming the file,
            what is wrong and the way out).
    """
    n_embd = text_model_number(files.text_model, "embedding_length")
    if not any(t.name == "output.weight" for t in read_gguf(files.text_model).tensors):
        raise WeightsError(
            f"text model {files.text_model} has no output.weight: llama.cpp would reuse the token embeddings "
            "as the output layer (tied), and LLaVA 1.6's text models are not tied, so every answer would be "
            "garbage; convert the model again with its output layer"
        )
    mmproj = read_gguf(files.mmproj)
    projector_layers = sorted(
        (int(t.name.split(".")[1]), t)
        for t in mmproj.tensors
        if t.name.startswith("mm.") and t.name.endswith(".weight") and t.name.split(".")[1].isdigit()
    )
    if not projector_layers:
        raise WeightsError(f"{files.mmproj} has no mm.* projector tensors; not a LLaVA mmproj")
    projector_out = int(projector_layers[-1][1].shape[1])
    if projector_out != n_embd:
        raise WeightsError(
            f"mmproj {files.mmproj.name} projects to {projector_out} dims but text model "
            f"{files.text_model.name} embeds {n_embd}; use the mmproj made for this text model"
        )
    width, layers = _number(mmproj, "clip.vision.embedding_length"), _number(mmproj, "clip.vision.block_count")
    if image_layout == "reference" and width == _VIT_L_WIDTH and layers != _VIT_L_STORED_LAYERS:
        raise WeightsError(
            f"mmproj {files.mmproj} stores {layers} CLIP layers; a LLaVA 1.6 ViT-L projector stores "
            f"{_VIT_L_STORED_LAYERS} (the converter drops the last of 24, as LLaVA takes the second-to-last "
            "layer's output), and the reference image layout runs every stored layer, so the image features "
            "would be another layer's; use an mmproj made by llama.cpp's LLaVA converter, or "
            "model.image_layout=llamacpp"
        )


def model_fingerprint(path: str | Path) -> str:
    """A content identity of a GGUF file, cheap to take: a digest of its size, header and a
    sample of every tensor's data (see the module's docstring). Taken once per process for
    each size and modification time.

    Raises:
        WeightsError: The file is not readable GGUF.
    """
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as error:
        raise WeightsError(f"not a readable GGUF file: {path} ({error.strerror or error})") from error
    return _fingerprint(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _fingerprint(path: Path, size: int, mtime_ns: int) -> str:
    reader = read_gguf(path)
    digest = hashlib.sha256(f"gguf-fingerprint-1 {size}\n".encode())
    try:
        with open_file(path) as handle:
            digest.update(handle.read(reader.data_offset))
            for tensor in reader.tensors:
                n = int(tensor.n_bytes)
                for offset in sorted({0, max(0, n // 2 - _SAMPLE_BYTES // 2), max(0, n - _SAMPLE_BYTES)}):
                    handle.seek(int(tensor.data_offset) + offset)
                    digest.update(handle.read(min(_SAMPLE_BYTES, n)))
    except OSError as error:
        raise WeightsError(f"not a readable GGUF file: {path} ({error.strerror or error})") from error
    return digest.hexdigest()[:16]


def text_model_number(path: str | Path, key: str) -> int:
    """The text model's ``<architecture>.<key>`` (``embedding_length``, ``block_count``, ...).

    Raises:
        WeightsError: The file is not GGUF, or has no such field: not a text model.
    """
    reader = read_gguf(path)
    arch = _string_field(reader, "general.architecture")
    field = reader.get_field(f"{arch}.{key}")
    if field is None:
        raise WeightsError(f"{path} has no {arch}.{key}; not a text model")
    return int(field.contents())


def quantized_weights(path: str | Path) -> bool:
    """Whether the text model's matrices are quantized (not F32, F16 or BF16)."""
    return any(len(t.shape) > 1 and t.tensor_type not in _FLOAT_TYPES for t in read_gguf(path).tensors)


def read_gguf(path: str | Path) -> gguf.GGUFReader:
    """The parsed GGUF file (tensors memory-mapped), shared by everyone who reads it.

    Parsing a 64k-token vocabulary takes seconds, and a run reads each file in several places
    (the pair check, the projector's layout, the text's token embeddings); the last few files
    stay parsed, keyed by their size and modification time so a rewritten file is read again.

    Raises:
        WeightsError: The file is not readable GGUF.
    """
    path = Path(path).resolve()
    try:
        check_file(path)  # memory-mapping a named pipe would block for ever
        stat = path.stat()
        return _parsed_gguf(path, stat.st_size, stat.st_mtime_ns)
    except Exception as error:
        raise WeightsError(f"not a readable GGUF file: {path} ({error})") from error


@functools.lru_cache(maxsize=4)
def _parsed_gguf(path: Path, size: int, mtime_ns: int) -> gguf.GGUFReader:
    return gguf.GGUFReader(path)


def _number(reader: gguf.GGUFReader, key: str) -> int | None:
    field = reader.get_field(key)
    return None if field is None else int(field.contents())


def _string_field(reader: gguf.GGUFReader, key: str) -> str:
    field = reader.get_field(key)
    if field is None:
        raise WeightsError(f"{reader.data.filename} has no {key}")
    return str(field.contents())
