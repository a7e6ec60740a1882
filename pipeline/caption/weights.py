"""Find the model files of a preset: on disk, from Hugging Face, or generated (``tiny``).

Also checks, before any frame is decoded, that the projector fits the text model: LLaVA's
projector must output vectors of the text model's embedding size, and llama.cpp only notices
a mismatch deep inside the first image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import gguf

from pipeline.caption.tiny import ensure_tiny_model
from pipeline.errors import WeightsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFiles:
    """The two files of a LLaVA model pair."""

    text_model: Path
    mmproj: Path

    def as_dict(self) -> dict[str, str]:
        """The paths as text, for the Parquet metadata and run summaries."""
        return {"text_model": str(self.text_model), "mmproj": str(self.mmproj)}


@dataclass(frozen=True)
class ModelSource:
    """Where a preset's files are, or come from (the ``model`` config node, resolved).

    Attributes:
        name: Preset name, for messages.
        model_dir: Where the files live (``model.dir``), absolute.
        text_file: File name of the text model.
        mmproj_file: File name of the projector.
        repo_id: Hugging Face repository to fetch missing files from.
        download: Whether fetching is allowed.
        generated: The preset is the project's own generated tiny model.
        quantized: For the generated model, use its Q8_0 text model.
    """

    name: str
    model_dir: Path
    text_file: str
    mmproj_file: str
    repo_id: str | None
    download: bool
    generated: bool
    quantized: bool

    def resolve(self) -> ModelFiles:
        """The preset's files, generated or downloaded when missing.

        Raises:
            WeightsError: A file is missing and cannot be fetched.
        """
        if self.generated:
            text, mmproj = ensure_tiny_model(self.model_dir, quantized=self.quantized)
            return ModelFiles(text, mmproj)
        files = ModelFiles(self.model_dir / self.text_file, self.model_dir / self.mmproj_file)
        missing = [p.name for p in (files.text_model, files.mmproj) if not p.is_file()]
        if not missing:
            return files
        if not (self.download and self.repo_id):
            raise WeightsError(_missing_message(self.name, missing, self.model_dir, self.repo_id))
        try:
            from huggingface_hub import hf_hub_download

            for filename in missing:
                log.info("downloading %s from %s into %s", filename, self.repo_id, self.model_dir)
                hf_hub_download(repo_id=self.repo_id, filename=filename, local_dir=self.model_dir)
        except Exception as error:  # offline, unknown repo, disk full: all end the same way
            raise WeightsError(
                f"{_missing_message(self.name, missing, self.model_dir, self.repo_id)} "
                f"(download failed: {type(error).__name__})"
            ) from error
        return files


def _missing_message(name: str, missing: list[str], directory: Path, repo_id: str | None) -> str:
    source = f" from https://huggingface.co/{repo_id}" if repo_id else ""
    return (
        f"model {name!r}: missing {', '.join(missing)} in {directory}; "
        f"download {'them' if len(missing) > 1 else 'it'}{source} into that folder, "
        "or set model.dir to where they are"
    )


def check_pair(files: ModelFiles) -> None:
    """Check that the projector's output size equals the text model's embedding size.

    Raises:
        WeightsError: A file is not GGUF, or the pair does not fit.
    """
    text = _read_gguf(files.text_model)
    mmproj = _read_gguf(files.mmproj)
    arch = _string_field(text, "general.architecture")
    embd_field = text.get_field(f"{arch}.embedding_length")
    if embd_field is None:
        raise WeightsError(f"{files.text_model} has no {arch}.embedding_length; not a text model")
    n_embd = int(embd_field.contents())
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


def _read_gguf(path: Path) -> gguf.GGUFReader:
    try:
        return gguf.GGUFReader(path)
    except Exception as error:
        raise WeightsError(f"not a readable GGUF file: {path} ({error})") from error


def _string_field(reader: gguf.GGUFReader, key: str) -> str:
    field = reader.get_field(key)
    if field is None:
        raise WeightsError(f"{reader.data.filename} has no {key}")
    return str(field.contents())
