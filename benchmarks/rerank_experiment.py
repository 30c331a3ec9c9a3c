"""An experiment, not a library feature: level 0 drawn N times per window, the candidate kept
that the model's own first guess says follows the context best.

    N=4 BETA=1 python benchmarks/rerank_experiment.py --model M --seconds 4 --steps 32 16 8 8 \\
        --seeds 0 100 200 300 --only default --out OUT

Monkeypatches the ``decode_level`` that ``stemgen.sampling.windows`` calls: for level 0 each window
is decoded N times (the candidates draw one after another from the same generators), and each
candidate ``x`` is scored over the window's free positions by the first guess of level 0 (one
forward pass with every free level-0 token masked, given the window's prefix):
``sum_t log p(x_t | a, i) - BETA * log p(x_t | i)``: with BETA = 1 the pointwise mutual
information of the bass with its context, what the context adds to the instrument's own
preference; with BETA = 0 the plain first-guess likelihood. Levels 1-3 are decoded as usual.
Then runs benchmarks/listening.py with the given argv.
"""
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import listening  # noqa: E402
import stemgen.sampling.windows as windows  # noqa: E402
from stemgen.sampling.decode import level_logits  # noqa: E402

N = int(os.environ.get("N", "4"))
BETA = float(os.environ.get("BETA", "1.0"))
original = windows.decode_level


@torch.no_grad()
def first_guess_score(model, context, target, instrument):
    """``(B, T, V)`` per-code score of level 0 from its first guess, given the prefix in ``target``."""
    lp_ai = level_logits(model, context, target, instrument, 0, guidance=False).float().log_softmax(-1)
    if BETA == 0:
        return lp_ai
    drop = torch.ones(context.shape[0], dtype=torch.bool, device=context.device)
    lp_i = model(context, target, instrument, drop_context=drop, level=0).float().log_softmax(-1)
    return lp_ai - BETA * lp_i


def reranked(model, context, target, instrument, level, settings, generator=None, callback=None, silence=None):
    if level != 0 or N <= 1:
        return original(model, context, target, instrument, level, settings, generator, callback, silence)
    free = target[:, 0] == model.cfg.mask_id  # (B, T)
    score = first_guess_score(model, context, target, instrument)  # (B, T, V)
    best, best_score = None, None
    for _ in range(N):
        cand = original(model, context, target, instrument, level, settings, generator, callback, silence)
        s = (score.gather(-1, cand[:, 0].unsqueeze(-1))[..., 0] * free).sum(-1)  # (B,)
        if best is None:
            best, best_score = cand, s
        else:
            better = s > best_score
            best = torch.where(better[:, None, None], cand, best)
            best_score = torch.maximum(s, best_score)
    return best


windows.decode_level = reranked
print(f"rerank: N {N}, BETA {BETA}", flush=True)
listening.main()
