"""The masked-token transformer, its training masks and loss."""

from .transformer import PRESETS, ModelConfig, StemGenModel, native_bf16

__all__ = ["ModelConfig", "PRESETS", "StemGenModel", "native_bf16"]
