"""Each preset renders exactly its variant's documented prompt (llava-hf model cards)."""

from __future__ import annotations

import pytest

from pipeline.caption.formats import get_chat_format
from pipeline.config import compose_config
from pipeline.errors import ConfigError


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        (
            "llava16_34b",
            "<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n"
            "<image>\nWhat is shown in this image?<|im_end|><|im_start|>assistant\n",
        ),
        ("llava16_mistral_7b", "[INST] <image>\nWhat is shown in this image? [/INST]"),
        (
            "llava16_vicuna_7b",
            "A chat between a curious human and an artificial intelligence assistant. The "
            "assistant gives helpful, detailed, and polite answers to the human's questions. "
            "USER: <image>\nWhat is shown in this image? ASSISTANT:",
        ),
    ],
)
def test_preset_renders_documented_prompt(preset: str, expected: str) -> None:
    cfg = compose_config([f"model={preset}", "video=x"])
    chat_format = get_chat_format(cfg.model.chat_format)
    assert chat_format.render("What is shown in this image?", cfg.model.system_prompt) == expected


def test_system_prompt_override() -> None:
    chatml = get_chat_format("chatml")
    assert chatml.render("Q?", "Be brief.").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert get_chat_format("mistral").render("Q?", "Be brief.") == "[INST] Be brief.\n<image>\nQ? [/INST]"


def test_prefix_is_shared_by_all_questions() -> None:
    chatml = get_chat_format("chatml")
    prefix_a, suffix_a = chatml.split("A?")
    prefix_b, suffix_b = chatml.split("B?")
    assert prefix_a == prefix_b
    assert suffix_a != suffix_b and suffix_a.startswith("\nA?")


def test_unknown_format_names_choices() -> None:
    with pytest.raises(ConfigError, match="chatml"):
        get_chat_format("llama3")
