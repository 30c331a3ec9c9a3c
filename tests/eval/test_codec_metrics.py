import numpy as np
import pytest

from stemgen.eval.codec_metrics import chroma_similarity, log_mel_distance
from stemgen.spectra import chroma_matrix, hz_to_mel, mel_filterbank, mel_to_hz

from ..conftest import melody, tone


def test_identical_signals_score_perfectly():
    x = melody([60, 64, 67])
    assert chroma_similarity(x, x, 32000) == pytest.approx(1.0)
    assert log_mel_distance(x, x, 32000) == {"logmel": 0.0, "logmel_active": 0.0}


def test_chroma_separates_pitch_classes():
    a = tone(440.0, 1.0, harmonics=1)
    octave = tone(880.0, 1.0, harmonics=1)
    semitone = tone(440.0 * 2 ** (1 / 12), 1.0, harmonics=1)
    assert chroma_similarity(a, octave, 32000) > 0.95
    assert chroma_similarity(a, semitone, 32000) < 0.2


def test_log_mel_distance_grows_with_error():
    x = melody([60, 64, 67])
    rng = np.random.default_rng(0)
    small = log_mel_distance(x, x + 1e-3 * rng.standard_normal(len(x)).astype(np.float32), 32000)
    big = log_mel_distance(x, x + 1e-1 * rng.standard_normal(len(x)).astype(np.float32), 32000)
    assert 0 < small["logmel"] < big["logmel"]
    assert big["logmel_active"] >= big["logmel"]
    half = log_mel_distance(x, 0.5 * x, 32000)  # -6.02 dB wherever both are above the floor
    assert 5.0 < half["logmel_active"] <= 6.03 and half["logmel"] <= half["logmel_active"]


def test_filterbanks():
    fb = mel_filterbank(128, 2048, 32000)
    assert fb.shape == (128, 1025) and (fb.sum(1) > 0).all()
    cm = chroma_matrix(4096, 32000)
    assert cm.shape == (12, 2049) and set(np.unique(cm)) == {0.0, 1.0}
    assert cm[:, 1].sum() == 0  # 7.8 Hz is below C1
    a440 = round(440 * 4096 / 32000)
    assert cm[9, a440] == 1.0


def test_mel_scale_is_htk_and_inverts():
    assert hz_to_mel(700.0) == pytest.approx(1127.0 * np.log(2.0))
    assert hz_to_mel(1000.0) == pytest.approx(2595.0 * np.log10(1 + 1000 / 700), rel=1e-4)  # the log10 form
    f = np.array([0.0, 125.0, 440.0, 7500.0, 16000.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, atol=1e-9)
