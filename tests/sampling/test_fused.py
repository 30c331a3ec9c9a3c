"""The fused step ops (torch.ops.stemgen) against the eager reference: the same tokens from the same noise."""

import shutil

import pytest
import torch

from stemgen.model import ModelConfig, StemGenModel
from stemgen.sampling import fused
from stemgen.sampling.decode import SamplingSettings, decode_tokens
from stemgen.sampling.windows import decode_windows

needs_compiler = pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler to build the CPU kernels")


def inputs(b, t, v, branches, dtype, masked_fraction=0.7, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask_id = v
    logits = (3 * torch.randn(branches * b, t, v, generator=g)).to(dtype)
    current = torch.randint(v, (b, t), generator=g)
    current[torch.rand(b, t, generator=g) < masked_fraction] = mask_id
    noise = torch.rand(b, t, v, generator=g)
    uniform = torch.rand(b, t, generator=g)
    return logits, current, noise, uniform, mask_id


@needs_compiler
def test_the_cpu_kernels_are_built_here():
    assert fused.backend("cpu") == "cpp"  # otherwise the comparisons below would compare eager with itself
    assert fused.cpu_extension().vector_width() >= 1


@needs_compiler
@pytest.mark.parametrize("branches", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
@pytest.mark.parametrize("b,t,v", [(1, 50, 2048), (3, 17, 37), (2, 1, 5)])
def test_candidates_match_the_reference(branches, dtype, temperature, b, t, v):
    logits, current, noise, _, mask_id = inputs(b, t, v, branches, dtype)
    ref_tok, ref_conf = fused.reference_candidates(logits, current, noise, 3.0, 2.5, temperature, mask_id)
    tok, conf = torch.ops.stemgen.candidates(logits, current, noise, 3.0, 2.5, temperature, mask_id)
    assert tok.dtype == torch.int64 and conf.dtype == torch.float32 and tok.shape == conf.shape == (b, t)
    assert torch.equal(tok, ref_tok)
    torch.testing.assert_close(conf, ref_conf, rtol=1e-5, atol=1e-6)
    decoded = current != mask_id
    assert torch.equal(tok[decoded], current[decoded]) and (conf[decoded] == 0).all()  # decoded never compete


def silence_likely(logits, silence, seed=0):
    """``logits`` with the silence code made the single most likely code at about half the
    positions, and probable (though outweighed by sound as a whole) at most of them."""
    g = torch.Generator().manual_seed(seed)
    logits = logits.float().clone()
    top = logits.max(-1).values
    logits[..., silence] = top + 2.0 * torch.randn(top.shape, generator=g)
    return logits


@needs_compiler
@pytest.mark.parametrize("branches", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("temperature", [0.5, 0.0, 1.7, 1.0])
@pytest.mark.parametrize("b,t,v", [(1, 50, 2048), (3, 17, 37)])
@pytest.mark.parametrize("gate", [-1.0, 0.5])
def test_silence_gate_matches_the_reference(branches, dtype, temperature, b, t, v, gate):
    logits, current, noise, _, mask_id = inputs(b, t, v, branches, dtype, masked_fraction=0.9)
    silence = v // 3
    logits = silence_likely(logits, silence).to(dtype)
    # with guidance, scales that keep the guided row the first branch's, so that silence stays as
    # likely as made above (the combination itself is checked by the tests above)
    la, li = (1.0, 0.0) if branches == 3 else (3.0, 2.5)
    ref_tok, ref_conf = fused.reference_candidates(logits, current, noise, la, li, temperature, mask_id, silence, gate)
    tok, conf = torch.ops.stemgen.candidates(logits, current, noise, la, li, temperature, mask_id, silence, gate)
    assert torch.equal(tok, ref_tok)
    torch.testing.assert_close(conf, ref_conf, rtol=1e-5, atol=1e-6)
    masked = current == mask_id
    plain_tok, plain_conf = torch.ops.stemgen.candidates(logits, current, noise, la, li, temperature, mask_id)
    if temperature == 1.0 and gate < 0:  # the gate changes nothing at temperature 1
        assert torch.equal(tok, plain_tok) and torch.equal(conf, plain_conf)
    else:
        assert (tok[masked] == silence).any() and (tok[masked] != silence).any()  # both decisions happen
    if temperature in (0.5, 0.0) and v == 2048 and gate < 0:
        # sharpened code by code, silence (the most likely single code) wins far more often than
        # its probability of about 0.3 says; gated, less often
        assert (plain_tok[masked] == silence).float().mean() > (tok[masked] == silence).float().mean()


@needs_compiler
@pytest.mark.parametrize("scale", [0.05, 1.0, 10.0, 40.0])
@pytest.mark.parametrize("v", [130, 2048, 2100])
def test_gumbel_argmax_pruning_keeps_the_reference_winner(scale, v):
    # the kernel skips blocks of codes that cannot win the Gumbel argmax: flat distributions
    # (little to skip), peaked ones (almost everything skipped), and V with a ragged tail
    g = torch.Generator().manual_seed(int(scale * 100) + v)
    b, t = 2, 64
    logits = scale * torch.randn(3 * b, t, v, generator=g)
    current = torch.full((b, t), v)
    noise = torch.rand(b, t, v, generator=g)
    noise[0, 0, 5] = 1.0 - 1e-9  # clamped to the largest Gumbel value the kernel bounds with
    noise[1, 3, :] = noise[1, 3, 0]  # all codes tie on the noise: the first best code wins
    for temperature in (1.0, 0.5):
        ref_tok, ref_conf = fused.reference_candidates(logits, current, noise, 3.0, 3.0, temperature, v)
        tok, conf = torch.ops.stemgen.candidates(logits, current, noise, 3.0, 3.0, temperature, v)
        assert torch.equal(tok, ref_tok)
        torch.testing.assert_close(conf, ref_conf, rtol=1e-5, atol=1e-6)


@needs_compiler
@pytest.mark.parametrize("branches", [1, 3])
def test_many_positions_agree_across_temperatures_and_spreads(branches):
    # the kernel skips lanes and blocks that provably cannot win with bounds that carry margins
    # for rounding; thousands of positions from flat to peaked rows find no miss
    b, t, v = 2, 512, 2048
    g = torch.Generator().manual_seed(branches)
    spread = torch.logspace(-1, 1.3, b * t).reshape(1, b, t, 1)
    logits = (spread * torch.randn(branches, b, t, v, generator=g)).reshape(branches * b, t, v)
    current = torch.full((b, t), v)
    noise = torch.rand(b, t, v, generator=g)
    for temperature in (1.0, 0.8, 1.5):
        ref_tok, ref_conf = fused.reference_candidates(logits, current, noise, 3.0, 2.0, temperature, v)
        tok, conf = torch.ops.stemgen.candidates(logits, current, noise, 3.0, 2.0, temperature, v)
        assert torch.equal(tok, ref_tok)
        torch.testing.assert_close(conf, ref_conf, rtol=1e-5, atol=1e-6)


@needs_compiler
@pytest.mark.parametrize("remain", [[0, 0], [1, 3], [5, 40], [60, 60]])
def test_rank_commit_matches_the_reference(remain):
    b, t, v = 2, 64, 11
    _, current, _, uniform, mask_id = inputs(b, t, v, 1, torch.float32, masked_fraction=0.8)
    g = torch.Generator().manual_seed(3)
    cand = torch.randint(v, (b, t), generator=g)
    conf = torch.rand(b, t, generator=g)
    remain = torch.tensor(remain)
    ref = fused.reference_rank_commit(current, cand, conf, uniform, remain, 0.1, 0.1, 1.0, mask_id)
    out = torch.ops.stemgen.rank_commit(current, cand, conf, uniform, remain, 0.1, 0.1, 1.0, mask_id)
    assert torch.equal(out, ref)
    n_masked = (current == mask_id).sum(-1)
    assert torch.equal((out == mask_id).sum(-1), torch.minimum(n_masked, remain))  # exactly `remain` left
    kept = current != mask_id
    assert torch.equal(out[kept], current[kept])


@needs_compiler
@pytest.mark.parametrize("case", ["all masked", "one masked", "last step", "nothing masked"])
@pytest.mark.parametrize("branches", [1, 3])
def test_whole_step_matches_the_reference_at_the_edges(case, branches):
    b, t, v = 2, 40, 64
    logits, current, noise, uniform, mask_id = inputs(b, t, v, branches, torch.bfloat16)
    remain = torch.tensor([10, 25])
    if case == "all masked":
        current[:] = mask_id
    elif case == "one masked":
        current[current == mask_id] = 0
        current[:, 7] = mask_id
        remain = torch.tensor([0, 1])
    elif case == "last step":
        remain = torch.zeros(b, dtype=torch.long)
    else:
        current[current == mask_id] = 1
    args = (logits, current, noise, uniform, remain, 3.0, 3.0, 1.0, 0.1, 0.1, 1.0, mask_id)
    out = fused.sample_step(*args)
    assert torch.equal(out, fused.reference_step(*args))
    left = (out == mask_id).sum(-1)
    assert torch.equal(left, torch.minimum((current == mask_id).sum(-1), remain))


@needs_compiler
@pytest.mark.parametrize("b,t,v", [(1, 200, 2048), (3, 17, 37), (2, 1, 5), (1, 0, 8)])
def test_hashed_uniform_kernel_gives_the_reference_bits(b, t, v):
    from stemgen.sampling.steps import hashed_uniform

    seeds = torch.randint(0, 2**32, (b,), generator=torch.Generator().manual_seed(t))
    out = torch.ops.stemgen.hashed_uniform(seeds, t, v)
    assert out.shape == (b, t, v) and out.dtype == torch.float32
    assert torch.equal(out, hashed_uniform(seeds, t, v))  # integer arithmetic: bit for bit
    with pytest.raises(RuntimeError, match="seeds must be"):
        torch.ops.stemgen.hashed_uniform(seeds.int(), t, v)


def test_bad_shapes_are_refused_with_a_clear_error():
    logits, current, noise, _, mask_id = inputs(2, 8, 16, 3, torch.float32)
    with pytest.raises(RuntimeError, match="1 or 3 guidance branches"):
        torch.ops.stemgen.candidates(logits[:4], current, noise, 3.0, 3.0, 1.0, mask_id)
    with pytest.raises(RuntimeError, match="noise must be"):
        torch.ops.stemgen.candidates(logits, current, noise[:, :4], 3.0, 3.0, 1.0, mask_id)


def test_without_kernels_the_ops_run_the_reference(monkeypatch):
    monkeypatch.setattr(fused, "backend", lambda device: "eager")
    monkeypatch.setattr(fused, "cpu_extension", lambda: None)
    logits, current, noise, uniform, mask_id = inputs(2, 12, 9, 3, torch.float32)
    args = (logits, current, noise, uniform, torch.tensor([2, 4]), 3.0, 3.0, 1.0, 0.1, 0.1, 1.0, mask_id)
    assert torch.equal(fused.sample_step(*args), fused.reference_step(*args))


def test_the_ops_work_under_torch_compile():
    logits, current, noise, uniform, mask_id = inputs(2, 30, 33, 3, torch.float32)
    remain = torch.tensor([5, 9])

    def step(logits, current, noise, uniform, remain):
        return fused.sample_step(logits * 1.0, current, noise, uniform, remain, 3.0, 3.0, 0.9, 0.1, 0.1, 1.0, mask_id)

    compiled = torch.compile(step, fullgraph=True, dynamic=False)
    out = compiled(logits, current, noise, uniform, remain)
    assert torch.equal(out, fused.reference_step(logits, current, noise, uniform, remain, 3.0, 3.0, 0.9, 0.1, 0.1,
                                                 1.0, mask_id))


def tiny_setup(v=16, t=24):
    torch.manual_seed(0)
    model = StemGenModel(ModelConfig.from_name("tiny", cardinality=v)).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.randint(v, (2, 4, t), generator=g), torch.tensor([4, 16])


@pytest.mark.parametrize("guidance,form", [(True, "paper"), (True, "nested"), (False, "paper")])
def test_decoding_with_the_fused_ops_gives_the_eager_tokens(guidance, form):
    model, ctx, inst = tiny_setup()
    prefix = torch.full_like(ctx, model.cfg.mask_id)
    prefix[0, :, :20] = ctx[0, :, :20]  # the first example has only 4 free frames: it finishes early
    runs = {}
    for sampler in ("eager", "fused"):
        s = SamplingSettings(steps=(8, 4, 3, 2), guidance=guidance, guidance_form=form, sampler=sampler,
                             temperature=(1.0, 0.8, 1.0, 0.0), lambda_instrument=1.5)
        runs[sampler] = decode_tokens(model, ctx, inst, s, torch.Generator().manual_seed(5), prefix=prefix)
    assert torch.equal(runs["eager"], runs["fused"])
    assert (runs["fused"] != model.cfg.mask_id).all()
    assert torch.equal(runs["fused"][0, :, :20], ctx[0, :, :20])


def test_unknown_sampler_is_refused():
    with pytest.raises(ValueError, match="sampler must be"):
        SamplingSettings(sampler="triton").check(4)


@pytest.mark.slow
def test_compiled_decoding_steps_on_cpu():
    """Every level and window of a stem runs one compiled graph (the level is a tensor argument):
    one compilation before the first stem instead of one per level."""
    from torch._dynamo.utils import counters

    model, ctx, inst = tiny_setup(t=40)
    eager = SamplingSettings(steps=(4, 2, 2, 2))
    compiled = SamplingSettings(steps=(4, 2, 2, 2), compile=True)
    a = decode_windows(model, ctx, inst, 24, 8, eager, torch.Generator().manual_seed(2))
    torch._dynamo.reset()
    counters.clear()
    b = decode_windows(model, ctx, inst, 24, 8, compiled, torch.Generator().manual_seed(2))
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert b.shape == a.shape and (b != model.cfg.mask_id).all()
    # another batch size runs the same graph (the batch dimension is symbolic)
    decode_windows(model, ctx[:1].repeat(3, 1, 1), inst[:1].repeat(3), 24, 8, compiled, torch.Generator().manual_seed(2))
    assert counters["stats"]["unique_graphs"] == 1
    # the compiled forward pass rounds differently from the eager one, so a near-tie can go the
    # other way; the tokens must still agree almost everywhere
    assert (a == b).float().mean() > 0.9
