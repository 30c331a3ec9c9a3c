"""The MIRDD benchmark suite: the paper's protocol (section 3.2) over a grid of sampling settings.

1. N (context mix, instrument, real stem) triples are drawn from a held-out split as in
   training (random crop, random subset of the other stems as context).
2. For every configuration of the grid, one stem is generated per triple (cached as WAV under
   ``OUT/generated/CONFIG/``, so an interrupted run resumes).
3. Real and generated populations are scored: MIRDD on stem + context (with bootstrap
   intervals and the real split-half noise floor), Fréchet distance of stem embeddings
   (``fd_logmel`` always; ``fad_vggish`` when VGGish weights are available), and context
   agreement (own vs mismatched context), for the real stems too as the reference.

``score_folders`` scores any ``real/`` and ``generated/`` folders (optionally ``context/``,
matched by file name), so other systems' outputs are evaluated the same way.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from .machine import machine_info

log = logging.getLogger(__name__)


@dataclass
class GridEntry:
    """One sampling configuration: ``base`` picks the settings it starts from, "paper" (the
    paper's best), "naive" (the paper's naive setting; ``naive: true`` is short for it) or "model"
    (what the model generates with by default: its export's ``ModelRecord.sampling`` over the
    paper's best); the other fields are :meth:`stemgen.api.StemModel.generate`'s short arguments
    and override the base only where given (``temperature`` and ``steps``: one value, or one per
    level)."""

    name: str
    naive: bool = False
    base: str = "paper"
    guidance: object = None  # True | number | [lambda_a, lambda_i] | False
    causal_bias: Optional[float] = None
    temperature: object = None  # number | [one per level]
    steps: Optional[list] = None

    def __post_init__(self):
        if self.naive:
            self.base = "naive"
        if self.base not in BASES:
            raise ValueError(f"grid entry {self.name!r}: base must be one of {BASES}, got {self.base!r}.")

    def generate_kwargs(self, num_levels: int = 4) -> dict:
        from ..sampling.settings import SamplingSettings

        guidance = tuple(self.guidance) if isinstance(self.guidance, list) else self.guidance
        settings = {"paper": SamplingSettings.paper(num_levels), "naive": SamplingSettings.naive(
            steps=SamplingSettings.paper(num_levels).steps, temperature=(1.0,) * num_levels), "model": None}[self.base]
        return {"settings": settings, "guidance": guidance, "causal_bias": self.causal_bias,
                "temperature": self.temperature, "steps": self.steps}


#: what a grid entry's settings start from (:attr:`GridEntry.base`)
BASES = ("paper", "naive", "model")


@dataclass
class Grid:
    title: str
    entries: list[GridEntry]
    description: str = ""
    paper: dict = field(default_factory=dict)  # the paper's numbers for this table, if any


def load_grid(path: str | Path) -> Grid:
    """Read a YAML grid: ``title``, ``description``, ``configs: [{name, guidance, ...}]``."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    if not isinstance(data, dict) or not data.get("configs"):
        raise ValueError(f"{path}: a grid needs a 'configs' list (see configs/eval/*.yaml)")
    entries = [GridEntry(**c) for c in data["configs"]]
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: configuration names must be unique, got {names}")
    return Grid(data.get("title", Path(path).stem), entries, data.get("description", ""), data.get("paper") or {})


def draw_triples(root: str | Path, n: int, sample_rate: int, seconds: float, split: str = "test",
                 seed: int = 1234, layout: str = "auto") -> list:
    """``n`` :class:`~stemgen.data.pairs.Pair` triples from a held-out split, drawn as in training."""
    from ..data.dataset import PairDataset
    from ..data.songs import cached_scan

    report = cached_scan(root, split, layout)
    if not report.songs:
        raise ValueError(f"no songs in the '{split}' split of {root}")
    ds = PairDataset(report.songs, sample_rate, crop_seconds=seconds, segment_seconds=max(60.0, seconds), seed=seed)
    return [ds.draw(i) for i in range(n)]


def settings_by_instrument(model, kwargs: dict, instruments) -> dict:
    """``{instrument name: settings dict}``: what ``model.generate(**kwargs)`` samples each of
    the class ids ``instruments`` with (its record may give an instrument settings of its own)."""
    from ..instruments import by_id

    return {by_id(i).name.lower(): model.settings(instrument=i, **kwargs).to_dict() for i in sorted(instruments)}


def generate_population(model, triples: list, entry: GridEntry, out: Path, batch_size: int = 8,
                        seed: int = 0) -> list[np.ndarray]:
    """One stem per triple for ``entry``, cached as ``out/NNNN.wav``; existing files are reused
    when ``out/settings.json`` says they were generated by the same model with the same settings
    for each instrument and the same seed (otherwise they are generated again).

    Triple i's stem has the seed ``seed + i`` (a batch of triples i..j gets seeds seed+i..seed+j),
    so it is the same whether it was generated alone, in a batch, or in a resumed run.
    """
    from ..audio import read_audio, write_audio
    from ..instruments import by_id

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{i:04d}.wav" for i in range(len(triples))]
    kwargs = entry.generate_kwargs(model.model.cfg.num_levels)
    asked = {"model": repr(model), "seed": seed,
             "settings": settings_by_instrument(model, kwargs, {t.instrument for t in triples})}
    record = out / "settings.json"
    if record.exists() and json.loads(record.read_text()) != asked:
        log.warning("%s: the cached stems in %s were generated otherwise (model, settings or seed): generating "
                    "them again", entry.name, out)
        for p in paths:
            p.unlink(missing_ok=True)
    record.write_text(json.dumps(asked, indent=1))
    todo = [i for i, p in enumerate(paths) if not p.exists()]
    # batches of consecutive triples only, so that consecutive seeds fall on the right ones
    batches = [[todo[0]]] if todo else []
    for i in todo[1:]:
        if i == batches[-1][-1] + 1 and len(batches[-1]) < batch_size:
            batches[-1].append(i)
        else:
            batches.append([i])
    done = 0
    for idx in batches:
        stems = model.generate([triples[i].context for i in idx], [by_id(triples[i].instrument).name for i in idx],
                               sample_rate=model.sample_rate, seed=seed + idx[0], **kwargs)
        for i, stem in zip(idx, stems):
            write_audio(paths[i], stem.audio, model.sample_rate)
        done += len(idx)
        log.info("%s: %d/%d generated", entry.name, done, len(todo))
    return [read_audio(p)[0][0] for p in paths]


class Scorer:
    """Everything needed to score populations, built once (madmom processors, embedders)."""

    def __init__(self, cache_dir: Path | None = None, vggish_weights: str | None = None, beats: bool = True):
        from .descriptors import DescriptorExtractor
        from .fad import LogMelStats

        from .context_agreement import BeatTracker

        self.descriptors = DescriptorExtractor(cache_dir=cache_dir)
        #: one tracker for every population scored (a context's beats are tracked once)
        self.tracker = BeatTracker(cache_dir / "beats" if cache_dir else None) if beats else None
        self.embedders = [LogMelStats()]
        #: metrics that could not be computed here, and why (recorded in every result)
        self.not_computed: dict[str, str] = {}
        try:
            from .fad import VGGish

            self.embedders.append(VGGish(vggish_weights))
        except Exception as err:  # no weights offline: reported as missing, not replaced
            self.not_computed["fad_vggish"] = str(err)
            log.info("FAD (VGGish) not computed: %s", err)

    def describe(self, stems: list[np.ndarray], contexts: list[np.ndarray], sr: int) -> list:
        from ..audio import mix_down

        return [self.descriptors(mix_down([s, c]), sr) for s, c in zip(stems, contexts)]

    def frechet(self, real: list[np.ndarray], generated: list[np.ndarray], sr: int) -> dict:
        from .fad import FrechetAudioDistance

        out = {}
        for emb in self.embedders:
            m = FrechetAudioDistance(emb)
            m.update(real, sr, real=True)
            m.update(generated, sr, real=False)
            out[emb.name] = float(m.compute())
        return {**out, **{name: None for name in self.not_computed}}

    def agreement(self, stems: list[np.ndarray], contexts: list[np.ndarray], sr: int) -> dict:
        from .context_agreement import ContextAgreement

        m = ContextAgreement(beats=self.tracker or False)
        m.update(stems, contexts, sr)
        return {k: float(v) for k, v in m.compute().items()}

    def by_instrument(self, stems: list[np.ndarray], contexts: list[np.ndarray], instruments: list[int],
                      sr: int) -> dict:
        """Per instrument class of the population: ``n``, the mean ``silent_fraction`` and the
        context agreement within the class (its mismatched scores pair each stem with another
        context of the same class), for classes with at least 2 stems. A mix of classes hides
        what one sampler does to one of them (a cool level 0 can silence drums and help a bass)."""
        from ..audio import silent_fraction
        from ..instruments import by_id

        out = {}
        for inst in sorted(set(instruments)):
            idx = [i for i, x in enumerate(instruments) if x == inst]
            if len(idx) < 2:
                continue
            ours = [stems[i] for i in idx]
            out[by_id(inst).name.lower()] = {
                "n": len(idx), "silent_fraction": float(np.mean([silent_fraction(x, sr) for x in ours])),
                **self.agreement(ours, [contexts[i] for i in idx], sr)}
        return out


def score_population(scorer: Scorer, real_desc: list, real: list, generated: list, contexts: list, sr: int,
                     rounds: int = 200, instruments: list[int] | None = None) -> dict:
    """MIRDD, Fréchet distances and context agreement of a generated population; with the
    triples' ``instruments`` also the agreement and silent fraction per instrument class."""
    from .mirdd import mirdd_report

    gen_desc = scorer.describe(generated, contexts, sr)
    out = {"mirdd": mirdd_report(real_desc, gen_desc, rounds=rounds), **scorer.frechet(real, generated, sr),
           "not_computed": dict(scorer.not_computed), "context_agreement": scorer.agreement(generated, contexts, sr)}
    if instruments is not None:
        out["by_instrument"] = scorer.by_instrument(generated, contexts, instruments, sr)
    return out


def run_suite(grid_path: str | Path, out: str | Path, model=None, data: str | Path | None = None, n: int = 40,
              seconds: float = 8.0, split: str = "test", batch_size: int = 8, seed: int = 0,
              rounds: int = 200, vggish_weights: str | None = None, beats: bool = True,
              precision: str = "auto") -> dict:
    """Run a grid end to end; writes ``OUT/results.{json,csv,md}`` and plots; returns the results.
    ``precision`` is :func:`~stemgen.api.load_model`'s (ignored for a model given loaded)."""
    from ..api import load_model
    from ..data.chorales import default_chorales_dir
    from ..prepare import prepare_chorales

    grid = load_grid(grid_path)
    out = Path(out)
    sm = load_model(model, precision=precision)
    sr = sm.sample_rate
    root = Path(data) if data else prepare_chorales(default_chorales_dir(), limit=None)
    triples = draw_triples(root, n, sr, seconds, split)
    contexts, reals = [t.context for t in triples], [t.target for t in triples]
    instruments = [t.instrument for t in triples]
    scorer = Scorer(out / "descriptor_cache", vggish_weights, beats)
    real_desc = scorer.describe(reals, contexts, sr)
    results = {"grid": grid.title, "description": grid.description, "model": repr(sm), "machine": machine_info(),
               "data": str(root),
               "split": split, "n": n, "seconds": seconds, "paper": grid.paper,
               "real": {"context_agreement": scorer.agreement(reals, contexts, sr),
                        "by_instrument": scorer.by_instrument(reals, contexts, instruments, sr)}, "configs": {}}
    generated_all = {}
    for entry in grid.entries:
        generated = generate_population(sm, triples, entry, out / "generated" / entry.name, batch_size, seed)
        generated_all[entry.name] = generated
        kwargs = entry.generate_kwargs(sm.model.cfg.num_levels)
        settings = sm.settings(**kwargs).to_dict()  # what ran, every value
        # the model's default may differ per instrument (its record's instrument_sampling)
        own = {} if kwargs["settings"] is not None else settings_by_instrument(sm, kwargs, sm.instrument_settings)
        results["configs"][entry.name] = {"grid_entry": asdict(entry), "settings": settings,
                                          **({"instrument_settings": own} if own else {}),
                                          **score_population(scorer, real_desc, reals, generated, contexts, sr, rounds,
                                                             instruments)}
        log.info("%s: MIRDD %.3f", entry.name, results["configs"][entry.name]["mirdd"]["mirdd"])
    write_results(results, out)
    from .plots import descriptor_histograms, metric_by_setting

    metric_by_setting(results, out / "metrics_by_setting.png")
    first = grid.entries[0].name
    descriptor_histograms(real_desc, scorer.describe(generated_all[first], contexts, sr), out / f"histograms_{first}.png",
                          title=f"{grid.title}: real vs generated ({first}), N={n}")
    return results


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def _audio_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder of audio files.")
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not names:
        raise ValueError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {folder}.")
    return names


def score_folders(real: str | Path, generated: str | Path, context: str | Path | None = None, out: str | Path | None = None,
                  sample_rate: int = 32000, rounds: int = 200, vggish_weights: str | None = None) -> dict:
    """Score a population of generated stems against a population of real ones.

    The two folders need not hold the same files or as many: MIRDD and the Fréchet distances
    compare populations. Only what is paired is matched by file name: with ``context``, each
    stem (real or generated) is scored together with ``context/NAME`` (MIRDD on stem + context,
    as the paper does), and context agreement (own vs mismatched context) is measured for the
    generated stems (``context_agreement_generated``) and for the real ones as the reference
    (``context_agreement_real``). Without contexts, MIRDD runs on the stems alone and context
    agreement is not computed (said in ``not_computed``).
    """
    from ..audio import load_mono

    real, generated = Path(real), Path(generated)
    real_names, gen_names = _audio_names(real), _audio_names(generated)
    if context is not None:
        context = Path(context)
        missing = sorted(set(real_names + gen_names) - set(_audio_names(context)))
        if missing:
            raise ValueError(f"every stem needs its context under the same file name in {context}; missing: "
                             f"{missing[:5]}{' ...' if len(missing) > 5 else ''}. Leave --context out to score "
                             f"the stems alone.")

    def load(folder: Path, names: list[str]) -> list[np.ndarray]:
        return [load_mono(folder / nm, sample_rate) for nm in names]

    reals, gens = load(real, real_names), load(generated, gen_names)
    if context is not None:
        real_ctx, gen_ctx = load(context, real_names), load(context, gen_names)
    else:
        real_ctx, gen_ctx = [np.zeros_like(r) for r in reals], [np.zeros_like(g) for g in gens]
    scorer = Scorer(Path(out) / "descriptor_cache" if out else None, vggish_weights, beats=context is not None)
    scores = score_population(scorer, scorer.describe(reals, real_ctx, sample_rate), reals, gens, gen_ctx,
                              sample_rate, rounds)
    agreement = scores.pop("context_agreement")
    result = {"n_real": len(reals), "n_generated": len(gens), "real": str(real), "generated": str(generated),
              "context": str(context) if context else None, **scores}
    if context is not None:
        result["context_agreement_generated"] = agreement
        result["context_agreement_real"] = scorer.agreement(reals, real_ctx, sample_rate)
    else:
        result["not_computed"]["context_agreement"] = "no context folder given (--context): nothing to agree with"
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "results.json").write_text(json.dumps(result, indent=1))
    return result


