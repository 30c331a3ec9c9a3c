"""Listening: does a model use its context? Measured two ways on held-out chorales, in one run.

    python benchmarks/listening.py                          # the demo model, 16 held-out chorales
    python benchmarks/listening.py --model exported/x --songs 24 --out benchmarks/results/listening_x

1. Cross-entropy (nats per token) of the bass's level-0 tokens with *every* target token masked,
   where only the context can tell what to play: with the true context, another chorale's
   context, and each guidance branch of paper eq. 3 (p(t|a,i), p(t|a), p(t|i), p(t)); plus the
   true/mismatched pair at the training masking. ``context_gain_nats`` = mismatched - true.
   Crops: the model's window, back to back over the first ``--ce-seconds`` of each chorale.
2. Chroma agreement (``stemgen.eval.context_agreement``: frame-wise pitch-class cosine of a
   stem with a context, over the frames where the context sounds) of the generated bass with
   its own context and with the next chorale's, for guided (the paper's best) and naive
   sampling; the real bass with the same two contexts is the reference, computed here too, and
   the real bass encoded and decoded by the model's codec (the most the right tokens can score).

The context is always the chorale's upper voices (soprano, alto, tenor: its harmony, no drums);
the target is its bass. Held-out: the test split of the embedded chorales (neither the shipped
codec nor the demo model trained on it); ``--split validation`` scores on the validation split
instead, to choose between models or training runs and report the chosen one on test. Writes ``OUT.json`` and ``OUT.md``
(default ``benchmarks/results/listening``); keys are explained in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: ``--context-drums`` of this script and of pitch_probe.py
CONTEXT_DRUMS_HELP = ("the model hears the whole mix but the bass (drums too: what a user gives) instead of the upper "
                      "voices alone; the generated bass is still scored against the upper voices (the harmony), so "
                      "the agreements compare with a run without it")


def context_label(drums: bool) -> str:
    """What the held-out chorales' context is, for the Markdown (``--context-drums``)."""
    return "the whole mix but the bass (drums too)" if drums else "the upper voices"


BRANCHES = {"p(t|a,i)": "true", "p(t|a)": "null_instrument", "p(t|i)": "null_context", "p(t)": "null_both"}


def held_out_arguments(p: argparse.ArgumentParser) -> None:
    """The options that choose the model and the held-out chorales (``--model``, ``--data``,
    ``--songs``, ``--split``, ``--context-drums``), shared by the scripts that score on them."""
    p.add_argument("--model", default="demo")
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "stemgen" / "data" / "chorales_all",
                   help="rendered chorales (all 353 are rendered there if missing)")
    p.add_argument("--songs", type=int, default=16, help="held-out chorales")
    p.add_argument("--split", default="test", choices=["test", "validation"],
                   help="which held-out chorales: test (where results are reported) or validation (35 chorales "
                        "no model trained on, to choose between models or training runs without choosing on the "
                        "test chorales)")
    p.add_argument("--context-drums", action="store_true", help=CONTEXT_DRUMS_HELP)


def held_out_chorales(root: Path, n: int, sr: int, seconds: float, sounding_seconds: float,
                      drums: bool = False, split: str = "test") -> list[dict]:
    """The first ``n`` chorales of ``split`` (test, or validation: neither is trained on) whose bass
    and upper voices both sound in their first
    ``sounding_seconds``: ``{"name", "context" (what the model hears: the upper voices),
    "harmony" (the upper voices: what a bass is scored against), "bass"}``, the first
    ``seconds``, mono at ``sr``. ``drums``: the context is the whole mix but the bass (upper
    voices and drums: what a user gives), chosen by the same rule; the harmony stays the upper voices."""
    from stemgen.audio import dbfs, load_mono, mix_down
    from stemgen.data.songs import ScanReport, read_slakh_track, song_folders
    from stemgen.instruments import DRUMS_ID, resolve

    bass_id, out = resolve("bass").id, []
    for track in song_folders(root, split, complete=True):
        song = read_slakh_track(track, ScanReport())
        stems = {s.name: (s.instrument, load_mono(s.path, sr)[: int(seconds * sr)]) for s in song.stems}
        bass = [wav for inst, wav in stems.values() if inst == bass_id]
        upper = [wav for inst, wav in stems.values() if inst not in (bass_id, DRUMS_ID)]
        head = int(sounding_seconds * sr)
        if len(bass) == 1 and upper and min(dbfs(bass[0][:head]), dbfs(mix_down(upper)[:head])) > -50.0:
            heard = upper + ([wav for inst, wav in stems.values() if inst == DRUMS_ID] if drums else [])
            out.append({"name": track.name, "track": track, "context": mix_down(heard), "harmony": mix_down(upper),
                        "bass": bass[0]})
        if len(out) == n:
            break
    return out


