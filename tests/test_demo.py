"""`make demo`, end to end on a small scale: render chorales, generate bass and drums for a held-out one."""

import json

import numpy as np
import pytest

from stemgen.audio import read_audio
from stemgen.cli import main


@pytest.mark.slow
def test_demo_generates_bass_and_drums_for_a_held_out_chorale(tmp_path, chorales_dir, tiny_export, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--songs", "3", "--seconds", "2", "--model", str(tiny_export),
                 "--steps", "[2,2,1,1]"]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert "/test/" in summary["track"]  # a held-out song
    lengths = set()
    # the context is the whole chorale but its bass: the upper voices and the drums
    assert "Bass" not in summary["context_stems"] and "Drums" in summary["context_stems"]
    assert len(summary["context_stems"]) >= 2
    for name in ["context", "generated_bass", "generated_drums", "mix", "original_bass"]:
        wav, sr = read_audio(out / f"{name}.wav")
        assert sr == 32000 and np.abs(wav).max() > 0.001
        lengths.add(wav.shape)
    assert lengths == {(1, 2 * 32000)}
    assert (out / "demo.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["settings"]["bass"]["seed"] == 0 and summary["settings"]["drums"]["seed"] == 1
    assert summary["settings"]["bass"]["steps"] == [2, 2, 1, 1]
    assert "generation took" in capsys.readouterr().out
    agreement = summary["chroma_agreement_with_voices"]
    assert set(agreement) == {"generated_bass", "original_bass"}
    assert all(0.0 < v <= 1.0 for v in agreement.values())
    silent = summary["silent_fraction"]
    assert set(silent) == {"generated_bass", "original_bass", "generated_drums"}
    assert all(0.0 <= v <= 1.0 for v in silent.values())
    heard = summary["chroma_agreement_heard"]  # silent frames score 0, so never above the cosine alone
    assert set(heard) == {"generated_bass", "original_bass"}
    assert all(0.0 <= heard[k] <= agreement[k] + 1e-9 for k in heard)


def test_chroma_agreement_follows_the_harmony():
    """A stem in the context's key agrees more than one a tritone away."""
    from stemgen.spectra import chroma_agreement

    sr = 32000
    t = np.arange(2 * sr) / sr
    context = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))  # C major triad
    same, tritone = np.sin(2 * np.pi * 130.8 * t), np.sin(2 * np.pi * 185.0 * t)  # C3, F#3
    assert chroma_agreement(same, context, sr) > 0.5 > chroma_agreement(tritone, context, sr)


def test_chorales_command(tmp_path, capsys):
    assert main(["data", "chorales", "--out", str(tmp_path), "--limit", "3"]) == 0
    assert len(list(tmp_path.glob("*/Track*/metadata.yaml"))) == 3
    assert "3 chorales" in capsys.readouterr().out
