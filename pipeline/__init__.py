"""Offline batch video-frame captioning with LLaVA 1.6 through llama-cpp-python."""

__version__ = "0.1.0"
