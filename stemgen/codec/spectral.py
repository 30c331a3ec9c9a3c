"""Short-time Fourier helpers for the embedded codec: log-magnitude frames and Griffin-Lim.

All functions take ``(B, N)`` float audio and work on frames of ``hop`` samples: frame t is
centred on sample ``t * hop``; an input of ``T * hop`` samples gives exactly T frames.
"""

from __future__ import annotations

import math

import torch


def magnitude_scale(window: torch.Tensor) -> float:
    """|STFT| of a full-scale sine at its bin: magnitudes are divided by this (0 dB = full scale)."""
    return float(window.sum()) / 2.0


def log_magnitude(wav: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor,
                  floor_db: float) -> torch.Tensor:
    """``(B, T*hop)`` audio -> ``(B, T, F)`` magnitude in dB re full scale, floored at ``floor_db``.

    F = n_fft // 2 + 1 frequency bins.
    """
    spec = torch.stft(wav, n_fft, hop, window=window, center=True, pad_mode="constant",
                      return_complex=True)  # (B, F, T+1)
    t = wav.shape[-1] // hop
    mag = spec[..., :t].abs().transpose(1, 2) / magnitude_scale(window)  # (B, T, F)
    return (20.0 * torch.log10(mag.clamp_min(1e-10))).clamp_min(floor_db)


def coherent_phase(num_bins: int, num_frames: int, n_fft: int, hop: int) -> torch.Tensor:
    """Initial phase ``(F, T)`` of a stationary sinusoid at each bin centre.

    Deterministic, and a better start for Griffin-Lim on tonal music than random phase.
    """
    k = torch.arange(num_bins, dtype=torch.float64)[:, None]
    t = torch.arange(num_frames, dtype=torch.float64)[None, :]
    return torch.remainder(2 * math.pi * k * hop * t / n_fft, 2 * math.pi).float()


def griffin_lim(mag: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor, length: int,
                n_iter: int = 32, momentum: float = 0.99) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin et al. 2013): a signal whose |STFT| approximates ``mag``.

    Args:
        mag: ``(B, F, T')`` linear magnitudes (STFT scale), T' frames centred at ``t * hop``.
        length: output samples.
        n_iter: iterations; momentum: the "fast" acceleration (0 gives classic Griffin-Lim).

    Returns:
        ``(B, length)`` audio.
    """
    phase = coherent_phase(mag.shape[1], mag.shape[2], n_fft, hop).to(mag.device)
    angles = torch.polar(torch.ones_like(mag), phase.expand_as(mag))
    prev = torch.zeros_like(angles)
    alpha = momentum / (1.0 + momentum)
    for _ in range(n_iter):
        wav = torch.istft(mag * angles, n_fft, hop, window=window, center=True, length=length)
        rebuilt = torch.stft(wav, n_fft, hop, window=window, center=True, pad_mode="constant",
                             return_complex=True)[..., : mag.shape[-1]]
        angles = rebuilt - alpha * prev
        angles = angles / angles.abs().clamp_min(1e-16)
        prev = rebuilt
    return torch.istft(mag * angles, n_fft, hop, window=window, center=True, length=length)
