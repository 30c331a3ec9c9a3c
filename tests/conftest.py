"""Shared fixtures: an isolated STEMGEN_HOME, synthetic audio, a tiny fitted codec, rendered chorales."""

from __future__ import annotations

import numpy as np
import pytest

SR = 32000


def tone(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.3, harmonics: int = 4) -> np.ndarray:
    """A harmonic tone (float32, (N,))."""
    t = np.arange(int(seconds * sr)) / sr
    x = sum(amp / (h + 1) * np.sin(2 * np.pi * freq * (h + 1) * t) for h in range(harmonics))
    return x.astype(np.float32)


def melody(pitches, note_seconds: float = 0.25, sr: int = SR) -> np.ndarray:
    """Concatenated tones at MIDI pitches."""
    return np.concatenate([tone(440.0 * 2 ** ((p - 69) / 12), note_seconds, sr) for p in pitches])


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own empty STEMGEN_HOME and no network for the hub."""
    home = tmp_path / "stemgen_home"
    monkeypatch.setenv("STEMGEN_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def training_clips() -> list[np.ndarray]:
    """Synthetic melodies and chords for fitting a tiny codec."""
    rng = np.random.default_rng(0)
    clips = [melody(rng.integers(40, 84, size=16)) for _ in range(6)]
    clips += [melody(rng.integers(40, 60, size=16)) + melody(rng.integers(60, 84, size=16)) for _ in range(4)]
    return clips


@pytest.fixture(scope="session")
def tiny_codec(training_clips):
    """An embedded codec with 4 levels of 64 codes, fitted in about a second."""
    from stemgen.codec.embedded import EmbeddedCodecConfig, fit_embedded_codec

    codec, _ = fit_embedded_codec(training_clips, EmbeddedCodecConfig(cardinality=64, griffin_lim_iters=8),
                                  max_frames=5000, iters=4, seed=0, progress=False)
    return codec


@pytest.fixture(scope="session")
def chorales_dir(tmp_path_factory):
    """Three rendered chorales (one per split)."""
    from stemgen.data.chorales import render_chorales

    root = tmp_path_factory.mktemp("chorales")
    render_chorales(root, limit=3, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory, tiny_codec):
    """A tiny random model exported with its codec and a 0.5 s training window."""
    import torch

    from stemgen.model import ModelConfig, StemGenModel
    from stemgen.model.io import ModelRecord, save_exported

    folder = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = StemGenModel(ModelConfig.from_name("tiny", cardinality=tiny_codec.cardinality))
    tiny_codec.save(folder / "codec")
    save_exported(model, folder, ModelRecord.for_codec(model.cfg, tiny_codec, "codec", 0.5))
    return folder


@pytest.fixture(scope="session")
def tiny_model(tiny_export):
    from stemgen.api import load_model

    return load_model(tiny_export, device="cpu")
