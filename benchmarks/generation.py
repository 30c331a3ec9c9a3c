"""Generation: how fast, and does the demo model's bass fit its context?

    python benchmarks/generation.py                       # demo model, 8 held-out chorales
    python benchmarks/generation.py --model exported/x --songs 4 --seconds 8

Speed: one generation of ``--seconds`` of bass with the paper's steps, the transformer in
float32 and under bf16 autocast, timed in the same run (after a warm-up), plus a batch of 4.

Fit to the context (a rough check until the MIRDD suite exists): on held-out chorales (the test
split of the embedded dataset, which the demo model never trained on), the bass is generated
for the other stems, and its frame-wise chroma similarity with that context is compared with
the original bass (the upper bound a real part reaches) and with the original bass of another
chorale (a bass that does not belong: the floor).

Writes benchmarks/results/generation.json and generation.md.
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


def held_out_songs(root: Path, n: int, sr: int, seconds: float) -> list[dict]:
    """The first ``n`` test chorales: ``{"name", "context", "bass"}`` excerpts at ``sr``."""
    from stemgen.audio import load_mono
    from stemgen.data.songs import ScanReport, read_slakh_track
    from stemgen.instruments import resolve
    from stemgen.data.songs import song_folders

    bass_id, out = resolve("bass").id, []
    for track in song_folders(root, "test", complete=True)[:n]:
        song = read_slakh_track(track, ScanReport())
        stems = {s.name: load_mono(s.path, sr)[: int(seconds * sr)] for s in song.stems}
        bass = [stems[s.name] for s in song.stems if s.instrument == bass_id][0]
        context = np.sum([stems[s.name] for s in song.stems if s.instrument != bass_id], axis=0)
        out.append({"name": track.name, "context": context.astype(np.float32), "bass": bass})
    return out


def time_generation(model, context: np.ndarray, sr: int, num_samples: int = 1) -> float:
    model.generate(context[: sr], "bass", sample_rate=sr, seed=0, steps=2)  # warm-up
    t = time.perf_counter()
    model.generate(context, "bass", sample_rate=sr, seed=0, num_samples=num_samples)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "stemgen" / "data" / "chorales_all",
                   help="rendered chorales (stemgen data chorales --out ...); rendered here if empty")
    p.add_argument("--songs", type=int, default=8)
    p.add_argument("--seconds", type=float, default=8.0, help="length of the held-out excerpts")
    p.add_argument("--speed-seconds", type=float, default=4.0, help="length of the timed generations")
    args = p.parse_args()

    from stemgen.api import load_model
    from stemgen.eval.codec_metrics import chroma_similarity
    from stemgen.prepare import prepare_chorales

    prepare_chorales(args.data)
    fast = load_model(args.model, device="cpu")  # precision "auto"
    sr = fast.sample_rate
    songs = held_out_songs(args.data, args.songs, sr, args.seconds)
    if not songs:
        raise SystemExit(f"no test chorales under {args.data}")

    speed = {"audio_seconds": args.speed_seconds, "window_seconds": fast.window_frames / fast.codec.frame_rate,
             "steps": list(fast.settings().steps)}
    ctx = songs[0]["context"][: int(args.speed_seconds * sr)]
    for precision in sorted({"fp32", fast.precision}):
        m = load_model(args.model, device="cpu", precision=precision)
        seconds = time_generation(m, ctx, sr)
        speed[precision] = {"seconds": round(seconds, 2), "realtime_factor": round(args.speed_seconds / seconds, 3)}
    batch = time_generation(fast, ctx, sr, num_samples=4)
    speed[f"{fast.precision}_batch4"] = {"seconds": round(batch, 2), "realtime_factor": round(4 * args.speed_seconds / batch, 3)}
    if "bf16" in speed:
        speed["bf16_speedup_over_fp32"] = round(speed["fp32"]["seconds"] / speed["bf16"]["seconds"], 2)

    rows = []
    for k, s in enumerate(songs):
        other = songs[(k + 1) % len(songs)]["bass"]
        stem = fast.generate(s["context"], "bass", sample_rate=sr, seed=k)
        rows.append({"song": s["name"],
                     "generated": chroma_similarity(s["context"], stem.audio, sr),
                     "original": chroma_similarity(s["context"], s["bass"], sr),
                     "other_song": chroma_similarity(s["context"], other[: len(s["context"])], sr),
                     "generated_dbfs": round(float(20 * np.log10(np.sqrt(np.mean(stem.audio ** 2)) + 1e-12)), 1)})
        print(rows[-1], flush=True)
    mean = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in ("generated", "original", "other_song")}
    result = {"benchmark": "generation", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "model": repr(fast), "held_out_songs": len(rows), "seconds": args.seconds, "speed": speed,
              "bass_chroma_with_context": {"mean": mean, "per_song": rows}}
    out = ROOT / "benchmarks" / "results"
    (out / "generation.json").write_text(json.dumps(result, indent=1))
    lines = ["# Generation", "", f"Model: `{result['model']}`; machine: {result['machine']['cpu']}, "
             f"{result['machine']['cores']} cores, GPU {result['machine']['gpu']}.", "",
             f"Speed, {args.speed_seconds:g} s of bass with steps {speed['steps']} (window {speed['window_seconds']:g} s):", "",
             "| transformer precision | seconds | x real time |", "|---|---|---|"]
    for key in [k for k in speed if isinstance(speed[k], dict)]:
        lines.append(f"| {key} | {speed[key]['seconds']} | {speed[key]['realtime_factor']} |")
    lines += ["", f"Bass chroma similarity with its context, {len(rows)} held-out chorales, first {args.seconds:g} s:", "",
              "| bass | mean chroma similarity |", "|---|---|",
              f"| generated | {mean['generated']} |", f"| original (upper bound) | {mean['original']} |",
              f"| another chorale's (floor) | {mean['other_song']} |"]
    (out / "generation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
