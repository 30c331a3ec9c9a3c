"""Spectral features of mono audio shared by the metrics and the plots: power spectrogram, the
(HTK) mel scale and mel filterbank, pitch-class (chroma) maps and frame-wise chroma cosine.

Shapes: ``(N,)`` audio; ``(F, T)`` spectrograms with ``F = n_fft // 2 + 1`` bins.
"""

from __future__ import annotations

import numpy as np
import torch

from .audio import SILENT_STEM_DBFS


def power_spectrogram(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """``(N,)`` -> power spectrogram ``(F, T)`` (Hann window, centred frames), float64."""
    wav = torch.as_tensor(np.asarray(x, dtype=np.float32))
    spec = torch.stft(wav, n_fft, hop, window=torch.hann_window(n_fft), center=True,
                      pad_mode="constant", return_complex=True)
    return (spec.abs() ** 2).numpy().astype(np.float64)


def hz_to_mel(f):
    """The HTK mel scale, ``1127 ln(1 + f / 700)`` (= ``2595 log10(1 + f / 700)``); f in Hz."""
    return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * np.expm1(np.asarray(m, dtype=np.float64) / 1127.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int) -> np.ndarray:
    """HTK-mel triangular filters ``(n_mels, F)`` from 0 Hz to Nyquist."""
    f = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    edges = mel_to_hz(np.linspace(0, hz_to_mel(sample_rate / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (f[None] - lo) / (mid - lo)
    down = (hi - f[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


def chroma_matrix(n_fft: int, sample_rate: int) -> np.ndarray:
    """``(12, F)`` 0/1 map of STFT bins in C1..C8 (32.7-4186 Hz) to pitch classes (0 = C)."""
    f = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    m = np.zeros((12, len(f)))
    ok = (f >= 32.70) & (f <= 4186.0)
    pc = np.mod(np.round(12 * np.log2(f[ok] / 440.0) + 69).astype(int), 12)
    m[pc, np.nonzero(ok)[0]] = 1.0
    return m


def chroma_frames(x: np.ndarray, sample_rate: int, hop: int = 640, n_fft: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``(N,)`` -> ``(chroma (12, T), energy (T,))``: pitch-class power per frame and total power."""
    power = power_spectrogram(x, n_fft, hop)
    return chroma_matrix(n_fft, sample_rate) @ power, power.sum(0)


#: a stem frame below this level (dBFS) is silent: the level of ``stemgen.audio.silent_fraction``
SILENT_FRAME_DB = SILENT_STEM_DBFS


def frame_levels_db(x: np.ndarray, hop: int = 640, n_fft: int = 4096) -> np.ndarray:
    """``(N,)`` -> ``(T,)`` level in dBFS of each frame of :func:`chroma_frames` (centred, Hann
    window): an absolute loudness per frame, which the scale-free chroma profile does not keep."""
    wav = torch.as_tensor(np.asarray(x, dtype=np.float64))
    padded = torch.nn.functional.pad(wav[None], (n_fft // 2, n_fft // 2))[0]  # as torch.stft(center=True)
    w2 = torch.hann_window(n_fft, dtype=torch.float64) ** 2
    mean_square = (padded.unfold(0, n_fft, hop) ** 2 * w2).sum(1) / w2.sum()  # (T,)
    return 10.0 * np.log10(np.maximum(mean_square.numpy(), 1e-20))


def frame_cosine(ref: np.ndarray, est: np.ndarray, ref_energy: np.ndarray, energy_threshold: float = 0.01,
                 est_sounding: np.ndarray | None = None) -> float:
    """Mean cosine similarity of the columns of ``(12, T)`` matrices over the frames whose
    reference energy is above ``energy_threshold`` of its maximum. ``est_sounding (T,)`` (bool):
    where False the estimate is silent and the frame scores 0 (agreement as heard: the faint noise
    of a silent stem has a pitch-class profile too, which the cosine would otherwise score)."""
    t = min(ref.shape[1], est.shape[1])
    ref, est, ref_energy = ref[:, :t], est[:, :t], ref_energy[:t]
    keep = ref_energy > energy_threshold * ref_energy.max()
    num = (ref * est).sum(0)
    den = np.linalg.norm(ref, axis=0) * np.linalg.norm(est, axis=0) + 1e-20
    cos = num / den
    if est_sounding is not None:
        sounding = np.zeros(t, dtype=bool)
        n = min(t, len(est_sounding))
        sounding[:n] = np.asarray(est_sounding[:n], dtype=bool)
        cos = np.where(sounding, cos, 0.0)
    return float(cos[keep].mean()) if keep.any() else 0.0


def chroma_agreement(stem: np.ndarray, context: np.ndarray, sample_rate: int, heard: bool = False) -> float:
    """Mean frame-wise cosine of the pitch-class profiles of ``stem`` and ``context`` (mono
    ``(N,)`` arrays) over the context's audible frames: how well a stem follows the harmony (for
    one pair what ``stemgen.eval.context_agreement`` averages over many). ``heard``: a frame where
    the stem is below :data:`SILENT_FRAME_DB` scores 0, so a stem that falls silent is not
    scored on its noise."""
    ctx_chroma, ctx_energy = chroma_frames(context, sample_rate)
    sounding = frame_levels_db(stem) >= SILENT_FRAME_DB if heard else None
    return frame_cosine(ctx_chroma, chroma_frames(stem, sample_rate)[0], ctx_energy, est_sounding=sounding)


def pitch_class_match(stem: np.ndarray, reference: np.ndarray, sample_rate: int) -> float:
    """The fraction of ``reference``'s sounding frames (at or above :data:`SILENT_FRAME_DB`) in
    which ``stem`` sounds too and its strongest pitch class is the reference's (both mono ``(N,)``).
    For monophonic parts such as a bass line: how often a generated part plays the real part's
    note, in any octave; a silent frame of ``stem`` is a miss. 0.0 when the reference never sounds."""
    return pitch_class_breakdown(stem, reference, None, sample_rate)["match"]


def pitch_class_breakdown(stem: np.ndarray, reference: np.ndarray, context: np.ndarray | None,
                          sample_rate: int, chord_size: int = 3) -> dict[str, float]:
    """What ``stem`` plays over ``reference``'s sounding frames, as fractions summing to 1:
    ``match`` (its strongest pitch class is the reference's, see :func:`pitch_class_match`),
    ``chord_tone`` (another class, one of the ``chord_size`` strongest of ``context`` in that frame),
    ``clash`` (any other class), ``silent`` (below :data:`SILENT_FRAME_DB`). Without ``context``
    every wrong class counts as a clash. All zeros when the reference never sounds."""
    ref_chroma, _ = chroma_frames(reference, sample_rate)
    est_chroma, _ = chroma_frames(stem, sample_rate)
    ref_on, est_on = frame_levels_db(reference) >= SILENT_FRAME_DB, frame_levels_db(stem) >= SILENT_FRAME_DB
    t = min(ref_chroma.shape[1], est_chroma.shape[1], len(ref_on), len(est_on))
    ref_on, est_on = ref_on[:t], est_on[:t]
    est_pc = est_chroma[:, :t].argmax(0)
    same = ref_chroma[:, :t].argmax(0) == est_pc
    chord = np.zeros(t, dtype=bool)
    if context is not None:
        ctx_chroma, _ = chroma_frames(context, sample_rate)
        n = min(t, ctx_chroma.shape[1])
        top = np.argsort(-ctx_chroma[:, :n], axis=0)[:chord_size]  # (chord_size, n)
        chord[:n] = (top == est_pc[:n]).any(0)
    parts = {"match": same & est_on, "chord_tone": ~same & chord & est_on, "clash": ~same & ~chord & est_on,
             "silent": ~est_on}
    if not ref_on.any():
        return {k: 0.0 for k in parts}
    return {k: float(v[ref_on].mean()) for k, v in parts.items()}


#: the number of quantisation steps of one pitch class in :func:`chroma_codes`
CHROMA_STEPS = 4
#: a pitch class's step is the number of these fractions of the frame's strongest class that its
#: power reaches (-13, -7 and -3 dB): a Hann window's main lobe spills a low note into its
#: neighbouring classes at about -10 dB, which then reach step 1 at most
CHROMA_STEP_RATIOS = (0.05, 0.2, 0.5)


def chroma_codes(x: np.ndarray, sample_rate: int, hop: int, frames: int, n_fft: int = 4096) -> np.ndarray:
    """``(N,)`` mono audio -> ``(frames,)`` int64 codes of its pitch-class profile per frame of
    ``hop`` samples (a codec's frame: frame t is centred on sample ``t * hop``).

    Each of the 12 pitch classes gets a step 0-3 (:data:`CHROMA_STEP_RATIOS` of the frame's
    strongest class, in power) and the code packs them in base :data:`CHROMA_STEPS`, pitch
    class 0 (C) lowest: ``sum(step[pc] * 4**pc)``. A frame below :data:`SILENT_FRAME_DB` is code 0
    (every class at step 0); frames past the audio's end too. What a context's harmony is, in a
    form a token model can read beside the codec's tokens (:attr:`ModelConfig.context_chroma`)."""
    x = np.asarray(x, dtype=np.float32)
    chroma, _ = chroma_frames(x, sample_rate, hop=hop, n_fft=n_fft)  # (12, T)
    sounding = frame_levels_db(x, hop=hop, n_fft=n_fft) >= SILENT_FRAME_DB  # (T,)
    ratio = chroma / np.maximum(chroma.max(0, keepdims=True), 1e-30)
    steps = sum((ratio >= r).astype(np.int64) for r in CHROMA_STEP_RATIOS)  # (12, T) in 0..3
    codes = (steps * CHROMA_STEPS ** np.arange(12)[:, None]).sum(0) * sounding  # (T,)
    out = np.zeros(frames, dtype=np.int64)
    n = min(frames, len(codes))
    out[:n] = codes[:n]
    return out


def chroma_code_steps(codes: torch.Tensor) -> torch.Tensor:
    """Codes of :func:`chroma_codes` ``(...)`` -> each pitch class's step ``(..., 12)`` (0-3)."""
    powers = CHROMA_STEPS ** torch.arange(12, device=codes.device)
    return torch.div(codes[..., None], powers, rounding_mode="floor") % CHROMA_STEPS
