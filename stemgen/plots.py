"""Figures a person looks at: stacked log-mel spectrograms of several signals."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def log_mel_db(wav: np.ndarray, sample_rate: int, n_mels: int = 128, hop: int = 640,
               n_fft: int = 2048) -> np.ndarray:
    """``(N,)`` audio -> ``(n_mels, T)`` mel power in dB re the signal's maximum (floor -80)."""
    from .spectra import mel_filterbank, power_spectrogram

    mel = mel_filterbank(n_mels, n_fft, sample_rate) @ power_spectrogram(wav, n_fft, hop)
    db = 10 * np.log10(mel + 1e-12)
    return np.maximum(db - db.max(), -80.0)


def spectrogram_figure(signals: dict[str, np.ndarray], sample_rate: int, path: str | Path,
                       title: str | None = None) -> Path:
    """Write a PNG with one log-mel spectrogram panel per named signal, on shared axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(signals)
    fig, axes = plt.subplots(n, 1, figsize=(11, 2.6 * n + 0.6), sharex=True, squeeze=False)
    for ax, (name, wav) in zip(axes[:, 0], signals.items()):
        db = log_mel_db(np.asarray(wav, dtype=np.float32), sample_rate)
        dur = len(wav) / sample_rate
        im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0,
                       extent=(0, dur, 0, db.shape[0]))
        ax.set_ylabel("mel band")
        ax.set_title(name, loc="left", fontsize=10)
        fig.colorbar(im, ax=ax, pad=0.01, label="dB")
    axes[-1, 0].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
