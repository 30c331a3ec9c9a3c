"""Context agreement (beyond the paper): does a stem fit *its own* context?

Two measures per (stem, context) pair:

* chroma: mean frame-wise cosine similarity of the stem's and the context's pitch-class profiles
  (over the frames where the context sounds) — does it play in the harmony?
* beat: F-measure (mir_eval, 70 ms window) of the stem's beats against the context's beats
  (madmom's RNN + DBN beat tracker) — does it play in time?

The chroma measure is also reported *as heard* (``chroma_heard*``): a frame where the stem is
silent (below ``stemgen.spectra.SILENT_FRAME_DB``) scores 0 instead of the cosine of its faint
noise, so a stem that falls silent does not pass for one that follows the harmony.

Each is also computed with the stem paired with another example's context (a cyclic shift
over the population). The gap, own minus mismatched, is the "listens" score: a model that
ignores its context scores the same on both.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from torchmetrics import Metric

from ..spectra import SILENT_FRAME_DB, chroma_frames, frame_cosine, frame_levels_db

BEAT_WINDOW = 0.07  # seconds, mir_eval's default F-measure window


def beat_f_measure(reference: np.ndarray, estimated: np.ndarray) -> float:
    """F-measure of ``estimated`` beat times against ``reference`` (0 when either is empty)."""
    import mir_eval

    reference, estimated = np.asarray(reference, float), np.asarray(estimated, float)
    if len(reference) == 0 or len(estimated) == 0:
        return 0.0
    return float(mir_eval.beat.f_measure(reference, estimated, f_measure_threshold=BEAT_WINDOW))


#: bump when the beat tracking changes, so that cached beats of an older version are not reused
BEATS_VERSION = 1


class BeatTracker:
    """madmom's RNN beat activation + DBN tracking, built once; ``(N,)`` audio -> beat times (s).

    Args:
        cache_dir: if given, each clip's beats are stored there as JSON, keyed by a hash of its
            samples: a context scored against several populations (every configuration of a
            grid, every rerun) is tracked once.
    """

    def __init__(self, cache_dir: str | Path | None = None):
        from .madmom_import import import_madmom

        import_madmom()
        from madmom.features.beats import DBNBeatTrackingProcessor, RNNBeatProcessor

        self.activation = RNNBeatProcessor(num_threads=1)
        self.tracker = DBNBeatTrackingProcessor(fps=100)
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def __call__(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        from ..audio import resample

        x = resample(np.asarray(wav, dtype=np.float32), int(sample_rate), 44100)
        if self.cache_dir is None:
            return self._track(x)
        digest = hashlib.sha1(x.tobytes() + f"beats-v{BEATS_VERSION}".encode()).hexdigest()[:20]
        path = self.cache_dir / f"{digest}.json"
        if path.exists():
            return np.asarray(json.loads(path.read_text()), dtype=float)
        beats = self._track(x)
        from ..paths import atomic_write

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps([float(b) for b in beats])))
        return beats

    def _track(self, x: np.ndarray) -> np.ndarray:
        from madmom.audio.signal import Signal

        try:
            return np.asarray(self.tracker(self.activation(Signal(x, sample_rate=44100, num_channels=1))), dtype=float)
        except (ValueError, IndexError):  # silent or too short
            return np.zeros(0)


def agreement_per_example(stems: Sequence[dict], contexts: Sequence[dict]) -> dict[str, np.ndarray]:
    """Chroma and beat agreement ``(n,)`` of each stem with its own context and with the next
    example's context (``*_mismatched``). ``stems``/``contexts``: per example ``{"chroma", "energy",
    "beats"}``; a stem's ``"level"`` (dBFS per frame) adds the agreement as heard (``chroma_heard*``).
    Per example, so that a comparison can say how much of a difference is which pieces were scored."""
    n = len(stems)
    if n < 2 or len(contexts) != n:
        raise ValueError(f"context agreement needs at least 2 (stem, context) pairs, got {n} stems and {len(contexts)} contexts")
    out = {}
    for key, shift in (("", 0), ("_mismatched", 1)):
        pairs = [(stems[i], contexts[(i + shift) % n]) for i in range(n)]
        out["chroma" + key] = np.array([frame_cosine(c["chroma"], s["chroma"], c["energy"]) for s, c in pairs])
        out["beat" + key] = np.array([beat_f_measure(c["beats"], s["beats"]) for s, c in pairs])
        if all("level" in s for s in stems):
            out["chroma_heard" + key] = np.array([
                frame_cosine(c["chroma"], s["chroma"], c["energy"], est_sounding=s["level"] >= SILENT_FRAME_DB)
                for s, c in pairs])
    return out


def agreement_table(stems: Sequence[dict], contexts: Sequence[dict]) -> dict[str, float]:
    """The means of :func:`agreement_per_example` over the examples, and the gaps (own - mismatched)."""
    out = {k: float(np.mean(v)) for k, v in agreement_per_example(stems, contexts).items()}
    out["chroma_gap"] = out["chroma"] - out["chroma_mismatched"]
    if "chroma_heard" in out:
        out["chroma_heard_gap"] = out["chroma_heard"] - out["chroma_heard_mismatched"]
    out["beat_gap"] = out["beat"] - out["beat_mismatched"]
    return out


class ContextAgreement(Metric):
    """Context agreement as a torchmetrics ``Metric``: ``update(stems, contexts, sample_rate)``
    with lists of mono clips, ``compute()`` -> chroma/beat agreement, mismatched, and gaps.

    The per-example chroma profiles and beat times are the state (list states, concatenated
    across processes); mismatched pairs are formed over the whole population at ``compute``.
    """

    full_state_update = False

    def __init__(self, beats: Union[bool, BeatTracker] = True, **kwargs):
        super().__init__(**kwargs)
        #: True builds a tracker; a :class:`BeatTracker` is shared (built once, its cache reused)
        self.tracker = beats if isinstance(beats, BeatTracker) else BeatTracker() if beats else None
        for side in ("stem", "context"):
            for what in ("chroma", "energy", "beats", "level"):
                self.add_state(f"{side}_{what}", default=[], dist_reduce_fx=None)

    def _features(self, wav: np.ndarray, sample_rate: int) -> dict:
        chroma, energy = chroma_frames(np.asarray(wav, np.float32), sample_rate)
        beats = self.tracker(wav, sample_rate) if self.tracker is not None else np.zeros(0)
        return {"chroma": chroma, "energy": energy, "beats": beats, "level": frame_levels_db(wav)}

    def update(self, stems, contexts, sample_rate: int) -> None:
        if len(stems) != len(contexts):
            raise ValueError(f"{len(stems)} stems but {len(contexts)} contexts")
        for side, clips in (("stem", stems), ("context", contexts)):
            for clip in clips:
                f = self._features(clip, sample_rate)
                for what, value in f.items():
                    getattr(self, f"{side}_{what}").append(torch.as_tensor(value, dtype=torch.float64, device=self.device))

    def _examples(self, side: str) -> list[dict]:
        names = ("chroma", "energy", "beats", "level")
        return [{w: v.cpu().numpy() for w, v in zip(names, row)} for row in zip(*(getattr(self, f"{side}_{w}") for w in names))]

    def compute(self) -> dict[str, torch.Tensor]:
        table = agreement_table(self._examples("stem"), self._examples("context"))
        if self.tracker is None:
            table = {k: v for k, v in table.items() if not k.startswith("beat")}
        return {k: torch.tensor(v) for k, v in table.items()}

    def per_example(self) -> dict[str, np.ndarray]:
        """:func:`agreement_per_example` of the examples so far, in the order they came (``(n,)`` each)."""
        table = agreement_per_example(self._examples("stem"), self._examples("context"))
        return {k: v for k, v in table.items() if self.tracker is not None or not k.startswith("beat")}
