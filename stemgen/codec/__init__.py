"""Codecs: mono audio <-> integer tokens ``(B, Q, T)``.

``load_codec()`` returns the embedded codec (offline default): the one fitted by ``stemgen codec
fit`` if there is one, else the one shipped with the package (fitted the same way on the
embedded chorales; the demo model's codec). ``load_codec("encodec_32khz")`` is the paper's
EnCodec (weights from a local folder or the hub).
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Codec

__all__ = ["Codec", "load_codec", "default_embedded_dir", "shipped_embedded_dir"]


def default_embedded_dir() -> Path:
    """Where ``stemgen codec fit`` writes, and ``load_codec()`` reads first, the embedded codec."""
    from ..paths import codecs_dir

    return codecs_dir() / "embedded"


def shipped_embedded_dir() -> Path:
    """The embedded codec shipped in the package (``load_codec()`` when none was fitted)."""
    return Path(__file__).resolve().parent.parent / "assets" / "demo_chorales" / "codec"


def load_codec(name_or_path: str | Path | None = None) -> Codec:
    """Load a codec by name or path.

    Args:
        name_or_path: ``None`` or ``"embedded"``: the fitted embedded codec in
            :func:`default_embedded_dir`, else the shipped one (:func:`shipped_embedded_dir`); ``"encodec_32khz"`` or ``"facebook/encodec_32khz"``:
            EnCodec 32 kHz (local weights first, then the hub); a folder holding an embedded
            codec or EnCodec weights; an EnCodec weights file.

    Raises:
        MissingWeightsError: the weights are not on this machine; says how to get them.
    """
    from .embedded import KIND, EmbeddedCodec
    from .encodec32 import DEFAULT_NAME, HUB_ID, load_encodec

    if name_or_path is None or name_or_path == "embedded":
        fitted = default_embedded_dir()
        if not (fitted / "model.safetensors").exists() and (shipped_embedded_dir() / "model.safetensors").exists():
            return EmbeddedCodec.load(shipped_embedded_dir())
        return EmbeddedCodec.load(fitted)
    if name_or_path == DEFAULT_NAME:
        return load_encodec(None)
    if name_or_path == HUB_ID:
        return load_encodec(HUB_ID)
    path = Path(name_or_path).expanduser()
    cfg = path / "config.json"
    if path.is_dir() and cfg.exists() and json.loads(cfg.read_text()).get("codec") == KIND:
        return EmbeddedCodec.load(path)
    return load_encodec(path if path.exists() else str(name_or_path))
