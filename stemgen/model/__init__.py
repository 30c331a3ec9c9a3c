"""The masked-token transformer, its training masks and loss."""

from .transformer import PRESETS, ModelConfig, StemGenModel

__all__ = ["ModelConfig", "PRESETS", "StemGenModel"]
