"""Paired comparison of two `benchmarks/listening.py` runs generated with the same seeds.

    python benchmarks/listening_paired.py A.json ARM_A B.json ARM_B --out benchmarks/results/listening_paired_NAME

A is the candidate, B the shipped model (or the baseline arm), each run with the same ``--seeds``
(two or more) on the same songs, length and steps; B should be run in the same session as A. For
each per-seed key (heard own-context agreement, gap, pitch match, ...) it writes the means, the
mean per-seed difference A - B with its standard error and how many seeds went up, and the
verdict of the shipping rule of ``docs/listening.md`` (``stemgen.eval.paired``). Writes
``OUT.json`` and ``OUT.md`` (keys: benchmarks/README.md); without ``--out`` it prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from listening import write_result  # noqa: E402

from stemgen.eval.paired import Rule, paired_difference, passes, song_paired_difference  # noqa: E402

#: the per-seed keys compared, in the table's order (those present in both runs)
KEYS = ("chroma_heard_own", "chroma_heard_gap", "pitch_match", "pitch_chord_tone", "pitch_clash",
        "silent_fraction", "chroma_generated_own", "chroma_gap", "chroma_focus")
#: the settings both runs must share for their seeds to be comparable
SAME = ("songs", "split", "seconds", "steps", "overlap_seconds", "context_drums")
#: what a run written before a key existed had
OLD = {"split": "test"}


def load_arm(path: Path, arm: str) -> tuple[dict, dict]:
    """``(run, per_seed)`` of ``arm`` in the listening result ``path``; clear errors otherwise."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such result file (write it with benchmarks/listening.py --out).")
    run = json.loads(path.read_text())
    if arm not in run or not isinstance(run[arm], dict):
        arms = [k for k, v in run.items() if isinstance(v, dict) and "chroma_heard_own" in v]
        raise SystemExit(f"{path}: no arm {arm!r}; its arms: {arms}")
    per_seed = run[arm].get("per_seed")
    if not per_seed:
        raise SystemExit(f"{path}: arm {arm!r} was generated with one seed; a paired comparison needs the "
                         f"same two or more --seeds in both runs.")
    return run, per_seed


def compare(run_a: dict, seeds_a: dict, run_b: dict, seeds_b: dict) -> dict:
    """The paired difference of every key both runs scored per seed."""
    a, b = ({k: run.get(k, OLD.get(k)) for k in SAME} for run in (run_a, run_b))
    differ = [k for k in SAME if a[k] != b[k]]
    if differ:
        raise SystemExit("the runs differ in " + ", ".join(f"{k} ({a[k]} vs {b[k]})" for k in differ)
                         + ": their seeds do not generate comparable stems.")
    common = set(seeds_a) & set(seeds_b)  # fewer than two: paired_difference says so
    keys = [k for k in KEYS if all(k in seeds_a[s] and k in seeds_b[s] for s in common)]
    return {k: paired_difference({s: seeds_a[s][k] for s in seeds_a}, {s: seeds_b[s][k] for s in seeds_b})
            for k in keys}


#: the keys compared over songs too, where both runs scored each song (listening.py runs from the
#: thirty-fourth session on)
SONG_KEYS = ("chroma_heard_own", "chroma_heard_gap", "pitch_match")


def compare_songs(seeds_a: dict, seeds_b: dict) -> dict:
    """:func:`~stemgen.eval.paired.song_paired_difference` of :data:`SONG_KEYS` over the seeds both
    runs have, if every one of them holds its per-song scores; else ``{}``."""
    common = sorted(set(seeds_a) & set(seeds_b), key=int)
    if not common or not all("per_song" in seeds_a[s] and "per_song" in seeds_b[s] for s in common):
        return {}
    keys = [k for k in SONG_KEYS if all(k in seeds_a[s]["per_song"] and k in seeds_b[s]["per_song"] for s in common)]
    return {k: song_paired_difference({s: seeds_a[s]["per_song"][k] for s in common},
                                      {s: seeds_b[s]["per_song"][k] for s in common}) for k in keys}


def rounded(paired) -> dict:
    """A :class:`~stemgen.eval.paired.Paired` as a dict, its floats to 4 places."""
    return {f: (round(v, 4) if isinstance(v, float) else v) for f, v in dataclasses.asdict(paired).items()}


def markdown(r: dict) -> str:
    lines = [f"# Paired: {r['a']['arm']} of `{r['a']['file']}` (A) against {r['b']['arm']} of `{r['b']['file']}` (B)",
             "", f"Seeds in both: {r['seeds']}; per seed A - B, mean +- its standard error.", "",
             "| key | A | B | A - B | seeds up |", "|---|---|---|---|---|"]
    for k, p in r["keys"].items():
        lines.append(f"| {k} | {p['mean_a']:.4f} | {p['mean_b']:.4f} | {p['diff']:+.4f} +- {p['se']:.4f} "
                     f"| {p['n_up']}/{p['n']} |")
    if r.get("songs"):
        lines += ["", "Over the songs (each song's A - B averaged over the seeds; the error is over songs: how far "
                  "other pieces would move it, which the seeds' error above does not see):", "",
                  "| key | A - B over songs | songs up |", "|---|---|---|"]
        lines += [f"| {k} | {p['diff']:+.4f} +- {p['se']:.4f} | {p['n_up']}/{p['n']} |" for k, p in r["songs"].items()]
    rule, ok = r["rule"]["settings"], r["rule"]["passes"]
    verdict = ("A passes" if ok else "A fails: " if ok is False else "not applied: ") + "; ".join(r["rule"]["reasons"])
    lines += ["", f"The shipping rule (heard own up by more than {rule['z']:g} standard errors, gap and pitch match "
              f"not lower by more than {rule['gap_margin']:g} / {rule['pitch_margin']:g}): {verdict}.", ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, help="the candidate's listening result (JSON)")
    p.add_argument("arm_a", help="its arm (e.g. default)")
    p.add_argument("b", type=Path, help="the baseline's listening result, generated with the same seeds")
    p.add_argument("arm_b", help="its arm")
    p.add_argument("--out", type=Path, default=None, help="write OUT.json and OUT.md (default: print only)")
    args = p.parse_args()
    run_a, seeds_a = load_arm(args.a, args.arm_a)
    run_b, seeds_b = load_arm(args.b, args.arm_b)
    try:
        compared = compare(run_a, seeds_a, run_b, seeds_b)
    except ValueError as e:
        raise SystemExit(str(e))
    try:
        ok, reasons = passes(compared)
    except ValueError as e:  # an older run without pitch_match: the table still holds, the rule does not apply
        ok, reasons = None, [str(e)]
    result = {"benchmark": "listening_paired",
              "a": {"file": str(args.a), "arm": args.arm_a, "model": run_a.get("model")},
              "b": {"file": str(args.b), "arm": args.arm_b, "model": run_b.get("model")},
              "seeds": sorted(set(seeds_a) & set(seeds_b), key=int),
              "keys": {k: rounded(d) for k, d in compared.items()},
              "songs": {k: rounded(d) for k, d in compare_songs(seeds_a, seeds_b).items()},
              "rule": {"settings": dataclasses.asdict(Rule()), "passes": ok, "reasons": reasons}}
    if args.out is None:
        print(markdown(result))
    else:
        write_result(args.out, result, markdown(result))


if __name__ == "__main__":
    main()
