"""Audio I/O: read (soundfile), resample (soxr), downmix, validate, write; loudness in dBFS.

Conventions: audio is float32, channels first. A mono signal is a 1-D array of samples;
a multichannel one is ``(C, N)``. Sample rates are in Hz. Loudness is in dBFS where a
full-scale square wave is 0 dBFS (RMS of 1.0).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Union

import numpy as np

from .errors import AudioError

#: Extensions soundfile reads that stemgen accepts as input audio.
SUPPORTED_EXTENSIONS = (".wav", ".flac", ".ogg", ".aiff", ".aif")

#: The level reported for digital silence (an all-zero signal has -inf dBFS).
SILENCE_DBFS = -120.0
#: a stem block or frame below this level (dBFS) is silent (silent_fraction, the agreement as heard)
SILENT_STEM_DBFS = -50.0

PathLike = Union[str, Path]


def read_audio(path: PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file.

    Returns ``(wav, sample_rate)`` with ``wav`` float32 of shape ``(C, N)``. Raises
    :class:`AudioError` for a missing file, an unsupported extension or a file that
    soundfile cannot decode.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}. Check the path (relative paths are "
                         f"resolved from {Path.cwd()}).")
    if path.is_dir():
        raise AudioError(f"expected an audio file but {path} is a folder.")
    if path.suffix.lower() not in SUPPORTED_EXTENSIONS:
        raise AudioError(f"unsupported audio format {path.suffix!r} for {path}: use one of "
                         f"{', '.join(SUPPORTED_EXTENSIONS)} (convert e.g. with ffmpeg or sox).")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, EOFError) as err:
        raise AudioError(f"cannot decode {path}: the file is corrupt or not a valid "
                         f"{path.suffix[1:].upper()} file ({err}). Re-export or re-download it.") from err
    return np.ascontiguousarray(data.T), int(sr)


def to_mono(wav: np.ndarray) -> np.ndarray:
    """Downmix ``(C, N)`` (or ``(N,)``) to ``(N,)`` by averaging channels."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        return wav
    if wav.ndim != 2:
        raise AudioError(f"expected audio of shape (N,) or (channels, N), got {wav.shape}.")
    return wav.mean(axis=0) if wav.shape[0] > 1 else wav[0]


def resample(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with soxr (high quality). ``(..., N)`` -> ``(..., N')``."""
    if sr_in == sr_out:
        return np.asarray(wav, dtype=np.float32)
    import soxr

    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        return soxr.resample(wav, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)
    # soxr wants (N, C)
    out = soxr.resample(wav.T, sr_in, sr_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def write_audio(path: PathLike, wav, sample_rate: int) -> Path:
    """Write mono ``(N,)`` or ``(C, N)`` audio; the format follows the extension (wav, flac, ogg).

    Values are clipped to [-1, 1] for integer formats by soundfile itself; WAV is written
    as 16-bit PCM. Parent folders are created.
    """
    import soundfile as sf

    path = Path(path)
    wav = _as_numpy(wav)
    if not np.isfinite(wav).all():
        raise AudioError(f"refusing to write {path}: the audio contains NaN or inf samples.")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = wav.T if wav.ndim == 2 else wav
    subtype = "PCM_16" if path.suffix.lower() in (".wav", ".flac") else None
    sf.write(str(path), np.clip(data, -1.0, 1.0), int(sample_rate), subtype=subtype)
    return path


def mix_down(signals) -> np.ndarray:
    """Sum of mono ``(N,)`` signals (cut to the shortest), scaled down together only if the sum
    would clip (peak 0.99); float32."""
    n = min(len(x) for x in signals)
    out = np.sum([np.asarray(x[:n], dtype=np.float32) for x in signals], axis=0)
    peak = float(np.abs(out).max()) if n else 0.0
    return (out / peak * 0.99 if peak > 0.99 else out).astype(np.float32)


def dbfs(wav) -> float:
    """RMS level of a signal in dBFS; :data:`SILENCE_DBFS` for an all-zero or empty signal."""
    wav = _as_numpy(wav).astype(np.float64)
    if wav.size == 0:
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(wav * wav)))
    if rms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms))


