"""The reference decoder's invariants on a tiny random model."""

import dataclasses
import math

import pytest
import torch

from stemgen.instruments import NULL_ID
from stemgen.model import ModelConfig, StemGenModel
from stemgen.sampling.decode import SamplingSettings, decode_tokens, level_log_probs
from stemgen.sampling.steps import masked_counts

V, T = 16, 24


class Recorder(torch.nn.Module):
    """Wraps a model and records the target tokens and batch size of every forward call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.cfg, self.calls = model, model.cfg, []

    def forward(self, context, target, instrument, drop_context=None, level=None, fused=False):
        self.calls.append((level, target.clone(), context.shape[0]))
        return self.model(context, target, instrument, drop_context=drop_context, level=level)


def setup(seed=0):
    torch.manual_seed(seed)
    model = StemGenModel(ModelConfig.from_name("tiny", cardinality=V)).eval()
    g = torch.Generator().manual_seed(1)
    return model, torch.randint(V, (2, 4, T), generator=g), torch.tensor([4, 16])


def test_decodes_everything_with_the_scheduled_counts_and_keeps_commits():
    model, ctx, inst = setup()
    rec = Recorder(model)
    settings = SamplingSettings(steps=(6, 4, 3, 2))
    out = decode_tokens(rec, ctx, inst, settings, torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, T) and (out != V).all() and out.max() < V
    for q, steps in enumerate(settings.steps):
        seen = [tgt[:2, q] for level, tgt, _ in rec.calls if level == q]
        masked = [int((s[0] == V).sum()) for s in seen]
        assert masked == [T] + masked_counts(T, steps)[:-1]  # exactly the schedule before each step
        for before, after in zip(seen, seen[1:] + [out[:, q]]):
            kept = before != V
            assert torch.equal(before[kept], after[kept])  # committed tokens never change
    assert all(b == 6 for _, _, b in rec.calls)  # three guidance branches in one batch


def test_same_seed_same_tokens_and_naive_is_one_pass():
    model, ctx, inst = setup()
    s = SamplingSettings(steps=(3, 2, 2, 2))
    a = decode_tokens(model, ctx, inst, s, torch.Generator().manual_seed(7))
    b = decode_tokens(model, ctx, inst, s, torch.Generator().manual_seed(7))
    c = decode_tokens(model, ctx, inst, s, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    rec = Recorder(model)
    decode_tokens(rec, ctx, inst, SamplingSettings(steps=(2, 2, 2, 2), guidance=False), torch.Generator().manual_seed(0))
    assert all(batch == 2 for _, _, batch in rec.calls) and len(rec.calls) == 8


def test_prefix_tokens_are_kept():
    model, ctx, inst = setup()
    prefix = torch.full_like(ctx, V)
    prefix[:, :, :5] = ctx[:, :, :5]  # continuation: the first 5 frames are given
    out = decode_tokens(model, ctx, inst, SamplingSettings(steps=(3, 3, 3, 3)), torch.Generator().manual_seed(0),
                        prefix=prefix)
    assert torch.equal(out[:, :, :5], ctx[:, :, :5]) and (out != V).all()


class Additive(torch.nn.Module):
    """A log-linear model: logits = H + F[context] + G[instrument], F dropped with the context
    and G zero for the null instrument. For it, p(t|a) p(t|i) / p(t) = p(t|a,i) exactly."""

    def __init__(self, levels=2, t=T, v=V, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.cfg = ModelConfig.from_name("tiny", num_levels=levels, cardinality=v)
        self.h = torch.randn(t, v, generator=g)
        self.f = torch.randn(v, v, generator=g)
        self.g = torch.randn(NULL_ID + 1, v, generator=g)
        self.g[NULL_ID] = 0.0

    def terms(self, context, instrument):
        return self.h, self.f[context[:, 0]], self.g[instrument][:, None]  # (T,V), (B,T,V), (B,1,V)

    def forward(self, context, target, instrument, drop_context=None, level=None, fused=False):
        h, f, g = self.terms(context, instrument)
        if drop_context is not None:
            f = f * (~drop_context)[:, None, None]
        return h + f + g


def test_unit_guidance_scales_reproduce_the_naive_distribution():
    model = Additive()
    ctx, inst = torch.randint(V, (3, 2, T)), torch.tensor([0, 4, 16])
    tgt = torch.full_like(ctx, V)
    naive = level_log_probs(model, ctx, tgt, inst, 0, SamplingSettings.naive(steps=(2, 2), temperature=(1.0, 1.0)))
    unit = level_log_probs(model, ctx, tgt, inst, 0, SamplingSettings(lambda_context=1.0, lambda_instrument=1.0))
    torch.testing.assert_close(unit, naive, atol=1e-5, rtol=0)
    # other scales weight each source's term: log p~ = log softmax(H + la F + li G), by hand
    h, f, g = model.terms(ctx, inst)
    guided = level_log_probs(model, ctx, tgt, inst, 0, SamplingSettings(lambda_context=2.0, lambda_instrument=0.5))
    torch.testing.assert_close(guided, (h + 2.0 * f + 0.5 * g).log_softmax(-1), atol=1e-5, rtol=0)
    # so the whole decode is the same at unit scales (same seed, same draws)
    s1 = SamplingSettings(steps=(4, 3), temperature=(1.0, 1.0), lambda_context=1.0, lambda_instrument=1.0)
    s0 = SamplingSettings(steps=(4, 3), temperature=(1.0, 1.0), guidance=False)
    a = decode_tokens(model, ctx, inst, s1, torch.Generator().manual_seed(3))
    b = decode_tokens(model, ctx, inst, s0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def all_masked_branches(model, ctx, inst):
    """An all-masked target and level 0's log-probabilities ``(B, T, V)`` under p(t|a,i), p(t|i), p(t)."""
    tgt = torch.full_like(ctx, model.cfg.mask_id)
    drop = torch.ones(ctx.shape[0], dtype=torch.bool)
    with torch.no_grad():
        ai = model(ctx, tgt, inst, level=0).log_softmax(-1)
        i = model(ctx, tgt, inst, drop_context=drop, level=0).log_softmax(-1)
        none = model(ctx, tgt, torch.full_like(inst, NULL_ID), drop_context=drop, level=0).log_softmax(-1)
    return tgt, ai, i, none


