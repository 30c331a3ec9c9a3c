"""Does the model's first guess at the bass name the right pitch? A token-level listening probe.

    python benchmarks/pitch_probe.py --model demo /work/eval/other --out benchmarks/results/pitch_probe

With every level-0 token of the bass masked (where decoding starts: its first tokens are drawn
from exactly these distributions), the model's distribution over level-0 codes is turned into a
distribution over the bass's pitch class with a lookup table code -> pitch class (each code's
most frequent sounding bass pitch class, counted on the bass stems of ``--table-songs`` *train*
chorales: the embedded codec's bass codes name their pitch class ~94% of the time, see
``../shared/measurements/listening-2026-11-30``). Scored against the held-out chorales' bass
MIDI, frame by frame (50 Hz) where the bass sounds:

* ``p_true_pc``: mean probability of the sounding pitch class (codes without a table entry count
  as wrong);
* ``accuracy``: how often the most probable pitch class is the sounding one;
* ``code_argmax_accuracy``: how often the most probable *code* names the sounding pitch class
  (what a bass of the argmax codes plays: mass spread over many codes of one pitch class can win
  ``accuracy`` and lose here);
* ``p_known``: the probability mass on codes the table knows (the rest: codes no train bass
  played, counted as wrong by ``p_true_pc``);
* ``p_silence``, ``argmax_silence``: the mass on the codes of silence (the level-0 codes of a
  silent signal) and how often the most probable *code* is one of them, where the bass sounds:
  greedy or cool sampling commits the most probable codes first, and a bass that falls silent
  starts there.

Conditions: naive p(t|a,i) with the true context, with another chorale's context, without
context p(t|i); paper eq. 3 (lambda 3, 3); nested guidance at ``--nested`` scales (lambda_i 1).
References of the same run: the most frequent pitch class (chance), and a second table, code of
the *context* (upper voices) -> bass pitch class in the same frame, applied to the held-out
contexts (what one frame of context alone tells). Thousands of frames per condition, no decoding:
a low-noise view of what the sampler starts from. Writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listening import CONTEXT_DRUMS_HELP, context_label, held_out_chorales, write_result  # noqa: E402
from machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: frames (50 Hz) by which the real bass is shifted against the first guess in ``accuracy_by_lag``
LAGS = (-50, -25, -10, -5, 0, 5, 10, 25, 50)
LAG_PAD = max(map(abs, LAGS))


def stem_notes(track: Path, stem: str) -> list:
    """The notes of one stem of a track (``MIDI/STEM.mid``), as :class:`stemgen.data.chorales.NoteEvent`
    sorted by onset."""
    import pretty_midi

    from stemgen.data.chorales import NoteEvent

    midi = pretty_midi.PrettyMIDI(str(track / "MIDI" / f"{stem}.mid"))
    return sorted((NoteEvent(n.start, n.end, n.pitch, n.velocity) for inst in midi.instruments for n in inst.notes),
                  key=lambda n: n.start)


def note_frames(note, frame_rate: float) -> slice:
    """The codec frames a note sounds in."""
    return slice(int(round(note.start * frame_rate)), int(round(note.end * frame_rate)))


def bass_pitch_classes(track: Path, frames: int, frame_rate: float) -> np.ndarray:
    """``(frames,)`` int: the bass's sounding pitch class in each codec frame, -1 where silent
    (the lowest sounding note wins), from the track's bass MIDI."""
    from stemgen.data.songs import ScanReport, read_slakh_track
    from stemgen.instruments import resolve

    song = read_slakh_track(track, ScanReport())
    bass = [s for s in song.stems if s.instrument == resolve("bass").id]
    low = np.full(frames, 128)
    for note in stem_notes(track, bass[0].name):
        span = note_frames(note, frame_rate)
        low[span] = np.minimum(low[span], note.pitch)
    return np.where(low < 128, low % 12, -1)


