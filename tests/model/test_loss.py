import torch

from stemgen.model import ModelConfig, StemGenModel
from stemgen.model.loss import masked_token_loss


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


def test_tiny_model_learns_to_copy_the_context():
    """Target = context: a model that listens should learn it quickly."""
    torch.manual_seed(0)
    m = StemGenModel(ModelConfig.from_name("tiny", cardinality=8))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = last = None
    for step in range(150):
        ctx = torch.randint(8, (16, 4, 16), generator=g)
        out = masked_token_loss(m, ctx, ctx.clone(), torch.zeros(16, dtype=torch.long), 0.0, 0.0, g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = out.loss.item() if first is None else first
        last = out.loss.item()
    assert last < 0.25 * first, (first, last)


def test_loss_under_bf16_autocast():
    torch.manual_seed(0)
    m = StemGenModel(ModelConfig.from_name("tiny", cardinality=16))
    g = torch.Generator().manual_seed(0)
    ctx, tgt = torch.randint(16, (2, 4, 10), generator=g), torch.randint(16, (2, 4, 10), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = masked_token_loss(m, ctx, tgt, torch.tensor([1, 2]), generator=g)
    assert torch.isfinite(out.loss)
    out.loss.backward()