def test_nested_guidance_combines_the_conditioned_branches_by_hand():
    """Nested guidance is log p(t) + li (log p(t|i) - log p(t)) + la (log p(t|a,i) - log p(t|i)),
    from the model's own branches (the tiny transformer: no product-of-experts shortcut)."""
    model, ctx, inst = setup()
    tgt, ai, i, none = all_masked_branches(model, ctx, inst)
    for la, li in [(3.0, 1.0), (2.0, 0.5), (1.0, 1.0)]:
        s = SamplingSettings(guidance_form="nested", lambda_context=la, lambda_instrument=li)
        got = level_log_probs(model, ctx, tgt, inst, 0, s)
        want = (none + li * (i - none) + la * (ai - i)).log_softmax(-1)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # at unit scales it is the naive distribution p(t|a,i); the paper's form is not (the model
    # is not a product of experts)
    unit = level_log_probs(model, ctx, tgt, inst, 0, SamplingSettings(guidance_form="nested", lambda_context=1.0,
                                                                      lambda_instrument=1.0))
    torch.testing.assert_close(unit, ai, atol=1e-4, rtol=0)
    paper = level_log_probs(model, ctx, tgt, inst, 0, SamplingSettings(lambda_context=1.0, lambda_instrument=1.0))
    assert (paper - ai).abs().max() > 1e-2
    with pytest.raises(ValueError, match="guidance_form must be"):
        SamplingSettings(guidance_form="cfg").check(4)


def test_shifted_guidance_contrasts_the_context_with_itself_misaligned():
    """The "shifted" form is nested guidance whose reference branch hears the same context rolled
    along time by ``context_shift`` of the window: log p(t|a',i) + la (log p(t|a,i) - log p(t|a',i))
    at li = 1, from the model's own branches; the fused and eager samplers commit the same tokens."""
    model, ctx, inst = setup()
    tgt, ai, _, none = all_masked_branches(model, ctx, inst)
    for frac, frames in [(0.5, 12), (0.25, 6), (0.01, 0)]:
        with torch.no_grad():
            shifted = model(ctx.roll(frames, -1), tgt, inst, level=0).log_softmax(-1)
        for la, li in [(3.0, 1.0), (2.0, 0.5)]:
            s = SamplingSettings(guidance_form="shifted", lambda_context=la, lambda_instrument=li, context_shift=frac)
            got = level_log_probs(model, ctx, tgt, inst, 0, s)
            want = (none + li * (shifted - none) + la * (ai - shifted)).log_softmax(-1)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # a shift of no frames leaves the context's guidance nothing to push: the naive p(t|a,i)
    s0 = SamplingSettings(guidance_form="shifted", lambda_context=3.0, lambda_instrument=1.0, context_shift=0.01)
    torch.testing.assert_close(level_log_probs(model, ctx, tgt, inst, 0, s0), ai, atol=1e-4, rtol=0)
    s = SamplingSettings(steps=(4, 3, 2, 2), guidance_form="shifted", lambda_instrument=1.0)
    rec = Recorder(model)
    out = decode_tokens(rec, ctx, inst, s, torch.Generator().manual_seed(0))
    assert [n for _, _, n in rec.calls] == [2 * ctx.shape[0]] * len(rec.calls)  # two branches, as nested
    eager = decode_tokens(model, ctx, inst, dataclasses.replace(s, sampler="eager"), torch.Generator().manual_seed(0))
    assert torch.equal(out, eager) and (out != model.cfg.mask_id).all()
    for bad in (0.0, 1.0, -0.5):
        with pytest.raises(ValueError, match="context_shift"):
            dataclasses.replace(s, context_shift=bad).check(4)


