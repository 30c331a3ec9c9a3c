"""stemgen: a music generation model that listens (StemGen, Parker et al.).

Heavy dependencies (torch, lightning, madmom, encodec) are imported lazily, when the
attribute or submodule that needs them is first used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {"api", "audio", "instruments", "codec", "data", "eval", "errors", "paths", "sampling"}
_ATTRS = {
    "load_codec": ("stemgen.codec", "load_codec"),
    "resolve_instrument": ("stemgen.instruments", "resolve"),
    "load_mono": ("stemgen.audio", "load_mono"),
    "generate": ("stemgen.api", "generate"),
    "load_model": ("stemgen.api", "load_model"),
    "Stem": ("stemgen.api", "Stem"),
    "StemModel": ("stemgen.api", "StemModel"),
    "SamplingSettings": ("stemgen.sampling.decode", "SamplingSettings"),
}

__all__ = sorted(_SUBMODULES | set(_ATTRS))


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"stemgen.{name}")
    if name in _ATTRS:
        module, attr = _ATTRS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'stemgen' has no attribute {name!r}")


def __dir__():
    return __all__