def write_songs(path: Path, songs: list[dict], sr: int, split: str, drums: bool) -> None:
    """The held-out chorales as one compressed ``.npz`` (audio in float16, the harmony stored only
    where it is not the context), for a machine that cannot read the rendered audio."""
    arrays = {"sample_rate": np.array(sr), "split": np.array(split), "context_drums": np.array(drums),
              "names": np.array([s["name"] for s in songs])}
    for i, s in enumerate(songs):
        arrays[f"context_{i}"] = s["context"].astype(np.float16)
        arrays[f"bass_{i}"] = s["bass"].astype(np.float16)
        if not np.array_equal(s["harmony"], s["context"]):
            arrays[f"harmony_{i}"] = s["harmony"].astype(np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def read_songs(path: Path, sr: int, split: str, drums: bool, seconds: float) -> list[dict]:
    """The chorales :func:`write_songs` wrote, checked against what this run asks for."""
    if not path.is_file():
        raise SystemExit(f"--songs-file {path}: no such file (write it with --write-songs-file on a machine "
                         "with the rendered chorales)")
    z = np.load(path)
    got = (int(z["sample_rate"]), str(z["split"]), bool(z["context_drums"]))
    if got != (sr, split, drums):
        raise SystemExit(f"--songs-file {path} holds {got[1]} chorales at {got[0]} Hz, context drums {got[2]}; "
                         f"this run asks for {split} at {sr} Hz, context drums {drums}")
    songs = []
    for i, name in enumerate(z["names"]):
        context = z[f"context_{i}"].astype(np.float32)
        harmony = z[f"harmony_{i}"].astype(np.float32) if f"harmony_{i}" in z else context
        songs.append({"name": str(name), "context": context, "harmony": harmony,
                      "bass": z[f"bass_{i}"].astype(np.float32)})
    if len(songs[0]["bass"]) < int(seconds * sr):
        raise SystemExit(f"--songs-file {path} holds {len(songs[0]['bass']) / sr:g} s of each chorale, this run "
                         f"needs {seconds:g} s (--ce-seconds and --seconds)")
    return songs


def cross_entropies(model, songs: list[dict], batch_size: int = 16, seed: int = 0) -> dict:
    """Mean nats per token under each listening condition, over back-to-back window crops."""
    import torch

    from stemgen.instruments import resolve
    from stemgen.model.loss import listening_losses
    from stemgen.train.metrics import Listening

    w = model.window_frames
    crops = []  # (context (Q, w), target (Q, w), song index)
    for k, s in enumerate(songs):
        ctx, tgt = model.encode_context(s["context"]), model._encode(s["bass"])
        for start in range(0, min(ctx.shape[-1], tgt.shape[-1]) - w + 1, w):
            crops.append((ctx[:, start:start + w], tgt[:, start:start + w], k))
    metric = Listening()
    gen = torch.Generator(device=model.device).manual_seed(seed)
    bass = torch.tensor(resolve("bass").id, device=model.device)
    with torch.no_grad(), torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=model.precision == "bf16"):
        for i in range(0, len(crops), batch_size):
            part = crops[i:i + batch_size]
            ctx, tgt = torch.stack([c for c, _, _ in part]), torch.stack([t for _, t, _ in part])
            songs_idx = torch.tensor([k for _, _, k in part], device=model.device)
            metric.update(*listening_losses(model.model, ctx, tgt, bass.expand(len(part)), songs_idx, gen))
    r = {k: float(v) for k, v in metric.compute().items()}
    return {"crops": len(crops), **r}


#: what each arm reports (per seed, and their mean over the seeds)
ARM_KEYS = ("chroma_generated_own", "chroma_generated_mismatched", "chroma_gap", "chroma_heard_own",
            "chroma_heard_mismatched", "chroma_heard_gap", "silent_fraction")


#: reported where every seed has it (runs written before it was added lack it)
OPTIONAL_KEYS = ("pitch_match", "pitch_chord_tone", "pitch_clash", "chroma_focus")