def test_a_branch_weighted_zero_is_not_run():
    """Nested guidance with lambda_i = 1 weights p(t) by 0: it is not run (two branches a step,
    not three), and the log-probabilities and the tokens are those of the three-branch step."""
    model, ctx, inst = setup()
    tgt, ai, i, _ = all_masked_branches(model, ctx, inst)
    b = ctx.shape[0]
    for la, li, runs in [(3.0, 1.0, 2 * b), (3.0, 0.5, 3 * b)]:
        s = SamplingSettings(guidance_form="nested", lambda_context=la, lambda_instrument=li)
        assert s.unconditional_weight() == pytest.approx(1.0 - li)
        rec = Recorder(model)
        level_log_probs(rec, ctx, tgt, inst, 0, s)
        assert [n for _, _, n in rec.calls] == [runs]
    assert SamplingSettings().unconditional_weight() == -5.0  # the paper's eq. 3 at lambda 3, 3 runs all three
    # lambda_i = 1: log p(t|i) + lambda_a (log p(t|a,i) - log p(t|i)), from the two branches run
    two = SamplingSettings(guidance_form="nested", lambda_context=3.0, lambda_instrument=1.0, steps=(4, 2, 2, 2))
    torch.testing.assert_close(level_log_probs(model, ctx, tgt, inst, 0, two), (i + 3.0 * (ai - i)).log_softmax(-1),
                               atol=1e-4, rtol=0)
    # whole decodes, fused and eager: the tokens of a step that runs the third branch at a weight of 1e-9
    for sampler in ("fused", "eager"):
        fast = dataclasses.replace(two, sampler=sampler)
        full = dataclasses.replace(fast, lambda_instrument=1.0 + 1e-9)
        assert full.unconditional_weight() != 0.0
        a = decode_tokens(model, ctx, inst, fast, torch.Generator().manual_seed(5))
        c = decode_tokens(model, ctx, inst, full, torch.Generator().manual_seed(5))
        assert (a != model.cfg.mask_id).all() and (a == c).float().mean() > 0.95


def test_runs_null_instrument_says_whether_a_step_asks_an_instrument_free_branch():
    """What `SamplingSettings.runs_null_instrument` says is what a step does: it decides whether an
    ensemble's null-instrument members are left out of a stem's decoding (StemModel.model_for)."""
    model, ctx, inst = setup()
    tgt = torch.full_like(ctx, model.cfg.mask_id)
    asked = []

    class Spy(Recorder):
        def forward(self, context, target, instrument, drop_context=None, level=None, fused=False):
            asked.append(bool((instrument == NULL_ID).any()))
            return super().forward(context, target, instrument, drop_context, level, fused)

    for s, expect in [(SamplingSettings.naive(), False), (SamplingSettings(), True),
                      (SamplingSettings(lambda_context=0.5, lambda_instrument=0.5), True),  # p(t) weight 0, p(t|a) run
                      (SamplingSettings(guidance_form="nested", lambda_instrument=1.0), False),
                      (SamplingSettings(guidance_form="nested", lambda_instrument=3.0), True),
                      (SamplingSettings(guidance_form="shifted", lambda_instrument=1.0), False),
                      (SamplingSettings(guidance_form="shifted", lambda_instrument=2.0), True)]:
        asked.clear()
        level_log_probs(Spy(model), ctx, tgt, inst, 0, s)
        assert s.runs_null_instrument() is expect and asked == [expect], s


