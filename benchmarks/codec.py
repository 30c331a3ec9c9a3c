"""Codec quality and speed on held-out chorale stems and mixes.

    python benchmarks/codec.py                       # embedded codec (fitted if needed)
    python benchmarks/codec.py --codec encodec_32khz # the paper codec, if its weights are here

Writes benchmarks/results/codec.json and codec.md. Metric definitions: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from stemgen.audio import load_mono  # noqa: E402
from stemgen.codec import load_codec  # noqa: E402
from stemgen.eval.codec_metrics import chroma_similarity, log_mel_distance  # noqa: E402
from stemgen.data.songs import song_folders  # noqa: E402
from stemgen.prepare import prepare_chorales, prepare_embedded_codec  # noqa: E402

TARGETS = {"stem_chroma": 0.97, "mix_chroma": 0.88, "stem_logmel_db": 1.0, "realtime_factor": 5.0}


def held_out_clips(root: Path, seconds: float, sample_rate: int, max_songs: int) -> dict[str, list]:
    """First ``seconds`` of every stem and mix of the validation and test songs."""
    clips = {"stems": [], "mixes": []}
    n = int(seconds * sample_rate)
    tracks = (song_folders(root, "validation", complete=True) + song_folders(root, "test", complete=True))[:max_songs]
    for track in tracks:
        for f in sorted((track / "stems").glob("*.flac")):
            clips["stems"].append((f"{track.name}/{f.stem}", load_mono(f, sample_rate)[:n]))
        clips["mixes"].append((f"{track.name}/mix", load_mono(track / "mix.flac", sample_rate)[:n]))
    return clips


def evaluate(codec, clips: list) -> dict:
    """Per level q = 1..Q: mean chroma similarity and log-mel distances over the clips."""
    per_level = {q: {"chroma": [], "logmel": [], "logmel_active": []} for q in range(1, codec.num_levels + 1)}
    for _, wav in clips:
        tokens = codec.encode(torch.from_numpy(wav)[None])
        for q in per_level:
            dec = codec.decode(tokens[:, :q])[0, : len(wav)].numpy()
            per_level[q]["chroma"].append(chroma_similarity(wav, dec, codec.sample_rate))
            for k, v in log_mel_distance(wav, dec, codec.sample_rate).items():
                per_level[q][k].append(v)
    levels = [{"levels": q, **{k: round(float(np.mean(v)), 4) for k, v in m.items()}} for q, m in per_level.items()]
    logmel = [lv["logmel"] for lv in levels]
    return {"count": len(clips), "by_levels": levels, "all_levels": levels[-1],
            "each_level_lowers_logmel": all(a > b for a, b in zip(logmel, logmel[1:]))}


def speed(codec, seconds: float = 20.0, repeats: int = 3) -> dict:
    """Encode+decode speed relative to real time, after two warm-up calls."""
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(1, int(seconds * codec.sample_rate), generator=g)
    for _ in range(2):
        codec.decode(codec.encode(wav))
    enc = dec = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        tokens = codec.encode(wav)
        t1 = time.perf_counter()
        codec.decode(tokens)
        t2 = time.perf_counter()
        enc, dec = enc + t1 - t0, dec + t2 - t1
    return {"audio_seconds": seconds, "encode_s": round(enc / repeats, 3), "decode_s": round(dec / repeats, 3),
            "realtime_factor": round(seconds * repeats / (enc + dec), 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--codec", default="embedded", help="codec name or path (default: embedded)")
    p.add_argument("--data", type=Path, default=None, help="rendered chorales (default: the cache)")
    p.add_argument("--songs", type=int, default=60, help="chorales to render if needed (default 60)")
    p.add_argument("--eval-songs", type=int, default=12, help="held-out songs to score (default 12)")
    p.add_argument("--seconds", type=float, default=20.0, help="excerpt length per clip (default 20)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "codec.json")
    args = p.parse_args()

    data = prepare_chorales(args.data, limit=args.songs)
    if args.codec == "embedded":
        t0 = time.perf_counter()
        codec = prepare_embedded_codec(data)
        prepared_s = time.perf_counter() - t0
    else:
        codec, prepared_s = load_codec(args.codec), None
    fit = {}
    if args.codec == "embedded":
        from stemgen.codec import default_embedded_dir

        fit = json.loads((default_embedded_dir() / "config.json").read_text()).get("fit", {})
    clips = held_out_clips(data, args.seconds, codec.sample_rate, args.eval_songs)
    with torch.no_grad():
        stems, mixes = evaluate(codec, clips["stems"]), evaluate(codec, clips["mixes"])
        spd = speed(codec)
    result = {
        "benchmark": "codec",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "codec": codec.describe(),
        "fit": fit,
        "prepare_seconds": None if prepared_s is None else round(prepared_s, 1),
        "held_out": {"songs": len({n.split('/')[0] for n, _ in clips['mixes']}), "seconds_per_clip": args.seconds},
        "stems": stems,
        "mixes": mixes,
        "speed": spd,
        "targets": {
            "stem_chroma>=0.97": stems["all_levels"]["chroma"] >= TARGETS["stem_chroma"],
            "mix_chroma>=0.88": mixes["all_levels"]["chroma"] >= TARGETS["mix_chroma"],
            "stem_logmel<=1.0dB": stems["all_levels"]["logmel"] <= TARGETS["stem_logmel_db"],
            "each_level_lowers_stem_logmel": stems["each_level_lowers_logmel"],
            "each_level_lowers_mix_logmel": mixes["each_level_lowers_logmel"],
            "realtime_factor>=5": spd["realtime_factor"] >= TARGETS["realtime_factor"],
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = [f"# Codec benchmark ({r['codec']['codec']}, {r['date']})", "",
             f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, GPU: {r['machine']['gpu']}.",
             f"Held out: {r['held_out']['songs']} chorales, first {r['held_out']['seconds_per_clip']:g} s of "
             f"{r['stems']['count']} stems and {r['mixes']['count']} mixes.", "",
             "| clips | levels | chroma similarity | log-mel distance (dB) | log-mel, active cells (dB) |",
             "|---|---|---|---|---|"]
    for kind in ("stems", "mixes"):
        for lv in r[kind]["by_levels"]:
            lines.append(f"| {kind} | {lv['levels']} | {lv['chroma']:.4f} | {lv['logmel']:.3f} | {lv['logmel_active']:.3f} |")
    s = r["speed"]
    lines += ["", f"Encode+decode of {s['audio_seconds']:g} s: {s['encode_s']} s + {s['decode_s']} s = "
              f"{s['realtime_factor']}x real time.", "", "Targets: " +
              ", ".join(f"{k}: {'met' if v else 'NOT met'}" for k, v in r["targets"].items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
