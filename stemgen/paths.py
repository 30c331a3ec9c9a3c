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


#: the name of the shipped demo model wherever a model name is accepted
DEMO = "demo"


def demo_model_dir() -> Path:
    """The shipped demo model (exported weights + its embedded codec), inside the package."""
    return Path(__file__).resolve().parent / "assets" / "demo_chorales"


def model_dir(name: str) -> Path:
    """The folder a model name points to: the shipped demo model for ``demo``, else the path."""
    return demo_model_dir() if name == DEMO else Path(name).expanduser()


def codecs_dir() -> Path:
    """Folder holding codec weights, one sub-folder per codec name."""
    return home() / "codecs"


def data_dir() -> Path:
    """Folder holding prepared datasets, e.g. ``data/chorales``."""
    return home() / "data"


def atomic_write(path: Path, write) -> Path:
    """Write ``path`` all at once: ``write(tmp)`` fills a temporary file beside it, which then
    replaces ``path`` in one rename. The temporary name carries the process id, so processes
    writing the same file at once (DDP ranks) never share a temporary file; the last rename wins.
    Parent folders are created. The file gets the permissions of any new file (0666 less the
    umask), whatever ``write`` created it with: safetensors writes its files owner-only (0600),
    which would leave an export unreadable to the others who share it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return path


def _umask() -> int:
    """The process's umask (read by setting it and back: POSIX has no other way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
