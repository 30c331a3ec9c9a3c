"""Sampling speed: the fused step ops against the eager reference, and whole generations.

    python benchmarks/sampling_speed.py                  # CPU: (a) step work, (b) tiny/small 20 s stems, (c) batches
    python benchmarks/sampling_speed.py --quick          # fewer repeats, no `small` end to end
    python benchmarks/sampling_speed.py --device cuda    # GPU: (a), (b) for the paper preset, (c) at 16

(a) The work of one decoding step after the forward pass (guidance over the three branches,
    temperature, candidates, confidence, causal-bias ranking, commit) on logits of a window:
    ``stemgen.sampling.fused.reference_step`` (eager) vs ``sample_step`` (the torch.ops.stemgen
    kernels), the same inputs, median of repeats, ratio eager / fused.
(b) One 20 s stem at the paper's settings (steps 128/64/32/32, guidance, causal bias) from random
    weights of a preset (speed does not depend on the weights): eager sampler, fused ops, and fused
    ops with each step compiled (on CUDA captured as a CUDA graph). On CPU each is timed twice, in
    the order eager, fused, compiled, compiled, fused, eager, and the two runs averaged. On CPU the transformer runs
    under bf16 autocast where the CPU has native bf16, its matmul weights held in bf16 (as
    ``stemgen.generate`` does).
(c) Stems per second at batch 4 (CPU, `tiny`, fused) or 16 (CUDA, `paper`, compiled).
(d) Where one decoding step's time goes (forward pass with the reference and the fused
    attention, noise, step ops), and how many steps of a 20 s stem commit tokens: a step that
    commits none skips its forward pass (every variant).
(e) CPU: one attention layer (rotary + softmax attention) of a 4 s window, the reference
    (``stemgen.model.attention.reference_attention``: what the eager sampler runs) against the fused
    op ``torch.ops.stemgen.rotary_attention`` (what the fused and compiled samplers run), in float32
    (AVX2 kernel) and, where the CPU has native bf16, in bf16 (AVX512-BF16 kernel, on AMX tiles where
    the CPU has them: `amx`).

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


def attention_work(device, repeats: int) -> list[dict]:
    """(e) one attention layer, reference vs the fused op, in float32 and, where the CPU has native bf16,
    in bf16 (what generation runs on each kind of CPU), at the presets' head sizes (``kernel``: whether
    the op ran the kernel for that dtype on this CPU, else the reference)."""
    from stemgen.model import attention, native_bf16
    from stemgen.model.transformer import rotary_tables

    rows = []
    for dtype in (torch.bfloat16, torch.float32) if native_bf16(device) else (torch.float32,):
        for preset, dim, heads in (("small", 256, 8), ("paper", 1024, 16)):
            for batch in (1, 3):  # naive, and guidance's three branches
                g = torch.Generator(device=device).manual_seed(0)
                frames = 200
                qkv = torch.randn(batch, frames, 3 * dim, generator=g, device=device).to(dtype)
                cos, sin = rotary_tables(frames, dim // heads, 10000.0, device)
                with torch.no_grad():
                    ref, fast = median_seconds([lambda: attention.reference_attention(qkv, cos, sin, heads),
                                                lambda: torch.ops.stemgen.rotary_attention(qkv, cos, sin, heads)],
                                               device, repeats)
                rows.append({"preset": preset, "dtype": str(dtype)[6:], "batch": batch, "frames": frames,
                             "head_size": dim // heads, "kernel": attention.kernel_runs(dtype),
                             "amx": dtype == torch.bfloat16 and attention.amx_runs(dim // heads),
                             "reference_ms": 1e3 * ref, "fused_ms": 1e3 * fast, "ratio": ref / fast})
                print(rows[-1], flush=True)
    return rows


def inference_model(preset: str, device):
    """A preset's model with random weights (seed 0) for timing, and whether it runs under bf16
    autocast: on CUDA, and on CPUs with native bf16. Then its matmul weights are held in bf16, as
    ``StemModel`` holds them for generation (the same logits, no per-step casts)."""
    from stemgen.model import ModelConfig, StemGenModel, native_bf16

    torch.manual_seed(0)
    model = StemGenModel(ModelConfig.from_name(preset)).eval().to(device)
    bf16 = native_bf16(device)
    if bf16:
        model.cast_matmul_weights(torch.bfloat16)
    return model, bf16


def step_profile(device, preset: str, frames: int, repeats: int, seconds: float = 20.0, window_seconds: float = 4.0,
                 overlap_seconds: float = 1.0) -> dict:
    """(d) Where a decoding step's time goes, at batch 1 with guidance on windows of ``frames``: the
    forward pass (all three branches), the noise drawing, the fused and eager step ops, each timed
    alone (median of repeats); and how many forward passes a ``seconds`` stem needs at the paper's
    steps, with and without skipping the steps that commit nothing."""
    from stemgen.sampling import fused
    from stemgen.sampling.decode import level_logits
    from stemgen.sampling.steps import level_schedule
    from stemgen.sampling.windows import window_starts

    model, bf16 = inference_model(preset, device)
    q, v = model.cfg.num_levels, model.cfg.cardinality
    g = torch.Generator(device=device).manual_seed(0)
    context = torch.randint(v, (1, q, frames), device=device, generator=g)
    target = torch.full_like(context, model.cfg.mask_id)
    target[:, 0, : frames // 2] = context[:, 0, : frames // 2]  # mid-level: half decoded
    instrument = torch.full((1,), 4, device=device)

    def draw():  # a step's randomness as decode_level draws it, and the candidates' noise made from it
        seeds = torch.randint(0, 2**32, (1,), generator=g, device=device)
        return torch.ops.stemgen.hashed_uniform(seeds, frames, v), torch.rand(1, frames, generator=g, device=device)

    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = level_logits(model, context, target, instrument, 0, True)
        noise, uniform = draw()
        remain = torch.full((1,), frames // 4, device=device)
        args = (logits, target[:, 0], noise, uniform, remain, 3.0, 3.0, 1.0, 0.1, 0.1, 1.0, model.cfg.mask_id)
        forward, forward_fused, draw, fused_ops, eager_ops = median_seconds([
            lambda: level_logits(model, context, target, instrument, 0, True),
            lambda: level_logits(model, context, target, instrument, 0, True, fused=True),
            draw,
            lambda: fused.sample_step(*args), lambda: fused.reference_step(*args)], device, repeats)
    # forward passes of one stem: every window decodes what the previous ones left masked
    total, window, overlap = int(seconds * FRAME_RATE), int(window_seconds * FRAME_RATE), int(overlap_seconds * FRAME_RATE)
    starts = window_starts(total, window, overlap)
    free = [window] + [start - prev for prev, start in zip(starts, starts[1:])]  # frames each window decodes
    all_steps = committing = 0
    for n in free:
        for s in (128, 64, 32, 32):
            _, own_steps, commits = level_schedule([n], window, s)
            all_steps += own_steps[0]
            committing += sum(commits)
    row = {"preset": preset, "frames": frames, "batch": 1, "guidance": True, "bf16_autocast": bf16,
           "forward_ms": 1e3 * forward, "forward_fused_attention_ms": 1e3 * forward_fused, "noise_ms": 1e3 * draw, "fused_step_ops_ms": 1e3 * fused_ops,
           "eager_step_ops_ms": 1e3 * eager_ops, "forward_share": forward / (forward + draw + fused_ops),
           "stem_seconds": seconds, "windows": len(starts), "forward_passes_all_steps": all_steps,
           "forward_passes_committing": committing,
           "estimated_stem_seconds": (all_steps * (forward + draw + eager_ops),
                                      committing * (forward + fused_ops) + all_steps * draw)}
    print(row, flush=True)
    return row


def profile_table(fn, device, title: str) -> str:
    """A torch.profiler table of one call of ``fn`` (already warmed up)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return title + "\n" + prof.key_averages().table(sort_by=sort, row_limit=40)