def is_silent(wav, threshold_db: float = -60.0) -> bool:
    """True when the RMS level of ``wav`` is below ``threshold_db`` dBFS."""
    return dbfs(wav) < threshold_db


def silent_fraction(wav, sample_rate: int, threshold_db: float = SILENT_STEM_DBFS, block_seconds: float = 0.1) -> float:
    """The fraction of the ``block_seconds`` blocks of ``wav`` (mono ``(N,)``) whose RMS level is
    below ``threshold_db`` dBFS (1.0 for a signal shorter than one block). A stem that falls
    silent scores near 1; a bass line with rests, a few tenths at most. Scale-free measures such as
    the chroma agreement do not see silence (a silent stem's faint noise still has a pitch-class
    profile), so this is reported beside them."""
    wav = _as_numpy(wav).astype(np.float64)
    n = max(1, int(round(block_seconds * sample_rate)))
    k = wav.size // n
    if k == 0:
        return 1.0
    rms = np.sqrt(np.mean(wav[: k * n].reshape(k, n) ** 2, axis=1))
    return float(np.mean(rms < 10.0 ** (threshold_db / 20.0)))


def load_mono(source, target_rate: int, *, sample_rate: int | None = None,
              min_samples: int = 1, name: str = "audio") -> np.ndarray:
    """Turn a path, numpy array or torch tensor into validated mono float32 at ``target_rate``.

    Args:
        source: a file path, or an array/tensor of shape ``(N,)``, ``(C, N)`` or ``(1, C, N)``.
        target_rate: the sample rate (Hz) to return.
        sample_rate: the rate of ``source`` when it is an array/tensor (required then).
        min_samples: the fewest samples (at ``target_rate``) accepted, e.g. one codec frame.
        name: how the audio is called in error messages ("context", ...).

    Returns:
        ``(N,)`` float32 at ``target_rate``.

    Raises:
        AudioError: missing/unsupported/corrupt file, missing sample rate, empty audio,
        NaN/inf samples, digital silence, or fewer than ``min_samples`` samples.
    """
    if isinstance(source, (str, Path)):
        wav, sr = read_audio(source)
        where = f"{name} ({source})"
    else:
        if sample_rate is None:
            raise AudioError(f"{name} was given as an array/tensor without its sample rate: "
                             f"pass sample_rate=... (Hz).")
        wav, sr = _as_numpy(source), int(sample_rate)
        if wav.ndim == 3 and wav.shape[0] == 1:
            wav = wav[0]
        if wav.ndim == 2 and wav.shape[0] > wav.shape[1]:
            raise AudioError(f"{name} has shape {wav.shape}: expected (channels, samples) with "
                             f"channels first; transpose it (e.g. wav.T).")
        where = name
    if sr <= 0:
        raise AudioError(f"{where}: invalid sample rate {sr}.")
    if wav.size == 0:
        raise AudioError(f"{where} is empty (0 samples): give audio at least "
                         f"{min_samples} samples long at {target_rate} Hz.")
    if not np.isfinite(wav).all():
        bad = int((~np.isfinite(wav)).sum())
        raise AudioError(f"{where} contains {bad} NaN/inf samples: clean the signal "
                         f"(e.g. np.nan_to_num) before passing it.")
    mono = resample(to_mono(wav), sr, target_rate)
    if mono.shape[-1] < min_samples:
        raise AudioError(f"{where} is too short: {mono.shape[-1]} samples at {target_rate} Hz, "
                         f"but at least {min_samples} (one codec frame, "
                         f"{1000.0 * min_samples / target_rate:.1f} ms) are needed.")
    if not np.any(mono):
        raise AudioError(f"{where} is digital silence (all samples are zero): there is "
                         f"nothing to listen to.")
    return mono


def _as_numpy(wav) -> np.ndarray:
    if hasattr(wav, "detach"):  # torch tensor, without importing torch here
        wav = wav.detach().to("cpu").float().numpy()
    return np.asarray(wav, dtype=np.float32)