def test_naive_preset_and_settings_errors():
    s = SamplingSettings.naive()
    assert not s.guidance and s.w_position == 0.0 and s.w_random == 1.0 and s.steps == (128, 64, 32, 32)
    model, ctx, inst = setup()
    for bad, match in [(dict(steps=(2, 2)), "one value per level"), (dict(steps=(2, 0, 2, 2)), "at least one"),
                       (dict(temperature=(1.0, -1.0, 1.0, 1.0)), ">= 0"), (dict(w_position=float("nan")), "finite")]:
        with pytest.raises(ValueError, match=match):
            decode_tokens(model, ctx, inst, SamplingSettings(**bad))


def test_callback_reports_every_step_of_every_level():
    model, ctx, inst = setup()
    seen = []
    decode_tokens(model, ctx, inst, SamplingSettings(steps=(3, 2, 2, 1)), torch.Generator().manual_seed(0),
                  callback=lambda q, s, n: seen.append((q, s, n)))
    assert seen == [(0, 1, 3), (0, 2, 3), (0, 3, 3), (1, 1, 2), (1, 2, 2), (2, 1, 2), (2, 2, 2), (3, 1, 1)]


def test_pure_causal_bias_decodes_every_level_left_to_right():
    model, ctx, inst = setup()
    rec = Recorder(model)
    s = SamplingSettings(steps=(5, 4, 3, 3), w_confidence=0.0, w_position=1.0, w_random=0.0)
    decode_tokens(rec, ctx, inst, s, torch.Generator().manual_seed(0))
    for level, tgt, _ in rec.calls:
        decoded = tgt[:2, level] != V  # (B, T)
        n = decoded.sum(-1, keepdim=True)
        assert torch.equal(decoded, torch.arange(T)[None] < n)  # always a prefix in time


