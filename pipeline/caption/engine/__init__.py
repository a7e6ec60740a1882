"""The llama-cpp-python engine: frames in, answers out, many sequences decoded together.

- :mod:`.records`: settings, questions, answers (with a finish reason) and figures;
- :mod:`.native`: the text model, its lanes (contexts) and llama.cpp's log;
- :mod:`.vision`: frame preparation and CLIP, in the reference or llama.cpp's image layout;
- :mod:`.source`: frames prepared ahead on background threads;
- :mod:`.prompts`: the questions tokenized around the image, and the KV cells a frame takes;
- :mod:`.frames`: a frame's preparation, or its error answers when it cannot be captioned;
- :mod:`.sequence`: a sequence's state, how its tokens are picked and why it ends;
- :mod:`.grammar`: a question's JSON Schema as a grammar, token masks, the answer's check;
- :mod:`.lanes`: how many lanes, opening them, and the threads that drive them;
- :mod:`.scheduler`: :class:`Engine`, admission and the batched decode step.
"""

from pipeline.caption.engine.records import (
    IMAGE_LAYOUTS,
    Answer,
    AnswerSettings,
    AnswerTrace,
    EngineError,
    EngineSettings,
    EngineStats,
    FinishReason,
    LoadSettings,
    Question,
)
from pipeline.caption.engine.scheduler import Engine

__all__ = [
    "IMAGE_LAYOUTS",
    "Answer",
    "AnswerSettings",
    "AnswerTrace",
    "Engine",
    "EngineError",
    "EngineSettings",
    "EngineStats",
    "FinishReason",
    "LoadSettings",
    "Question",
]
