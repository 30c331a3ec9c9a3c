"""Learning check: does a model trained on the embedded chorales beat the best constant predictor?

    python benchmarks/learning_check.py --minutes 14          # trains configs/small_chorales.yaml
    python benchmarks/learning_check.py --skip-training        # re-plot an existing run

Trains with a time bound, then compares the validation masked-token accuracy per level with
the unigram baseline (always predicting the most frequent training token of that level,
scored on the validation targets). Writes benchmarks/results/learning_check.json and
docs/learning_check.png.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def unigram_baseline(dm) -> list[float]:
    """Per level: share of validation target tokens equal to the most frequent training token."""
    train, val = dm.datasets["train"].target, dm.datasets["validation"].target  # (N, Q, T)
    out = []
    for q in range(train.shape[1]):
        best = torch.bincount(train[:, q].flatten()).argmax()
        out.append(float((val[:, q] == best).float().mean()))
    return out


def read_curve(run: Path) -> list[dict]:
    files = sorted(run.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no metrics.csv under {run}")
    return [r for r in csv.DictReader(open(files[-1]))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "small_chorales.yaml"))
    p.add_argument("--minutes", type=float, default=14.0, help="training time bound")
    p.add_argument("--crop-seconds", type=float, default=4.0)
    p.add_argument("--run", type=Path, default=ROOT / "runs" / "learning_check")
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args()

    t0 = time.time()
    if not args.skip_training:
        from stemgen.train.cli import main as train

        mins = int(args.minutes)
        secs = int(round((args.minutes - mins) * 60))
        train(["--config", args.config, "--trainer.max_time", f"00:00:{mins:02d}:{secs:02d}",
               "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir",
               str(args.run), "--data.init_args.crop_seconds", str(args.crop_seconds),
               "--trainer.default_root_dir", str(args.run), "--trainer.val_check_interval", "100",
               "--trainer.enable_progress_bar", "false"])
    train_seconds = time.time() - t0

    from stemgen.data.datamodule import ChoralesData

    dm = ChoralesData(crop_seconds=args.crop_seconds, batch_size=16, train_token_epochs=8, num_workers=0)
    dm.setup("fit")
    baseline = unigram_baseline(dm)
    rows = read_curve(args.run)
    q = len(baseline)
    curve = [(int(r["step"]), [float(r[f"val/accuracy_level{i}"]) for i in range(q)])
             for r in rows if r.get("val/accuracy_level0")]
    losses = [(int(r["step"]), float(r["train/loss"])) for r in rows if r.get("train/loss")]
    final = curve[-1][1] if curve else [float("nan")] * q
    result = {"benchmark": "learning_check", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
              "config": Path(args.config).name, "crop_seconds": args.crop_seconds,
              "train_minutes": round(train_seconds / 60, 1) if not args.skip_training else None,
              "steps": curve[-1][0] if curve else 0, "final_val_accuracy": final,
              "unigram_baseline": baseline,
              "above_baseline": [a > b for a, b in zip(final, baseline)],
              "curve": [{"step": s, "val_accuracy": a} for s, a in curve]}
    out = ROOT / "benchmarks" / "results" / "learning_check.json"
    out.write_text(json.dumps(result, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i in range(q):
        ax1.plot([s for s, _ in curve], [a[i] for _, a in curve], marker="o", label=f"level {i}", color=f"C{i}")
        ax1.axhline(baseline[i], color=f"C{i}", ls="--", lw=1)
    ax1.set_xlabel("step")
    ax1.set_ylabel("validation masked-token accuracy")
    ax1.set_title("accuracy per level (dashed: unigram baseline)")
    ax1.legend()
    ax2.plot([s for s, _ in losses], [v for _, v in losses])
    ax2.set_xlabel("step")
    ax2.set_ylabel("train loss (cross-entropy, nats)")
    ax2.set_title(f"{Path(args.config).stem}, {args.crop_seconds:g} s crops")
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "learning_check.png", dpi=110)
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))


if __name__ == "__main__":
    main()
