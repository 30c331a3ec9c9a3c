"""Which training recipe makes a small model listen? Arms at a fixed CPU budget, one table.

    python benchmarks/listening_ablations.py                         # every arm, 13 min each
    python benchmarks/listening_ablations.py --arms baseline full_mask --minutes 5
    python benchmarks/listening_ablations.py --table-only            # re-read finished runs
    python benchmarks/listening_ablations.py --new-only --minutes 12 # only arms not run yet

Each arm is ``configs/demo_chorales.yaml`` (the shipped demo recipe: `small` preset, all 353
chorales, cached tokens, seed 0) + ``configs/ablations/listening_budget.yaml`` (the same fixed
wall-clock budget and constant learning rate for every arm) + ``configs/ablations/ARM.yaml``
(the one change), trained by ``stemgen-train`` into ``RUNS/ARM``. The metric, decided before
the runs: the validation context gain at level 0 with every target token masked
(``val/context_gain``: cross-entropy with another song's context minus with the true one, in
nats per token), read at the last validation, and its curve over training. Also tabulated: the
same gain at the training masking, each guidance branch's cross-entropy, level-0 accuracy.

Writes ``benchmarks/results/listening_ablations.{json,md}`` and ``docs/listening_ablations.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARMS = ["baseline", "full_mask", "shared_embeddings", "full_mask_shared", "dropout_0.3", "harmonic_context",
        "tokens", "transposed"]
COLUMNS = ["val/context_gain", "val/context_gain_train_mask", "val/ce/true", "val/ce/mismatched",
           "val/ce/null_instrument", "val/ce/null_context", "val/ce/null_both", "val/accuracy_level0", "val/loss"]


def train(arm: str, runs: Path, minutes: float | None) -> None:
    args = ["--config", str(ROOT / "configs" / "demo_chorales.yaml"),
            "--config", str(ROOT / "configs" / "ablations" / "listening_budget.yaml"),
            "--config", str(ROOT / "configs" / "ablations" / f"{arm}.yaml"),
            "--trainer.default_root_dir", str(runs / arm), "--trainer.enable_progress_bar", "false"]
    if minutes:
        args += ["--trainer.max_time", f"00:00:{int(minutes):02d}:{int(60 * (minutes % 1)):02d}"]
    code = "from stemgen.train.cli import main; main()"
    subprocess.run([sys.executable, "-c", code, *args], check=True, cwd=ROOT)


def curve(arm: str, runs: Path) -> list[dict]:
    """Validation rows ``{"step", COLUMN: value}`` of the arm's newest CSV log."""
    logs = sorted((runs / arm / "csv").glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not logs:
        return []
    rows = []
    for r in csv.DictReader(open(logs[-1])):
        if r.get("val/context_gain"):
            rows.append({"step": int(r["step"]), **{c: float(r[c]) for c in COLUMNS if r.get(c)}})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arms", nargs="*", default=ARMS)
    p.add_argument("--minutes", type=float, default=None, help="override the budget per arm")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablations")
    p.add_argument("--table-only", action="store_true", help="do not train; tabulate the runs there are")
    p.add_argument("--new-only", action="store_true", help="train only the arms that have no run yet")
    args = p.parse_args()

    seconds = {}
    for arm in args.arms:
        if not args.table_only and not (args.new_only and curve(arm, args.runs)):
            t = time.perf_counter()
            train(arm, args.runs, args.minutes)
            seconds[arm] = round(time.perf_counter() - t)
    results = {"benchmark": "listening_ablations", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
               "metric": "val/context_gain at the last validation (nats per token, level 0 all masked)",
               "arms": {}}
    for arm in args.arms:
        rows = curve(arm, args.runs)
        if rows:
            results["arms"][arm] = {"config": (ROOT / "configs" / "ablations" / f"{arm}.yaml").read_text(),
                                    "last": rows[-1], "curve": rows, "wall_seconds": seconds.get(arm)}
    out = ROOT / "benchmarks" / "results"
    (out / "listening_ablations.json").write_text(json.dumps(results, indent=1))
    lines = ["# Listening ablations", "", f"{results['machine']['cpu']}, {results['machine']['cores']} cores; "
             f"metric: {results['metric']}.", "",
             "| arm | steps | context gain | gain, training masking | CE true | CE p(t\\|a) | CE p(t\\|i) | CE p(t) | "
             "acc. level 0 |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, r in results["arms"].items():
        last = r["last"]

        def f(key):
            return f"{last[key]:.3f}" if key in last else "n/a"

        lines.append(f"| {arm} | {last['step']} | **{f('val/context_gain')}** | {f('val/context_gain_train_mask')} | "
                     f"{f('val/ce/true')} | {f('val/ce/null_instrument')} | {f('val/ce/null_context')} | "
                     f"{f('val/ce/null_both')} | {f('val/accuracy_level0')} |")
    (out / "listening_ablations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(results, ROOT / "docs" / "listening_ablations.png")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for arm, r in results["arms"].items():
        steps = [row["step"] for row in r["curve"]]
        axes[0].plot(steps, [row["val/context_gain"] for row in r["curve"]], marker="o", label=arm)
        axes[1].plot(steps, [row.get("val/ce/true", float("nan")) for row in r["curve"]], marker="o", label=arm)
    axes[0].set(title="context gain, level 0 all masked", xlabel="step", ylabel="nats per token")
    axes[1].set(title="cross-entropy with the true context, level 0 all masked", xlabel="step", ylabel="nats")
    axes[0].axhline(0.0, color="grey", lw=0.5)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
