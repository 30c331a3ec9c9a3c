import math

import torch

from stemgen.instruments import NULL_ID
from stemgen.model.masking import cosine_mask_count, drop_conditions, soundstorm_mask

MASK = 99


def test_cosine_count_bounds():
    u = torch.tensor([0.0, 0.5, 0.999999])
    assert cosine_mask_count(u, 100).tolist() == [100, 70, 1]


def test_masking_invariants_over_many_draws():
    g = torch.Generator().manual_seed(0)
    b, q, t = 4000, 4, 50
    target = torch.randint(64, (b, q, t), generator=g)
    m = soundstorm_mask(target, MASK, g)
    is_mask = m.inputs == MASK
    lv = torch.arange(q)[None, :, None]
    level = m.level[:, None, None]
    assert torch.equal(m.inputs[~is_mask], target[~is_mask])  # only MASK ids are introduced
    assert not (is_mask & (lv < level)).any()  # coarser levels are given
    assert (is_mask | ~(lv > level)).all()  # finer levels are fully masked
    at_level = is_mask.gather(1, m.level[:, None, None].expand(-1, 1, t))[:, 0]  # (B, T)
    assert torch.equal(at_level, m.loss_mask)
    counts = m.loss_mask.sum(1)
    assert counts.min() >= 1 and counts.max() <= t
    # mean masked fraction: E[cos(u pi/2)] = 2/pi (floor lowers it by < 1/T)
    assert abs(counts.float().mean() / t - 2 / math.pi) < 0.02
    freq = torch.bincount(m.level, minlength=q).float() / b
    assert (freq - 0.25).abs().max() < 0.03


def test_condition_dropout_rates_are_independent():
    g = torch.Generator().manual_seed(0)
    inst = torch.full((20000,), 4)
    drop_ctx, new_inst = drop_conditions(inst, 0.1, 0.3, g)
    dropped_inst = new_inst == NULL_ID
    assert abs(drop_ctx.float().mean() - 0.1) < 0.01 and abs(dropped_inst.float().mean() - 0.3) < 0.015
    assert abs((drop_ctx & dropped_inst).float().mean() - 0.03) < 0.006
    assert (new_inst[~dropped_inst] == 4).all()
    none_ctx, same = drop_conditions(inst, 0.0, 0.0, g)
    assert not none_ctx.any() and torch.equal(same, inst)


def test_instrument_free_examples_always_lose_their_instrument_and_change_no_other_draw():
    inst = torch.arange(1, 101) % 7 + 1
    free = torch.arange(100) % 3 == 0
    drop_ctx, plain = drop_conditions(inst, 0.2, 0.3, torch.Generator().manual_seed(5))
    same_ctx, flagged = drop_conditions(inst, 0.2, 0.3, torch.Generator().manual_seed(5), free)
    assert torch.equal(drop_ctx, same_ctx)
    assert (flagged[free] == NULL_ID).all() and torch.equal(flagged[~free], plain[~free])
    assert (plain[free] != NULL_ID).any()  # the flag, not the draw, dropped them


def test_fixed_level():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(64, (50, 4, 20), generator=g)
    m = soundstorm_mask(target, MASK, g, level=2)
    assert (m.level == 2).all()
    assert (m.inputs[:, :2] == target[:, :2]).all() and (m.inputs[:, 3] == MASK).all()


def test_full_masking_masks_the_whole_level_as_often_as_asked():
    import torch

    from stemgen.model.masking import soundstorm_mask

    tgt = torch.zeros(4000, 4, 20, dtype=torch.long)
    plain = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0))
    full = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), p_full_mask=0.5)
    share = lambda m: m.loss_mask.all(1).float().mean().item()  # noqa: E731
    assert share(plain) < 0.1 and abs(share(full) - (0.5 + 0.5 * share(plain))) < 0.03
    # a fully masked level hides that level and every finer one; coarser levels stay given
    rows = full.loss_mask.all(1)
    lv = full.level[rows]
    hidden = full.inputs[rows] == 99  # (N, Q, T)
    for q in range(4):
        assert (hidden[:, q].all(-1) == (lv <= q)).all()


def test_full_masking_per_level():
    import pytest
    import torch

    from stemgen.model.masking import soundstorm_mask

    tgt = torch.zeros(8000, 4, 20, dtype=torch.long)
    plain = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0))
    out = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), p_full_mask=[0.8, 0.0, 0.3, 0.3])
    full = out.loss_mask.all(1)
    base = plain.loss_mask.all(1).float().mean().item()  # the cosine draw's own all-masked share
    for q, p in enumerate([0.8, 0.0, 0.3, 0.3]):
        share = full[out.level == q].float().mean().item()
        assert abs(share - (p + (1 - p) * base)) < 0.04, (q, share)
    # one value for every level draws exactly what the scalar draws
    same = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), p_full_mask=[0.5] * 4)
    scalar = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), p_full_mask=0.5)
    assert torch.equal(same.inputs, scalar.inputs) and torch.equal(same.loss_mask, scalar.loss_mask)
    # all zeros leaves the paper's draw (and its random stream) alone
    zero = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), p_full_mask=[0.0] * 4)
    assert torch.equal(zero.inputs, plain.inputs)
    for bad in ([0.5, 0.5], [0.5, 1.5, 0.0, 0.0], -0.1):
        with pytest.raises(ValueError, match="p_full_mask"):
            soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), p_full_mask=bad)


