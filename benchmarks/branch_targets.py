"""What does each guidance branch predict? Its level-0 cross-entropy against every stem of the song.

    python benchmarks/branch_targets.py --model demo --out benchmarks/results/branch_targets_demo
    python benchmarks/branch_targets.py --model demo --context-drums --out ...

With every level-0 token of the bass masked (as in part 1 of ``listening.py``: the same held-out
chorales, the same back-to-back window crops of the first ``--seconds``), each branch of guidance,
p(t|a,i), p(t|a) (instrument dropped), p(t|i) (context dropped) and p(t) (both dropped), gives a
distribution over the level-0 codes of every frame. Scored here against the level-0 tokens of
*each* stem of the chorale, grouped by instrument class (nats per token; uniform: ln 2048 =
7.625): a branch that is a real distribution of *some* part scores well against that part, and
the class it scores best against is what it generates. Also per branch: the entropy of its
distribution, the mass on the codec's silence code, and how often its most probable code is that
code. The question this answers: is a branch that scores badly on the bass junk, or a good guess
of another part (p(t|a) has no instrument to tell it which part is asked for). Writes ``OUT.json``
and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listening import BRANCHES, context_label, held_out_arguments, held_out_chorales, write_result  # noqa: E402
from machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def branch_targets(model, songs: list[dict], seconds: float) -> dict:
    """``{branch: {"ce_by_class": {class: nats}, "entropy", "p_silence", "argmax_silence"}}`` and the
    number of crops, over back-to-back window crops of each song's first ``seconds``."""
    import torch

    from stemgen.audio import load_mono
    from stemgen.data.songs import ScanReport, read_slakh_track
    from stemgen.instruments import NULL_ID, resolve

    sr, w = model.sample_rate, model.window_frames
    n = int(seconds * sr)
    crops = []  # (context (Q, w), [(class name, level-0 tokens (w,))])
    for s in songs:
        song = read_slakh_track(s["track"], ScanReport())
        ctx = model.encode_context(s["context"][:n])  # (Q, T), or (Q + 1, T) with the chroma row
        stems = [(resolve(st.instrument).name, model._encode(load_mono(st.path, sr)[:n])) for st in song.stems]
        for start in range(0, ctx.shape[-1] - w + 1, w):
            crops.append((ctx[:, start:start + w],
                          [(name, tok[0, start:start + w]) for name, tok in stems if tok.shape[-1] >= start + w]))
    mm = model.model
    silence = int(model.codec.silence_codes()[0])
    context = torch.stack([c for c, _ in crops])  # (B, Q, w)
    b = context.shape[0]
    masked = torch.full_like(context[:, :mm.cfg.num_levels], mm.cfg.mask_id)
    bass = resolve("bass").id
    conditions = {"p(t|a,i)": (bass, False), "p(t|a)": (NULL_ID, False), "p(t|i)": (bass, True), "p(t)": (NULL_ID, True)}
    assert set(conditions) == set(BRANCHES)
    out = {}
    with torch.no_grad(), torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=model.precision == "bf16"):
        for branch, (inst, drop) in conditions.items():
            logits = mm(context, masked, torch.full((b,), inst, device=model.device),
                        drop_context=torch.full((b,), drop, device=model.device), level=0)
            lp = logits.float().log_softmax(-1)  # (B, w, V)
            by_class: dict[str, list[float]] = {}
            for k, (_, stems) in enumerate(crops):
                for name, tok in stems:
                    by_class.setdefault(name, []).append(float(-lp[k].gather(-1, tok[:, None]).mean()))
            out[branch] = {"ce_by_class": {c: round(float(np.mean(v)), 4) for c, v in sorted(by_class.items())},
                           "crops_by_class": {c: len(v) for c, v in sorted(by_class.items())},
                           "entropy": round(float(-(lp.exp() * lp).sum(-1).mean()), 4),
                           "p_silence": round(float(lp[..., silence].exp().mean()), 4),
                           "argmax_silence": round(float((lp.argmax(-1) == silence).float().mean()), 4)}
            best = min(out[branch]["ce_by_class"].items(), key=lambda kv: kv[1])
            out[branch]["best_class"] = best[0]
    return {"crops": b, "branches": out}


def markdown(r: dict) -> str:
    classes = sorted({c for br in r["branches"].values() for c in br["ce_by_class"]})
    lines = ["# What each guidance branch predicts", "",
             f"Model `{r['model']}`; {r['songs']} held-out chorales, {context_label(r['context_drums'])} as the context, "
             f"the bass asked for; {r['crops']} crops, every level-0 token masked; {r['date']}, "
             f"{r['machine']['cpu']}. Level-0 cross-entropy (nats per token; uniform {r['uniform_nats']}) against "
             f"each stem of the chorale, by instrument class:", "",
             "| branch | " + " | ".join(classes) + " | best | entropy | p(silence) | argmax silence |",
             "|---" * (len(classes) + 5) + "|"]
    for name, br in r["branches"].items():
        cells = [str(br["ce_by_class"].get(c, "-")) for c in classes]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {br['best_class']} | {br['entropy']} | "
                     f"{br['p_silence']} | {br['argmax_silence']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    held_out_arguments(p)
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of each chorale cut into crops")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="the model's precision (load_model's)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "branch_targets")
    args = p.parse_args()

    from stemgen.api import load_model
    from stemgen.prepare import prepare_chorales

    prepare_chorales(args.data)
    model = load_model(args.model, device="cpu", precision=args.precision)
    songs = held_out_chorales(args.data, args.songs, model.sample_rate, args.seconds, 8.0, args.context_drums,
                              args.split)
    start = time.perf_counter()
    r = branch_targets(model, songs, args.seconds)
    result = {"benchmark": "branch_targets", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "model": repr(model), "songs": len(songs), "split": args.split, "context_drums": args.context_drums,
              "seconds": args.seconds, "uniform_nats": round(float(np.log(model.model.cfg.cardinality)), 4), **r,
              "seconds_total": round(time.perf_counter() - start, 1)}
    write_result(args.out, result, markdown(result))
    print(json.dumps({k: v["best_class"] for k, v in r["branches"].items()}))


if __name__ == "__main__":
    main()
