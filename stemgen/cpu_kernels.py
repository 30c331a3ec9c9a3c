"""Building and caching the C++ CPU extensions (the fused sampling step, the fused attention).

Each extension is one source file, compiled at first use by ``torch.utils.cpp_extension`` with
the vector instructions ATen itself dispatches to on this CPU, and cached per machine, Python and
torch version (:func:`build_directory`). Where it cannot be built (no compiler, no headers) the
caller gets None and runs its eager reference. ``STEMGEN_FUSED=0`` turns every extension off.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

#: a build lock older than this (seconds) is left by a build that was killed (a build takes under
#: a minute, a few on a busy 2-core machine): torch would wait for it forever
STALE_LOCK_SECONDS = 600.0


def enabled() -> bool:
    """False when ``STEMGEN_FUSED=0`` asks for the eager reference everywhere."""
    return os.environ.get("STEMGEN_FUSED", "1") not in ("0", "false", "no")


def capability_flags(capability: str | None = None) -> tuple[str, list[str]]:
    """(name, compiler flags) of the vector instructions ATen dispatches to on this CPU, or of
    ``capability`` ("AVX512", "AVX2", "DEFAULT": to build for another CPU)."""
    cap = capability or torch.backends.cpu.get_cpu_capability()
    if cap.startswith("AVX512"):
        return "avx512", ["-DCPU_CAPABILITY=AVX512", "-DCPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512bw",
                          "-mavx512vl", "-mavx512dq", "-mfma"]
    if cap.startswith("AVX2"):
        return "avx2", ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2", "-mavx2", "-mfma", "-mf16c"]
    return "default", ["-DCPU_CAPABILITY=DEFAULT"]


def wait_for_build_lock(build_dir: str | Path, stale_after: float = STALE_LOCK_SECONDS, poll: float = 1.0) -> bool:
    """Wait while another process builds the extension in ``build_dir`` (its ``lock`` file
    exists); a lock older than ``stale_after`` seconds was left by a killed build (Ctrl-C during
    the first generation) and is removed with a warning. True if a stale lock was removed."""
    lock = Path(build_dir) / "lock"
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return False
        if age > stale_after:
            log.warning("stemgen: removing the stale build lock %s (%.0f s old, left by an interrupted build of "
                        "the CPU kernels); building them again.", lock, age)
            lock.unlink(missing_ok=True)
            return True
        time.sleep(poll)


def build_directory(name: str) -> Path:
    """Where the CPU kernels named ``name`` are built and cached: ``$TORCH_EXTENSIONS_DIR`` if set,
    else torch's own default, ``$XDG_CACHE_HOME/torch_extensions`` (``~/.cache/torch_extensions``;
    shared by every stemgen home, so the kernels are built once per machine), one folder per Python
    and torch version (a build is only valid for the torch it was compiled against)."""
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(env or Path(xdg or Path.home() / ".cache") / "torch_extensions").expanduser()
    version = torch.__version__.replace("+", "_").replace(".", "")
    return base / f"py{sys.version_info.major}{sys.version_info.minor}_torch{version}" / name


def load_extension(stem: str, source: Path, what: str, capability: str | None = None):
    """The extension built from ``source`` as ``{stem}_{capability}`` (built once, then loaded
    from :func:`build_directory`), or None with a warning naming ``what`` falls back to the eager
    reference when it cannot be built or ``STEMGEN_FUSED=0``. ``capability``: build for that of
    :func:`capability_flags` instead of this CPU's."""
    if not enabled():
        return None
    try:
        from torch.utils.cpp_extension import load

        cap, flags = capability_flags(capability)
        name = f"{stem}_{cap}"
        build_dir = build_directory(name)
        build_dir.mkdir(parents=True, exist_ok=True)
        wait_for_build_lock(build_dir)
        return load(name=name, sources=[str(source)],
                    extra_cflags=["-O3", "-ffp-contract=off", "-fopenmp", *flags], extra_ldflags=["-fopenmp"],
                    build_directory=str(build_dir), verbose=False)
    except Exception as err:  # no compiler, no headers: the eager reference still works
        log.warning("stemgen: the %s could not be built (%s: %s); using the eager reference.", what,
                    type(err).__name__, str(err).strip().splitlines()[-1:] or "")
        return None
