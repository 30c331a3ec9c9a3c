"""The ``stemgen`` command. Subcommands are typed functions; their docstrings are the --help."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional


def chorales(out: Optional[Path] = None, limit: Optional[int] = None, seed: int = 0,
             sample_rate: int = 32000) -> None:
    """Render the embedded Bach-chorale dataset (music21 corpus, GM soundfont) in the Slakh layout.

    Writes OUT/{train,validation,test}/TrackNNNNN/{mix.flac, stems/SNN.flac, MIDI/SNN.mid,
    metadata.yaml}. Deterministic for a seed; complete tracks already in OUT are kept.

    Args:
        out: output folder (default: $STEMGEN_HOME/data/chorales, i.e. ~/.cache/stemgen/...).
        limit: render this many chorales (default: all 353); each split keeps its share.
        seed: seed for the split, instrument programs, tempi and velocities.
        sample_rate: rendering rate in Hz.
    """
    from .data.chorales import default_chorales_dir, render_chorales

    out = out or default_chorales_dir()
    tracks = render_chorales(out, limit=limit, seed=seed, sample_rate=sample_rate)
    print(f"{len(tracks)} chorales in {out}")


def fit(data: Optional[Path] = None, out: Optional[Path] = None, songs: int = 40,
        max_frames: int = 100_000, iters: int = 12, seed: int = 0) -> None:
    """Fit the embedded codec (residual k-means over log-magnitude STFT frames) on chorales.

    Args:
        data: rendered chorales (default: $STEMGEN_HOME/data/chorales; see `stemgen data chorales`).
        out: output folder (default: $STEMGEN_HOME/codecs/embedded, where load_codec() looks).
        songs: number of training songs to fit on (stems and mixes).
        max_frames: at most this many STFT frames (random subset) for k-means.
        iters: Lloyd iterations per level.
        seed: seed of the frame subset and the k-means initialisation.
    """
    from .codec import default_embedded_dir
    from .prepare import prepare_embedded_codec

    out = out or default_embedded_dir()
    codec = prepare_embedded_codec(data, out, songs=songs, max_frames=max_frames, iters=iters,
                                   seed=seed, force=True)
    print(f"embedded codec written to {out}: {json.dumps(codec.describe())}")


def roundtrip(audio: Path, out: Optional[Path] = None, codec: str = "embedded",
              plot: Optional[Path] = None) -> None:
    """Encode an audio file to tokens and decode it again (to hear what the codec keeps).

    Args:
        audio: input audio file (wav, flac, ogg; any rate, mono or stereo).
        out: output WAV at the codec's sample rate (default: AUDIO_NAME.decoded.wav here).
        codec: "embedded" (default), "encodec_32khz", or a codec folder/file.
        plot: optional PNG comparing the two spectrograms.
    """
    from .audio import load_mono, write_audio
    from .codec import load_codec
    from .demo import codec_roundtrip

    c = load_codec(codec)
    out = out or Path(f"{Path(audio).stem}.decoded.wav")
    wav = load_mono(audio, c.sample_rate, min_samples=c.hop_length, name="input")
    decoded = codec_roundtrip(c, wav)
    write_audio(out, decoded, c.sample_rate)
    if plot:
        from .plots import spectrogram_figure

        spectrogram_figure({f"original ({audio.name})": wav, f"decoded ({c.name})": decoded},
                           c.sample_rate, plot)
    print(f"wrote {out}" + (f" and {plot}" if plot else ""))


def demo(out: Path = Path("demo_out"), songs: int = 40, seconds: float = 20.0, seed: int = 0) -> None:
    """Prepare the offline defaults (chorales, embedded codec) and round-trip a held-out mix.

    Args:
        out: folder for the WAVs, the PNG and demo.json.
        songs: chorales to render (the codec is fitted on their training split).
        seconds: length of the excerpt to round-trip.
        seed: dataset seed.
    """
    from .demo import run_demo

    summary = run_demo(out, songs=songs, seconds=seconds, seed=seed)
    m = summary["metrics"]
    print(f"held-out mix {Path(summary['track']).name}: chroma similarity "
          f"{m['chroma_similarity']:.3f}, log-mel distance {m['logmel']:.2f} dB")
    for name, path in summary["files"].items():
        print(f"  {name}: {path}")


def export(checkpoint: Path, out_dir: Path, half: bool = False) -> None:
    """Export a stemgen-train checkpoint as model.safetensors + config.json (safe to share).

    The checkpoint is read with torch.load(weights_only=True); the export records the model
    shape, the codec the model was trained with, its training window and step. A fitted
    embedded codec is copied into OUT_DIR/codec so the export is self-contained.

    Args:
        checkpoint: a .ckpt file written by stemgen-train.
        out_dir: output folder (stemgen.load_model reads it).
        half: store weights and codebooks as float16 (half the size).
    """
    from .train.export import export_checkpoint

    folder = export_checkpoint(checkpoint, out_dir, half=half)
    print(f"exported {checkpoint} -> {folder}")


COMMANDS = {
    "data": {"chorales": chorales},
    "codec": {"fit": fit, "roundtrip": roundtrip},
    "demo": demo,
    "export": export,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``stemgen`` command."""
    from jsonargparse import CLI

    from .errors import StemgenError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        CLI(COMMANDS, args=argv, prog="stemgen",
            description="stemgen: music stem generation that listens (StemGen).")
    except (StemgenError, FileNotFoundError) as err:
        print(f"stemgen: error: {err}", file=sys.stderr)
        return 2
    return 0