def write_results(results: dict, out: Path) -> None:
    """``results.json`` (everything), ``results.csv`` and ``results.md`` (one row per config)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    rows = []
    for name, r in results["configs"].items():
        lo, hi = r["mirdd"]["interval"]
        ca = r["context_agreement"]
        rows.append({"config": name, "mirdd": r["mirdd"]["mirdd"], "mirdd_lo": lo, "mirdd_hi": hi,
                     "mirdd_noise_floor": r["mirdd"]["noise_floor"], "fd_logmel": r.get("fd_logmel"),
                     "fad_vggish": r.get("fad_vggish"), "chroma": ca.get("chroma"), "chroma_gap": ca.get("chroma_gap"),
                     "beat": ca.get("beat"), "beat_gap": ca.get("beat_gap")})
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    ref = results["real"]["context_agreement"]
    lines = [f"## {results['grid']}", "", results.get("description", ""), "",
             f"N = {results['n']} triples from the '{results['split']}' split of {results['data']}, "
             f"{results['seconds']:g} s each; model `{results['model']}`.", "",
             "| config | MIRDD (90% interval) | noise floor | fd_logmel | fad_vggish | chroma (gap) | beat (gap) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {fmt(r['mirdd'])} ({fmt(r['mirdd_lo'])}-{fmt(r['mirdd_hi'])}) | "
                     f"{fmt(r['mirdd_noise_floor'])} | {fmt(r['fd_logmel'])} | {fmt(r['fad_vggish'])} | "
                     f"{fmt(r['chroma'])} ({fmt(r['chroma_gap'])}) | {fmt(r['beat'])} ({fmt(r['beat_gap'])}) |")
    lines.append(f"| real stems (reference) | - | - | - | - | {fmt(ref.get('chroma'))} ({fmt(ref.get('chroma_gap'))}) | "
                 f"{fmt(ref.get('beat'))} ({fmt(ref.get('beat_gap'))}) |")
    kinds = sorted(results["real"].get("by_instrument", {}))
    if kinds:
        lines += ["", "By instrument class (agreement within the class; silent: the share of 100 ms blocks below "
                  "-50 dBFS):", "", "| config | " + " | ".join(f"{k}: n, chroma (gap), beat (gap), silent" for k in kinds)
                  + " |", "|---|" + "---|" * len(kinds)]
        named = [(name, r.get("by_instrument", {})) for name, r in results["configs"].items()]
        for name, by in named + [("real stems (reference)", results["real"]["by_instrument"])]:
            cells = [(f"{b['n']}, {fmt(b.get('chroma'))} ({fmt(b.get('chroma_gap'))}), {fmt(b.get('beat'))} "
                      f"({fmt(b.get('beat_gap'))}), {fmt(b['silent_fraction'])}") if (b := by.get(k)) else "-"
                     for k in kinds]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
