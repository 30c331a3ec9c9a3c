"""The machine a benchmark ran on (``stemgen.eval.machine``), for the scripts here that import it by this name."""

from stemgen.eval.machine import machine_info

__all__ = ["machine_info"]