def upper_pitch_classes(track: Path, frames: int, frame_rate: float) -> np.ndarray:
    """``(frames, 12)`` bool: the pitch classes the upper voices (every pitched stem but the bass)
    sound in each codec frame, from their MIDI: the chord a bass note can sit on."""
    from stemgen.data.songs import ScanReport, read_slakh_track
    from stemgen.instruments import DRUMS_ID, resolve

    song = read_slakh_track(track, ScanReport())
    on = np.zeros((frames, 12), dtype=bool)
    for stem in song.stems:
        if stem.instrument not in (resolve("bass").id, DRUMS_ID):
            for note in stem_notes(track, stem.name):
                on[note_frames(note, frame_rate), note.pitch % 12] = True
    return on


def bass_and_upper(track: Path, sample_rate: int, seconds: float):
    """``(bass, upper voices' mix)`` mono audio of a track's first ``seconds`` at ``sample_rate``,
    or None when it has no single bass stem or no other pitched stem."""
    from stemgen.audio import load_mono, mix_down
    from stemgen.data.songs import ScanReport, read_slakh_track
    from stemgen.instruments import DRUMS_ID, resolve

    bass_id, n = resolve("bass").id, int(seconds * sample_rate)
    song = read_slakh_track(track, ScanReport())
    bass = [s for s in song.stems if s.instrument == bass_id]
    upper = [load_mono(s.path, sample_rate)[:n] for s in song.stems if s.instrument not in (bass_id, DRUMS_ID)]
    if len(bass) != 1 or not upper:
        return None
    return load_mono(bass[0].path, sample_rate)[:n], mix_down(upper)


def train_tracks(root: Path, n: int) -> list[Path]:
    from stemgen.data.songs import song_folders

    return list(song_folders(root, "train", complete=True))[:n]