def arm_scores(stems: list[np.ndarray], contexts: list[np.ndarray], sr: int, reals: list[np.ndarray]) -> dict:
    """:data:`ARM_KEYS` and ``pitch_match`` for one seed's generated basses, and under ``per_song``
    the heard own-context agreement, gap and pitch match of each song (lists, the songs' order), for
    comparisons over songs (``listening_paired.py``)."""
    from stemgen.audio import silent_fraction

    own, mismatched, heard_own, heard_mismatched, songs = agreement(stems, contexts, sr, per_song=True)
    pitch = pitch_scores(stems, reals, contexts, sr, per_song=True)
    songs["pitch_match"] = pitch.pop("per_song")
    return {"chroma_generated_own": own, "chroma_generated_mismatched": mismatched, "chroma_gap": own - mismatched,
            "chroma_heard_own": heard_own, "chroma_heard_mismatched": heard_mismatched,
            "chroma_heard_gap": heard_own - heard_mismatched,
            "silent_fraction": float(np.mean([silent_fraction(s, sr) for s in stems])),
            **pitch, "chroma_focus": chroma_focus(stems, sr), "per_song": songs}


def chroma_focus(stems: list[np.ndarray], sr: int) -> float:
    """Mean over the pieces of the share of each sounding frame's chroma power in its strongest
    pitch class (1: one pitch class; 1/12: all alike): how clearly a bass names one note. A
    cosine with a chord rises for a bass whose power is spread over several classes, right
    or not, so this is what the chroma agreement also depends on besides the notes."""
    from stemgen.spectra import SILENT_FRAME_DB, chroma_frames, frame_levels_db

    shares = []
    for s in stems:
        chroma, _ = chroma_frames(s, sr)
        on = frame_levels_db(s)[: chroma.shape[1]] >= SILENT_FRAME_DB
        share = chroma.max(0) / np.maximum(chroma.sum(0), 1e-20)
        shares.append(float(share[on].mean()) if on.any() else 0.0)
    return float(np.mean(shares))


def pitch_scores(stems: list[np.ndarray], reals: list[np.ndarray], contexts: list[np.ndarray], sr: int,
                 per_song: bool = False) -> dict:
    """Means over the pieces of what each bass plays where its real bass sounds
    (:func:`stemgen.spectra.pitch_class_breakdown`): ``pitch_match`` (the real bass's pitch class),
    ``pitch_chord_tone`` (another of the upper voices' three strongest classes), ``pitch_clash``
    (any other class): the notes, not only their fit. ``per_song`` adds each piece's match (a list)."""
    from stemgen.spectra import pitch_class_breakdown

    parts = [pitch_class_breakdown(s, r, c, sr) for s, r, c in zip(stems, reals, contexts)]
    out = {f"pitch_{k}": float(np.mean([p[k] for p in parts])) for k in ("match", "chord_tone", "clash")}
    if per_song:
        out["per_song"] = [round(float(p["match"]), 4) for p in parts]
    return out


