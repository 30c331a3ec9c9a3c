"""Which sampling settings make a model's bass follow its context? One or more models, several
settings, the same pieces, seed and metric as ``benchmarks/listening.py`` part 2, in one run.

    python benchmarks/listening_sampling.py                        # the demo model
    python benchmarks/listening_sampling.py --model exported/x --temperatures 1.0 0.7 0.4 \\
        --out benchmarks/results/listening_sampling_x
    python benchmarks/listening_sampling.py --model demo exported/x --music unseen --temperatures 1.0

Arms: guided (paper eq. 3, the paper's ranking) and naive sampling, each at every level-0
temperature of ``--temperatures`` (levels 1-3 stay at 1.0: they carry timbre, level 0 the pitch),
optionally other context guidance scales (``--lambdas``, guided only) and nested guidance
(``--nested``: the context's scales, lambda_i = 1, the paper's ranking; see
``SamplingSettings.guidance_form``), and ``default``: what each model generates a bass with unless
told otherwise (its export's recorded settings; ``--temperatures`` does not apply). The metric,
fixed before the runs: chroma agreement of the generated bass with its own context (``own``) and
its gap to the next piece's context (``gap``), as heard (a frame where the bass is silent scores
0; the scale-free agreement beside it) with the share of silent blocks, on the first
``--seconds`` of ``--songs`` held-out chorales (context: the upper voices) or, with ``--music
unseen``, pieces by other composers with other instruments (:mod:`unseen_music`); the real bass's
scores are the reference of the same run.
Writes ``OUT.json`` and ``OUT.md`` (default ``benchmarks/results/listening_sampling``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listening import arm_scores, held_out_chorales, write_result  # noqa: E402
from machine import machine_info  # noqa: E402
from unseen_music import unseen_pieces  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: the keys of the real bass and of every arm -> listening.arm_scores's keys they report
SCORES = {"own": "chroma_generated_own", "mismatched": "chroma_generated_mismatched", "gap": "chroma_gap",
          "heard_own": "chroma_heard_own", "heard_mismatched": "chroma_heard_mismatched",
          "heard_gap": "chroma_heard_gap", "silent": "silent_fraction"}


def scores(stems: list, contexts: list, sr: int, reals: list) -> dict:
    """:data:`SCORES` of one set of basses (one per piece; ``reals``: the pieces' real basses), rounded."""
    r = arm_scores(stems, contexts, sr, reals)
    return {k: round(r[v], 4) for k, v in SCORES.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["demo"], help="one or more models (names or folders)")
    p.add_argument("--data", type=Path, default=Path.home() / ".cache" / "stemgen" / "data" / "chorales_all")
    p.add_argument("--music", choices=["chorales", "unseen"], default="chorales",
                   help="held-out chorales, or music the model never saw (benchmarks/unseen_music.py)")
    p.add_argument("--songs", type=int, default=16, help="held-out chorales / unseen pieces")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each generated bass")
    p.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.7, 0.4], help="level-0 temperatures")
    p.add_argument("--lambdas", type=float, nargs="*", default=[], help="extra lambda_context values (guided)")
    p.add_argument("--nested", type=float, nargs="*", default=[],
                   help="lambda_context values of nested guidance (guidance_form='nested', lambda_instrument 1)")
    p.add_argument("--modes", nargs="+", default=["guided", "naive"], choices=["guided", "naive", "default"])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "listening_sampling")
    args = p.parse_args()

    from stemgen.api import load_model
    from stemgen.prepare import prepare_chorales
    from stemgen.sampling.settings import SamplingSettings

    models = [load_model(m, device="cpu") for m in args.model]
    sr, levels = models[0].sample_rate, models[0].model.cfg.num_levels
    if args.music == "chorales":
        prepare_chorales(args.data)
        songs = held_out_chorales(args.data, args.songs, sr, args.seconds, args.seconds)
    else:
        songs = unseen_pieces(args.songs, sr, args.seconds)
    contexts, reals = [s["context"] for s in songs], [s["bass"] for s in songs]
    result = {"benchmark": "listening_sampling", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "models": [repr(m) for m in models], "music": args.music, "song_names": [s["name"] for s in songs],
              "songs": len(songs), "seconds": args.seconds,
              "real": scores(reals, contexts, sr, reals), "arms": []}
    best = SamplingSettings.paper(levels)
    arms = []
    for mode in args.modes:
        if mode == "default":
            arms.append((mode, None, None, None))
            continue
        base = best if mode == "guided" else SamplingSettings.naive(steps=best.steps, temperature=best.temperature)
        for t in args.temperatures:
            arms.append((mode, base, t, base.lambda_context))
        if mode == "guided":
            arms += [(mode, base, args.temperatures[0], lam) for lam in args.lambdas]
            nested = replace(base, guidance_form="nested", lambda_instrument=1.0)
            arms += [("nested", nested, t, lam) for lam in args.nested for t in args.temperatures]
    for (mode, base, t, lam), (name, model) in itertools.product(arms, zip(args.model, models)):
        if mode == "default":
            settings = model.default_settings_for("bass")
            t, lam = settings.temperature[0], settings.lambda_context if settings.guidance else None
        else:
            settings = replace(base, temperature=(t,) + (1.0,) * (levels - 1), lambda_context=lam)
        start = time.perf_counter()
        stems = model.generate(contexts, "bass", sample_rate=sr, seed=0, settings=settings)
        arm = {"model": name, "mode": mode, "temperature_level0": t, "lambda_context": lam if mode != "naive" else None,
               **scores([s.audio for s in stems], contexts, sr, reals),
               "settings": stems[0].settings, "seconds_to_generate": round(time.perf_counter() - start, 1)}
        result["arms"].append(arm)
        print(json.dumps(arm), flush=True)
    write_result(args.out, result, markdown(result))


MUSIC = {"chorales": "held-out chorales", "unseen": "pieces of unseen music (benchmarks/unseen_music.py)"}


def markdown(r: dict) -> str:
    lines = ["# Sampling settings and listening", "",
             f"Models {', '.join(f'`{m}`' for m in r['models'])}; {r['songs']} {MUSIC[r['music']]}, "
             f"first {r['seconds']} s, seed 0; "
             f"machine {r['machine']['cpu']}, {r['machine']['cores']} cores; {r['date']}.", "",
             "Chroma agreement of the bass with its own / the next piece's context; as heard: a frame where "
             "the bass is silent scores 0; silent: the share of 100 ms blocks below -50 dBFS:", "",
             "| bass | model | level-0 temperature | lambda_a | own | mismatched | gap | as heard: own | mismatched "
             "| gap | silent |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in r["arms"]:
        lam = "-" if a["lambda_context"] is None else a["lambda_context"]
        lines.append(f"| generated, {a['mode']} | {a['model']} | {a['temperature_level0']} | {lam} | "
                     + " | ".join(str(a[k]) for k in SCORES) + " |")
    lines.append("| real (reference) | | | | " + " | ".join(str(r["real"][k]) for k in SCORES) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
