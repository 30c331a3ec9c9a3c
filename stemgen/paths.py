"""Where stemgen keeps prepared artefacts (rendered data, fitted codecs, downloaded weights)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The stemgen cache folder: ``$STEMGEN_HOME``, else ``$XDG_CACHE_HOME/stemgen``, else
    ``~/.cache/stemgen``. Not created here; writers create what they need."""
    env = os.environ.get("STEMGEN_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "stemgen"


def codecs_dir() -> Path:
    """Folder holding codec weights, one sub-folder per codec name."""
    return home() / "codecs"


def data_dir() -> Path:
    """Folder holding prepared datasets, e.g. ``data/chorales``."""
    return home() / "data"