def by_window(stems: list[np.ndarray], contexts: list[np.ndarray], sr: int, seconds: float) -> dict:
    """The heard agreement and gap on each consecutive ``seconds`` of the basses (the model's
    window: the first is generated from nothing, the later ones continue the overlap before them)."""
    n, total = int(seconds * sr), min(len(s) for s in stems)
    own, gap = [], []
    for i in range(0, total - n // 2, n):  # a last piece shorter than half a window is left out
        _, _, heard_own, heard_mismatched = agreement([s[i:i + n] for s in stems], [c[i:i + n] for c in contexts], sr)
        own.append(round(heard_own, 4))
        gap.append(round(heard_own - heard_mismatched, 4))
    return {"chroma_heard_own_by_window": own, "chroma_heard_gap_by_window": gap}


def agreement(stems: list[np.ndarray], contexts: list[np.ndarray], sr: int, per_song: bool = False) -> tuple:
    """Chroma agreement with the own and the mismatched (next song's) context, then the same as
    heard (a frame where the stem is silent scores 0): the means over the songs; with ``per_song``
    also ``{"chroma_heard_own": [...], "chroma_heard_gap": [...]}``, each song's (rounded to 4 places)."""
    from stemgen.eval.context_agreement import ContextAgreement

    m = ContextAgreement(beats=False)
    m.update(stems, contexts, sr)
    each = m.per_example()
    means = tuple(float(np.mean(each[k])) for k in ("chroma", "chroma_mismatched", "chroma_heard",
                                                    "chroma_heard_mismatched"))
    if not per_song:
        return means
    songs = {"chroma_heard_own": each["chroma_heard"],
             "chroma_heard_gap": each["chroma_heard"] - each["chroma_heard_mismatched"]}
    return means + ({k: [round(float(x), 4) for x in v] for k, v in songs.items()},)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    held_out_arguments(p)
    p.add_argument("--ce-seconds", type=float, default=20.0, help="seconds of each chorale cut into crops for 1.")
    p.add_argument("--seconds", type=float, default=8.0, help="length of the generated bass for 2.")
    p.add_argument("--steps", type=int, nargs="*", default=None, help="decoding steps per level (default: the paper's)")
    p.add_argument("--overlap", type=float, default=1.0,
                   help="seconds of overlap between the generation windows (generate's overlap_seconds)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0],
                   help="generation seeds (with seed s, chorale i's bass gets seed s + i): each arm is generated "
                        "once per seed and the agreement averaged; give seeds at least --songs apart")
    p.add_argument("--skip-generation", action="store_true", help="only the cross-entropies (1.)")
    p.add_argument("--arms", type=json.loads, default={},
                   help='more sampling arms, JSON {name: {SamplingSettings field: value}} over the paper\'s '
                        'best, e.g. \'{"nested": {"guidance_form": "nested", "lambda_context": 2.0}}\'')
    p.add_argument("--real-level0", action="store_true",
                   help="add the arm real_level0: the real bass's level-0 tokens given, levels 1-3 decoded with "
                        "the model's default settings (what its fine levels make of the right coarse ones)")
    p.add_argument("--only", nargs="*", default=None,
                   help="run only these arms (of guided, naive, default and the --arms): another seed of a few")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="the model's precision (load_model's): auto is bf16 where the CPU has native bf16 "
                        "(AVX512-BF16/AMX), else fp32; compare models at the same precision on the same machine")
    p.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda)")
    p.add_argument("--songs-file", type=Path, default=None,
                   help="read the held-out chorales from this .npz (written by --write-songs-file) instead of "
                        "the rendered audio: for a machine without soundfile (a GPU machine)")
    p.add_argument("--write-songs-file", type=Path, default=None,
                   help="write the held-out chorales (--split, --songs, the first max(--ce-seconds, --seconds) "
                        "seconds, float16) to this .npz and stop")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "listening")
    p.add_argument("--resume", action="store_true",
                   help="keep what OUT.json already holds for the same model, songs, length, steps and overlap "
                        "(part 1, and each arm's finished seeds: --seeds 0 100 200 300 over a run of seeds 0 100 "
                        "generates only 200 and 300) and run only the rest; results are written after every part")
    args = p.parse_args()

    from stemgen.api import load_model
    from stemgen.audio import silent_fraction
    from stemgen.prepare import prepare_chorales
    from stemgen.sampling.settings import SamplingSettings

    if args.songs_file is None:
        prepare_chorales(args.data)
    model = load_model(args.model, device=args.device, precision=args.precision)
    sr = model.sample_rate
    window_seconds = model.window_frames / model.codec.frame_rate
    if not 0 <= args.overlap <= window_seconds / 2:  # generate would clamp it, and the result would misstate it
        raise SystemExit(f"--overlap must be between 0 and half the model's window ({window_seconds / 2:g} s), "
                         f"got {args.overlap:g}")
    loaded = max(args.ce_seconds, args.seconds)  # seconds of each chorale that parts 1 and 2 read
    if args.songs_file is not None:
        songs = read_songs(args.songs_file, sr, args.split, args.context_drums, loaded)
    else:
        songs = held_out_chorales(args.data, args.songs, sr, loaded, args.seconds, args.context_drums, args.split)
    if args.write_songs_file is not None:
        write_songs(args.write_songs_file, songs, sr, args.split, args.context_drums)
        print(f"wrote {len(songs)} {args.split} chorales to {args.write_songs_file}")
        return
    if len(songs) < 2:
        raise SystemExit(f"need at least 2 {args.split} chorales with a bass under {args.data}, found {len(songs)}")
    start = time.perf_counter()
    done = previous_result(args.out, repr(model), len(songs), args.seconds, args.steps,
                           args.overlap, args.context_drums, args.split,
                           str(args.songs_file) if args.songs_file else None) if args.resume else {}
    seeds_before = list(done.get("seeds", [0]))
    for arm in done.values():  # each arm keeps the seeds it was generated with; the run's may change below
        if isinstance(arm, dict) and "chroma_generated_own" in arm:
            arm.setdefault("seeds", seeds_before)
    if "ce_nats" in done:
        result = done
        print(f"part 1 from {result_file(args.out, '.json')}", flush=True)
    else:
        ce = cross_entropies(model, songs)
        result = {"benchmark": "listening", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
                  "model": repr(model), "songs": len(songs), "split": args.split, "context_drums": args.context_drums,
                  **({"songs_file": str(args.songs_file)} if args.songs_file else {}),
                  "ce_crops": ce["crops"],
                  "uniform_nats": round(math.log(model.model.cfg.cardinality), 4),
                  "context_gain_nats": round(ce["context_gain"], 4),
                  "context_gain_train_mask_nats": round(ce["context_gain_train_mask"], 4),
                  "context_gain_continuation_nats": round(ce["context_gain_continuation"], 4),
                  "alignment_gain_nats": round(ce["alignment_gain"], 4),
                  "ce_nats": {k[3:]: round(v, 4) for k, v in ce.items() if k.startswith("ce/")},
                  "branch_ce_nats": {b: round(ce[f"ce/{c}"], 4) for b, c in BRANCHES.items()}}
        print(json.dumps(result, indent=1), flush=True)

    n = int(args.seconds * sr)
    contexts = [s["context"][:n] for s in songs]  # what the model hears
    harmonies = [s["harmony"][:n] for s in songs]  # what every bass is scored against
    reals = [s["bass"][:n] for s in songs]
    result["seconds"], result["steps"], result["seeds"] = args.seconds, args.steps, args.seeds
    result["overlap_seconds"] = args.overlap
    (result["chroma_real_own"], result["chroma_real_mismatched"], result["chroma_heard_real_own"],
     result["chroma_heard_real_mismatched"]) = (round(x, 4) for x in agreement(reals, harmonies, sr))
    result["silent_fraction_real"] = round(float(np.mean([silent_fraction(b, sr) for b in reals])), 4)
    result["real_by_window"] = by_window(reals, harmonies, sr, window_seconds)
    # the real bass through the model's codec: what a bass with the right tokens can score at best
    coded = [model.codec.roundtrip(b) for b in reals]
    (result["chroma_real_codec_own"], result["chroma_real_codec_mismatched"], result["chroma_heard_real_codec_own"],
     result["chroma_heard_real_codec_mismatched"]) = (round(x, 4) for x in agreement(coded, harmonies, sr))
    # the real bass half a window late (wrapping round): the right music, not at the right moment;
    # what a bass that knows the piece but not the beat scores
    late = [np.roll(b, int(round(window_seconds / 2 * sr))) for b in reals]
    (_, _, result["chroma_heard_real_shifted_own"], result["chroma_heard_real_shifted_mismatched"]) = (
        round(x, 4) for x in agreement(late, harmonies, sr))
    # how often a bass plays the real bass's pitch class: through the codec (the best a generated bass
    # can do), another chorale's real bass (a bass that fits chorales, not this one) and the late one
    for name, basses in (("real_codec", coded), ("real_mismatched", reals[1:] + reals[:1]), ("real_shifted", late)):
        for k, v in pitch_scores(basses, reals, harmonies, sr).items():
            result[f"{k}_{name}"] = round(v, 4)
    result["chroma_focus_real"] = round(chroma_focus(reals, sr), 4)
    write_result(args.out, result, markdown(result), quiet=True)  # a run stopped later keeps part 1
    if not args.skip_generation:
        q = model.model.cfg.num_levels
        best = SamplingSettings.paper(q)
        arms = {"guided": best, "naive": SamplingSettings.naive(steps=best.steps, temperature=best.temperature)}
        default = model.default_settings_for("bass")  # what the model generates a bass with unless told otherwise
        if default != best:
            arms["default"] = default
        arms.update({name: best.updated(fields, q, f"--arms {name}") for name, fields in args.arms.items()})
        if args.real_level0:
            arms[REAL_LEVEL0] = default
        if args.only is not None:
            unknown = sorted(set(args.only) - set(arms))
            if unknown:
                raise SystemExit(f"--only: no arm(s) {unknown}; the arms are {sorted(arms)}")
            arms = {name: settings for name, settings in arms.items() if name in args.only}
        for name, settings in arms.items():
            asked = json.loads(json.dumps(dataclasses.asdict(settings)))
            earlier = seeds_done(result.get(name), asked)
            per_seed = {str(seed): earlier[str(seed)] for seed in args.seeds if str(seed) in earlier}
            if len(per_seed) == len(args.seeds) and result[name]["seeds"] == args.seeds:
                print(f"{name}: kept from {result_file(args.out, '.json')}", flush=True)
                continue
            if per_seed:
                print(f"{name}: seeds {sorted(per_seed, key=int)} kept from {result_file(args.out, '.json')}",
                      flush=True)
            t = time.perf_counter()
            settings_used = result[name]["settings"] if per_seed else None
            for seed in args.seeds:
                if str(seed) in per_seed:
                    continue
                if name == REAL_LEVEL0:
                    stems = given_level0(model, contexts, reals, sr, seed, settings, args.steps, args.overlap)
                else:
                    stems = model.generate(contexts, "bass", sample_rate=sr, seed=seed, settings=settings,
                                            steps=args.steps or None, overlap_seconds=args.overlap)
                audio = [s.audio for s in stems]
                settings_used = stems[0].settings
                scores = arm_scores(audio, harmonies, sr, reals)
                per_seed[str(seed)] = {k: round(v, 4) for k, v in scores.items() if k != "per_song"}
                per_seed[str(seed)]["per_song"] = scores["per_song"]
                per_seed[str(seed)]["by_window"] = by_window(audio, harmonies, sr, window_seconds)
            per_seed = {str(seed): per_seed[str(seed)] for seed in args.seeds}  # in the order asked
            mean = {k: round(float(np.mean([r[k] for r in per_seed.values()])), 4) for k in ARM_KEYS
                    + tuple(k for k in OPTIONAL_KEYS if all(k in r for r in per_seed.values()))}
            windows = {k: np.mean([r["by_window"][k] for r in per_seed.values()], axis=0).round(4).tolist()
                       for k in per_seed[str(args.seeds[0])]["by_window"]}
            result[name] = {**mean, "by_window": windows, "seeds": list(args.seeds),
                            "settings": {**settings_used, "seed": args.seeds[0]},
                            "seconds_to_generate": round(time.perf_counter() - t, 1), "asked": asked}
            if len(args.seeds) > 1:  # how far the mean of this many seeds can move
                result[name]["per_seed"] = per_seed
                result[name]["standard_error"] = {
                    k: round(float(np.std([r[k] for r in per_seed.values()], ddof=1) / math.sqrt(len(per_seed))), 4)
                    for k in ("chroma_heard_own", "chroma_heard_gap")}
            print(name, json.dumps(result[name]), flush=True)
            write_result(args.out, result, markdown(result), quiet=True)
    result["seconds_total"] = round(time.perf_counter() - start, 1)
    write_result(args.out, result, markdown(result))


