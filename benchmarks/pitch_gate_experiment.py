"""An experiment, not a library feature: temper level 0's *pitch class* instead of its code.

    TG=0.5 TW=1.0 python benchmarks/pitch_gate_experiment.py --seeds 0 100 --only pitch_gate --out OUT \\
        --arms '{"pitch_gate": {"guidance": false, "w_position": 0.0, "temperature": [1, 1, 1, 1], "silence_gate": false}}'

Monkeypatches stemgen.sampling.decode.level_logits so that, in arms with ``"guidance": false``,
level 0's logits become log P(class)^(1/TG) (normalised; TG=0: the most probable class only)
+ log p(code | class)^(1/TW) (normalised within the class). Classes: the probe's code -> pitch
class table (train chorales), unknown codes one class each, the silence code its own class.

``SILENCE=keep`` leaves silence out of the class tempering: its probability is kept and the
sounding classes share the rest, so that the step's silence gate (``"silence_gate": true,
"silence_temperature": 0.5`` with level 0 at temperature 1) decides sound against silence as the
default does. Otherwise (``SILENCE=class``, the first experiment) silence is one class among the
pitch classes and the arm runs without the gate.

``GUIDE=LA,LI`` computes nested guidance inside the patch (log p(t|i) + LA (log p(t|a,i) -
log p(t|i)) + (LI - 1) ... with LI=1: two branches), at every level, before the class tempering,
so that a guided model's level 0 is tempered by class too (the arm itself says ``"guidance": false``).
Then runs benchmarks/listening.py with the given argv.
"""
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import listening  # noqa: E402
import pitch_probe  # noqa: E402
import stemgen.sampling.decode as decode  # noqa: E402
from stemgen.api import load_model  # noqa: E402
from stemgen.sampling.steps import branch_log_probs  # noqa: E402

TG = float(os.environ.get("TG", "0.5"))  # the pitch class's temperature (0: argmax class)
TW = float(os.environ.get("TW", "1.0"))  # the code's temperature within its class
SILENCE = os.environ.get("SILENCE", "class")
GUIDE = [float(x) for x in os.environ["GUIDE"].split(",")] if os.environ.get("GUIDE") else None
model = load_model(sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "demo", device="cpu")
data = Path.home() / ".cache" / "stemgen" / "data" / "chorales_all"
table, _, purity = pitch_probe.code_tables(model, pitch_probe.train_tracks(data, 64), 20.0)
silence = int(model.codec.silence_codes()[0])
V = len(table)
cls = np.where(table >= 0, table, 0)
unknown = np.flatnonzero(table < 0)
cls[unknown] = 13 + np.arange(len(unknown))
cls[silence] = 12
K = int(cls.max()) + 1
CLS = torch.from_numpy(cls).long()
print(f"classes: {K} ({(table >= 0).sum()} codes with a pitch class, purity {purity:.3f}), TG {TG}, TW {TW}, "
      f"silence {SILENCE}, guidance {GUIDE}", flush=True)

original = decode.level_logits


def class_tempered(lp: torch.Tensor) -> torch.Tensor:
    """(B, T, V) log-probabilities -> the same with the class tempered at TG, the code within at TW."""
    c = CLS.to(lp.device).expand_as(lp)
    class_p = torch.zeros(*lp.shape[:-1], K, device=lp.device).scatter_add_(-1, c, lp.exp())
    class_lp = class_p.clamp_min(1e-30).log()  # (B, T, K)
    lw = lp / TW
    class_w = torch.zeros(*lp.shape[:-1], K, device=lp.device).scatter_add_(-1, c, lw.exp())
    within = lw - class_w.clamp_min(1e-30).log().gather(-1, c)
    keep = SILENCE == "keep"
    if keep:  # tempered among the sounding classes only; silence keeps its probability
        class_lp = class_lp.clone()
        class_lp[..., 12] = float("-inf")
    if TG > 0:
        gate = (class_lp / TG).log_softmax(-1)
    else:
        gate = torch.full_like(class_lp, float("-inf")).scatter_(-1, class_lp.argmax(-1, keepdim=True), 0.0)
    if keep:
        ls = lp[..., silence]  # (B, T) log p(silence)
        sound = torch.log1p(-ls.exp().clamp_max(1 - 1e-6))
        gate = gate + sound[..., None]
        gate[..., 12] = ls
    return within + gate.gather(-1, c)


def gated(model_, context, target, instrument, level, guidance, form="paper", unconditional=True):
    if guidance:
        return original(model_, context, target, instrument, level, guidance, form, unconditional)
    if GUIDE is not None:
        la, li = GUIDE
        logits = original(model_, context, target, instrument, level, True, "nested", li != 1.0)
        lp = branch_log_probs(logits, context.shape[0], la, li - la)
    else:
        lp = original(model_, context, target, instrument, level, False).float().log_softmax(-1)
    if int(level) != 0:
        return lp
    return class_tempered(lp)


decode.level_logits = gated
listening.main()
