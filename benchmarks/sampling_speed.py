"""Sampling speed: the fused step ops against the eager reference, and whole generations.

    python benchmarks/sampling_speed.py                  # CPU: (a) step work, (b) tiny/small 20 s stems, (c) batches
    python benchmarks/sampling_speed.py --quick          # fewer repeats, no `small` end to end
    python benchmarks/sampling_speed.py --device cuda    # GPU: (a), (b) for the paper preset, (c) at 1/4/16

(a) The work of one decoding step after the forward pass (guidance over the three branches,
    temperature, candidates, confidence, causal-bias ranking, commit) on logits of a window:
    ``stemgen.sampling.fused.reference_step`` (eager) vs ``sample_step`` (the torch.ops.stemgen
    kernels), the same inputs, median of repeats, ratio eager / fused.
(b) One 20 s stem at the paper's settings (steps 128/64/32/32, guidance, causal bias) from random
    weights of a preset (speed does not depend on the weights): eager sampler, fused ops, and fused
    ops with each step compiled (on CUDA captured as a CUDA graph). On CPU the transformer runs
    under bf16 autocast where the CPU has native bf16 (as ``stemgen.generate`` does).
(c) Stems per second at batch 1, 4 and 16 with the fastest variant of (b).

Writes benchmarks/results/sampling_speed_<device>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
FRAME_RATE = 50  # frames per second of audio (32 kHz, hop 640) for every codec stemgen ships


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fns, device, repeats: int, warmup: int = 2) -> list[float]:
    """Median time of each of ``fns``, timed alternately (a machine whose speed drifts during the
    run then affects all of them alike)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            ts.append(time.perf_counter() - t)
    return [statistics.median(ts) for ts in times]


def step_work(device, repeats: int) -> list[dict]:
    """(a) post-forward step work, eager vs fused, for windows of 4 s and 20 s."""
    from stemgen.sampling import fused

    rows = []
    v = 2048
    for frames in (200, 1000):
        for batch in (1, 4):
            for guided in (True, False):
                for dtype in (torch.bfloat16, torch.float32):
                    g = torch.Generator(device=device).manual_seed(0)
                    branches = 3 if guided else 1
                    logits = torch.randn(branches * batch, frames, v, generator=g, device=device).to(dtype)
                    current = torch.full((batch, frames), v, device=device)  # the first step: all masked
                    noise = torch.rand(batch, frames, v, generator=g, device=device)
                    uniform = torch.rand(batch, frames, generator=g, device=device)
                    remain = torch.full((batch,), frames - 8, device=device)
                    args = (logits, current, noise, uniform, remain, 3.0 if guided else 1.0, 3.0 if guided else 1.0,
                            1.0, 0.1, 0.1, 1.0, v)
                    assert torch.equal(fused.reference_step(*args), fused.sample_step(*args))
                    eager, fast = median_seconds([lambda: fused.reference_step(*args),
                                                  lambda: fused.sample_step(*args)], device, repeats)
                    rows.append({"frames": frames, "batch": batch, "guidance": guided, "logits_dtype": str(dtype)[6:],
                                 "eager_ms": 1e3 * eager, "fused_ms": 1e3 * fast, "ratio": eager / fast})
                    print(rows[-1], flush=True)
    return rows