#: the arm whose level 0 is the real bass's (``--real-level0``)
REAL_LEVEL0 = "real_level0"


def given_level0(model, contexts: list[np.ndarray], reals: list[np.ndarray], sr: int, seed: int, settings,
                 steps, overlap: float) -> list:
    """Basses whose level-0 tokens are the real bass's (encoded by the model's codec) and whose
    levels 1-3 the model decodes: a kept stem whose other levels hold the mask id, which
    ``generate`` treats as free. One call per chorale (a kept stem is one per call), chorale i
    with seed ``seed + i`` as in a batched call."""
    from stemgen.api import Stem

    stems = []
    for i, (context, real) in enumerate(zip(contexts, reals)):
        tokens = model._encode(real).clone()  # (Q, T), as generate encodes a kept stem's audio
        tokens[1:] = model.model.cfg.mask_id
        keep = Stem(real, sr, tokens.cpu(), "bass", context)
        stems.append(model.generate(context, "bass", sample_rate=sr, seed=seed + i, settings=settings,
                                    steps=steps or None, overlap_seconds=overlap, keep=keep))
    return stems


def result_file(out: Path, ext: str) -> Path:
    """``OUT`` + ``ext``: appended, not substituted, so that ``--out runs/overlap_0.5`` does not
    write ``runs/overlap_0.json`` (a trailing ``.json`` or ``.md`` in ``OUT`` is dropped first)."""
    if out.suffix in (".json", ".md"):
        out = out.with_suffix("")
    return out.parent / (out.name + ext)


