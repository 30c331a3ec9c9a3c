"""Exceptions raised for bad input. Each message names the problem and the fix."""

from __future__ import annotations


class StemgenError(Exception):
    """Base class of stemgen's own errors."""


class AudioError(StemgenError, ValueError):
    """Audio that cannot be used: missing, unreadable, empty, silent, non-finite or too short."""


class InstrumentError(StemgenError, ValueError):
    """An instrument name, program or id that is not in the conditioning vocabulary."""


class MissingWeightsError(StemgenError, FileNotFoundError):
    """Model or codec weights that are not on this machine and cannot be downloaded."""


class CheckpointError(StemgenError, ValueError):
    """A checkpoint whose keys, shapes or config do not match what stemgen expects."""


class TokenError(StemgenError, ValueError):
    """Codec tokens of the wrong type, shape, number of levels or value range for this codec."""


class DependencyError(StemgenError, ImportError):
    """An optional package that this feature needs is not installed."""
