"""Learning curves of a training run: masked-token accuracy per level and the listening metric.

    python benchmarks/learning_curves.py runs/demo_chorales --name demo_training
    python benchmarks/learning_curves.py path/to/metrics.csv --name gpu_training

Reads the run's CSV logs (``RUN/csv/version_*/metrics.csv``, joined across resumes, or a ``metrics.csv``
given directly, e.g. the one ``benchmarks/gpu_train.sh`` writes) and writes
``benchmarks/results/NAME.json`` (every validation's metrics, the training loss every logged
step) and ``docs/NAME.png``: validation accuracy per level, the context gain (level 0 all
masked, and at the training masking), the cross-entropy of each guidance branch against the
uniform distribution's ln V, and the training loss.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BRANCHES = {"true": "p(t|a,i)", "null_instrument": "p(t|a)", "null_context": "p(t|i)", "null_both": "p(t)",
            "mismatched": "p(t|a',i), another song"}


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """(validation rows, training rows) of a Lightning CSV log: ``{"step", metric: value}``.

    A run folder's logs are joined in the order they were written: a resumed run writes a new
    ``version_*``, which replaces what the older ones logged from the step it resumed at (steps
    logged after the checkpoint it resumed from were lost with that process)."""
    if path.is_dir():
        logs = sorted(path.glob("csv/version_*/metrics.csv"), key=lambda p: p.stat().st_mtime)
        if not logs:
            raise SystemExit(f"no csv/version_*/metrics.csv under {path}: give a run folder or a metrics.csv")
    else:
        logs = [path]
    val, train = [], []
    for log in logs:
        rows = [{k: float(v) for k, v in r.items() if v and k != "epoch"} for r in csv.DictReader(open(log))]
        if not rows:
            continue
        start = min(r["step"] for r in rows)
        val = [r for r in val if r["step"] < start]
        train = [r for r in train if r["step"] < start]
        for row in rows:
            if "val/context_gain" in row:
                val.append(row)
            elif "train/loss" in row:
                train.append({"step": row["step"], "train/loss": row["train/loss"]})
    return val, train


def plot(val: list[dict], train: list[dict], path: Path, cardinality: int = 2048) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in val]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0, 0]
    for q in range(8):
        key = f"val/accuracy_level{q}"
        if any(key in r for r in val):
            ax.plot(steps, [r.get(key, math.nan) for r in val], marker=".", label=f"level {q}")
    ax.set(title="validation masked-token accuracy", xlabel="step", ylabel="accuracy")
    ax.legend()
    ax = axes[0, 1]
    ax.plot(steps, [r["val/context_gain"] for r in val], marker=".", label="level 0, all masked")
    ax.plot(steps, [r.get("val/context_gain_train_mask", math.nan) for r in val], marker=".",
            label="training masking")
    if any("val/alignment_gain" in r for r in val):  # logs from the thirty-fifth session on
        ax.plot(steps, [r.get("val/alignment_gain", math.nan) for r in val], marker=".",
                label="alignment gain: own context half a window out of line")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set(title="context gain: CE(another song's context) - CE(its own)", xlabel="step", ylabel="nats per token")
    ax.legend()
    ax = axes[1, 0]
    for key, label in BRANCHES.items():
        ax.plot(steps, [r.get(f"val/ce/{key}", math.nan) for r in val], marker=".", label=label)
    ax.axhline(math.log(cardinality), color="grey", ls="--", lw=0.8, label=f"uniform (ln {cardinality})")
    ax.set(title="cross-entropy of each branch, level 0 all masked", xlabel="step", ylabel="nats per token")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.plot([r["step"] for r in train], [r["train/loss"] for r in train], lw=0.5, alpha=0.5, label="train")
    ax.plot(steps, [r.get("val/loss", math.nan) for r in val], marker=".", label="validation (all levels)")
    ax.set(title="masked-token cross-entropy", xlabel="step", ylabel="nats per token")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder (default_root_dir) or a metrics.csv")
    p.add_argument("--name", default="demo_training", help="results/NAME.json and docs/NAME.png")
    p.add_argument("--cardinality", type=int, default=2048, help="V, for the uniform reference line")
    args = p.parse_args()
    val, train = read_log(args.run)
    if not val:
        raise SystemExit(f"{args.run}: no validation with the listening metric (val/context_gain) in the log")
    result = {"benchmark": "learning_curves", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "run": str(args.run), "last_validation": val[-1], "validations": val, "train": train}
    (ROOT / "benchmarks" / "results" / f"{args.name}.json").write_text(json.dumps(result, indent=1))
    plot(val, train, ROOT / "docs" / f"{args.name}.png", args.cardinality)
    last = val[-1]
    print(f"{len(val)} validations, last at step {int(last['step'])}: context gain {last['val/context_gain']:.3f}, "
          + ", ".join(f"acc{q} {last[f'val/accuracy_level{q}']:.3f}" for q in range(4)
                      if f"val/accuracy_level{q}" in last))


if __name__ == "__main__":
    main()