def code_tables(model, tracks: list[Path], seconds: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Two lookup tables code -> most frequent sounding bass pitch class (-1 where never seen),
    counted on ``tracks``: from the bass stem's level-0 codes, and from the level-0 codes of the
    upper voices' mix (the context) in the same frame. Also the bass table's purity (the share of
    frames whose pitch class is their code's)."""
    counts = np.zeros((2, model.model.cfg.cardinality, 12), dtype=np.int64)
    for track in tracks:
        audio = bass_and_upper(track, model.sample_rate, seconds)
        if audio is None:
            continue
        for k, wav in enumerate(audio):
            codes = model._encode(wav)[0].cpu().numpy()  # (T,) level 0
            pcs = bass_pitch_classes(track, len(codes), model.codec.frame_rate)
            sounding = pcs >= 0
            np.add.at(counts[k], (codes[sounding], pcs[sounding]), 1)
    tables = np.where(counts.sum(2) > 0, counts.argmax(2), -1)  # (2, V)
    return tables[0], tables[1], float(counts[0].max(1).sum() / counts[0].sum())


def probe(model, songs: list[dict], table: np.ndarray, context_table: np.ndarray, nested: list[float],
          batch_size: int = 16) -> dict:
    """Per condition: mean probability of the sounding pitch class, the mass on codes the table
    knows, and the argmax pitch class's accuracy."""
    import torch

    from stemgen.instruments import NULL_ID, resolve
    from stemgen.sampling.steps import guided_log_probs

    w = model.window_frames
    crops = []  # (context (Q, w), pitch classes (w,), song index)
    chords, lagged = [], []  # (w, 12) the upper voices' classes; (L, w) the bass's class LAGS[l] frames later
    for k, s in enumerate(songs):
        ctx = model.encode_context(s["context"])  # (Q, T), or (Q + 1, T) with the chroma row
        n = ctx.shape[-1]
        pcs = bass_pitch_classes(s["track"], n, model.codec.frame_rate)
        upper = upper_pitch_classes(s["track"], n, model.codec.frame_rate)
        padded = np.pad(pcs, LAG_PAD, constant_values=-1)
        for start in range(0, n - w + 1, w):
            crops.append((ctx[:, start:start + w], pcs[start:start + w], k))
            chords.append(upper[start:start + w])
            lagged.append(np.stack([padded[start + LAG_PAD + d:][:w] for d in LAGS]))
    dev = model.device
    onehot = torch.zeros(len(table), 12, device=dev)  # (V, 12) code -> its pitch class
    known = torch.from_numpy(table >= 0).to(dev)
    code_pc = torch.from_numpy(table).to(dev)  # (V,) -1 where unknown
    onehot[known, torch.from_numpy(table.clip(0)).to(dev)[known]] = 1.0
    bass = resolve("bass").id
    silence = torch.zeros(len(table), dtype=torch.bool, device=dev)  # (V,) the level-0 codes of silence
    silence[model._encode(np.zeros(int(2 * model.sample_rate), np.float32))[0].unique().to(dev)] = True
    sums: dict[str, list[float]] = {}
    context_code_hits = []
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=model.precision == "bf16"):
        for i in range(0, len(crops), batch_size):
            part = crops[i:i + batch_size]
            b = len(part)
            ctx = torch.stack([c for c, _, _ in part])  # (b, Q, w)
            # another chorale's context: the next crop from a different song
            other_idx = [next((j for j in range(1, len(crops)) if crops[(i + n + j) % len(crops)][2] != part[n][2]))
                         for n in range(b)]
            other = torch.stack([crops[(i + n + j) % len(crops)][0] for n, j in enumerate(other_idx)])
            pcs = torch.from_numpy(np.stack([p for _, p, _ in part])).to(dev)  # (b, w)
            chord = torch.from_numpy(np.stack(chords[i:i + batch_size])).to(dev)  # (b, w, 12)
            lag = torch.from_numpy(np.stack(lagged[i:i + batch_size])).to(dev)  # (b, L, w)
            tgt = torch.full_like(ctx[:, :model.model.cfg.num_levels], model.model.cfg.mask_id)
            inst = torch.full((b,), bass, device=dev)
            null = torch.full_like(inst, NULL_ID)
            drop = torch.ones(b, dtype=torch.bool, device=dev)

            def logp(c, ins, dr=None):
                return model.model(c, tgt, ins, drop_context=dr, level=0).float().log_softmax(-1)  # (b, w, V)

            ai, oi, i_, a_, none = logp(ctx, inst), logp(other, inst), logp(ctx, inst, drop), logp(ctx, null), \
                logp(ctx, null, drop)
            conds = {"naive, true context": ai, "naive, mismatched context": oi, "no context p(t|i)": i_,
                     "paper eq. 3 (3, 3)": guided_log_probs(a_, i_, none, 3.0, 3.0)}
            for lam in nested:
                conds[f"nested ({lam:g}, 1)"] = guided_log_probs(ai, i_, none, lam, 1.0 - lam)
            sounding = pcs >= 0
            for name, lp in conds.items():
                p_pc = lp.exp() @ onehot  # (b, w, 12)
                p_true = p_pc.gather(-1, pcs.clamp_min(0)[..., None])[..., 0]
                top_pc = p_pc.argmax(-1)  # (b, w) the most probable pitch class
                hit = (top_pc == pcs).float()
                acc = sums.setdefault(name, [0.0] * (10 + 2 * len(LAGS)))
                in_chord = chord.gather(-1, top_pc[..., None])[..., 0] & (top_pc != pcs)
                acc[7] += float(in_chord[sounding].sum())
                acc[8] += float((~in_chord & (top_pc != pcs))[sounding].sum())
                other_chord = chord.clone()
                other_chord.scatter_(-1, pcs.clamp_min(0)[..., None], False)
                acc[9] += float((p_pc * other_chord).sum(-1)[sounding].sum())
                for j in range(len(LAGS)):  # the argmax class against the bass LAGS[j] frames later
                    ok = lag[:, j] >= 0
                    acc[10 + 2 * j] += float((top_pc == lag[:, j])[ok].sum())
                    acc[11 + 2 * j] += float(ok.sum())
                acc[0] += float(p_true[sounding].sum())
                acc[1] += float(hit[sounding].sum())
                acc[2] += float(p_pc.sum(-1)[sounding].sum())
                acc[3] += float(sounding.sum())
                acc[4] += float(lp.exp()[..., silence].sum(-1)[sounding].sum())
                top = lp.argmax(-1)  # (b, w) the most probable code
                acc[5] += float(silence[top][sounding].sum())
                acc[6] += float((code_pc[top] == pcs)[sounding].sum())
            ctx_pc = torch.from_numpy(context_table).to(dev)[ctx[:, 0]]  # (b, w) the context code's guess
            context_code_hits.append((float((ctx_pc == pcs)[sounding].sum()), float(sounding.sum())))
    all_pcs = np.concatenate([p for _, p, _ in crops])
    all_chords = np.concatenate(chords)[all_pcs >= 0]  # (frames, 12)
    all_pcs = all_pcs[all_pcs >= 0]
    hits, n = map(sum, zip(*context_code_hits))
    return {"crops": len(crops), "frames": int(len(all_pcs)),
            "chance_accuracy": round(float(np.bincount(all_pcs, minlength=12).max() / len(all_pcs)), 4),
            "context_code_accuracy": round(hits / n, 4),
            # how often the real bass's class is one the upper voices sound, and how many they sound
            "real_in_chord": round(float(all_chords[np.arange(len(all_pcs)), all_pcs].mean()), 4),
            "chord_classes": round(float(all_chords.sum(1).mean()), 3),
            "silence_codes": int(silence.sum()),
            "conditions": {k: {"p_true_pc": round(v[0] / v[3], 4), "accuracy": round(v[1] / v[3], 4),
                               "p_known": round(v[2] / v[3], 4), "p_silence": round(v[4] / v[3], 4),
                               "argmax_silence": round(v[5] / v[3], 4),
                               "code_argmax_accuracy": round(v[6] / v[3], 4),
                               "argmax_chord_tone": round(v[7] / v[3], 4), "argmax_clash": round(v[8] / v[3], 4),
                               "p_chord_tone": round(v[9] / v[3], 4),
                               "p_clash": round((v[2] - v[0] - v[9]) / v[3], 4),
                               "accuracy_by_lag": {str(d): round(v[10 + 2 * j] / max(v[11 + 2 * j], 1), 4)
                                                   for j, d in enumerate(LAGS)}}
                           for k, v in sums.items()}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["demo"], help="models: names, exported folders or .ckpt files")
    p.add_argument("--names", nargs="*", default=None, help="labels of the models in the tables (default: --model)")
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "stemgen" / "data" / "chorales_all")
    p.add_argument("--songs", type=int, default=16, help="held-out chorales")
    p.add_argument("--context-drums", action="store_true", help=CONTEXT_DRUMS_HELP)
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of each held-out chorale cut into crops")
    p.add_argument("--table-songs", type=int, default=64, help="train chorales for the code -> pitch class table")
    p.add_argument("--nested", type=float, nargs="*", default=[2.0, 3.0, 5.0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "pitch_probe")
    args = p.parse_args()

    from stemgen.api import load_model
    from stemgen.prepare import prepare_chorales

    prepare_chorales(args.data)
    models = [load_model(m, device="cpu") for m in args.model]
    sr = models[0].sample_rate
    start = time.perf_counter()
    songs = held_out_chorales(args.data, args.songs, sr, args.seconds, 8.0, args.context_drums)
    # one table for every model: the codec is the embedded one for all of them
    table, context_table, purity = code_tables(models[0], train_tracks(args.data, args.table_songs), args.seconds)
    result = {"benchmark": "pitch_probe", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "songs": len(songs), "context_drums": args.context_drums, "table_songs": args.table_songs, "table_codes": int((table >= 0).sum()),
              "table_purity": round(purity, 4), "sources": dict(zip(args.names or args.model, args.model)),
              "models": {}}
    names = args.names or args.model
    if len(names) != len(models):
        raise SystemExit(f"--names needs one label per model ({len(models)}), got {len(names)}")
    for name, model in zip(names, models):
        result["models"][name] = probe(model, songs, table, context_table, args.nested)
        print(name, json.dumps(result["models"][name]), flush=True)
    result["seconds_total"] = round(time.perf_counter() - start, 1)
    write_result(args.out, result, markdown(result))


def markdown(r: dict) -> str:
    first = next(iter(r["models"].values()))
    lines = ["# Pitch-class probe: the bass's all-masked level-0 distribution, read as pitch classes", "",
             f"{r['songs']} held-out chorales, {first['crops']} crops, {first['frames']} sounding bass frames per "
             f"condition; code -> pitch class table from {r['table_songs']} train chorales ({r['table_codes']} "
             f"codes, purity {r['table_purity']}); machine {r['machine']['cpu']}, {r['machine']['cores']} cores; "
             f"{r['date']}; context: {context_label(r.get('context_drums', False))}.", "",
             f"References: most frequent pitch class {first['chance_accuracy']}; the context's own level-0 code "
             f"in the same frame, through the table: {first['context_code_accuracy']}.", "",
             f"Silence: {first.get('silence_codes', '-')} level-0 code(s) of a silent signal; the mass on them and how "
             "often the most probable code is one, where the bass sounds.", "",
             "| model | distribution | p(sounding pitch class) | argmax accuracy | mass on known codes | "
             "p(silence) | argmax silent | argmax code's accuracy |", "|---|---|---|---|---|---|---|---|"]
    for name, m in r["models"].items():
        for cond, v in m["conditions"].items():
            cond = cond.replace("|", "\\|")
            lines.append(f"| {name} | {cond} | {v['p_true_pc']} | {v['accuracy']} | {v['p_known']} | "
                         f"{v.get('p_silence', '-')} | {v.get('argmax_silence', '-')} | "
                         f"{v.get('code_argmax_accuracy', '-')} |")
    if "argmax_clash" in next(iter(first["conditions"].values())):
        lines += ["", f"Wrong notes: the most probable pitch class against the chord the upper voices sound in the "
                  f"frame (from their MIDI; {first['chord_classes']} classes on average; the real bass's class is "
                  f"among them {first['real_in_chord']} of the time), and the mass on each kind:", "",
                  "| model | distribution | argmax: right | another chord tone | clash | "
                  "mass: right | another chord tone | clash |", "|---|---|---|---|---|---|---|---|"]
        for name, m in r["models"].items():
            for cond, v in m["conditions"].items():
                lines.append(f"| {name} | {cond.replace('|', chr(92) + '|')} | {v['accuracy']} | "
                             f"{v['argmax_chord_tone']} | {v['argmax_clash']} | {v['p_true_pc']} | "
                             f"{v['p_chord_tone']} | {v['p_clash']} |")
        lags = list(next(iter(first["conditions"].values()))["accuracy_by_lag"])
        lines += ["", "The most probable pitch class against the real bass shifted by d frames (50 Hz; d > 0: "
                  "the bass d frames later), over the frames where the shifted bass sounds:", "",
                  "| model | distribution | " + " | ".join(f"d = {d}" for d in lags) + " |",
                  "|---|---|" + "---|" * len(lags)]
        for name, m in r["models"].items():
            for cond, v in m["conditions"].items():
                lines.append(f"| {name} | {cond.replace('|', chr(92) + '|')} | "
                             + " | ".join(str(x) for x in v["accuracy_by_lag"].values()) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