def end_to_end(device, preset: str, batch: int, variant: str, seconds: float = 20.0, window_seconds: float = 4.0,
               overlap_seconds: float = 1.0) -> dict:
    """(b) one generation of ``seconds`` of audio at the paper's sampling settings."""
    from stemgen.model import ModelConfig, StemGenModel
    from stemgen.sampling.decode import SamplingSettings
    from stemgen.sampling.windows import decode_windows

    torch.manual_seed(0)
    model = StemGenModel(ModelConfig.from_name(preset)).eval().to(device)
    q, v = model.cfg.num_levels, model.cfg.cardinality
    frames, window, overlap = int(seconds * FRAME_RATE), int(window_seconds * FRAME_RATE), int(overlap_seconds * FRAME_RATE)
    context = torch.randint(v, (batch, q, frames), device=device)
    instrument = torch.full((batch,), 4, device=device)
    settings = SamplingSettings(sampler="eager" if variant == "eager" else "fused", compile=variant == "compiled")
    bf16 = device.type == "cuda" or torch.backends.cpu.get_cpu_capability().startswith("AVX512")

    def run(steps=None):
        s = settings if steps is None else SamplingSettings(**{**settings.__dict__, "steps": steps})
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            return decode_windows(model, context, instrument, window, overlap, s, torch.Generator(device).manual_seed(0))

    t = time.perf_counter()
    run(steps=(2, 2, 2, 2))  # warm-up (and compilation of the compiled variant)
    sync(device)
    warm = time.perf_counter() - t
    sync(device)
    t = time.perf_counter()
    tokens = run()
    sync(device)
    took = time.perf_counter() - t
    assert (tokens != model.cfg.mask_id).all()
    row = {"preset": preset, "parameters": sum(p.numel() for p in model.parameters()), "batch": batch,
           "variant": variant, "audio_seconds": seconds, "window_seconds": window_seconds,
           "overlap_seconds": overlap_seconds, "steps": list(settings.steps), "bf16_autocast": bf16,
           "warmup_seconds": warm, "seconds": took, "seconds_per_stem": took / batch,
           "stems_per_second": batch / took, "realtime_factor": seconds * batch / took}
    print(row, flush=True)
    return row


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Sampling speed ({result['device']})", "",
             f"Machine: {m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}, GPU {m.get('gpu')}; "
             f"CPU kernels: {result['cpu_kernels']}.", "",
             "## (a) Step work after the forward pass (V = 2048)", "",
             "| frames | batch | guidance | logits | eager ms | fused ms | eager / fused |", "|---|---|---|---|---|---|---|"]
    for r in result["step_work"]:
        lines.append(f"| {r['frames']} | {r['batch']} | {r['guidance']} | {r['logits_dtype']} | {r['eager_ms']:.2f} | "
                     f"{r['fused_ms']:.2f} | {r['ratio']:.2f}x |")
    lines += ["", "## (b, c) 20 s stems at paper settings", "",
              "| preset | batch | variant | window s | s per stem | stems/s | x real time | warm-up s |",
              "|---|---|---|---|---|---|---|---|"]
    for r in result["end_to_end"]:
        lines.append(f"| {r['preset']} | {r['batch']} | {r['variant']} | {r['window_seconds']:g} | "
                     f"{r['seconds_per_stem']:.2f} | {r['stems_per_second']:.3f} | {r['realtime_factor']:.2f} | "
                     f"{r['warmup_seconds']:.1f} |")
    if result.get("ratios"):
        lines += ["", "Ratios (same run): " + ", ".join(f"{k} {v:.2f}x" for k, v in result["ratios"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer repeats and no `small` end to end on CPU")
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    from stemgen.sampling import fused

    repeats = args.repeats or (5 if args.quick else 20)
    result = {"device": str(device), "machine": machine_info(), "cpu_kernels": fused.backend("cpu"),
              "cuda_kernels": fused.backend("cuda") if device.type == "cuda" else None,
              "step_work": step_work(device, repeats), "end_to_end": []}
    e2e = result["end_to_end"]
    if device.type == "cpu":
        presets = ["tiny"] if args.quick else ["tiny", "small"]
        for preset in presets:
            for variant in ("eager", "fused", "compiled"):
                e2e.append(end_to_end(device, preset, 1, variant))
        for batch in (4, 16):
            e2e.append(end_to_end(device, "tiny", batch, "fused"))
    else:  # the paper preset, one 20 s window as the paper trains
        for variant in ("eager", "fused", "compiled"):
            e2e.append(end_to_end(device, "paper", 1, variant, window_seconds=20.0, overlap_seconds=0.0))
        for batch in (4, 16):
            e2e.append(end_to_end(device, "paper", batch, "compiled", window_seconds=20.0, overlap_seconds=0.0))
    base = {(r["preset"], r["batch"]): r for r in e2e if r["variant"] == "eager"}
    result["ratios"] = {f"{r['preset']} b{r['batch']} eager/{r['variant']}": base[(r['preset'], r['batch'])]["seconds"]
                        / r["seconds"] for r in e2e if r["variant"] != "eager" and (r["preset"], r["batch"]) in base}
    RESULTS.mkdir(exist_ok=True)
    name = f"sampling_speed_{device.type}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
