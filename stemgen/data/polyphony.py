"""More music to train on: Palestrina's mass movements from music21's corpus, rendered to stems
as the embedded chorales are (Slakh layout, the same soundfont, programs, loudness and drums).

The chorales give about 290 training songs, and every longer training on them has fitted those
songs rather than harmony (docs/listening.md). music21 ships 1318 four- to six-voice movements by
Palestrina: vocal polyphony whose lowest voice carries the harmony as a chorale's bass does.
Each piece's parts are ordered by mean pitch; the lowest is the bass (a Bass program), the highest
the soprano, the others alto (upper half) or tenor (lower half), each drawn from the chorales'
families for that range; a Drums stem follows the meter. Only the first ``seconds`` of a piece are
rendered (one training segment), at a tempo whose half note (Palestrina's beat) lasts about as long
as a chorale's quarter note, so the harmony changes at the chorales' pace. Output per piece::

    OUT/{train,validation,test}/PalNNNNN/  mix.flac  stems/S00.flac ...  MIDI/...  metadata.yaml

The movements that ``benchmarks/unseen_music.py`` tests on (every section of them) are never
rendered, so that benchmark stays music no model trained here has heard (:data:`HELD_OUT`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from .chorales import (VOICE_ORDER, NoteEvent, beat_grid, complete_metadata, draw_programs, drum_pattern,
                       part_notes, split_of, with_velocities, write_track)

#: composer folders of music21's corpus the set draws from
COMPOSERS = ("palestrina",)
#: movements ``benchmarks/unseen_music.py`` takes (its Palestrina pieces, ``composer/stem`` without
#: the section letter): no section of them is ever rendered here
HELD_OUT = ("palestrina/Benedictus_42", "palestrina/Credo_45", "palestrina/Credo_46",
            "palestrina/Kyrie_71", "palestrina/Sanctus_rpt")
#: tempo range, quarter notes per minute: a half note of 0.67-0.92 s, a chorale quarter's 0.6-0.83 s
TEMPO_BPM = (130.0, 180.0)


def default_polyphony_dir() -> Path:
    """Where ``stemgen data polyphony`` writes by default: ``$STEMGEN_HOME/data/palestrina``."""
    from ..paths import data_dir

    return data_dir() / "palestrina"


def movement(name: str) -> str:
    """``composer/stem`` of a corpus path without its section letter (``Credo_45_e.krn`` ->
    ``Credo_45``), so the sections of one movement count as one piece."""
    composer, file = name.split("/")[-2:]
    stem = file.rsplit(".", 1)[0]
    head, _, tail = stem.rpartition("_")
    return f"{composer}/{head if head and len(tail) == 1 and tail.isalpha() else stem}"


def polyphony_names(composers: tuple[str, ...] = COMPOSERS) -> list[str]:
    """The pieces the set may use, ``composer/file``, sorted, without :data:`HELD_OUT`."""
    from music21 import corpus

    names = []
    for composer in composers:
        paths = sorted(str(p) for p in corpus.getComposer(composer))
        if not paths:
            raise ValueError(f"music21's corpus has no pieces by {composer!r}")
        names += [f"{composer}/{Path(p).name}" for p in paths]
    return [n for n in names if movement(n) not in HELD_OUT]


def voice_types(mean_pitches: list[float]) -> list[str]:
    """The chorale voice whose programs suit each part, from its mean MIDI pitch: the lowest part
    ``bass``, the highest ``soprano``, the parts between ``alto`` (upper half) or ``tenor``."""
    n = len(mean_pitches)
    if n < 3:
        raise ValueError(f"a piece needs at least 3 sounding parts, got {n}")
    rank = np.argsort(-np.asarray(mean_pitches, dtype=float), kind="stable")  # highest first
    types = [""] * n
    for r, i in enumerate(rank):
        types[i] = "soprano" if r == 0 else "bass" if r == n - 1 else ("alto" if r <= (n - 1) // 2 else "tenor")
    return types


def render_piece(index: int, name: str, split: str, out: Path, seed: int, seconds: float = 60.0,
                 sample_rate: int = 32000, target_dbfs: float = -20.0) -> Path | None:
    """Render the first ``seconds`` of one piece into ``out/split/PalNNNNN`` and return that folder,
    or ``None`` if fewer than three parts (bass included) sound in them."""
    from music21 import corpus

    rng = np.random.default_rng([seed, index, 7])  # 7: apart from the chorales' draws
    tempo = float(rng.uniform(*TEMPO_BPM))
    spq = 60.0 / tempo
    score = corpus.parse(name)
    parts = list(score.parts)
    voices = []
    for part in parts:
        notes, _ = part_notes(part, spq)
        notes = [NoteEvent(e.start, min(e.end, seconds), e.pitch, 0) for e in notes if e.start < seconds - 0.05]
        if notes:
            voices.append(notes)
    if len(voices) < 3:
        return None
    duration = min(seconds, max(e.end for v in voices for e in v))
    types = voice_types([float(np.mean([e.pitch for e in v])) for v in voices])
    voices = [with_velocities(v, rng) for v in voices]
    programs = draw_programs(types, rng)
    beats = beat_grid(parts[0], spq)
    drums = drum_pattern(beats, rng, duration)
    order = sorted(range(len(voices)), key=lambda i: VOICE_ORDER.index(types[i]))
    specs = [(types[i], voices[i], programs[i], False) for i in order] + [("drums", drums, 0, True)]
    meta = {
        "UUID": hashlib.sha1(f"{seed}:{name}".encode()).hexdigest()[:32],
        "source": "music21 corpus polyphony (stemgen training set)",
        "piece": name,
        "seed": seed,
        "seconds": seconds,
        "tempo_bpm": round(tempo, 3),
    }
    return write_track(out / split / f"Pal{index:05d}", specs, duration, meta, sample_rate, target_dbfs)


def render_polyphony(out: str | Path, limit: int | None = None, seed: int = 0, seconds: float = 60.0,
                     sample_rate: int = 32000, progress: bool = True,
                     composers: tuple[str, ...] = COMPOSERS) -> list[Path]:
    """Render pieces to ``out`` in the Slakh layout; tracks already complete are kept.

    Args:
        out: output folder.
        limit: number of pieces (``None``: every one, 1303 for Palestrina: 1318 less the held-out
            ones), spread evenly over the sorted corpus; each piece's split (80/10/10) comes from
            a hash of its name, as a chorale's does, so it does not depend on ``limit``.
        seed: drives the split, programs, tempi, velocities and drums.
        seconds: rendered length of each piece (from its start).
        sample_rate: rendering rate in Hz.
        progress: show a progress bar.
        composers: corpus folders to draw from.

    Returns:
        The track folders written or found, in corpus order; pieces with fewer than three
        sounding parts are skipped (counted in ``out/polyphony.json``).
    """
    from tqdm.auto import tqdm

    if seconds <= 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    names = polyphony_names(composers)
    picked = range(len(names))
    if limit is not None and limit < len(names):
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        picked = sorted(set(np.linspace(0, len(names) - 1, limit).round().astype(int).tolist()))
    listing = Path(out) / "polyphony.json"
    settings = {"seed": seed, "sample_rate": sample_rate, "seconds": seconds}
    before = json.loads(listing.read_text()) if listing.is_file() else {}
    # a piece skipped before with the same settings would be parsed again only to be skipped again
    known_skips = set(before.get("skipped", [])) if all(before.get(k) == v for k, v in settings.items()) else set()
    tracks, skipped = [], []
    for index in tqdm(picked, desc="rendering polyphony", unit="piece", disable=not progress):
        name, split = names[index], split_of(names[index], seed)
        if name in known_skips:
            skipped.append(name)
            continue
        track = Path(out) / split / f"Pal{index:05d}"
        m = complete_metadata(track)
        if m is None or (m.get("seed"), m.get("sample_rate"), m.get("piece"), m.get("seconds")) != (
                seed, sample_rate, name, seconds):
            track = render_piece(index, name, split, Path(out), seed, seconds, sample_rate)
        if track is None:
            skipped.append(name)
        else:
            tracks.append(track)
    listing.write_text(json.dumps(
        {**settings, "limit": limit,
         "composers": list(composers), "held_out": list(HELD_OUT), "skipped": skipped,
         "tracks": [str(t.relative_to(out)) for t in tracks]}, indent=1))
    return tracks
