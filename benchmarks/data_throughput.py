"""Training-pair throughput: pairs per second, audio only and with codec tokens.

    python benchmarks/data_throughput.py            # embedded chorales, 20 s crops
    python benchmarks/data_throughput.py --data slakh --root /data/slakh2100

Writes benchmarks/results/data_throughput.json and .md (keys in benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from stemgen.data.datamodule import ChoralesData, SlakhData, StemsData  # noqa: E402


def batches_forever(loader):
    """Batches across epochs (the sampler's epoch advances as Lightning would advance it)."""
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def measure(dm, batches: int, with_tokens: bool) -> dict:
    """Pairs/s over ``batches`` training batches, after one warm-up batch (worker start-up)."""
    it = batches_forever(dm.train_dataloader())
    first = next(it)
    if with_tokens:
        dm.on_after_batch_transfer(first, 0)
    n, t0 = 0, time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        if with_tokens:
            dm.on_after_batch_transfer(batch, 0)
        n += batch["context"].shape[0]
    dt = time.perf_counter() - t0
    return {"pairs": n, "seconds": round(dt, 2), "pairs_per_s": round(n / dt, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["chorales", "slakh", "stems"], default="chorales")
    p.add_argument("--root", type=Path, default=None, help="dataset folder (default for chorales: the cache)")
    p.add_argument("--crop-seconds", type=float, default=20.0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers (default 2, the module's default)")
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "data_throughput.json")
    args = p.parse_args()

    cls = {"chorales": ChoralesData, "slakh": SlakhData, "stems": StemsData}[args.data]
    kwargs = dict(crop_seconds=args.crop_seconds, batch_size=args.batch_size, num_workers=args.num_workers)
    dm = cls(args.root, **kwargs) if args.root or args.data != "chorales" else cls(**kwargs)
    if args.data == "chorales":
        dm.prepare_data()
    dm.tokens = False
    dm.setup("fit")
    audio = measure(dm, args.batches, with_tokens=False)
    dm.tokens = True
    with torch.no_grad():
        tokens = measure(dm, args.batches, with_tokens=True)
    codec = dm.codec
    # the cached alternative: one draw per segment encoded once, then read from memory
    cached_dm = type(dm)(dm.root, train_token_epochs=1, **kwargs)
    t0 = time.perf_counter()
    cached_dm.setup("fit")
    build_s = time.perf_counter() - t0
    cache = cached_dm.datasets["train"]
    t0 = time.perf_counter()
    n = sum(b["context_tokens"].shape[0] for b in cached_dm.train_dataloader())
    read_rate = n / (time.perf_counter() - t0)
    result = {
        "benchmark": "data_throughput",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "data": args.data,
        "songs": len(dm.datasets["train"].songs),
        "crop_seconds": args.crop_seconds,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "audio_only": audio,
        "with_tokens": {**tokens, "codec": codec.name, "where": "main process, after the batch (on_after_batch_transfer)"},
        "cached_tokens": {"examples": len(cache), "setup_seconds": round(build_s, 1),
                          "build_pairs_per_s": round(len(cache) / build_s, 2),
                          "read_pairs_per_s": round(read_rate, 1)},
        "target_pairs_per_s_audio_only": 20,
        "target_met": audio["pairs_per_s"] >= 20,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    md = (f"# Data throughput ({args.data}, {result['date']})\n\n"
          f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, GPU: {result['machine']['gpu']}.\n"
          f"{result['songs']} training songs, {args.crop_seconds:g} s crops, batch {args.batch_size}, "
          f"{args.num_workers} workers.\n\n"
          f"| pipeline | pairs/s |\n|---|---|\n"
          f"| audio only | {audio['pairs_per_s']} |\n"
          f"| audio + {codec.name} tokens (encoded in the main process) | {tokens['pairs_per_s']} |\n"
          f"| cached tokens: building the cache ({len(cache)} examples, once) | "
          f"{result['cached_tokens']['build_pairs_per_s']} |\n"
          f"| cached tokens: reading | {result['cached_tokens']['read_pairs_per_s']} |\n")
    args.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
