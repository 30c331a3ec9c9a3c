import math

import pytest
import torch

from stemgen.sampling.steps import (causal_bias_scores, commit, guided_log_probs, gumbel_noise, hashed_uniform,
                                    masked_counts, sample_candidates, silence_gated)

MASK = 99


def test_schedule_is_cosine_and_ends_unmasked():
    c = masked_counts(1000, 128)
    assert c[0] == math.floor(1000 * math.cos(math.pi / 2 / 128)) and c[-1] == 0
    assert all(a >= b for a, b in zip(c, c[1:]))
    assert masked_counts(5, 1) == [0]
    with pytest.raises(ValueError):
        masked_counts(5, 0)


def test_guidance_matches_a_hand_computation():
    a = torch.tensor([2.0, 0.0, -1.0])
    i = torch.tensor([0.0, 1.0, 0.0])
    u = torch.tensor([0.5, 0.5, 0.5])
    out = guided_log_probs(a, i, u, 3.0, 3.0)
    expected = 3 * a.log_softmax(-1) + 3 * i.log_softmax(-1) - 5 * u.log_softmax(-1)
    assert torch.allclose(out, expected.log_softmax(-1))
    assert torch.allclose(out.exp().sum(), torch.tensor(1.0))
    # one source at scale 1, the other at 0: exactly that branch's distribution
    assert torch.allclose(guided_log_probs(a, i, u, 1.0, 0.0), a.log_softmax(-1), atol=1e-6)


def test_candidates_follow_the_distribution_and_temperature():
    g = torch.Generator().manual_seed(0)
    logp = torch.tensor([0.7, 0.2, 0.1]).log().expand(20000, 1, 3)
    tokens, prob = sample_candidates(logp, 1.0, gumbel_noise(logp.shape, g))
    freq = torch.bincount(tokens.flatten(), minlength=3).float() / tokens.numel()
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.015)
    assert torch.allclose(prob[tokens == 0], torch.tensor(0.7))
    greedy, p0 = sample_candidates(logp[:2], 0.0, gumbel_noise(logp[:2].shape, g))
    assert (greedy == 0).all() and torch.allclose(p0, torch.tensor(0.7))


def test_silence_gate_tempers_whether_and_what_separately():
    # a bass silent with probability 0.07, its sound spread over 31 codes of 0.03 each
    p = torch.tensor([0.07] + [0.93 / 31] * 31)
    lp = p.log()[None]
    plain = (lp / 0.5).log_softmax(-1).exp()[0]
    assert plain[0] > 2 * 0.07  # sharpened code by code, silence gains: its probability doubles
    q = silence_gated(lp, 0.5, 0)[0].exp()
    torch.testing.assert_close(q.sum(), torch.tensor(1.0))
    gate = 0.07 ** 2 / (0.07 ** 2 + 0.93 ** 2)  # whether: p_s^(1/t) against (1 - p_s)^(1/t)
    torch.testing.assert_close(q[0], torch.tensor(gate))
    torch.testing.assert_close(q[1:], torch.full((31,), (1 - gate) / 31))  # what: uniform stays uniform
    # uneven sound: sharpened among the sounding codes as plain tempering would
    p = torch.tensor([0.2, 0.5, 0.2, 0.1])
    q = silence_gated(p.log(), 0.5, 0).exp()
    sound = p[1:] ** 2 / (p[1:] ** 2).sum()
    torch.testing.assert_close(q, torch.cat([torch.tensor([0.04 / 0.68]), sound * 0.64 / 0.68]))
    # temperature 1: the distribution itself; silence certain or impossible stays so
    torch.testing.assert_close(silence_gated(p.log(), 1.0, 0).exp(), p)
    assert silence_gated(torch.tensor([0.0, -math.inf]), 0.5, 0).exp()[0] == 1.0
    assert silence_gated(torch.tensor([-math.inf, 0.0, 0.0]), 0.5, 0).exp()[0] == 0.0
    # the gate at its own temperature: whether at 0.5, what at 1 (the sounding codes as they are)
    p = torch.tensor([0.2, 0.5, 0.2, 0.1])
    q = silence_gated(p.log(), 1.0, 0, silence_temperature=0.5).exp()
    torch.testing.assert_close(q, torch.cat([torch.tensor([0.04 / 0.68]), p[1:] / 0.8 * 0.64 / 0.68]))
    # sampling: the gated probabilities come back as the candidates' confidence
    lp = torch.tensor([[[math.log(0.07)] + [math.log(0.93 / 31)] * 31]]).expand(1, 4000, 32)
    tokens, conf = sample_candidates(lp, 0.5, gumbel_noise((1, 4000, 32), torch.Generator().manual_seed(0)), 0)
    silent = (tokens == 0).float().mean()
    assert abs(silent - gate) < 0.006 and torch.allclose(conf[tokens == 0], torch.tensor(gate))
    plain_tokens, _ = sample_candidates(lp, 0.5, gumbel_noise((1, 4000, 32), torch.Generator().manual_seed(0)))
    assert (plain_tokens == 0).float().mean() > 0.13 > 20 * gate


