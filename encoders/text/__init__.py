"""Text encoders on transformers models (MiniLM-L6 offline by default, any hub model by name)."""

from encoders.text.encoder import MINILM, TINY_RANDOM, LoRASettings, TextConfig, TextEncoder

__all__ = ["MINILM", "TINY_RANDOM", "LoRASettings", "TextConfig", "TextEncoder"]
