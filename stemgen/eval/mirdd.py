"""MIRDD: MIR-descriptor distribution distance (after StemGen, paper section 3.2).

For each of the eleven descriptors (:mod:`stemgen.eval.descriptors`), the values of the real
and the generated population are histogrammed over shared bins and compared with
KL(real || generated) under additive smoothing; MIRDD is the mean over descriptors. Lower is
better; the real-vs-real split-half value is the noise floor a perfect generator would reach
with populations of this size.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from .descriptors import NAMES, Descriptors
from .distances import bootstrap_interval, population_kl, split_half

Population = dict  # descriptor name -> list (per example) of value lists


def population(descriptors: Sequence[Descriptors]) -> Population:
    """Per descriptor, the value list of every example."""
    return {name: [d.codes(name) for d in descriptors] for name in NAMES}


def mirdd(real: Population, generated: Population, alpha: float = 1.0) -> dict[str, float]:
    """KL(real || generated) per descriptor and their mean (``"mirdd"``)."""
    kl = {name: population_kl(real[name], generated[name], alpha) for name in NAMES}
    return {**kl, "mirdd": sum(kl.values()) / len(kl)}


def mirdd_report(real: Sequence[Descriptors], generated: Sequence[Descriptors], alpha: float = 1.0,
                 rounds: int = 200, seed: int = 0) -> dict:
    """MIRDD with everything needed to read it: per descriptor the KL, a bootstrap interval
    (90%, examples resampled) and the real split-half noise floor; N of both populations."""
    if len(real) < 2 or len(generated) < 1:
        raise ValueError(f"MIRDD needs at least 2 real and 1 generated examples, got {len(real)} and {len(generated)}")
    rows_r = [population([d]) for d in real]  # one-example populations, resampled by the bootstrap
    rows_g = [population([d]) for d in generated]
    out = {"n_real": len(real), "n_generated": len(generated), "alpha": alpha, "descriptors": {}}
    for name in NAMES:
        def stat(r, g, name=name):
            return population_kl([x[name][0] for x in r], [x[name][0] for x in g], alpha)

        out["descriptors"][name] = {"kl": stat(rows_r, rows_g),
                                    "interval": bootstrap_interval(stat, rows_r, rows_g, rounds, seed=seed),
                                    "noise_floor": split_half(stat, rows_r, seed=seed)}

    def mean(r, g):
        return sum(population_kl([x[n][0] for x in r], [x[n][0] for x in g], alpha) for n in NAMES) / len(NAMES)

    out["mirdd"] = mean(rows_r, rows_g)
    out["interval"] = bootstrap_interval(mean, rows_r, rows_g, rounds, seed=seed)
    out["noise_floor"] = split_half(mean, rows_r, seed=seed)
    return out


class MIRDD(Metric):
    """MIRDD as a torchmetrics ``Metric``: ``update(real, generated)`` with lists of
    :class:`Descriptors`, ``compute()`` -> ``{"mirdd": ..., "kl/<descriptor>": ...}``.

    Descriptor values are stored as integer codes with per-example lengths, so the state
    concatenates across processes (DDP) like any torchmetrics list state.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, alpha: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = alpha
        for side in ("real", "generated"):
            for name in NAMES:
                self.add_state(f"{side}_{name}", default=[], dist_reduce_fx="cat")
                self.add_state(f"{side}_{name}_lengths", default=[], dist_reduce_fx="cat")

    def update(self, real: Sequence[Descriptors], generated: Sequence[Descriptors]) -> None:
        for side, items in (("real", real), ("generated", generated)):
            for name in NAMES:
                codes = [d.codes(name) for d in items]
                getattr(self, f"{side}_{name}").append(
                    torch.tensor([c for cs in codes for c in cs], dtype=torch.long, device=self.device))
                getattr(self, f"{side}_{name}_lengths").append(
                    torch.tensor([len(cs) for cs in codes], dtype=torch.long, device=self.device))

    def _population(self, side: str) -> Population:
        pop = {}
        for name in NAMES:
            state, lengths = getattr(self, f"{side}_{name}"), getattr(self, f"{side}_{name}_lengths")
            flat = dim_zero_cat(state).tolist() if len(state) else []
            sizes = dim_zero_cat(lengths).tolist() if len(lengths) else []
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            pop[name] = [flat[s: s + n] for s, n in zip(starts, sizes)]
        return pop

    def compute(self) -> dict[str, torch.Tensor]:
        result = mirdd(self._population("real"), self._population("generated"), self.alpha)
        return {("mirdd" if k == "mirdd" else f"kl/{k}"): torch.tensor(v) for k, v in result.items()}