def previous_result(out: Path, model: str, songs: int, seconds: float, steps, overlap: float = 1.0,
                    context_drums: bool = False, split: str = "test", songs_file: str | None = None) -> dict:
    """``OUT.json`` if it holds a run of the same model on the same songs and contexts, length, steps,
    window overlap and audio source (``songs_file``: the float16 .npz of ``--songs-file``, or None: the
    rendered chorales; the two differ in the last bits of every sample) (its seeds may differ:
    :func:`seeds_done` picks what it can reuse), else {}."""
    path = result_file(out, ".json")
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    same = (old.get("model"), old.get("songs"), old.get("seconds", seconds), old.get("steps"),
            old.get("overlap_seconds", 1.0), old.get("context_drums", False), old.get("split", "test"),
            old.get("songs_file")) \
        == (model, songs, seconds, steps, overlap, context_drums, split, songs_file)
    if not same:
        print(f"--resume: {path} holds another run (model, songs, split, contexts, seconds, steps, overlap "
              "or audio source differ): "
              "starting over", flush=True)
    return old if same else {}


def seeds_done(arm, asked: dict) -> dict:
    """``{seed: scores}`` an earlier run holds for an arm sampled with the same settings (``asked``):
    its ``per_seed``, or, from a run of one seed, the arm itself (its ``seeds`` stamped on loading).
    With seed s chorale i's bass gets seed s + i, so a seed's scores do not depend on which other
    seeds ran beside it."""
    if not isinstance(arm, dict) or arm.get("asked") != asked or "chroma_heard_own" not in arm \
            or "by_window" not in arm:
        return {}
    if "per_seed" in arm:
        return arm["per_seed"]
    seeds = arm["seeds"]
    kept = ARM_KEYS + tuple(k for k in OPTIONAL_KEYS if k in arm)
    return {str(seeds[0]): {**{k: arm[k] for k in kept}, "by_window": arm["by_window"]}} if len(seeds) == 1 else {}


