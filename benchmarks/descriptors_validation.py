"""Do the audio-derived MIR descriptors agree with the truth? Checked on chorale mixes, whose
score is known.

    python benchmarks/descriptors_validation.py               # held-out chorales, first 20 s
    python benchmarks/descriptors_validation.py --songs 10 --seconds 15

For each chorale (test and validation splits of the embedded dataset, all stems mixed) the
madmom-based extractors of stemgen.eval.descriptors are compared with the truth from the score
(music21) and the rendered MIDI:

* key: mir_eval's weighted score (1 exact, 0.5 fifth, 0.3 relative, 0.2 parallel) against
  music21's key analysis of the score (Krumhansl-Schmuckler; itself an estimate, the best
  available label); also the share of exact matches;
* pitch-class histogram: cosine similarity of the duration-weighted pitch-class histograms
  of the detected notes and of the MIDI notes (drums excluded);
* pitch range: |detected - true| in semitones (highest minus lowest sounding MIDI pitch);
* beats per bar: share of chorales where the downbeat tracker's bar length equals the
  score's (beats per bar of the time signature).

Writes benchmarks/results/descriptors_validation.json and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def truth(track: Path, seconds: float) -> dict:
    """Key (music21), pitch-class histogram, pitch range (MIDI) and beats per bar (score)."""
    import pretty_midi
    import yaml
    from music21 import corpus

    from stemgen.data.chorales import parse_voices

    meta = yaml.safe_load((track / "metadata.yaml").read_text())
    k = corpus.parse(meta["chorale"]).analyze("key")
    key = f"{k.tonic.name.replace('-', 'b')} {k.mode}"
    hist, pitches = np.zeros(12), []
    for sid, stem in meta["stems"].items():
        if stem.get("is_drum"):
            continue
        for note in pretty_midi.PrettyMIDI(str(track / "MIDI" / f"{sid}.mid")).instruments[0].notes:
            if note.start < seconds:
                hist[note.pitch % 12] += min(note.end, seconds) - note.start
                pitches.append(note.pitch)
    _, beats, _ = parse_voices(meta["chorale"], meta["tempo_bpm"])
    return {"key": key, "pc_hist": hist, "pitch_range": int(max(pitches) - min(pitches)),
            "beats_per_bar": int(beats[-1][2])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "stemgen" / "data" / "chorales_all")
    p.add_argument("--songs", type=int, default=24)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()

    import mir_eval

    from stemgen.audio import load_mono
    from stemgen.eval.descriptors import ANALYSIS_RATE, DescriptorExtractor, beats_per_bar, pitch_range
    from stemgen.data.songs import song_folders
    from stemgen.prepare import prepare_chorales

    prepare_chorales(args.data)
    tracks = (song_folders(args.data, "test", complete=True) + song_folders(args.data, "validation", complete=True))[: args.songs]
    ex = DescriptorExtractor()
    rows, t0 = [], time.time()
    for track in tracks:
        true = truth(track, args.seconds)
        x = load_mono(track / "mix.flac", ANALYSIS_RATE)[: int(args.seconds * ANALYSIS_RATE)]
        raw = ex.raw(x)
        notes = raw["notes"]
        hist = np.zeros(12)
        for onset, pitch, dur in notes:
            hist[int(pitch) % 12] += dur
        cos = float(hist @ true["pc_hist"] / (np.linalg.norm(hist) * np.linalg.norm(true["pc_hist"]) + 1e-12))
        rows.append({"track": track.name, "key_true": true["key"], "key_est": raw["key"],
                     "key_score": float(mir_eval.key.weighted_score(true["key"], raw["key"])),
                     "pc_cosine": cos, "range_true": true["pitch_range"], "range_est": pitch_range(notes),
                     "bpb_true": true["beats_per_bar"], "bpb_est": beats_per_bar(raw["downbeats"])})
        print(rows[-1], flush=True)
    summary = {
        "key_weighted_score": float(np.mean([r["key_score"] for r in rows])),
        "key_exact": float(np.mean([r["key_score"] == 1.0 for r in rows])),
        "pitch_class_histogram_cosine": float(np.mean([r["pc_cosine"] for r in rows])),
        "pitch_range_abs_error": float(np.mean([abs(r["range_est"] - r["range_true"]) for r in rows])),
        "pitch_range_bias": float(np.mean([r["range_est"] - r["range_true"] for r in rows])),
        "beats_per_bar_accuracy": float(np.mean([r["bpb_est"] == r["bpb_true"] for r in rows])),
        "true_meters": {str(m): int(sum(r["bpb_true"] == m for r in rows)) for m in sorted({r["bpb_true"] for r in rows})},
    }
    result = {"benchmark": "descriptors_validation", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "songs": len(rows), "seconds": args.seconds, "extract_seconds": round(time.time() - t0, 1),
              "summary": summary, "per_song": rows}
    out = ROOT / "benchmarks" / "results"
    (out / "descriptors_validation.json").write_text(json.dumps(result, indent=1))
    lines = ["# Descriptor validation", "",
             f"{len(rows)} held-out chorale mixes, first {args.seconds:g} s; machine {result['machine']['cpu']}.", "",
             "| check | value |", "|---|---|"] + [f"| {k} | {v if isinstance(v, dict) else round(v, 3)} |"
                                                  for k, v in summary.items()]
    (out / "descriptors_validation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