def test_silence_gate_at_temperature_zero_is_silent_only_where_silence_is_likelier_than_sound():
    lp = torch.tensor([[[0.4, 0.35, 0.25], [0.6, 0.3, 0.1], [0.3, 0.2, 0.5]]]).log()  # (1, 3, 3)
    zero = torch.zeros(1, 3, 3)
    assert sample_candidates(lp, 0.0, zero)[0].tolist() == [[0, 0, 2]]  # plain argmax
    tokens, conf = sample_candidates(lp, 0.0, zero, silence_code=0)
    assert tokens.tolist() == [[1, 0, 2]]  # 0.4 < 0.6 of sound: the likeliest sounding code
    torch.testing.assert_close(conf, torch.tensor([[0.35, 0.6, 0.5]]))  # untempered, as without the gate


def test_commit_counts_and_never_changes_decoded_tokens():
    g = torch.Generator().manual_seed(0)
    cur = torch.full((3, 10), MASK)
    cur[:, :3] = 5  # already decoded
    cand = torch.randint(8, (3, 10), generator=g)
    out = commit(cur, cand, torch.rand(3, 10, generator=g), MASK, remain_masked=4)
    assert ((out == MASK).sum(-1) == 4).all()
    assert (out[:, :3] == 5).all()
    newly = (cur == MASK) & (out != MASK)
    assert torch.equal(out[newly], cand[newly])


def test_strong_position_bias_decodes_in_time_order():
    cur = torch.full((1, 8), MASK)
    cand = torch.arange(8)[None]
    scores = causal_bias_scores(torch.rand(1, 8), torch.rand(1, 8), w_confidence=0.0, w_position=10.0, w_random=0.0)
    for remain, expect in ((6, 2), (3, 5)):
        cur = commit(cur, cand, scores, MASK, remain)
        assert (cur[0, :expect] != MASK).all() and (cur[0, expect:] == MASK).all()


def test_level_schedule_scales_to_each_example_and_marks_the_steps_that_commit():
    from stemgen.sampling.steps import level_schedule

    remain, own_steps, commits = level_schedule([24, 4, 0], 24, 6)
    assert [row[0] for row in remain] == masked_counts(24, 6)  # a fully masked example: the schedule
    assert [row[1] for row in remain] == [(4 * c) // 24 for c in masked_counts(24, 6)]
    assert all(row[2] == 0 for row in remain) and own_steps[2] == 0
    assert own_steps[:2] == [6, 6] and all(commits)  # the first example commits at every step
    _, own, commits = level_schedule([4], 24, 6)
    counts = [4] + [(4 * c) // 24 for c in masked_counts(24, 6)]
    assert commits == [a > b for a, b in zip(counts, counts[1:])] and not all(commits) and own == [6]


def _fmix32(x: int) -> int:
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & 0xFFFFFFFF
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & 0xFFFFFFFF
    return x ^ (x >> 16)


def test_hashed_uniform_is_the_documented_integer_hash():
    # plain Python integers as the specification: the same bits on every machine
    seeds = torch.tensor([0, 1, 2**32 - 1, 123456789])
    u = hashed_uniform(seeds, 3, 5)
    assert u.shape == (4, 3, 5) and u.dtype == torch.float32
    for b, seed in enumerate(seeds.tolist()):
        for t in range(3):
            for v in range(5):
                h = _fmix32(_fmix32(t * 5 + v) ^ seed)
                assert u[b, t, v].item() == (h >> 8) / 2**24


def test_hashed_uniform_looks_uniform_and_independent():
    u = hashed_uniform(torch.tensor([7, 8]), 200, 2048)  # one decoding step of a 4 s window
    assert (u >= 0).all() and (u < 1).all()
    counts = torch.histc(u[0], bins=16, min=0.0, max=1.0)
    expected = u[0].numel() / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 40.0  # 15 degrees of freedom: p < 0.001 above ~37.7
    for a, b in ((u[0, :, :-1], u[0, :, 1:]), (u[0, :-1], u[0, 1:]), (u[0], u[1])):  # neighbours, seeds
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert abs(float(r)) < 0.01
    with pytest.raises(ValueError, match="32-bit counter"):
        hashed_uniform(torch.tensor([0]), 2**17, 2**16)
