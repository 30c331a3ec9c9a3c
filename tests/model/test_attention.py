"""The fused CPU attention op (stemgen::rotary_attention) against the reference attention."""

import shutil

import pytest
import torch

from stemgen.model import ModelConfig, StemGenModel
from stemgen.model import attention
from stemgen.model.transformer import rotary_tables

kernel = pytest.mark.skipif(not attention.kernel_runs(torch.bfloat16),
                            reason="the fused bf16 attention kernel needs a C++ compiler and a CPU with AVX512-BF16")
amx = pytest.mark.skipif(not attention.amx_runs(), reason="the AMX path needs a CPU with AMX-BF16 (Intel Xeon)")
kernel_f32 = pytest.mark.skipif(not attention.kernel_runs(torch.float32),
                                reason="the fused float32 attention kernel needs a C++ compiler and a CPU with AVX2")


def qkv_and_tables(b, t, d, h, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    qkv = (scale * torch.randn(b, t, 3 * d, generator=g)).bfloat16()
    cos, sin = rotary_tables(t + 5, d // h, 10000.0, "cpu")  # longer tables than T, as the model's
    return qkv, cos, sin


@kernel
@pytest.mark.parametrize("use_amx", [pytest.param(True, marks=amx), False])
@pytest.mark.parametrize("b,t,d,h", [(3, 200, 256, 8), (1, 37, 64, 2), (2, 50, 64, 4), (1, 33, 192, 4),
                                     (2, 17, 128, 2), (1, 1, 32, 1), (2, 64, 96, 3), (1, 70, 256, 4)])
def test_the_kernel_matches_the_reference_to_bf16_rounding(b, t, d, h, use_amx):
    # head sizes 32 and 64 run on AMX tiles where the CPU has them (use_amx), the others and
    # use_amx=False on AVX512-BF16 dot products
    qkv, cos, sin = qkv_and_tables(b, t, d, h)
    with torch.no_grad():
        out = attention.cpu_extension().rotary_attention(qkv, cos, sin, h, use_amx)
        ref = attention.reference_attention(qkv, cos, sin, h)
        exact = attention.reference_attention(qkv.float(), cos, sin, h)  # float32 throughout
    assert out.dtype == torch.bfloat16 and out.shape == (b, t, d)
    # the bf16 reference's own rounding error, and the kernel's: alike, never more than a few ulps
    err_ref, err_out = (ref.float() - exact).abs(), (out.float() - exact).abs()
    assert err_out.mean() <= 1.5 * err_ref.mean() + 1e-4
    assert err_out.max() <= 2 * err_ref.max() + 1e-3
    torch.testing.assert_close(out.float(), ref.float(), atol=0.04, rtol=0.02)


@kernel
@pytest.mark.parametrize("use_amx", [pytest.param(True, marks=amx), False])
def test_the_kernel_softmax_is_over_every_frame_and_only_real_ones(use_amx):
    # v = one-hot frame index: the output is the attention weights of each query, which must be
    # a distribution over the T real frames (T = 21: padded keys and odd frame pairs must not leak)
    b, t, h = 1, 21, 1
    d = 32
    qkv, cos, sin = qkv_and_tables(b, t, d, h, scale=0.5)
    v = torch.zeros(b, t, d)
    v[0, torch.arange(t), torch.arange(t)] = 1.0
    qkv[..., 2 * d:] = v.bfloat16()
    with torch.no_grad():
        weights = attention.cpu_extension().rotary_attention(qkv, cos, sin, h, use_amx).float()[0]  # (T, d)
    assert (weights >= 0).all() and (weights[:, t:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(t), atol=0.02, rtol=0)


@amx
def test_amx_runs_names_the_head_sizes_the_kernel_tiles():
    # the kernel's own dispatch answers (amx_head_size): 32 and 64 on tiles, any other on dot products
    assert attention.amx_runs(32) and attention.amx_runs(64)
    assert not attention.amx_runs(16) and not attention.amx_runs(48) and not attention.amx_runs(128)


@pytest.mark.parametrize("dtype,use_amx", [pytest.param(torch.bfloat16, True, marks=[kernel, amx]),
                                           pytest.param(torch.bfloat16, False, marks=kernel),
                                           pytest.param(torch.float32, False, marks=kernel_f32)])
def test_the_kernel_gives_far_below_maximum_keys_exactly_zero_weight(dtype, use_amx):
    # one key scores far above the others (differences of ~1000 in log2 units): every other weight
    # is exactly 0 and the winner exactly 1 (the kernel's 2^x is 0 below 2^-125, never subnormal)
    b, t, h, d = 1, 40, 1, 32
    qkv = torch.zeros(b, t, 3 * d)
    qkv[0, :, :d] = 30.0  # every query alike
    qkv[0, 7, d:2 * d] = 30.0  # key 7 scores 32 * 900 / sqrt(32): the others 0
    qkv[0, :, 2 * d:] = torch.arange(t, dtype=torch.float32)[:, None]  # v = the frame index
    cos, sin = torch.ones(t, d // 2), torch.zeros(t, d // 2)  # rotary off
    with torch.no_grad():
        out = attention.cpu_extension().rotary_attention(qkv.to(dtype), cos, sin, h, use_amx).float()
    assert torch.equal(out, torch.full_like(out, 7.0))


def test_the_op_runs_the_reference_where_the_kernel_does_not_apply(monkeypatch):
    qkv, cos, sin = qkv_and_tables(2, 30, 64, 4)
    with torch.no_grad():
        half = torch.ops.stemgen.rotary_attention(qkv.half(), cos, sin, 4)  # float16: not the kernel's
        assert torch.equal(half, attention.reference_attention(qkv.half(), cos, sin, 4))
        odd = qkv_and_tables(1, 9, 24, 2)  # head size 12: not a multiple of 16
        assert torch.equal(torch.ops.stemgen.rotary_attention(*odd, 2), attention.reference_attention(*odd, 2))
    assert not attention.fused_applies(qkv.half(), 4)
    assert attention.fused_applies(qkv, 4) and attention.fused_applies(qkv.float(), 4)
    grad = qkv.float().requires_grad_()
    assert not attention.fused_applies(grad.bfloat16(), 4)  # training: the reference, with its gradient
    assert not attention.fused_applies(grad, 4)
    monkeypatch.setattr(attention, "cpu_extension", lambda: None)  # no compiler
    assert not attention.kernel_runs(torch.bfloat16) and not attention.kernel_runs(torch.float32)
    with torch.no_grad():
        for x in (qkv, qkv.float()):
            assert torch.equal(torch.ops.stemgen.rotary_attention(x, cos, sin, 4),
                               attention.reference_attention(x, cos, sin, 4))


@kernel_f32
@pytest.mark.parametrize("b,t,d,h", [(3, 200, 256, 8), (1, 37, 64, 2), (2, 50, 64, 4), (1, 33, 192, 4),
                                     (2, 17, 128, 2), (1, 1, 32, 1), (2, 64, 96, 3)])
def test_the_float32_kernel_matches_the_reference_to_float32_rounding(b, t, d, h):
    qkv, cos, sin = qkv_and_tables(b, t, d, h)
    qkv = qkv.float()
    with torch.no_grad():
        out = torch.ops.stemgen.rotary_attention(qkv, cos, sin, h)
        ref = attention.reference_attention(qkv, cos, sin, h)
        exact = attention.reference_attention(qkv.double(), cos.double(), sin.double(), h)
    assert out.dtype == torch.float32 and out.shape == (b, t, d)
    # as close to the float64 result as the reference is (another summation order and 2^x, not bf16)
    assert (out.double() - exact).abs().max() <= 3 * (ref.double() - exact).abs().max() + 1e-6
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-5)


@kernel_f32
def test_the_float32_kernel_softmax_is_over_every_frame_and_only_real_ones():
    # T = 21: the keys padded to 24 must get weight exactly 0, every row must sum to 1
    b, t, h, d = 1, 21, 1, 32
    qkv, cos, sin = qkv_and_tables(b, t, d, h, scale=0.5)
    qkv = qkv.float()
    qkv[..., 2 * d:] = 0.0
    qkv[0, torch.arange(t), 2 * d + torch.arange(t)] = 1.0  # v = one-hot frame index
    with torch.no_grad():
        weights = torch.ops.stemgen.rotary_attention(qkv, cos, sin, h)[0, :, :t]  # (T queries, T keys)
        q, k = attention.apply_rotary(qkv[0, :, :2 * d].reshape(t, 2, 1, d).permute(1, 2, 0, 3), cos[:t], sin[:t])
    expected = ((q[0] @ k[0].T) / d ** 0.5).softmax(-1)  # (T, T)
    assert (weights >= 0).all() and (weights[:, t:] == 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(t), atol=1e-5, rtol=0)
    torch.testing.assert_close(weights, expected, atol=1e-6, rtol=1e-5)


@kernel_f32
def test_the_float32_model_with_fused_attention_gives_the_reference_logits_and_compiles():
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    cfg = ModelConfig.from_name("tiny", num_levels=2, cardinality=32)  # head size 16
    model = StemGenModel(cfg).eval()
    ctx, tgt, inst = model_inputs(cfg)
    with torch.no_grad():
        ref = model(ctx, tgt, inst, level=1)
        out = model(ctx, tgt, inst, level=1, fused=True)
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(lambda c, t, i: model(c, t, i, level=1, fused=True), fullgraph=True)(ctx, tgt, inst)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.argmax(-1), ref.argmax(-1))
    torch.testing.assert_close(compiled, out, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [pytest.param(torch.bfloat16, marks=kernel),
                                   pytest.param(torch.float32, marks=kernel_f32)])
def test_the_kernel_rejects_what_it_cannot_compute(dtype):
    ext = attention.cpu_extension()
    qkv, cos, sin = qkv_and_tables(1, 8, 64, 4)
    qkv = qkv.to(dtype)
    with pytest.raises(RuntimeError, match="bfloat16 or float32"):
        ext.rotary_attention(qkv.half(), cos, sin, 4)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        ext.rotary_attention(qkv, cos, sin, 8)  # head size 8
    with pytest.raises(RuntimeError, match="cos and sin"):
        ext.rotary_attention(qkv, cos[:4], sin[:4], 4)  # tables shorter than T


def bf16_model(seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig.from_name("tiny", num_levels=2, cardinality=32)  # head size 16
    return StemGenModel(cfg).eval().cast_matmul_weights(torch.bfloat16), cfg


def model_inputs(cfg, b=2, t=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(cfg.cardinality, (b, cfg.num_levels, t), generator=g)
    tgt = torch.randint(cfg.cardinality, (b, cfg.num_levels, t), generator=g)
    tgt[:, 1] = cfg.mask_id
    return ctx, tgt, torch.randint(1, cfg.num_instruments, (b,), generator=g)


@kernel
def test_the_model_with_fused_attention_gives_the_reference_logits():
    model, cfg = bf16_model()
    ctx, tgt, inst = model_inputs(cfg)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = model(ctx, tgt, inst, level=1).float()
        out = model(ctx, tgt, inst, level=1, fused=True).float()
    assert not torch.equal(out, ref)  # the kernel ran (it rounds differently)
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.95


@kernel
def test_the_fused_attention_compiles_into_one_graph():
    from torch._dynamo.utils import counters

    model, cfg = bf16_model()
    ctx, tgt, inst = model_inputs(cfg)
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(lambda c, t, i: model(c, t, i, level=1, fused=True), fullgraph=True)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a = compiled(ctx, tgt, inst).float()
        b = model(ctx, tgt, inst, level=1, fused=True).float()
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    torch.testing.assert_close(a, b, atol=0.05, rtol=0.05)


def test_training_keeps_the_reference_attention_and_its_gradients():
    model, cfg = bf16_model()
    model.train()
    ctx, tgt, inst = model_inputs(cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = model(ctx, tgt, inst, level=1, fused=True).float()
        b = model(ctx, tgt, inst, level=1).float()
    assert torch.equal(a, b)  # with gradients, fused=True is the reference
    a.sum().backward()
    assert model.blocks[0].attn.qkv.weight.grad is not None


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler")
def test_the_kernel_source_builds_for_an_avx2_cpu_and_declines_there():
    # another user's CPU: where ATen dispatches to AVX2 the extension is built without the AVX512
    # path, and must say so (the op then runs the reference) instead of failing to build or load
    from stemgen import cpu_kernels

    ext = cpu_kernels.load_extension("stemgen_attention_check", attention.CSRC, "attention kernel (AVX2 build)",
                                     capability="AVX2")
    assert ext is not None and ext.supported() is False and ext.amx_supported() is False
    qkv, cos, sin = qkv_and_tables(1, 8, 64, 4)
    with pytest.raises(RuntimeError, match="AVX512-BF16"):
        ext.rotary_attention(qkv, cos, sin, 4)
    # its float32 kernel is there, and runs wherever the CPU has AVX2
    has_avx2 = torch.backends.cpu.get_cpu_capability().startswith(("AVX2", "AVX512"))
    assert ext.supported_float32() is has_avx2
    if has_avx2:
        with torch.no_grad():
            torch.testing.assert_close(ext.rotary_attention(qkv.float(), cos, sin, 4),
                                       attention.reference_attention(qkv.float(), cos, sin, 4), atol=2e-5, rtol=1e-5)
