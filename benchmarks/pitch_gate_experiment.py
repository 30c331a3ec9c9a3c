"""An experiment, not a library feature: temper level 0's *pitch class* instead of its code.

    TG=0.5 TW=1.0 python benchmarks/pitch_gate_experiment.py --seeds 0 100 --only pitch_gate --out OUT \\
        --arms '{"pitch_gate": {"guidance": false, "w_position": 0.0, "temperature": [1, 1, 1, 1], "silence_gate": false}}'

Monkeypatches stemgen.sampling.decode.level_logits so that level 0's logits become
log P(class)^(1/TG) (normalised) + log p(code | class)^(1/TW) (normalised within the class): classes = the probe's code -> pitch class
table (train chorales), the silence code its own class, unknown codes one class each. Then runs
benchmarks/listening.py with the given argv (level 0 at temperature 1, no silence gate: both done here).
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

TG = float(os.environ.get("TG", "0.5"))
TW = float(os.environ.get("TW", "1.0"))  # the code's temperature within its class
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
print(f"classes: {K} ({(table >= 0).sum()} codes with a pitch class, purity {purity:.3f}), TG {TG}", flush=True)

original = decode.level_logits


def gated(model_, context, target, instrument, level, guidance, form):
    logits = original(model_, context, target, instrument, level, guidance, form)
    if int(level) != 0 or guidance:
        return logits
    lp = logits.float().log_softmax(-1)  # (B, T, V)
    c = CLS.to(lp.device).expand_as(lp)
    class_p = torch.zeros(*lp.shape[:-1], K, device=lp.device).scatter_add_(-1, c, lp.exp())
    class_lp = class_p.clamp_min(1e-30).log()  # (B, T, K)
    lw = lp / TW
    class_w = torch.zeros(*lp.shape[:-1], K, device=lp.device).scatter_add_(-1, c, lw.exp())
    within = lw - class_w.clamp_min(1e-30).log().gather(-1, c)
    gate = (class_lp / TG).log_softmax(-1)
    return within + gate.gather(-1, c)


decode.level_logits = gated
listening.main()
