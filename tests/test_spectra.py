"""Spectral features: frame levels line up with the chroma frames, and the agreement as heard
scores a silent stem as silent."""

import numpy as np
import pytest

from stemgen.spectra import (SILENT_FRAME_DB, chroma_agreement, chroma_code_steps, chroma_codes, chroma_frames,
                             frame_cosine, frame_levels_db, pitch_class_breakdown, pitch_class_match)

SR = 16000


def tone(midi: float, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * 440.0 * 2 ** ((midi - 69) / 12) * t)).astype(np.float32)


def test_frame_levels_are_the_chroma_frames_in_dbfs():
    x = tone(57, 2.0, amp=0.5)
    levels = frame_levels_db(x)
    assert levels.shape == chroma_frames(x, SR)[1].shape
    # a sine of amplitude a has mean square a^2 / 2 away from the edges
    assert np.allclose(levels[5:-5], 20 * np.log10(0.5 / np.sqrt(2)), atol=0.05)
    assert frame_levels_db(np.zeros(SR)).max() <= -190


def test_agreement_as_heard_scores_silent_frames_zero():
    ctx = tone(60, 4.0) + tone(64, 4.0) + tone(67, 4.0)  # C major
    bass = tone(48, 4.0)
    loud = chroma_agreement(bass, ctx, SR)
    assert loud > 0.5 and chroma_agreement(bass, ctx, SR, heard=True) == pytest.approx(loud, abs=0.01)
    # the cosine is scale-free: the same bass 80 dB down agrees as well, unless heard
    faint = bass * 1e-4
    assert chroma_agreement(faint, ctx, SR) == pytest.approx(loud, abs=0.01)
    assert chroma_agreement(faint, ctx, SR, heard=True) == 0.0
    # silent for its second half: as heard, about half the agreement
    half = bass.copy()
    half[len(half) // 2:] = 0.0
    assert chroma_agreement(half, ctx, SR, heard=True) == pytest.approx(loud / 2, abs=0.05)


def test_frame_cosine_sounding_mask():
    ref = np.eye(12)[:, [0, 0, 4, 4]]
    est = ref.copy()
    assert frame_cosine(ref, est, np.ones(4)) == 1.0
    assert frame_cosine(ref, est, np.ones(4), est_sounding=np.array([True, False, True, False])) == 0.5
    # a short mask leaves the frames it does not cover silent
    assert frame_cosine(ref, est, np.ones(4), est_sounding=np.array([True])) == 0.25
    assert SILENT_FRAME_DB == -50.0


def test_pitch_class_match_counts_the_reference_note_in_any_octave():
    real = np.concatenate([tone(45, 1.0), tone(52, 1.0)])  # A2 then E3
    assert pitch_class_match(real, real, SR) == pytest.approx(1.0)
    assert pitch_class_match(np.concatenate([tone(57, 1.0), tone(40, 1.0)]), real, SR) > 0.95  # octaves
    # the right note for the first second only; the last frames of a note smear into the next
    half = pitch_class_match(np.concatenate([tone(45, 1.0), tone(46, 1.0)]), real, SR)
    assert half == pytest.approx(0.5, abs=0.05)
    assert pitch_class_match(real * 1e-4, real, SR) == 0.0  # a silent stem plays no note
    # frames where the reference rests are not scored (but for the window-long fade of its note)
    rest = real.copy()
    rest[SR:] = 0.0
    assert pitch_class_match(np.concatenate([tone(45, 1.0), tone(46, 1.0)]), rest, SR) > 0.9 > half + 0.3
    assert pitch_class_match(real, np.zeros(2 * SR, dtype=np.float32), SR) == 0.0


def test_pitch_class_breakdown_tells_chord_tones_from_clashes():
    voices = tone(64, 3.0) + tone(67, 3.0) + tone(72, 3.0)  # E G C over a C bass: C major
    real = tone(48, 3.0)
    # one second each: the right note (C), another chord tone (G), a clash (F#)
    bass = np.concatenate([tone(36, 1.0), tone(43, 1.0), tone(42, 1.0)])
    parts = pitch_class_breakdown(bass, real, voices, SR)
    assert sum(parts.values()) == pytest.approx(1.0)
    for name in ("match", "chord_tone", "clash"):
        assert parts[name] == pytest.approx(1 / 3, abs=0.05), parts
    assert parts["silent"] == 0.0
    assert parts["match"] == pitch_class_match(bass, real, SR)
    without = pitch_class_breakdown(bass, real, None, SR)  # no context: every wrong note a clash
    assert without["chord_tone"] == 0.0 and without["clash"] == pytest.approx(2 / 3, abs=0.05)
    assert pitch_class_breakdown(bass * 1e-4, real, voices, SR)["silent"] == 1.0


def test_chroma_codes_name_the_sounding_pitch_classes_per_frame():
    import torch

    chord = tone(69, 1.0) + tone(73, 1.0, amp=0.35) + tone(76, 1.0, amp=0.25)  # A major: A, C#, E
    x = np.concatenate([chord, np.zeros(SR // 2, dtype=np.float32)])  # then half a second of silence
    hop = SR // 50
    codes = chroma_codes(x, SR, hop, frames=100)  # 2 s of frames for 1.5 s of audio
    assert codes.shape == (100,) and codes.dtype == np.int64
    steps = chroma_code_steps(torch.from_numpy(codes))  # (100, 12)
    middle = steps[10:40]
    assert (middle[:, 9] == 3).all()  # A, the loudest, is the frame's strongest
    assert (middle[:, [1, 4]] >= 2).all()  # C# and E at -3 to -6 dB: steps 2 or 3
    assert (middle[:, [0, 2, 3, 5, 6, 7, 8, 10, 11]] <= 1).all()  # the rest at most the window's spill
    assert (codes[60:] == 0).all()  # silence and frames past the end: every class at step 0
    # a code is its steps packed in base 4, C lowest
    assert int(codes[20]) == int((steps[20] * 4 ** torch.arange(12)).sum())
    # the same audio louder: the same codes (each class against the frame's strongest)
    assert np.array_equal(chroma_codes(2 * x, SR, hop, frames=60)[:50], codes[:50])
