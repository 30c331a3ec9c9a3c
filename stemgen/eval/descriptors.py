"""The eleven MIR descriptors of MIRDD (after StemGen, paper section 3.2).

Computed on a stem mixed with its context. madmom supplies key, chords, beats/downbeats, piano
notes and onsets; mir_eval parses chord labels; structure comes from a Laplacian segmentation
(McFee & Ellis 2014, the recipe librosa documents) written here with numpy/scipy.

Each descriptor is a list of hashable values per example (a single value for the scalar ones),
so that MIRDD can histogram the two populations over shared bins.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

#: bump when an extractor changes: cached results of older versions are ignored
VERSION = 1
ANALYSIS_RATE = 44100  # madmom's models are trained at 44.1 kHz
PERCUSSIVE_WINDOW = 0.6  # seconds (paper)
STRUCTURE_CLUSTERS = 4
PITCH_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
#: madmom's key vocabulary (``madmom.features.key.KEY_LABELS``), in its order
KEY_LABELS = ("A major", "Bb major", "B major", "C major", "Db major", "D major", "Eb major", "E major", "F major",
              "F# major", "G major", "Ab major", "A minor", "Bb minor", "B minor", "C minor", "C# minor", "D minor",
              "D# minor", "E minor", "F minor", "F# minor", "G minor", "G# minor")
TRIAD_LABELS = ("N",) + tuple(f"{p}:{q}" for p in PITCH_NAMES for q in ("maj", "min"))

NAMES = ("key", "pitch_range", "unique_pitch_classes", "percussive_density", "beats_per_bar", "chord_variety",
         "tonality_alteration", "note_pitches", "note_pitch_classes", "chord_triads", "structure")


@dataclass
class Descriptors:
    """The eleven descriptors of one example (stem + context)."""

    key: str  # e.g. "E minor"
    pitch_range: int  # semitones between the lowest and highest note (0 without notes)
    unique_pitch_classes: int
    percussive_density: int  # most onsets within any 0.6 s window
    beats_per_bar: int  # 0 when no downbeats were found
    chord_variety: int  # distinct chord labels (no-chord excluded)
    tonality_alteration: float  # share of chord changes that switch major <-> minor
    note_pitches: list[int]
    note_pitch_classes: list[int]
    chord_triads: list[str]  # one root:maj/min/N label per chord segment
    structure: list[int]  # segment label per beat, relabelled in order of appearance

    def values(self, name: str) -> list:
        """The values MIRDD histograms for descriptor ``name`` (alteration ratio in tenths)."""
        v = getattr(self, name)
        if name == "tonality_alteration":
            return [round(v, 1)]
        return list(v) if isinstance(v, list) else [v]

    def codes(self, name: str) -> list[int]:
        """:meth:`values` as integers (labels by their index in a fixed vocabulary), so that a
        population can live in tensors (torchmetrics state, synced across processes)."""
        if name == "key":
            return [KEY_LABELS.index(self.key)]
        if name == "chord_triads":
            return [TRIAD_LABELS.index(t) for t in self.chord_triads]
        if name == "tonality_alteration":
            return [int(round(10 * self.tonality_alteration))]
        return [int(v) for v in self.values(name)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Descriptors":
        return cls(**{f.name: d[f.name] for f in fields(cls)})


# -- pure functions over extractor outputs ----------------------------------------------------

def pitch_range(notes: np.ndarray) -> int:
    """``notes (n, >=2)`` rows (onset s, MIDI pitch, ...): highest minus lowest pitch."""
    return int(np.ptp(notes[:, 1])) if len(notes) else 0


def pitch_classes(notes: np.ndarray) -> list[int]:
    return [int(p) % 12 for p in notes[:, 1]] if len(notes) else []


def max_onsets_in_window(onsets: np.ndarray, window: float = PERCUSSIVE_WINDOW) -> int:
    """Most onsets (seconds, sorted) inside any window of ``window`` seconds."""
    t = np.sort(np.asarray(onsets, dtype=float))
    if len(t) == 0:
        return 0
    ends = np.searchsorted(t, t + window, side="left")  # onsets in [t_i, t_i + window)
    return int((ends - np.arange(len(t))).max())


def beats_per_bar(downbeats: np.ndarray) -> int:
    """The most common bar length from ``(n, 2)`` rows (time s, beat number in bar, 1 = downbeat)."""
    if len(downbeats) == 0:
        return 0
    numbers = np.asarray(downbeats)[:, 1].astype(int)
    starts = np.flatnonzero(numbers == 1)
    lengths = [int(numbers[e - 1]) for e in starts[1:]]  # the last beat number before each downbeat
    if not lengths:
        return int(numbers.max())
    values, counts = np.unique(lengths, return_counts=True)
    return int(values[np.argmax(counts)])


def triad(label: str) -> str:
    """Reduce a chord label (Harte syntax) to ``root:maj``, ``root:min`` or ``N``."""
    import mir_eval.chord as ch

    root, quality, _, _ = ch.split(label)
    if root in ("N", "X"):
        return "N"
    bitmap = ch.quality_to_bitmap(quality) if quality else ch.quality_to_bitmap("maj")
    third = "min" if bitmap[3] and not bitmap[4] else "maj"
    return f"{PITCH_NAMES[ch.pitch_class_to_semitone(root) % 12]}:{third}"


def chord_variety(labels: list[str]) -> int:
    return len({lab for lab in labels if lab not in ("N", "X")})


def tonality_alteration(labels: list[str]) -> float:
    """Share of changes between consecutive chords (no-chord skipped) that flip major <-> minor."""
    qualities = [triad(lab).split(":")[1] for lab in labels if triad(lab) != "N"]
    changes = [(a, b) for a, b in zip(qualities, qualities[1:])]
    return float(np.mean([a != b for a, b in changes])) if changes else 0.0


def first_appearance_labels(labels: np.ndarray) -> list[int]:
    """Relabel so that labels count up in order of first appearance ([2, 2, 0, 2] -> [0, 0, 1, 0])."""
    mapping: dict[int, int] = {}
    return [mapping.setdefault(int(v), len(mapping)) for v in labels]


def laplacian_segmentation(features: np.ndarray, k: int = STRUCTURE_CLUSTERS, seed: int = 0) -> list[int]:
    """Segment labels per frame of ``features (D, T)`` (beat-synchronous) by spectral clustering
    of a recurrence + path graph (McFee & Ellis 2014)."""
    from scipy.cluster.vq import kmeans2
    from scipy.spatial.distance import cdist

    x = np.asarray(features, dtype=float)
    t = x.shape[1]
    k = max(1, min(k, t // 4))
    if k == 1 or t < 8:
        return [0] * t
    x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-9)
    d = cdist(x.T, x.T, "sqeuclidean")  # (T, T)
    # recurrence: mutual k-nearest neighbours (not the frame itself or its direct neighbours)
    width = max(2, int(2 * np.ceil(np.sqrt(t))))
    dd = d + np.diag(np.full(t, np.inf))
    for off in (1, -1):
        dd[np.arange(max(0, -off), t - max(0, off)), np.arange(max(0, off), t + min(0, off))] = np.inf
    nn = np.argsort(dd, 1)[:, :width]
    knn = np.zeros((t, t), bool)
    knn[np.repeat(np.arange(t), width), nn.ravel()] = True
    rec = (knn & knn.T).astype(float)
    sigma = np.median(d[d > 0]) if (d > 0).any() else 1.0
    rec *= np.exp(-d / sigma)
    # path: similarity of consecutive frames
    step = np.exp(-np.diag(d, 1) / sigma)
    path = np.diag(step, 1) + np.diag(step, -1)
    deg_r, deg_p = rec.sum(1), path.sum(1)
    mu = float(deg_p @ (deg_p + deg_r) / (np.sum((deg_p + deg_r) ** 2) + 1e-12))
    a = mu * rec + (1 - mu) * path
    deg = a.sum(1)
    inv = 1.0 / np.sqrt(np.maximum(deg, 1e-12))
    lap = np.eye(t) - inv[:, None] * a * inv[None, :]
    _, vecs = np.linalg.eigh(lap)
    emb = vecs[:, :k]
    emb = emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)
    _, labels = kmeans2(emb, k, seed=seed, minit="++")
    return first_appearance_labels(labels)


def beat_sync(features: np.ndarray, frame_rate: float, beats: np.ndarray) -> np.ndarray:
    """Mean of ``features (D, T)`` between consecutive beat times (seconds) -> ``(D, n_beats + 1)``."""
    edges = np.unique(np.clip(np.round(np.asarray(beats) * frame_rate).astype(int), 0, features.shape[1]))
    edges = np.concatenate([[0], edges[(edges > 0) & (edges < features.shape[1])], [features.shape[1]]])
    return np.stack([features[:, a:b].mean(1) for a, b in zip(edges[:-1], edges[1:]) if b > a], 1)


def structure_features(wav: np.ndarray, sample_rate: int, hop: int = 512) -> tuple[np.ndarray, float]:
    """Chroma (12) and 20 log-mel cepstral coefficients per frame: ``(32, T)`` and the frame rate."""
    from scipy.fft import dct

    from ..spectra import chroma_matrix, mel_filterbank, power_spectrogram

    n_fft = 4096
    power = power_spectrogram(wav, n_fft, hop)
    chroma = chroma_matrix(n_fft, sample_rate) @ power
    chroma = chroma / (chroma.max(0, keepdims=True) + 1e-12)
    logmel = np.log10(mel_filterbank(64, n_fft, sample_rate) @ power + 1e-10)
    mfcc = dct(logmel, axis=0, norm="ortho")[:20]
    return np.concatenate([chroma, mfcc]), sample_rate / hop


# -- the extractor ----------------------------------------------------------------------------

class DescriptorExtractor:
    """Computes :class:`Descriptors` from audio; madmom processors are built once and reused.

    Args:
        cache_dir: if given, each example's result is stored there as JSON, keyed by a hash of
            its samples, so rerunning a benchmark on the same audio is cheap.
    """

    def __init__(self, cache_dir: str | Path | None = None):
        from .madmom_import import import_madmom

        import_madmom()
        from madmom.features.chords import CNNChordFeatureProcessor, CRFChordRecognitionProcessor
        from madmom.features.downbeats import DBNDownBeatTrackingProcessor, RNNDownBeatProcessor
        from madmom.features.key import CNNKeyRecognitionProcessor
        from madmom.features.notes import ADSRNoteTrackingProcessor, CNNPianoNoteProcessor
        from madmom.features.onsets import CNNOnsetProcessor, OnsetPeakPickingProcessor

        self.key = CNNKeyRecognitionProcessor()
        self.chord_features, self.chords = CNNChordFeatureProcessor(), CRFChordRecognitionProcessor()
        self.downbeat_act = RNNDownBeatProcessor(num_threads=1)
        self.downbeats = DBNDownBeatTrackingProcessor(beats_per_bar=[2, 3, 4], fps=100, num_threads=1)
        self.note_act, self.notes = CNNPianoNoteProcessor(), ADSRNoteTrackingProcessor()
        self.onset_act, self.onsets = CNNOnsetProcessor(), OnsetPeakPickingProcessor(fps=100, threshold=0.5)
        self.cache_dir = Path(cache_dir) if cache_dir else None

    def raw(self, wav: np.ndarray) -> dict:
        """The extractors' outputs for ``(N,)`` audio at :data:`ANALYSIS_RATE`."""
        from madmom.audio.signal import Signal
        from madmom.features.key import key_prediction_to_label

        sig = Signal(np.asarray(wav, dtype=np.float32), sample_rate=ANALYSIS_RATE, num_channels=1)
        chords = self.chords(self.chord_features(sig))
        try:
            downbeats = np.asarray(self.downbeats(self.downbeat_act(sig))).reshape(-1, 2)
        except (ValueError, IndexError):  # too short or no beat found
            downbeats = np.zeros((0, 2))
        return {"key": key_prediction_to_label(self.key(sig)),
                "chords": [str(c[2]) for c in chords],
                "downbeats": downbeats,
                "notes": np.asarray(self.notes(self.note_act(sig))).reshape(-1, 3),
                "onsets": np.asarray(self.onsets(self.onset_act(sig)))}

    def __call__(self, wav: np.ndarray, sample_rate: int) -> Descriptors:
        """Descriptors of mono ``(N,)`` audio (the stem mixed with its context)."""
        from ..audio import resample

        x = resample(np.asarray(wav, dtype=np.float32), int(sample_rate), ANALYSIS_RATE)
        path = None
        if self.cache_dir is not None:
            digest = hashlib.sha1(x.tobytes() + f"v{VERSION}".encode()).hexdigest()[:20]
            path = self.cache_dir / f"{digest}.json"
            if path.exists():
                return Descriptors.from_dict(json.loads(path.read_text()))
        r = self.raw(x)
        beats = r["downbeats"][:, 0] if len(r["downbeats"]) else np.zeros(0)
        feats, rate = structure_features(x, ANALYSIS_RATE)
        structure = laplacian_segmentation(beat_sync(feats, rate, beats)) if len(beats) >= 8 else []
        d = Descriptors(key=r["key"], pitch_range=pitch_range(r["notes"]),
                        unique_pitch_classes=len(set(pitch_classes(r["notes"]))),
                        percussive_density=max_onsets_in_window(r["onsets"]),
                        beats_per_bar=beats_per_bar(r["downbeats"]), chord_variety=chord_variety(r["chords"]),
                        tonality_alteration=tonality_alteration(r["chords"]),
                        note_pitches=[int(p) for p in r["notes"][:, 1]], note_pitch_classes=pitch_classes(r["notes"]),
                        chord_triads=[triad(c) for c in r["chords"]], structure=structure)
        if path is not None:
            from ..paths import atomic_write

            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: tmp.write_text(json.dumps(d.to_dict())))
        return d