def test_steps_that_commit_nothing_skip_the_forward_pass_and_change_no_token():
    """With 4 of 24 positions free and 12 steps, most steps' scheduled count does not fall: only
    the steps that commit run the model, and the tokens are those of running every step (the
    same noise stream, read by decode_step at every step)."""
    from stemgen.sampling.decode import _step_noise, decode_level, decode_step

    model, ctx, inst = setup()
    prefix = torch.full_like(ctx, V)
    prefix[:, :, 4:] = ctx[:, :, 4:]  # only frames 0-3 to decode
    settings = SamplingSettings(steps=(12, 2, 2, 2), sampler="eager")
    rec = Recorder(model)
    out = decode_level(rec, ctx, prefix, inst, 0, settings, torch.Generator().manual_seed(3))
    counts = [(4 * c) // T for c in masked_counts(T, 12)]
    committing = sum(now < before for now, before in zip(counts, [4] + counts))
    assert len(rec.calls) == committing < 12
    g, target = torch.Generator().manual_seed(3), prefix.clone()
    for step, remain in enumerate(counts):  # every step, committing or not
        seeds, uniform = _step_noise(g, (2, T), step, [12, 12], ctx.device)
        target[:, 0] = decode_step(model, ctx, target, inst, seeds, uniform, torch.tensor([remain] * 2),
                                   torch.tensor(0), 1.0, settings)
    assert torch.equal(out, target) and (out[:, 0] != V).all()


class SilenceProne(torch.nn.Module):
    """Silence (code 0) the likeliest single code, p = 0.1, the rest spread over the other codes;
    once a frame is silent, its neighbours become silent with p = 0.9 (as a trained model copies)."""

    def __init__(self, v=64):
        super().__init__()
        self.cfg = ModelConfig.from_name("tiny", num_levels=2, cardinality=v)

    def forward(self, context, target, instrument, drop_context=None, level=None, fused=False):
        b, _, t = target.shape
        v = self.cfg.cardinality
        logits = torch.full((b, t, v), math.log(0.9 / (v - 1)))  # sound: 0.9 over v - 1 codes
        tokens = target[:, int(level)]
        silent_near = torch.zeros(b, t, dtype=torch.bool)
        silent_near[:, 1:] |= tokens[:, :-1] == 0
        silent_near[:, :-1] |= tokens[:, 1:] == 0
        # p_s = 0.1 (e^x / (e^x + 0.9)), 0.9 beside a silent frame
        logits[..., 0] = torch.where(silent_near, math.log(8.1), math.log(0.1))
        return logits


def test_the_silence_gate_keeps_a_sharpened_stem_from_falling_silent():
    model = SilenceProne()
    ctx, inst = torch.randint(64, (8, 2, 40)), torch.full((8,), 4)
    silence = (0, 0)

    def silent_fraction(settings, seed=0):
        out = decode_tokens(model, ctx, inst, settings, torch.Generator().manual_seed(seed), silence=silence)
        return float((out[:, 0] == 0).float().mean())

    sharp = dict(steps=(8, 2), guidance=False, temperature=(0.5, 1.0))
    gated, plain = SamplingSettings(**sharp), SamplingSettings(**sharp, silence_gate=False)
    assert silent_fraction(plain) > 0.5  # silence wins the first frames, then spreads
    assert silent_fraction(gated) < 0.1
    # without the codes nothing is gated; at temperature 1 the gate changes nothing
    out = decode_tokens(model, ctx, inst, gated, torch.Generator().manual_seed(0))
    assert torch.equal(out, decode_tokens(model, ctx, inst, plain, torch.Generator().manual_seed(0), silence=silence))
    one = dict(steps=(8, 2), guidance=False, temperature=(1.0, 1.0))
    assert torch.equal(decode_tokens(model, ctx, inst, SamplingSettings(**one), torch.Generator().manual_seed(1),
                                     silence=silence),
                       decode_tokens(model, ctx, inst, SamplingSettings(**one, silence_gate=False),
                                     torch.Generator().manual_seed(1), silence=silence))
    # the gate at its own temperature: at temperature 1, whether the stem sounds decided at 0.3
    warm = SamplingSettings(**one)
    sure = SamplingSettings(**one, silence_temperature=0.3)
    assert silent_fraction(sure) < 0.5 * silent_fraction(warm)
    with pytest.raises(ValueError, match="silence_temperature"):
        SamplingSettings(silence_temperature=0.0).check(4)


def test_refine_redecodes_the_worst_fitting_blocks_and_keeps_the_rest():
    model, ctx, inst = setup()
    plain = SamplingSettings(steps=(4, 2, 2, 2))
    refined = dataclasses.replace(plain, refine=(0.5, 0.0, 0.0, 0.0), refine_block=4)  # 6 blocks of 4 frames
    before = decode_tokens(model, ctx, inst, plain, torch.Generator().manual_seed(3))
    rec = Recorder(model)
    after = decode_tokens(rec, ctx, inst, refined, torch.Generator().manual_seed(3))
    assert (after != V).all()
    level0 = [tgt for level, tgt, _ in rec.calls if int(level) == 0]
    assert len(level0) == 4 + 2 + 2  # the decoding, two scoring passes, ceil(0.5 x 4) steps again
    block = torch.arange(T) // 4
    for parity, probe in zip((0, 1), level0[4:6]):  # each pass masks one parity of blocks, nothing else
        assert torch.equal(probe[:2, 0] == V, (block % 2 == parity).expand(2, T))
        assert torch.equal(probe[:2, 0][:, block % 2 != parity], before[:, 0][:, block % 2 != parity])
    again = level0[6][:2, 0] == V  # (B, T): the blocks masked for the second decoding
    for i in range(2):
        chosen = block[again[i]].unique()
        assert len(chosen) == 3 and torch.equal(again[i], torch.isin(block, chosen))
        # the chosen blocks are those whose tokens the scoring passes found least likely
        scores = torch.zeros(T)
        for parity, probe in zip((0, 1), level0[4:6]):
            lp = level_log_probs(model, ctx[i:i + 1], probe[i:i + 1], inst[i:i + 1], 0, refined)[0]
            hide = block % 2 == parity
            scores[hide] = lp.gather(-1, before[i, 0].unsqueeze(-1))[hide, 0]
        means = torch.stack([scores[block == j].mean() for j in range(6)])
        assert set(chosen.tolist()) == set(means.argsort()[:3].tolist())
        assert torch.equal(after[i, 0][~again[i]], before[i, 0][~again[i]])  # the rest kept
    # nothing to refine: the plain decoder's tokens; a prefix is never scored nor changed
    assert torch.equal(decode_tokens(model, ctx, inst, dataclasses.replace(plain, refine=(0.0,) * 4),
                                     torch.Generator().manual_seed(3)), before)
    prefix = torch.full_like(ctx, V)
    prefix[:, :, :6] = before[:, :, :6]
    rec = Recorder(model)
    kept = decode_tokens(rec, ctx, inst, refined, torch.Generator().manual_seed(5), prefix=prefix)
    assert torch.equal(kept[..., :6], before[..., :6])
    assert all(not (tgt[:2, 0, :6] == V).any() for level, tgt, _ in rec.calls if int(level) == 0)
    for bad in ({"refine": (0.5,)}, {"refine": (1.5, 0, 0, 0)}, {"refine_block": 0}):
        with pytest.raises(ValueError, match="refine"):
            dataclasses.replace(plain, **bad).check(4)
