"""The Triton kernel of stemgen::candidates: through Triton's interpreter on CPU, and on CUDA when a GPU exists."""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from stemgen.sampling import fused

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")

# TRITON_INTERPRET must be set before the kernel is defined, so the interpreter runs in its own process
INTERPRETED = textwrap.dedent("""
    import json, os
    os.environ["TRITON_INTERPRET"] = "1"
    import torch
    from stemgen.sampling import fused, fused_triton
    out = []
    for branches in (1, 3):
        for dtype in (torch.float32, torch.bfloat16):
            for temperature in (1.0, 0.7, 0.0):
                for b, t, v in ((2, 9, 37), (1, 4, 2048)):
                    g = torch.Generator().manual_seed(len(out))
                    logits = (3 * torch.randn(branches * b, t, v, generator=g)).to(dtype)
                    current = torch.randint(v, (b, t), generator=g)
                    current[torch.rand(b, t, generator=g) < 0.7] = v
                    noise = torch.rand(b, t, v, generator=g)
                    ref = fused.reference_candidates(logits, current, noise, 3.0, 2.5, temperature, v)
                    got = fused_triton.candidates(logits, current, noise, 3.0, 2.5, temperature, v)
                    out.append({"case": [branches, str(dtype), temperature, b, t, v],
                                "tokens_differ": int((ref[0] != got[0]).sum()),
                                "conf_err": float((ref[1] - got[1]).abs().max())})
    # the silence gate, with silence the likeliest single code at about half the positions
    for temperature, gate in ((0.7, -1.0), (0.0, -1.0), (1.0, 0.5)):
        for b, t, v in ((2, 9, 37), (1, 16, 2048)):
            g = torch.Generator().manual_seed(len(out))
            logits = 3 * torch.randn(b, t, v, generator=g)
            s = v // 3
            logits[..., s] = logits.max(-1).values + 2 * torch.randn(b, t, generator=g)
            current = torch.full((b, t), v)
            noise = torch.rand(b, t, v, generator=g)
            ref = fused.reference_candidates(logits, current, noise, 3.0, 2.5, temperature, v, s, gate)
            got = fused_triton.candidates(logits, current, noise, 3.0, 2.5, temperature, v, s, gate)
            out.append({"case": ["gate", temperature, b, t, v], "tokens_differ": int((ref[0] != got[0]).sum()),
                        "conf_err": float((ref[1] - got[1]).abs().max()),
                        "silent": int((got[0] == s).sum()), "positions": b * t})
    print(json.dumps(out))
""")


@needs_triton
def test_triton_kernel_matches_the_reference_in_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", INTERPRETED], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 30
    for r in results:
        assert r["tokens_differ"] == 0, r
        assert r["conf_err"] < 1e-5, r
    gated = [r for r in results if r["case"][0] == "gate"]
    assert all(0 < r["silent"] < r["positions"] for r in gated if r["case"][1] > 0)  # both decisions made


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
@pytest.mark.parametrize("branches", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.0, 0.5])
@pytest.mark.parametrize("silence", [-1, 700])
def test_cuda_step_matches_the_reference(branches, dtype, temperature, silence):
    b, t, v = 3, 200, 2048
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = (3 * torch.randn(branches * b, t, v, generator=g, device="cuda")).to(dtype)
    current = torch.randint(v, (b, t), generator=g, device="cuda")
    current[torch.rand(b, t, generator=g, device="cuda") < 0.7] = v
    noise = torch.rand(b, t, v, generator=g, device="cuda")
    uniform = torch.rand(b, t, generator=g, device="cuda")
    remain = torch.tensor([0, 10, 50], device="cuda")
    args = (logits, current, noise, uniform, remain, 3.0, 3.0, temperature, 0.1, 0.1, 1.0, v, silence)
    assert fused.backend("cuda") == "triton"
    assert torch.equal(fused.sample_step(*args), fused.reference_step(*args))
