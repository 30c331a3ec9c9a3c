"""``make demo``: prepare the offline defaults and show what the codec hears.

Renders the embedded chorales (a subset), fits or reuses the embedded codec, round-trips a
held-out chorale mix through it and writes the original, the decoded audio and a PNG of
both spectrograms.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .audio import load_mono, write_audio
from .eval.codec_metrics import chroma_similarity, log_mel_distance
from .plots import spectrogram_figure
from .prepare import prepare_chorales, prepare_embedded_codec, track_dirs


def codec_roundtrip(codec, wav: np.ndarray) -> np.ndarray:
    """Encode and decode ``(N,)`` mono audio; returns ``(N,)`` decoded audio."""
    with torch.no_grad():
        tokens = codec.encode(torch.from_numpy(wav)[None])
        return codec.decode(tokens)[0, : len(wav)].cpu().numpy()


def run_demo(out: Path = Path("demo_out"), songs: int = 40, seconds: float = 20.0, seed: int = 0,
             data: Path | None = None) -> dict:
    """Run the demo; returns a dict of what was written and measured."""
    out = Path(out)
    data = prepare_chorales(data, limit=songs, seed=seed)
    codec = prepare_embedded_codec(data)
    test = track_dirs(data, "test")
    if not test:
        raise FileNotFoundError(f"no test tracks under {data}/test; render more chorales.")
    track = test[0]
    mix = load_mono(track / "mix.flac", codec.sample_rate)[: int(seconds * codec.sample_rate)]
    decoded = codec_roundtrip(codec, mix)
    files = {
        "original": write_audio(out / "mix_original.wav", mix, codec.sample_rate),
        "decoded": write_audio(out / "mix_decoded.wav", decoded, codec.sample_rate),
    }
    metrics = {"chroma_similarity": chroma_similarity(mix, decoded, codec.sample_rate),
               **log_mel_distance(mix, decoded, codec.sample_rate)}
    files["plot"] = spectrogram_figure(
        {f"original mix ({track.name}, held out)": mix,
         f"decoded by the {codec.name} codec ({codec.num_levels} levels x {codec.cardinality} codes, "
         f"{codec.frame_rate:g} Hz)": decoded},
        codec.sample_rate, out / "codec_roundtrip.png",
        title=f"chroma similarity {metrics['chroma_similarity']:.3f}, "
              f"log-mel distance {metrics['logmel']:.2f} dB")
    summary = {"track": str(track), "codec": codec.describe(), "metrics": metrics,
               "files": {k: str(v) for k, v in files.items()}}
    (out / "demo.json").write_text(json.dumps(summary, indent=1))
    return summary
