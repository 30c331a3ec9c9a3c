"""Training throughput: tokens/s and model FLOP utilisation (MFU) of one training step.

    python benchmarks/train_throughput.py --preset small --batch 8 --frames 250
    python benchmarks/train_throughput.py --preset paper --batch 40 --frames 1000 --compile   # on a GPU

A step is the real one (SoundStorm masking, condition dropout, heads and loss on the masked
positions only, AdamW), under bf16 autocast. Model FLOPs per step follow the usual count for
a training step, 6 x (body parameters) x tokens + the output head of the trained level on the
masked positions only + 12 x layers x width x T x tokens (attention), where a token is one frame
of one example. The peak is the GPU's dense bf16 peak
(989 TFLOP/s for H100/H200) or, on CPU, a bf16 matrix product measured in the same run.
Writes benchmarks/results/train_throughput_<preset>_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

from stemgen.model import ModelConfig, StemGenModel  # noqa: E402
from stemgen.model.loss import masked_loss, masked_token_loss  # noqa: E402

GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def model_flops_per_step(model: StemGenModel, batch: int, frames: int) -> float:
    """Training FLOPs of one step: 6 x (body parameters) x tokens, plus the output head of one
    level on the masked positions only (2/pi of the frames on average), plus attention."""
    cfg = model.cfg
    embed = sum(p.numel() for n, p in model.named_parameters() if "embed" in n or n == "null_context")
    head = model.heads[0].numel()  # one level's head, V x D
    body = model.num_parameters() - embed - model.heads.numel()
    tokens = batch * frames
    return 6 * body * tokens + 6 * head * tokens * 2 / math.pi + 12 * cfg.n_layers * cfg.dim * frames * tokens


def measured_cpu_peak(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=torch.bfloat16), torch.randn(n, n, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=250, help="T, frames per example (50 per second)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--compile", action="store_true", help="compile the step's model work (stemgen.model.loss.masked_loss) as one graph")
    p.add_argument("--profile", type=Path, default=None,
                   help="also write a torch.profiler table (3 steps after the timed ones) to this file")
    args = p.parse_args()

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = StemGenModel(ModelConfig.from_name(args.preset)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    loss_fn = torch.compile(masked_loss, fullgraph=True) if args.compile else masked_loss
    cfg = model.cfg
    g = torch.Generator(device=dev).manual_seed(0)
    ctx = torch.randint(cfg.cardinality, (args.batch, cfg.num_levels, args.frames), device=dev, generator=g)
    tgt = torch.randint(cfg.cardinality, (args.batch, cfg.num_levels, args.frames), device=dev, generator=g)
    inst = torch.randint(17, (args.batch,), device=dev, generator=g)

    def step():
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = masked_token_loss(model, ctx, tgt, inst, generator=g, loss_fn=loss_fn)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - t) / args.steps
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        with profile(activities=activities) as prof:
            for _ in range(3):
                step()
            if dev.type == "cuda":
                torch.cuda.synchronize()
        sort = "self_cuda_time_total" if dev.type == "cuda" else "self_cpu_time_total"
        args.profile.write_text(f"{args.preset}, batch {args.batch} x {args.frames} frames, compile {args.compile}, "
                                f"3 training steps\n" + prof.key_averages().table(sort_by=sort, row_limit=40))
    flops = model_flops_per_step(model, args.batch, args.frames)
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
        peak_source = f"{name} dense bf16 datasheet peak" if peak else "unknown GPU"
    else:
        peak, peak_source = measured_cpu_peak(), "bf16 2048x2048 matmul measured in this run"
    result = {
        "benchmark": "train_throughput", "date": time.strftime("%Y-%m-%d"), "machine": machine_info(),
        "preset": args.preset, "parameters": model.num_parameters(), "batch": args.batch, "frames": args.frames,
        "compile": args.compile, "device": dev.type, "step_seconds": round(step_s, 4),
        "tokens_per_s": round(args.batch * args.frames / step_s, 1),
        "model_tflops_per_step": round(flops / 1e12, 4), "achieved_tflops": round(flops / step_s / 1e12, 3),
        "peak_tflops": round(peak / 1e12, 3) if peak else None, "peak_source": peak_source,
        "mfu": round(flops / step_s / peak, 4) if peak else None,
    }
    out = Path(__file__).parent / "results" / f"train_throughput_{args.preset}_{dev.type}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
