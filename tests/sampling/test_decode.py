"""The reference decoder's invariants on a tiny random model."""

import torch

from stemgen.model import ModelConfig, StemGenModel
from stemgen.sampling.decode import SamplingSettings, decode_tokens
from stemgen.sampling.steps import masked_counts

V, T = 16, 24


class Recorder(torch.nn.Module):
    """Wraps a model and records the target tokens and batch size of every forward call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.cfg, self.calls = model, model.cfg, []

    def forward(self, context, target, instrument, drop_context=None, level=None):
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