def end_to_end(device, preset: str, batch: int, variant: str, seconds: float = 20.0, window_seconds: float = 4.0,
               overlap_seconds: float = 1.0, profile: Path | None = None) -> dict:
    """(b) one generation of ``seconds`` of audio at the paper's sampling settings; ``profile``: also
    write a profiler table of 2 steps per level (the graphs the timed run used) to this file."""
    from stemgen.sampling.decode import SamplingSettings
    from stemgen.sampling.windows import decode_windows

    model, bf16 = inference_model(preset, device)
    q, v = model.cfg.num_levels, model.cfg.cardinality
    frames, window, overlap = int(seconds * FRAME_RATE), int(window_seconds * FRAME_RATE), int(overlap_seconds * FRAME_RATE)
    context = torch.randint(v, (batch, q, frames), device=device)
    instrument = torch.full((batch,), 4, device=device)
    settings = SamplingSettings(sampler="eager" if variant == "eager" else "fused", compile=variant == "compiled")

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
    if profile is not None:
        profile.write_text(profile_table(lambda: run(steps=(2, 2, 2, 2)), device,
                                         f"{preset}, batch {batch}, {variant}, {seconds:g} s in windows of "
                                         f"{window_seconds:g} s, 2 decoding steps per level"))
    row = {"tokens": tokens, "preset": preset, "parameters": sum(p.numel() for p in model.parameters()), "batch": batch,
           "variant": variant, "audio_seconds": seconds, "window_seconds": window_seconds,
           "overlap_seconds": overlap_seconds, "steps": list(settings.steps), "bf16_autocast": bf16,
           "warmup_seconds": warm, "seconds": took, "seconds_per_stem": took / batch,
           "stems_per_second": batch / took, "realtime_factor": seconds * batch / took}
    print({k: x for k, x in row.items() if k != "tokens"}, flush=True)
    return row


