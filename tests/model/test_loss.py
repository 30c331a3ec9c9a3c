import torch

from stemgen.model import ModelConfig, StemGenModel
from stemgen.model.loss import listening_losses, masked_token_loss


def test_loss_counts_and_gradients():
    torch.manual_seed(0)
    m = StemGenModel(ModelConfig.from_name("tiny", cardinality=16))
    g = torch.Generator().manual_seed(0)
    ctx, tgt = torch.randint(16, (3, 4, 20), generator=g), torch.randint(16, (3, 4, 20), generator=g)
    out = masked_token_loss(m, ctx, tgt, torch.tensor([0, 4, 16]), generator=torch.Generator().manual_seed(1))
    assert torch.isfinite(out.loss) and abs(out.loss.item() - torch.log(torch.tensor(16.0)).item()) < 0.5
    assert out.count.sum() >= 3 and (out.correct <= out.count).all()
    out.loss.backward()
    assert m.heads.grad is not None and m.context_embed[0].weight.grad.abs().sum() > 0


def _copying_model(steps: int = 150):
    """A tiny model trained on target = context; returns (model, generator, losses)."""
    torch.manual_seed(0)
    m = StemGenModel(ModelConfig.from_name("tiny", cardinality=8))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        ctx = torch.randint(8, (16, 4, 16), generator=g)
        out = masked_token_loss(m, ctx, ctx.clone(), torch.zeros(16, dtype=torch.long), 0.0, 0.0, g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return m, g, losses


def test_tiny_model_learns_to_copy_the_context():
    """Target = context: a model that listens should learn it quickly."""
    _, _, losses = _copying_model()
    assert losses[-1] < 0.25 * losses[0], (losses[0], losses[-1])


def test_loss_under_bf16_autocast():
    torch.manual_seed(0)
    m = StemGenModel(ModelConfig.from_name("tiny", cardinality=16))
    g = torch.Generator().manual_seed(0)
    ctx, tgt = torch.randint(16, (2, 4, 10), generator=g), torch.randint(16, (2, 4, 10), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = masked_token_loss(m, ctx, tgt, torch.tensor([1, 2]), generator=g)
    assert torch.isfinite(out.loss)
    out.loss.backward()


def test_mismatched_contexts_come_from_other_songs():
    from stemgen.model.loss import mismatched_order

    order = mismatched_order(torch.tensor([3, 3, 5, 3, 7]), 5)
    songs = [3, 3, 5, 3, 7]
    assert all(songs[j] != songs[i] for i, j in enumerate(order.tolist()))
    assert order.tolist() == [2, 2, 3, 4, 0]  # the next example of another song, cyclically
    assert mismatched_order(torch.tensor([1, 1, 1]), 3).tolist() == [-1, -1, -1]
    assert mismatched_order(None, 3).tolist() == [1, 2, 0]


def _listening(model, ctx, tgt, inst, songs):
    from stemgen.model.loss import LISTENING_CONDITIONS, listening_losses

    sums, counts = listening_losses(model, ctx, tgt, inst, songs, torch.Generator().manual_seed(3))
    return {name: (sums[i].item(), counts[i].item()) for i, name in enumerate(LISTENING_CONDITIONS)}


def test_listening_losses_score_each_condition_on_the_same_tokens():
    import torch.nn.functional as F

    from stemgen.instruments import NULL_ID

    torch.manual_seed(0)
    m = StemGenModel(ModelConfig.from_name("tiny", cardinality=16)).eval()
    g = torch.Generator().manual_seed(0)
    ctx, tgt = torch.randint(16, (4, 4, 10), generator=g), torch.randint(16, (4, 4, 10), generator=g)
    inst, songs = torch.tensor([0, 4, 16, 4]), torch.tensor([0, 0, 1, 2])
    r = _listening(m, ctx, tgt, inst, songs)
    assert {name: n for name, (_, n) in r.items() if not name.startswith(("train", "continuation"))} == {
        "true": 40, "mismatched": 40, "null_instrument": 40, "null_context": 40, "null_both": 40, "shifted": 40}
    assert r["train_true"][1] == r["train_mismatched"][1] > 0
    # a continuation: level 0's first quarter (2 of 10 frames, rounded down) given, the other 8 scored
    assert r["continuation_true"][1] == r["continuation_mismatched"][1] == 4 * 8
    # "true" is level 0 with every target token masked, scored against the real tokens
    with torch.no_grad():
        logits = m(ctx, torch.full_like(tgt, m.cfg.mask_id), inst, level=0)  # (B, T, V)
        expected = F.cross_entropy(logits.flatten(0, 1), tgt[:, 0].flatten(), reduction="sum").item()
        assert abs(r["true"][0] - expected) < 1e-3
        # the guidance branch p(t): no context, no instrument
        both = m(ctx, torch.full_like(tgt, m.cfg.mask_id), torch.full_like(inst, NULL_ID),
                 drop_context=torch.ones(4, dtype=torch.bool), level=0)
        assert abs(r["null_both"][0] - F.cross_entropy(both.flatten(0, 1), tgt[:, 0].flatten(),
                                                       reduction="sum").item()) < 1e-3
        cont = tgt.clone()
        cont[:, 1:] = m.cfg.mask_id
        cont[:, 0, 2:] = m.cfg.mask_id
        logits = m(ctx, cont, inst, level=0)[:, 2:]  # (B, 8, V)
        expected = F.cross_entropy(logits.flatten(0, 1), tgt[:, 0, 2:].flatten(), reduction="sum").item()
        assert abs(r["continuation_true"][0] - expected) < 1e-3
        # "shifted": the example's own context rolled half the window (5 of 10 frames) along time
        logits = m(ctx.roll(5, -1), torch.full_like(tgt, m.cfg.mask_id), inst, level=0)
        expected = F.cross_entropy(logits.flatten(0, 1), tgt[:, 0].flatten(), reduction="sum").item()
        assert abs(r["shifted"][0] - expected) < 1e-3 and abs(r["shifted"][0] - r["true"][0]) > 1e-3
    # a model that cannot see its context: another song's context costs exactly nothing
    with torch.no_grad():
        for emb in m.context_embed:
            emb.weight.zero_()
    deaf = _listening(m, ctx, tgt, inst, songs)
    assert deaf["mismatched"][0] == deaf["true"][0] and deaf["train_mismatched"][0] == deaf["train_true"][0]
    assert deaf["continuation_mismatched"][0] == deaf["continuation_true"][0]
    assert deaf["shifted"][0] == deaf["true"][0]
    assert deaf["null_context"][0] != deaf["true"][0]  # the null context is a learned vector, not zeros


def test_a_model_that_copies_its_context_has_a_large_context_gain():
    """Trained on target = context, the true context is worth nearly all of ln V per token."""
    from stemgen.train.metrics import Listening

    m, g, _ = _copying_model()
    metric = Listening()
    ctx = torch.randint(8, (16, 4, 16), generator=g)
    metric.update(*listening_losses(m.eval(), ctx, ctx.clone(), torch.zeros(16, dtype=torch.long),
                                    torch.arange(16), g))
    r = metric.compute()
    assert r["ce/true"] < 0.5 and r["ce/mismatched"] > 1.5
    assert r["context_gain"] == r["ce/mismatched"] - r["ce/true"] and r["context_gain"] > 1.0
    assert r["context_gain_train_mask"] > 0.5
    assert r["context_gain_continuation"] == r["ce/continuation_mismatched"] - r["ce/continuation_true"] > 0.5
    # it copies frame by frame: its own context half a window out of line is as good as another's
    assert r["alignment_gain"] == r["ce/shifted"] - r["ce/true"] > 1.0


def test_masked_loss_is_the_mean_cross_entropy_of_the_masked_positions_of_each_level():
    import torch.nn.functional as F

    from stemgen.model.loss import masked_loss

    torch.manual_seed(0)
    m = StemGenModel(ModelConfig.from_name("tiny", cardinality=16))
    g = torch.Generator().manual_seed(0)
    ctx, tgt = torch.randint(16, (2, 4, 10), generator=g), torch.randint(16, (2, 4, 10), generator=g)
    inputs, inst = tgt.clone(), torch.tensor([3, 5])
    level = torch.tensor([2, 0])
    loss_mask = torch.zeros(2, 10, dtype=torch.bool)
    loss_mask[0, [1, 4]] = True
    loss_mask[1, [0, 7, 9]] = True
    inputs[0, 2][loss_mask[0]] = m.cfg.mask_id
    inputs[0, 3], inputs[1, 1:] = m.cfg.mask_id, m.cfg.mask_id
    inputs[1, 0][loss_mask[1]] = m.cfg.mask_id
    drop = torch.tensor([False, True])
    out = masked_loss(m, ctx, inputs, inst, drop, level, loss_mask, tgt)
    with torch.no_grad():
        logits = m(ctx, inputs, inst, drop_context=drop)  # (B, Q, T, V)
    rows = torch.cat([logits[0, 2, [1, 4]], logits[1, 0, [0, 7, 9]]])
    labels = torch.cat([tgt[0, 2, [1, 4]], tgt[1, 0, [0, 7, 9]]])
    assert abs(out.loss.item() - F.cross_entropy(rows, labels).item()) < 1e-5
    assert out.count.tolist() == [3, 0, 2, 0]
    hits = rows.argmax(-1) == labels
    assert out.correct.tolist() == [int(hits[2:].sum()), 0, int(hits[:2].sum()), 0]


def test_the_compiled_training_step_is_one_graph_and_matches_eager():
    """torch.compile(masked_loss, fullgraph=True) with the default (inductor) backend: dynamo
    captures the whole step (fullgraph raises on any graph break), and the loss and every
    gradient agree with eager: loss to 1e-5 nats, gradients to 1e-4 of their largest entry."""
    from torch._dynamo.utils import counters

    from stemgen.model.loss import masked_loss

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    m = StemGenModel(ModelConfig.from_name("tiny", cardinality=64, shared_embeddings=True))
    g = torch.Generator().manual_seed(0)
    ctx, tgt = torch.randint(64, (3, 4, 24), generator=g), torch.randint(64, (3, 4, 24), generator=g)
    inst = torch.tensor([0, 4, 16])
    results = []
    for fn in (masked_loss, torch.compile(masked_loss, fullgraph=True)):
        out = masked_token_loss(m, ctx, tgt, inst, 0.3, 0.3, torch.Generator().manual_seed(1), p_full_mask=0.3,
                                loss_fn=fn)
        out.loss.backward()
        results.append((out, [p.grad.clone() for p in m.parameters()]))
        m.zero_grad()
    (eager, g_eager), (compiled, g_compiled) = results
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert abs(eager.loss.item() - compiled.loss.item()) < 1e-5
    assert torch.equal(eager.count, compiled.count) and torch.equal(eager.correct, compiled.correct)
    for a, b in zip(g_eager, g_compiled):
        assert (a - b).abs().max() <= 1e-4 * a.abs().max().clamp_min(1e-8)


def test_instrument_free_examples_are_scored_as_the_instrument_free_branch():
    from stemgen.model.masking import NULL_ID

    torch.manual_seed(0)
    model = StemGenModel(ModelConfig.from_name("tiny", cardinality=64))
    ctx, tgt, inst = torch.randint(64, (3, 4, 20)), torch.randint(64, (3, 4, 20)), torch.tensor([2, 3, 4])
    free = torch.tensor([True, False, True])
    null_there = torch.where(free, torch.full_like(inst, NULL_ID), inst)
    flagged = masked_token_loss(model, ctx, tgt, inst, 0.0, 0.0, torch.Generator().manual_seed(1), instrument_free=free)
    nulled = masked_token_loss(model, ctx, tgt, null_there, 0.0, 0.0, torch.Generator().manual_seed(1))
    plain = masked_token_loss(model, ctx, tgt, inst, 0.0, 0.0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(flagged.loss, nulled.loss, rtol=0, atol=0)
    assert not torch.equal(flagged.loss, plain.loss)
