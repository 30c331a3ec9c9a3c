"""Reconstruction metrics for codecs: frame-wise chroma similarity and log-mel distance.

Definitions (also in benchmarks/README.md):

* chroma similarity: power spectrogram (n_fft 4096, hop 640, Hann); bins from 32.7 Hz (C1)
  to 4186 Hz (C8) summed into their nearest pitch class; cosine similarity per frame between
  original and decoded chroma; mean over the frames whose original energy (sum of power over
  all bins) is above 1% of the clip's loudest frame.
* log-mel distance: 128-band mel power spectrogram (HTK mel, 0 Hz to Nyquist, n_fft 2048,
  hop 640) in dB; both spectrograms floored at (original's maximum - 50 dB); mean absolute
  difference in dB over all time-frequency cells. ``logmel_active`` averages only over cells
  where either spectrogram is above the floor (a stricter view).
"""

from __future__ import annotations

import numpy as np
import torch


def power_spectrogram(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``(N,)`` -> power spectrogram ``(F, T)``."""
    wav = torch.as_tensor(np.asarray(x, dtype=np.float32))
    spec = torch.stft(wav, n_fft, hop, window=torch.hann_window(n_fft), center=True,
                      pad_mode="constant", return_complex=True)
    return (spec.abs() ** 2).numpy().astype(np.float64)


def chroma_matrix(n_fft: int, sample_rate: int) -> np.ndarray:
    """``(12, F)`` 0/1 map of STFT bins in C1..C8 to pitch classes (0 = C)."""
    f = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    m = np.zeros((12, len(f)))
    ok = (f >= 32.70) & (f <= 4186.0)
    pc = np.mod(np.round(12 * np.log2(f[ok] / 440.0) + 69).astype(int), 12)
    m[pc, np.nonzero(ok)[0]] = 1.0
    return m


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """HTK-mel triangular filters ``(n_mels, F)`` from 0 Hz to Nyquist."""
    def hz_to_mel(h):
        return 2595.0 * np.log10(1.0 + h / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    f = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(0, hz_to_mel(sample_rate / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (f[None] - lo) / (mid - lo)
    down = (hi - f[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


def chroma_frames(x: np.ndarray, sample_rate: int, hop: int = 640, n_fft: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` -> ``(chroma (12, T), energy (T,))``: pitch-class power per frame and total power."""
    power = power_spectrogram(x, n_fft, hop)
    return chroma_matrix(n_fft, sample_rate) @ power, power.sum(0)


def frame_cosine(ref: np.ndarray, est: np.ndarray, ref_energy: np.ndarray, energy_threshold: float = 0.01) -> float:
    """Mean cosine similarity of the columns of ``(12, T)`` matrices over the frames whose
    reference energy is above ``energy_threshold`` of its maximum."""
    t = min(ref.shape[1], est.shape[1])
    ref, est, ref_energy = ref[:, :t], est[:, :t], ref_energy[:t]
    keep = ref_energy > energy_threshold * ref_energy.max()
    num = (ref * est).sum(0)
    den = np.linalg.norm(ref, axis=0) * np.linalg.norm(est, axis=0) + 1e-20
    return float((num / den)[keep].mean()) if keep.any() else 0.0


def chroma_similarity(ref: np.ndarray, est: np.ndarray, sample_rate: int, hop: int = 640,
                      n_fft: int = 4096, energy_threshold: float = 0.01) -> float:
    """Mean frame-wise chroma cosine similarity of ``est`` to ``ref`` (both ``(N,)``)."""
    n = min(len(ref), len(est))
    cr, energy = chroma_frames(ref[:n], sample_rate, hop, n_fft)
    ce, _ = chroma_frames(est[:n], sample_rate, hop, n_fft)
    return frame_cosine(cr, ce, energy, energy_threshold)


def log_mel_distance(ref: np.ndarray, est: np.ndarray, sample_rate: int, hop: int = 640,
                     n_fft: int = 2048, n_mels: int = 128, floor_db: float = 50.0) -> dict:
    """Log-mel distance in dB: ``{"logmel": all cells, "logmel_active": cells above the floor}``."""
    n = min(len(ref), len(est))
    fb = mel_filterbank(n_mels, n_fft, sample_rate)
    mr = 10 * np.log10(fb @ power_spectrogram(ref[:n], n_fft, hop) + 1e-20)
    me = 10 * np.log10(fb @ power_spectrogram(est[:n], n_fft, hop) + 1e-20)
    floor = mr.max() - floor_db
    mr, me = np.maximum(mr, floor), np.maximum(me, floor)
    diff = np.abs(mr - me)
    active = (mr > floor) | (me > floor)
    return {"logmel": float(diff.mean()),
            "logmel_active": float(diff[active].mean()) if active.any() else 0.0}
