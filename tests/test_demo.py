"""`make demo` (first form), end to end on a small scale: render, reuse a fitted codec, round-trip."""

import json

import numpy as np
import pytest

from stemgen.audio import read_audio
from stemgen.cli import main


@pytest.mark.slow
def test_demo_writes_wavs_png_and_metrics(tmp_path, tiny_codec, isolated_home, capsys):
    tiny_codec.save(isolated_home / "codecs" / "embedded")  # the demo reuses a fitted codec
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--songs", "3", "--seconds", "4"]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert "/test/" in summary["track"]  # a held-out song
    original, sr = read_audio(out / "mix_original.wav")
    decoded, sr2 = read_audio(out / "mix_decoded.wav")
    assert sr == sr2 == 32000 and original.shape == decoded.shape == (1, 4 * 32000)
    assert np.abs(decoded).max() > 0.01
    assert (out / "codec_roundtrip.png").read_bytes()[:4] == b"\x89PNG"
    m = summary["metrics"]
    assert 0.5 < m["chroma_similarity"] <= 1.0 and m["logmel"] > 0
    assert "chroma similarity" in capsys.readouterr().out


def test_chorales_command(tmp_path, capsys):
    assert main(["data", "chorales", "--out", str(tmp_path), "--limit", "3"]) == 0
    assert len(list(tmp_path.glob("*/Track*/metadata.yaml"))) == 3
    assert "3 chorales" in capsys.readouterr().out
