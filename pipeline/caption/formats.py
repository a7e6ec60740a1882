"""Prompt formats of the LLaVA 1.6 variants.

Each variant was trained with its own conversation template; llama-cpp-python's stock
``Llava16ChatHandler`` renders the Vicuna-1.5 style for all of them, which is wrong for every
1.6 model. The strings here follow the prompt templates documented on the ``llava-hf`` model
cards (``llava-v1.6-34b-hf``, ``llava-v1.6-mistral-7b-hf``, ``llava-v1.6-vicuna-7b-hf``).

A rendered prompt is split at the image: the *prefix* (system text + the image) is the same
for every question about a frame and is evaluated once; the *suffix* (the question and the
assistant turn) is evaluated per question.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import ConfigError

IMAGE_MARKER = "<image>"


@dataclass(frozen=True)
class ChatFormat:
    """One variant's template.

    Attributes:
        name: Config name of the format.
        template: The whole prompt with ``{system}``, ``<image>`` and ``{question}`` in place.
        default_system: System text used when the config gives none.
        system_separator: Put after a non-empty system text (for templates with no system
            turn of their own).
    """

    name: str
    template: str
    default_system: str
    system_separator: str = ""

    def render(self, question: str, system: str | None = None) -> str:
        """The full prompt text, with ``<image>`` where the image goes."""
        prefix, suffix = self.split(question, system)
        return prefix + IMAGE_MARKER + suffix

    def split(self, question: str, system: str | None = None) -> tuple[str, str]:
        """The text before the image and the text after it."""
        system_text = self.default_system if system is None else system
        before, after = self.template.split(IMAGE_MARKER)
        if system_text:
            system_text += self.system_separator
        system_part = before.format(system=system_text)
        return system_part, after.replace("{question}", question)


CHAT_FORMATS: dict[str, ChatFormat] = {
    # llava-hf/llava-v1.6-34b-hf (Nous-Hermes-2-Yi-34B): ChatML.
    "chatml": ChatFormat(
        name="chatml",
        template=(
            "<|im_start|>system\n{system}<|im_end|><|im_start|>user\n"
            "<image>\n{question}<|im_end|><|im_start|>assistant\n"
        ),
        default_system="Answer the questions.",
    ),
    # llava-hf/llava-v1.6-mistral-7b-hf (Mistral-7B-Instruct-v0.2): no system turn; a system
    # text, when given, opens the instruction.
    "mistral": ChatFormat(
        name="mistral",
        template="[INST] {system}<image>\n{question} [/INST]",
        default_system="",
        system_separator="\n",
    ),
    # llava-hf/llava-v1.6-vicuna-7b-hf: Vicuna v1.
    "vicuna": ChatFormat(
        name="vicuna",
        template="{system} USER: <image>\n{question} ASSISTANT:",
        default_system=(
            "A chat between a curious human and an artificial intelligence assistant. "
            "The assistant gives helpful, detailed, and polite answers to the human's questions."
        ),
    ),
}


def get_chat_format(name: str) -> ChatFormat:
    """Look up a format by name.

    Raises:
        ConfigError: No such format.
    """
    try:
        return CHAT_FORMATS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model.chat_format {name!r}; choose one of {sorted(CHAT_FORMATS)}"
        ) from None
