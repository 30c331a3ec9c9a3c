"""Triton kernel of ``stemgen::candidates`` for CUDA (see :mod:`.fused`).

One program per position (b, t): the G = 1 or 3 branch rows of V logits are loaded once into
registers, and the per-branch log-softmax, the eq. 3 combination, renormalisation, temperature,
Gumbel noise from the uniform noise passed in (the temperature gated by the silence code when one
is given: :func:`~stemgen.sampling.steps.silence_gated`), argmax and the candidate's probability
are computed there; only the token and its probability are written. Already decoded positions load
nothing. The arithmetic follows the eager reference operation by operation. With
``TRITON_INTERPRET=1`` the same kernel runs on CPU tensors (that is how the tests check it on
machines without a GPU).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _log_softmax(x):
    m = tl.max(x, 0)
    s = tl.sum(tl.exp(x - m), 0)
    return (x - m) - tl.log(s)


@triton.jit
def _log1mexp(x):
    """log(1 - exp(x)) for x <= 0 (steps._log1mexp; Triton's interpreter has no expm1, so near 0
    the series of -expm1 to x^3)."""
    near = -x * (1.0 + x * (0.5 + x / 6.0))
    return tl.where(x > -1e-3, tl.log(near), tl.log(1.0 - tl.exp(x)))


@triton.jit
def _candidates_kernel(logits_ptr, current_ptr, noise_ptr, tokens_ptr, conf_ptr, B, T, V, la, li, lu, temperature,
                       mask_id, silence, gate_t, G: tl.constexpr, SAMPLE: tl.constexpr, GATE: tl.constexpr,
                       BLOCK_V: tl.constexpr):
    p = tl.program_id(0)  # position b * T + t
    cur = tl.load(current_ptr + p)
    if cur == mask_id:
        b = p // T
        t = p % T
        offs = tl.arange(0, BLOCK_V)
        valid = offs < V
        neg = float("-inf")
        row = (b * T + t).to(tl.int64) * V
        a = tl.load(logits_ptr + row + offs, mask=valid, other=neg).to(tl.float32)
        lp = _log_softmax(a)
        if G == 3:
            branch = (B * T).to(tl.int64) * V
            i = _log_softmax(tl.load(logits_ptr + branch + row + offs, mask=valid, other=neg).to(tl.float32))
            u = _log_softmax(tl.load(logits_ptr + 2 * branch + row + offs, mask=valid, other=neg).to(tl.float32))
            # padding lanes are -inf, and -inf scaled by scales of both signs would give nan
            c = (la * tl.where(valid, lp, 0.0) + li * tl.where(valid, i, 0.0)) + lu * tl.where(valid, u, 0.0)
            lp = _log_softmax(tl.where(valid, c, neg))
        if GATE:  # whether the stem sounds and what it plays, tempered as two decisions
            lp = _log_softmax(tl.where(valid, lp, neg))
            is_s = offs == silence
            l_silent = tl.sum(tl.where(is_s, lp, 0.0), 0)
            l_sound = _log1mexp(l_silent)
            rest = tl.where(valid & (offs != silence), lp, neg)
        if SAMPLE:
            if GATE:
                a = l_silent / gate_t
                s = l_sound / gate_t
                mx = tl.maximum(a, s)
                lse = tl.log(tl.exp(a - mx) + tl.exp(s - mx))
                tempered = _log_softmax(rest / temperature) + ((s - mx) - lse)
                tempered = tl.where(is_s, (a - mx) - lse, tempered)
            else:
                tempered = _log_softmax(tl.where(valid, lp / temperature, neg))
            x = tl.load(noise_ptr + p.to(tl.int64) * V + offs, mask=valid, other=0.5)
            x = tl.minimum(tl.maximum(x, 1e-20), 1.0 - 1e-7)
            z = tl.where(valid, tempered + (-tl.log(-tl.log(x))), neg)
            best = tl.argmax(z, 0, tie_break_left=True)
        else:
            tempered = _log_softmax(tl.where(valid, lp, neg))
            best = tl.argmax(tl.where(valid, tempered, neg), 0, tie_break_left=True)
            if GATE:
                sounding = tl.argmax(tl.where(valid & (offs != silence), tempered, neg), 0, tie_break_left=True)
                ts = tl.sum(tl.where(is_s, tempered, 0.0), 0)
                best = tl.where(ts > _log1mexp(ts), silence, sounding)
        conf = tl.exp(tl.sum(tl.where(offs == best, tempered, 0.0), 0))
        tl.store(tokens_ptr + p, best.to(tl.int64))
        tl.store(conf_ptr + p, conf)
    else:
        tl.store(tokens_ptr + p, cur)
        tl.store(conf_ptr + p, 0.0)


def candidates(logits: torch.Tensor, current: torch.Tensor, noise: torch.Tensor, lambda_context: float,
               lambda_instrument: float, temperature: float, mask_id: int,
               silence_code: int = -1, silence_temperature: float = -1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``stemgen::candidates`` on the GPU (or on CPU tensors under ``TRITON_INTERPRET=1``)."""
    b, t = current.shape
    v = logits.shape[-1]
    if logits.shape[0] not in (b, 3 * b) or logits.shape[1] != t or tuple(noise.shape) != (b, t, v):
        raise RuntimeError(f"candidates: logits must hold 1 or 3 guidance branches of the batch and noise must be "
                           f"(B, T, V); got logits {tuple(logits.shape)}, current {tuple(current.shape)}, "
                           f"noise {tuple(noise.shape)}")
    logits, current, noise = logits.contiguous(), current.contiguous(), noise.float().contiguous()
    tokens = torch.empty_like(current)
    conf = torch.empty(current.shape, dtype=torch.float32, device=current.device)
    block = triton.next_power_of_2(v)
    gate_t = float(silence_temperature if silence_temperature >= 0 else temperature)
    _candidates_kernel[(b * t,)](
        logits, current, noise, tokens, conf, b, t, v, float(lambda_context), float(lambda_instrument),
        float(1.0 - lambda_context - lambda_instrument), float(temperature) if temperature > 0 else 1.0, mask_id,
        silence_code, gate_t if gate_t > 0 else 1.0, G=logits.shape[0] // b, SAMPLE=temperature > 0,
        GATE=0 <= silence_code < v and (temperature != 1 or gate_t != 1), BLOCK_V=block, num_warps=8 if block >= 2048 else 4)
    return tokens, conf
