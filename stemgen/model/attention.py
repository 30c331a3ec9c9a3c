"""Self-attention with rotary positions: the reference and a fused CPU kernel for inference.

:func:`reference_attention` is the model's definition: rotary embedding on q and k
(:func:`apply_rotary`), then softmax attention over every frame (no mask). The custom op
``torch.ops.stemgen.rotary_attention(qkv, cos, sin, n_heads) -> (B, T, D)`` computes the same
from the ``(B, T, 3D)`` output of the qkv projection in one C++ kernel (``csrc/attention.cpp``)
per (example, head): in bf16 with AVX512-BF16 dot products and fp32 accumulation (4-5.5x faster
than the reference at the `small` preset's head size 32), on AMX tiles where the CPU has them
(Intel Xeon from Sapphire Rapids; head sizes 32 and 64: :func:`amx_runs`), or in float32 with AVX2 FMA chains,
for CPUs without native bf16, where inference runs in float32 (docs/performance.md). It runs
where :func:`fused_applies` holds (CPU, bf16 or float32, head size a multiple of 16, no gradient)
and the CPU has the kernel's instructions (:func:`kernel_runs`); elsewhere the op runs the
reference, so it exists on every machine. Its fake implementation makes it one opaque node for
``torch.compile``. ``STEMGEN_FUSED=0`` turns the kernel off.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F

from ..cpu_kernels import load_extension

CSRC = Path(__file__).parent / "csrc" / "attention.cpp"


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs of features of ``x (B, H, T, hd)`` by position-dependent angles."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)  # (B, H, T, hd/2) each
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)
    return out.type_as(x)


def reference_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int) -> torch.Tensor:
    """``qkv (B, T, 3D)``, float32 ``cos, sin (>= T, hd/2)`` -> attention output ``(B, T, D)``."""
    t = qkv.shape[1]
    q, k, v = qkv.unflatten(-1, (3, n_heads, -1)).permute(2, 0, 3, 1, 4)  # (B, H, T, hd) each
    q, k = apply_rotary(q, cos[:t], sin[:t]), apply_rotary(k, cos[:t], sin[:t])
    y = F.scaled_dot_product_attention(q, k, v)  # bidirectional: no causal mask
    return y.transpose(1, 2).flatten(2)


@lru_cache(maxsize=None)
def cpu_extension():
    """The compiled kernels, or None (no compiler, or ``STEMGEN_FUSED=0``)."""
    return load_extension("stemgen_attention", CSRC, "fused CPU attention kernel")


def kernel_runs(dtype: torch.dtype) -> bool:
    """Whether the fused kernel computes ``dtype`` on this CPU: bf16 needs AVX512-BF16, float32 AVX2
    and FMA (and a build for ATen's AVX2 or AVX512 dispatch)."""
    ext = cpu_extension()
    if ext is None:
        return False
    return bool(ext.supported()) if dtype == torch.bfloat16 else dtype == torch.float32 and bool(ext.supported_float32())


def amx_runs(head_size: int | None = None) -> bool:
    """Whether the bf16 kernel runs its products on AMX tiles here: a CPU with AMX-BF16 whose OS
    lets this process use the tile registers, and (if given) a head size the kernel runs there (32, 64:
    the kernel's own ``amx_head_size``)."""
    ext = cpu_extension()
    return (ext is not None and bool(ext.amx_supported())
            and (head_size is None or bool(ext.amx_head_size(head_size))))


def fused_applies(qkv: torch.Tensor, n_heads: int) -> bool:
    """Whether the fused op is meant for ``qkv (B, T, 3D)``: inference (no gradient) on the CPU in
    bf16 or float32 with a head size the kernel handles. Depends on the tensor's properties only,
    so a compiled caller decides it once per graph."""
    head = qkv.shape[-1] // 3 // n_heads
    return (qkv.device.type == "cpu" and qkv.dtype in (torch.bfloat16, torch.float32) and head % 16 == 0
            and not (torch.is_grad_enabled() and qkv.requires_grad))


@torch.library.custom_op("stemgen::rotary_attention", mutates_args=())
def rotary_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_heads: int) -> torch.Tensor:
    if fused_applies(qkv, n_heads) and kernel_runs(qkv.dtype):
        return cpu_extension().rotary_attention(qkv, cos, sin, n_heads)
    return reference_attention(qkv, cos, sin, n_heads)


@rotary_attention.register_fake
def _(qkv, cos, sin, n_heads):
    return qkv.new_empty((qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3))
