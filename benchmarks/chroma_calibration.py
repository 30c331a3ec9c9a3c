"""What does the chroma agreement reward? Basses written to order, scored as listening.py scores a model's.

    python benchmarks/chroma_calibration.py --out benchmarks/results/chroma_calibration

On the held-out chorales that `benchmarks/listening.py` uses (the same 16, the same first seconds,
upper voices as the context), bass parts made from the score and rendered with the chorale's own
bass instrument (the soundfont and renderer of the embedded data set), no model involved:

* ``real, re-rendered``: the bass's own notes (checks the rendering against the stem on disk);
* ``tenor`` / ``alto`` / ``soprano``: an upper voice's notes moved by whole octaves into the bass's
  register (each note to the octave nearest the bass's median pitch): a bass that only doubles
  what the voices sing, always a chord tone, rarely the bass's note;
* ``another chord tone``: each bass note replaced by another pitch class the upper voices sound at
  its midpoint (drawn at random, seed 0; the note kept where they sound none), nearest octave: the
  real rhythm, never the real note, never a clash;
* ``up a semitone``: the real bass moved up a semitone: the real rhythm, a clash nearly everywhere;
* ``another chorale's bass``: the next chorale's real bass (listening.py's mismatched reference).

Each is scored with listening.py's own functions (chroma agreement with its own and the next
chorale's context, as heard; pitch match, chord tone, clash). This places the issue's target
(generated bass, heard own >= 0.44, gap >= 0.08) on a scale of basses whose notes are known.
Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listening import agreement, held_out_chorales, pitch_scores, write_result  # noqa: E402
from machine import machine_info  # noqa: E402
from pitch_probe import stem_notes  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def voice_notes(track: Path) -> tuple[dict[str, list], int]:
    """``{voice: [NoteEvent]}`` from the track's MIDI and metadata, and the bass's GM program."""
    import yaml

    meta = yaml.safe_load((track / "metadata.yaml").read_text())
    voices, program = {}, 0
    for name, stem in meta["stems"].items():
        if stem.get("is_drum"):
            continue
        voices[stem["voice"]] = stem_notes(track, name)
        if stem["voice"] == "bass":
            program = int(stem["program_num"])
    return voices, program


def nearest_octave(pitch_class: int, target: float) -> int:
    """The MIDI pitch of ``pitch_class`` nearest ``target``."""
    base = pitch_class + 12 * round((target - pitch_class) / 12)
    return int(base)


def parts(voices: dict[str, list], rng: np.random.Generator) -> dict[str, list]:
    """The ordered basses (see the module docstring) as note lists."""
    from dataclasses import replace

    bass = voices["bass"]
    median = float(np.median([n.pitch for n in bass]))
    upper = [n for v, notes in voices.items() if v != "bass" for n in notes]
    out = {"real, re-rendered": bass}
    for v in ("tenor", "alto", "soprano"):
        if v in voices:
            out[v] = [replace(n, pitch=nearest_octave(n.pitch % 12, median)) for n in voices[v]]
    other = []
    for n in bass:
        mid = (n.start + n.end) / 2
        classes = sorted({u.pitch % 12 for u in upper if u.start <= mid < u.end} - {n.pitch % 12})
        other.append(replace(n, pitch=nearest_octave(int(rng.choice(classes)), n.pitch)) if classes else n)
    out["another chord tone"] = other
    out["up a semitone"] = [replace(n, pitch=n.pitch + 1) for n in bass]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "stemgen" / "data" / "chorales_all")
    p.add_argument("--songs", type=int, default=16, help="held-out chorales (listening.py's)")
    p.add_argument("--seconds", type=float, nargs="+", default=[8.0, 4.0], help="lengths scored")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "chroma_calibration")
    args = p.parse_args()

    from stemgen.data.chorales import render_notes, soundfont_path
    from stemgen.prepare import prepare_chorales

    prepare_chorales(args.data)
    sr = 32000  # the embedded codec's rate, as listening.py loads the chorales
    start = time.perf_counter()
    longest = max(args.seconds)
    songs = held_out_chorales(args.data, args.songs, sr, longest, 8.0)
    rng = np.random.default_rng(0)
    basses: dict[str, list[np.ndarray]] = {}
    for s in songs:
        voices, program = voice_notes(s["track"])
        for name, notes in parts(voices, rng).items():
            basses.setdefault(name, []).append(render_notes(notes, program, False, sr, len(s["bass"]),
                                                            soundfont_path()))
    reals = [s["bass"] for s in songs]
    basses["real (the stem on disk)"] = reals
    basses["another chorale's bass"] = reals[1:] + reals[:1]
    result = {"benchmark": "chroma_calibration", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "songs": len(songs), "seconds": args.seconds, "basses": {}}
    for name, audio in basses.items():
        result["basses"][name] = {}
        for sec in args.seconds:
            n = int(sec * sr)
            cut, contexts, real_cut = [a[:n] for a in audio], [s["context"][:n] for s in songs], [r[:n] for r in reals]
            own, mis, heard_own, heard_mis = agreement(cut, contexts, sr)
            scores = {"chroma_heard_own": heard_own, "chroma_heard_gap": heard_own - heard_mis,
                      **pitch_scores(cut, real_cut, contexts, sr)}
            result["basses"][name][f"{sec:g}s"] = {k: round(float(v), 4) for k, v in scores.items()}
        print(name, result["basses"][name], flush=True)
    result["seconds_total"] = round(time.perf_counter() - start, 1)
    write_result(args.out, result, markdown(result))


def markdown(r: dict) -> str:
    lines = ["# What the chroma agreement rewards: basses written to order", "",
             f"{r['songs']} held-out chorales (listening.py's), upper voices as the context, rendered with each "
             f"chorale's bass instrument; machine {r['machine']['cpu']}, {r['machine']['cores']} cores; {r['date']}.", "",
             "| bass | " + " | ".join(f"{s:g} s: heard own | gap | right note | chord tone | clash" for s in r["seconds"])
             + " |", "|---|" + "---|---|---|---|---|" * len(r["seconds"])]
    for name, by in r["basses"].items():
        cells = []
        for s in r["seconds"]:
            v = by[f"{s:g}s"]
            cells += [v["chroma_heard_own"], v["chroma_heard_gap"], v["pitch_match"], v["pitch_chord_tone"],
                      v["pitch_clash"]]
        lines.append(f"| {name} | " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