def test_level_weights_set_how_often_each_level_is_trained():
    import pytest
    import torch

    from stemgen.model.masking import soundstorm_mask

    tgt = torch.zeros(8000, 4, 20, dtype=torch.long)
    out = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), level_weights=[5.0, 1.0, 1.0, 1.0])
    share = torch.bincount(out.level, minlength=4).float() / 8000
    assert abs(share[0] - 0.625) < 0.02 and all(abs(share[q] - 0.125) < 0.015 for q in (1, 2, 3))
    never = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), level_weights=[1.0, 0.0, 1.0, 0.0])
    assert set(never.level.unique().tolist()) == {0, 2}
    # uniform weights leave the default draw (and its random stream) alone
    plain = soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0))
    assert torch.equal(plain.level, soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), level_weights=None).level)
    for bad in ([1.0, 1.0], [1.0, -1.0, 1.0, 1.0], [0.0] * 4):
        with pytest.raises(ValueError, match="level_weights needs 4"):
            soundstorm_mask(tgt, 99, torch.Generator().manual_seed(0), level_weights=bad)


def test_prefix_masking_gives_a_prefix_and_masks_the_rest_of_the_level():
    import pytest

    from stemgen.model.masking import PREFIX_FRACTION

    t = 50
    tgt = torch.randint(64, (6000, 4, t), generator=torch.Generator().manual_seed(1))
    plain = soundstorm_mask(tgt, MASK, torch.Generator().manual_seed(0))
    out = soundstorm_mask(tgt, MASK, torch.Generator().manual_seed(0), p_full_mask=[0.8, 0.3, 0.3, 0.3],
                          p_prefix=[0.5, 0.0, 0.2, 0.2])
    ref = soundstorm_mask(tgt, MASK, torch.Generator().manual_seed(0), p_full_mask=[0.8, 0.3, 0.3, 0.3])
    cont = (out.loss_mask != ref.loss_mask).any(1)  # (B,) the continuations (the same draws before them)
    assert torch.equal(out.level, ref.level)
    for q, p in enumerate([0.5, 0.0, 0.2, 0.2]):
        share = cont[out.level == q].float().mean().item()
        assert abs(share - p) < 0.04, (q, share)
    # a continuation: given before its first masked frame, masked from there to the end
    pos = torch.arange(t)
    first = torch.where(out.loss_mask, pos, t).min(1).values  # (B,)
    assert (out.loss_mask[cont] == (pos[None] >= first[cont, None])).all()
    lo, hi = (round(f * t) for f in PREFIX_FRACTION)
    given = first[cont]
    assert given.min() >= lo and given.max() <= hi and given.float().std() > 5  # spread over the range
    # the prefix is given on the trained level, every coarser level too, finer levels hidden
    rows = cont.nonzero()[:, 0]
    for i in rows[:200].tolist():
        q, k = int(out.level[i]), int(first[i])
        assert torch.equal(out.inputs[i, q, :k], tgt[i, q, :k]) and (out.inputs[i, q, k:] == MASK).all()
        assert torch.equal(out.inputs[i, :q], tgt[i, :q]) and (out.inputs[i, q + 1:] == MASK).all()
    # levels the prefix never touches keep their full-masking share
    full = out.loss_mask.all(1)
    base = plain.loss_mask.all(1).float().mean().item()
    assert abs(full[out.level == 1].float().mean().item() - (0.3 + 0.7 * base)) < 0.04
    # all zeros leaves the earlier draws (and the random stream) alone
    zero = soundstorm_mask(tgt, MASK, torch.Generator().manual_seed(0), p_prefix=0.0)
    assert torch.equal(zero.inputs, plain.inputs)
    with pytest.raises(ValueError, match="p_prefix"):
        soundstorm_mask(tgt, MASK, torch.Generator().manual_seed(0), p_prefix=[0.5, 0.5])


def test_prefix_frames_gives_at_least_one_frame_and_masks_at_least_one():
    from stemgen.model.masking import prefix_frames

    assert prefix_frames(0.25, 200) == 50
    assert prefix_frames(0.1, 200) == 20 and prefix_frames(0.9, 200) == 180
    assert prefix_frames(0.0, 200) == 1 and prefix_frames(1.0, 200) == 199  # never all given or none
    assert prefix_frames(0.25, 2) == 1
