import numpy as np
import pytest
import soundfile as sf
import torch

from stemgen.audio import dbfs, is_silent, silent_fraction, load_mono, read_audio, resample, to_mono, write_audio
from stemgen.errors import AudioError

from .conftest import tone


def test_write_read_roundtrip_wav_and_flac(tmp_path):
    x = tone(440, 0.5)
    for ext in ("wav", "flac", "ogg"):
        path = write_audio(tmp_path / f"a.{ext}", x, 32000)
        y, sr = read_audio(path)
        assert sr == 32000 and y.shape == (1, len(x))
        tol = 1e-3 if ext != "ogg" else 0.1
        assert np.abs(y[0] - x).max() < tol


def test_stereo_downmix_and_resample_keep_pitch(tmp_path):
    left, right = tone(440, 1.0, sr=44100), tone(440, 1.0, sr=44100) * 0.5
    sf.write(tmp_path / "st.wav", np.stack([left, right], 1), 44100)
    y = load_mono(tmp_path / "st.wav", 32000)
    assert y.shape == (32000,) and y.dtype == np.float32
    spec = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spec) * 32000 / len(y) - 440) < 2
    np.testing.assert_allclose(to_mono(np.stack([left, right])), 0.75 * left, atol=1e-6)
    assert resample(left, 44100, 22050).shape == (22050,)


def test_load_mono_accepts_arrays_and_tensors():
    x = tone(220, 0.5, sr=16000)
    a = load_mono(x, 32000, sample_rate=16000)
    b = load_mono(torch.from_numpy(np.stack([x, x])), 32000, sample_rate=16000)
    assert a.shape == b.shape == (16000,)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_dbfs_and_silence():
    assert dbfs(np.ones(100)) == pytest.approx(0.0)
    assert dbfs(tone(440, 1.0, amp=1.0, harmonics=1)) == pytest.approx(-3.0103, abs=1e-3)
    assert dbfs(np.zeros(10)) == -120.0
    assert is_silent(np.full(1000, 1e-4), threshold_db=-60)
    assert not is_silent(tone(440, 0.1), threshold_db=-60)


def test_missing_file_error(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_mono(tmp_path / "nope.wav", 32000)


def test_unsupported_format_error(tmp_path):
    (tmp_path / "song.mp3").write_bytes(b"ID3")
    with pytest.raises(AudioError, match=r"unsupported audio format '\.mp3'.*convert"):
        load_mono(tmp_path / "song.mp3", 32000)


def test_corrupt_file_error(tmp_path):
    (tmp_path / "bad.flac").write_bytes(b"fLaC" + bytes(range(256)) * 4)
    with pytest.raises(AudioError, match="corrupt"):
        load_mono(tmp_path / "bad.flac", 32000)


def test_empty_file_error(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 32000)
    with pytest.raises(AudioError, match="empty"):
        load_mono(tmp_path / "empty.wav", 32000)


def test_nan_error():
    x = tone(440, 0.1)
    x[5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        load_mono(x, 32000, sample_rate=32000, name="context")


def test_too_short_error():
    with pytest.raises(AudioError, match="too short.*640"):
        load_mono(tone(440, 0.01), 32000, sample_rate=32000, min_samples=640)


def test_silent_error():
    with pytest.raises(AudioError, match="silence"):
        load_mono(np.zeros(32000, dtype=np.float32), 32000, sample_rate=32000)


def test_array_needs_rate_and_channels_first():
    with pytest.raises(AudioError, match="sample_rate"):
        load_mono(tone(440, 0.1), 32000)
    with pytest.raises(AudioError, match="channels first"):
        load_mono(np.zeros((3200, 2), dtype=np.float32) + 0.1, 32000, sample_rate=32000)


def test_write_refuses_nan(tmp_path):
    with pytest.raises(AudioError, match="NaN"):
        write_audio(tmp_path / "x.wav", np.array([0.0, np.nan], dtype=np.float32), 32000)


def test_mix_down_sums_cuts_and_never_clips():
    from stemgen.audio import mix_down

    out = mix_down([np.full(10, 0.2, np.float32), np.full(8, 0.3, np.float32)])
    assert out.shape == (8,) and out.dtype == np.float32 and np.allclose(out, 0.5)
    loud = mix_down([np.full(4, 0.8, np.float32), np.full(4, 0.8, np.float32)])
    assert np.allclose(loud, 0.99)  # scaled together, not clipped


def test_silent_fraction_counts_the_quiet_blocks():
    sr = 1000
    loud = tone(110, 1.0, sr=sr, amp=0.5, harmonics=1)
    assert silent_fraction(loud, sr) == 0.0
    assert silent_fraction(np.zeros(sr), sr) == 1.0
    hum = np.concatenate([loud, 1e-4 * loud, loud, np.zeros(sr)])  # a -89 dBFS hum counts as silence
    assert silent_fraction(hum, sr) == pytest.approx(0.5)
    assert silent_fraction(hum, sr, threshold_db=-90.0) == pytest.approx(0.25)
    assert silent_fraction(np.ones(10), sr) == 1.0  # shorter than one block
