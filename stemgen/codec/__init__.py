"""Codecs: mono audio <-> integer tokens ``(B, Q, T)``.

``load_codec()`` returns the embedded codec fitted by ``stemgen codec fit`` (offline default);
``load_codec("encodec_32khz")`` the paper's EnCodec (weights from a local folder or the hub).
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Codec

__all__ = ["Codec", "load_codec", "default_embedded_dir"]


def default_embedded_dir() -> Path:
    """Where ``stemgen codec fit`` writes, and ``load_codec()`` reads, the embedded codec."""
    from ..paths import codecs_dir

    return codecs_dir() / "embedded"


def load_codec(name_or_path: str | Path | None = None) -> Codec:
    """Load a codec by name or path.

    Args:
        name_or_path: ``None`` or ``"embedded"``: the fitted embedded codec in
            :func:`default_embedded_dir`; ``"encodec_32khz"`` or ``"facebook/encodec_32khz"``:
            EnCodec 32 kHz (local weights first, then the hub); a folder holding an embedded
            codec or EnCodec weights; an EnCodec weights file.

    Raises:
        MissingWeightsError: the weights are not on this machine; says how to get them.
    """
    from .embedded import KIND, EmbeddedCodec
    from .encodec32 import DEFAULT_NAME, HUB_ID, load_encodec

    if name_or_path is None or name_or_path == "embedded":
        return EmbeddedCodec.load(default_embedded_dir())
    if name_or_path == DEFAULT_NAME:
        return load_encodec(None)
    if name_or_path == HUB_ID:
        return load_encodec(HUB_ID)
    path = Path(name_or_path).expanduser()
    cfg = path / "config.json"
    if path.is_dir() and cfg.exists() and json.loads(cfg.read_text()).get("codec") == KIND:
        return EmbeddedCodec.load(path)
    return load_encodec(path if path.exists() else str(name_or_path))
