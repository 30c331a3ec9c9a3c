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

from ..spectra import chroma_frames, frame_cosine, mel_filterbank, power_spectrogram


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