def alternating(device, preset: str, variants, profile: Path | None = None) -> list[dict]:
    """(b) each variant's 20 s stem timed twice, in the order given and then reversed (a machine
    whose speed drifts over the minutes of a run then weighs on every variant alike); a row's
    ``seconds`` is the mean of its two runs (``seconds_runs``), its tokens the first run's."""
    runs = {}
    for variant in (*variants, *reversed(variants)):
        runs.setdefault(variant, []).append(
            end_to_end(device, preset, 1, variant, profile=profile if variant == "compiled" and variant in runs else None))
    rows = []
    for variant in variants:
        first, second = runs[variant]
        row = dict(first)
        row["seconds_runs"] = [first["seconds"], second["seconds"]]
        row["seconds"] = row["seconds_per_stem"] = statistics.mean(row["seconds_runs"])
        row["stems_per_second"] = 1.0 / row["seconds"]
        row["realtime_factor"] = row["audio_seconds"] / row["seconds"]
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Sampling speed ({result['device']})", "",
             f"Machine: {m.get('cpu')}, {m.get('cores')} cores ({m.get('cpu_capability', '?')}, native bf16 "
             f"{m.get('cpu_native_bf16')}, AMX {m.get('cpu_amx_bf16', '?')}), torch {m.get('torch')}, GPU {m.get('gpu')}; "
             f"CPU kernels: {result['cpu_kernels']}.", "",
             "## (a) Step work after the forward pass (V = 2048)", "",
             "| frames | batch | guidance | logits | eager ms | fused ms | eager / fused |", "|---|---|---|---|---|---|---|"]
    for r in result["step_work"]:
        lines.append(f"| {r['frames']} | {r['batch']} | {r['guidance']} | {r['logits_dtype']} | {r['eager_ms']:.2f} | "
                     f"{r['fused_ms']:.2f} | {r['ratio']:.2f}x |")
    lines += ["", "## (b, c) 20 s stems at paper settings", "",
              "| preset | batch | variant | window s | s per stem | (runs) | stems/s | x real time | warm-up s | same tokens as eager |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["end_to_end"]:
        runs = ", ".join(f"{x:.1f}" for x in r.get("seconds_runs", []))
        lines.append(f"| {r['preset']} | {r['batch']} | {r['variant']} | {r['window_seconds']:g} | "
                     f"{r['seconds_per_stem']:.2f} | {runs} | {r['stems_per_second']:.3f} | {r['realtime_factor']:.2f} | "
                     f"{r['warmup_seconds']:.1f} | {r.get('same_tokens_as_eager')} |")
    for r in result.get("step_profile", []):
        lines += ["", f"## (d) One step of the `{r['preset']}` preset, batch 1, guidance, {r['frames']} frames", "",
                  f"forward {r['forward_ms']:.2f} ms ({100 * r['forward_share']:.0f}% of a step; with the fused "
                  f"attention {r.get('forward_fused_attention_ms', float('nan')):.2f} ms), noise "
                  f"{r['noise_ms']:.2f} ms, step ops fused {r['fused_step_ops_ms']:.2f} / eager "
                  f"{r['eager_step_ops_ms']:.2f} ms. A {r['stem_seconds']:g} s stem: {r['windows']} windows, "
                  f"{r['forward_passes_all_steps']} steps of which {r['forward_passes_committing']} commit tokens "
                  f"(the others skip the forward pass); estimated {r['estimated_stem_seconds'][0]:.1f} s every "
                  f"step eager vs {r['estimated_stem_seconds'][1]:.1f} s committing steps fused."]
    if result.get("attention"):
        lines += ["", "## (e) One attention layer (rotary + softmax attention), 200 frames", "",
                  "| preset | dtype | batch | head size | kernel ran | on AMX tiles | reference ms | fused ms | reference / fused |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in result["attention"]:
            lines.append(f"| {r['preset']} | {r.get('dtype', 'bfloat16')} | {r['batch']} | {r['head_size']} | {r['kernel']} | "
                         f"{r.get('amx', False)} | "
                         f"{r['reference_ms']:.3f} | {r['fused_ms']:.3f} | {r['ratio']:.2f}x |")
    if result.get("ratios"):
        lines += ["", "Ratios (same run): " + ", ".join(f"{k} {v:.2f}x" for k, v in result["ratios"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="fewer repeats and no `small` end to end on CPU")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--profile", type=Path, default=None,
                   help="also write a torch.profiler table of compiled decoding steps (batch 1, the `small` "
                        "preset on CPU, `paper` on CUDA: captured graphs) to this file")
    args = p.parse_args()
    device = torch.device(args.device)
    from stemgen.sampling import fused

    repeats = args.repeats or (5 if args.quick else 20)
    result = {"device": str(device), "machine": machine_info(), "cpu_kernels": fused.backend("cpu") if device.type == "cpu" else None,
              "cuda_kernels": fused.backend("cuda") if device.type == "cuda" else None,
              "step_work": step_work(device, repeats), "end_to_end": []}
    e2e = result["end_to_end"]
    if device.type == "cpu":
        result["attention"] = attention_work(device, repeats)
        result["step_profile"] = [step_profile(device, "small", 200, repeats)]
        presets = ["tiny"] if args.quick else ["tiny", "small"]
        for preset in presets:
            e2e += alternating(device, preset, ("eager", "fused", "compiled"),
                               profile=args.profile if preset == "small" else None)
        e2e.append(end_to_end(device, "tiny", 4, "fused"))  # batch 16: no faster per stem on 2 cores
    else:  # the paper preset, one 20 s window as the paper trains
        result["step_profile"] = [step_profile(device, "paper", 1000, repeats, window_seconds=20.0, overlap_seconds=0.0)]
        for variant in ("eager", "fused", "compiled"):
            e2e.append(end_to_end(device, "paper", 1, variant, window_seconds=20.0, overlap_seconds=0.0,
                                  profile=args.profile if variant == "compiled" else None))
        if not args.quick:
            e2e.append(end_to_end(device, "paper", 16, "compiled", window_seconds=20.0, overlap_seconds=0.0))
    base = {(r["preset"], r["batch"]): r for r in e2e if r["variant"] == "eager"}
    result["ratios"] = {f"{r['preset']} b{r['batch']} eager/{r['variant']}": base[(r['preset'], r['batch'])]["seconds"]
                        / r["seconds"] for r in e2e if r["variant"] != "eager" and (r["preset"], r["batch"]) in base}
    # the same model, context and noise: the fraction of tokens each variant shares with the eager
    # reference (1.0 for the fused ops; compiled forwards round differently in the last bits of bf16)
    for r in e2e:
        ref = base.get((r["preset"], r["batch"]))
        r["same_tokens_as_eager"] = float((r["tokens"] == ref["tokens"]).float().mean()) if ref else None
    for r in e2e:
        del r["tokens"]
    RESULTS.mkdir(exist_ok=True)
    name = f"sampling_speed_{device.type}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
