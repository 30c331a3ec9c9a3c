"""The machine a benchmark ran on, recorded in every result file."""

from __future__ import annotations

import os
import platform


def machine_info() -> dict:
    """CPU model, core count, whether the CPU runs bf16 natively (AVX512-BF16/AMX: what ``precision
    "auto"`` picks and ``stemgen-train`` trains in), its vector extensions (ATen's dispatch level,
    and whether it has AMX tiles, which oneDNN's bf16 matmuls and the fused attention use), torch
    version/threads and GPU name (if any)."""
    import torch

    from ..model import native_bf16

    cpu, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_native_bf16": native_bf16("cpu"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_amx_bf16": "amx_bf16" in flags,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }
