"""Long generation over overlapping windows, continuation and inpainting."""

import pytest
import torch

from stemgen.sampling.decode import SamplingSettings, decode_tokens
from stemgen.sampling.windows import decode_windows, window_starts

from .test_decode import V, Recorder, setup

S = SamplingSettings(steps=(3, 2, 2, 2))


def test_window_starts_cover_the_sequence_with_full_windows():
    assert window_starts(10, 4, 1) == [0, 3, 6]
    assert window_starts(11, 4, 1) == [0, 3, 6, 7]
    assert window_starts(4, 4, 1) == [0] and window_starts(3, 4, 0) == [0]
    for t, w, o in [(50, 20, 5), (57, 16, 8), (100, 30, 0)]:
        starts = window_starts(t, w, o)
        assert starts[-1] + w == t and all(b - a <= w - o for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match="overlap"):
        window_starts(10, 4, 4)


def test_long_generation_carries_the_overlap_as_prefix():
    model, _, inst = setup()
    ctx = torch.randint(V, (2, 4, 50), generator=torch.Generator().manual_seed(2))
    rec = Recorder(model)
    out = decode_windows(rec, ctx, inst, window=20, overlap=5, settings=S, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 4, 50) and (out != V).all()
    assert all(tgt.shape[-1] == 20 for _, tgt, _ in rec.calls)  # the model only sees its window
    # at level 0, windows start at 0, 15, 30: the first call of each later window already holds
    # the previous window's tokens in the overlap, and the final tokens keep them
    level0 = [tgt[:2, 0] for level, tgt, _ in rec.calls if level == 0]
    assert len(level0) == 3 * S.steps[0]
    firsts = level0[:: S.steps[0]]
    for start, first in zip([15, 30], firsts[1:]):
        assert torch.equal(first[:, :5], out[:, 0, start:start + 5]) and (first[:, 5:] == V).all()


def test_short_input_is_one_window_and_matches_the_plain_decoder():
    model, ctx, inst = setup()
    a = decode_windows(model, ctx, inst, window=64, overlap=8, settings=S, generator=torch.Generator().manual_seed(4))
    b = decode_tokens(model, ctx, inst, S, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)


def test_inpainting_and_continuation_keep_the_given_tokens():
    model, _, inst = setup()
    ctx = torch.randint(V, (2, 4, 40), generator=torch.Generator().manual_seed(5))
    first = decode_windows(model, ctx, inst, 16, 4, S, torch.Generator().manual_seed(0))
    # inpainting: frames 10..25 regenerated on every level, the rest untouched
    prefix = first.clone()
    prefix[..., 10:25] = V
    again = decode_windows(model, ctx, inst, 16, 4, S, torch.Generator().manual_seed(1), prefix=prefix)
    assert torch.equal(again[..., :10], first[..., :10]) and torch.equal(again[..., 25:], first[..., 25:])
    assert (again != V).all() and not torch.equal(again[..., 10:25], first[..., 10:25])
    # continuation: a 12-frame stem continued over a 40-frame context
    prefix = torch.full_like(ctx, V)
    prefix[..., :12] = first[..., :12]
    cont = decode_windows(model, ctx, inst, 16, 4, S, torch.Generator().manual_seed(2), prefix=prefix)
    assert torch.equal(cont[..., :12], first[..., :12]) and (cont != V).all()


def test_progress_reaches_the_total_on_every_level():
    model, _, inst = setup()
    ctx = torch.randint(V, (2, 4, 40), generator=torch.Generator().manual_seed(5))
    last = {}
    decode_windows(model, ctx, inst, 16, 4, S, torch.Generator().manual_seed(0),
                   callback=lambda q, s, n: last.__setitem__(q, (s, n)))
    n_windows = len(window_starts(40, 16, 4))
    assert last == {q: (n_windows * s, n_windows * s) for q, s in enumerate(S.steps)}