def write_result(out: Path, result: dict, md: str, quiet: bool = False) -> None:
    """Write ``OUT.json`` and ``OUT.md`` (creating the folder, each file at once) and print the
    Markdown unless ``quiet``."""
    from stemgen.paths import atomic_write

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(result_file(out, ".json"), lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    atomic_write(result_file(out, ".md"), lambda tmp: tmp.write_text(md))
    if not quiet:
        print(md)


def se(arm: dict, key: str) -> str:
    """`` +- standard error`` of ``key`` over the seeds, where there were several."""
    err = arm.get("standard_error", {}).get(key)
    return f" +- {err}" if err is not None else ""


def arm_label(name: str, arm: dict, r: dict) -> str:
    """The arm's name, with its seeds where they are not the run's (an arm kept by ``--resume``)."""
    seeds = arm.get("seeds", r.get("seeds", [0]))
    return name if seeds == r.get("seeds", [0]) else f"{name} (seeds {', '.join(map(str, seeds))})"


def markdown(r: dict) -> str:
    lines = ["# Listening", "", f"Model `{r['model']}`; {r['songs']} held-out chorales, "
             f"{context_label(r.get('context_drums', False))} as the context (basses scored against the upper voices); "
             f"machine {r['machine']['cpu']}, {r['machine']['cores']} cores.", "",
             f"Level-0 cross-entropy, every target token masked, {r['ce_crops']} crops (nats per token; uniform "
             f"{r['uniform_nats']}):", "", "| condition | nats |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["ce_nats"].items()]
    lines += ["", f"**Context gain** (another song's context minus the true one, all masked): "
              f"**{r['context_gain_nats']}** nats; at the training masking: {r['context_gain_train_mask_nats']}"
              + (f"; continuing level 0's first quarter: {r['context_gain_continuation_nats']}"
                 if "context_gain_continuation_nats" in r else "") + "."
              + (f" **Alignment gain** (the own context half a window out of line minus in line, all masked): "
                 f"{r['alignment_gain_nats']} nats." if "alignment_gain_nats" in r else ""), "",
              f"Chroma agreement of the bass with its own / another chorale's context (first {r['seconds']:g} s, "
              f"seeds {r.get('seeds', [0])}, the mean over them; +- its standard error over the seeds; windows "
              f"overlapping by {r.get('overlap_seconds', 1.0):g} s); "
              "as heard: a frame where the bass is silent scores 0:", "",
              "| bass | own | mismatched | gap | as heard: own | mismatched | gap | silent |",
              "|---|---|---|---|---|---|---|---|"]
    for name, g in r.items():
        if isinstance(g, dict) and "chroma_generated_own" in g:
            lines.append(f"| generated, {arm_label(name, g, r)} | {g['chroma_generated_own']} | {g['chroma_generated_mismatched']} | "
                         f"{g['chroma_gap']} | {g.get('chroma_heard_own', '-')}{se(g, 'chroma_heard_own')} | "
                         f"{g.get('chroma_heard_mismatched', '-')} | "
                         f"{g.get('chroma_heard_gap', '-')}{se(g, 'chroma_heard_gap')} | {g.get('silent_fraction', '-')} |")
    heard = (r.get("chroma_heard_real_own"), r.get("chroma_heard_real_mismatched"))
    heard_gap = round(heard[0] - heard[1], 4) if None not in heard else "-"
    lines.append(f"| real (reference) | {r['chroma_real_own']} | {r['chroma_real_mismatched']} | "
                 f"{round(r['chroma_real_own'] - r['chroma_real_mismatched'], 4)} | {heard[0] or '-'} | {heard[1] or '-'} | "
                 f"{heard_gap} | {r.get('silent_fraction_real', '-')} |")
    if "chroma_real_codec_own" in r:
        c = [r[f"chroma_{k}real_codec_{m}"] for k in ("", "heard_") for m in ("own", "mismatched")]
        lines.append(f"| real, through the codec (reference) | {c[0]} | {c[1]} | {round(c[0] - c[1], 4)} | "
                     f"{c[2]} | {c[3]} | {round(c[2] - c[3], 4)} | - |")
    if "chroma_heard_real_shifted_own" in r:
        c = r["chroma_heard_real_shifted_own"], r["chroma_heard_real_shifted_mismatched"]
        lines.append(f"| real, half a window late (reference) | - | - | - | {c[0]} | {c[1]} | {round(c[0] - c[1], 4)} | - |")
    matches = {name: g["pitch_match"] for name, g in r.items() if isinstance(g, dict) and "pitch_match" in g}
    if matches and "pitch_match_real_codec" in r:
        lines += ["", "Pitch match: how often the bass plays the real bass's pitch class (strongest chroma bin, any "
                  "octave) over the frames where the real bass sounds; a silent frame is a miss; a wrong class is another "
                  "chord tone (one of the upper voices' three strongest classes in the frame) or a clash. Chroma focus: the "
                  "share of a sounding frame's chroma power in its strongest pitch class:", "",
                  "| bass | pitch match | another chord tone | clash | chroma focus |", "|---|---|---|---|---|"]
        lines += [f"| generated, {arm_label(name, r[name], r)} | {m} | {r[name].get('pitch_chord_tone', '-')} | "
                  f"{r[name].get('pitch_clash', '-')} | {r[name].get('chroma_focus', '-')} |" for name, m in matches.items()]
        lines += [f"| real (reference) | 1 | 0 | 0 | {r.get('chroma_focus_real', '-')} |"]
        lines += [f"| {label} (reference) | {r[f'pitch_match_{key}']} | {r.get(f'pitch_chord_tone_{key}', '-')} | "
                  f"{r.get(f'pitch_clash_{key}', '-')} | - |"
                  for key, label in (("real_codec", "real, through the codec"),
                                     ("real_mismatched", "another chorale's real bass"),
                                     ("real_shifted", "the real bass half a window late"))
                  if f"pitch_match_{key}" in r]
    windows = {name: g["by_window"] for name, g in r.items() if isinstance(g, dict) and "by_window" in g}
    if windows and "real_by_window" in r:
        windows["real (reference)"] = r["real_by_window"]
        pieces = len(r["real_by_window"]["chroma_heard_own_by_window"])
        lines += ["", "As heard, own context / gap, on each window-long piece (the first generated from nothing, "
                  "the later ones continuing the overlap before them):", "",
                  "| bass | " + " | ".join(f"piece {i + 1}" for i in range(pieces)) + " |", "|---|" + "---|" * pieces]
        for name, w in windows.items():
            label = name if name == "real (reference)" else f"generated, {arm_label(name, r[name], r)}"
            lines.append(f"| {label} | " + " | ".join(
                f"{o} / {g}" for o, g in zip(w["chroma_heard_own_by_window"], w["chroma_heard_gap_by_window"])) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
