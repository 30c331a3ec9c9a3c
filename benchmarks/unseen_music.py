"""Music the demo model never saw: string quartets (Haydn, Mozart, Beethoven), madrigals
(Monteverdi) and masses (Palestrina) from music21's corpus, its lowest part as the bass and the
others as the context, rendered with instruments no chorale uses (harpsichord, harp, tremolo and
pizzicato strings, voice, brass section, saxophone, English horn, recorder, harmonica).

Not a training set: a check that a recipe which only fits the chorales shows up as such. The
pieces are chosen in a fixed order (sorted corpus paths, a fixed number per composer) and each is
rendered with programs and a tempo drawn from ``seed``, so a run is reproducible; the audio is
rendered on the fly (seconds per piece, nothing cached).
"""

from __future__ import annotations

import numpy as np

#: composer folder in music21's corpus -> how many of its pieces (first in sorted path order)
COMPOSERS = {"haydn": 2, "mozart": 2, "beethoven": 2, "monteverdi": 5, "palestrina": 5}
#: General MIDI programs (0-based) for the upper parts: none of them is a chorale voice's program
UNSEEN_PROGRAMS = (6, 22, 44, 45, 46, 53, 61, 64, 69, 74)
BASS_PROGRAM = 32  # the reference bass: an acoustic bass, as the chorales' bass


def unseen_pieces(n: int, sample_rate: int, seconds: float, seed: int = 0) -> list[dict]:
    """Up to ``n`` pieces whose bass and at least two upper parts sound in the first ``seconds``:
    ``{"name", "context" (upper parts mixed), "bass"}``, mono float32 at ``sample_rate``."""
    from music21 import corpus

    from stemgen.audio import dbfs, mix_down
    from stemgen.data.chorales import NoteEvent, part_notes, render_notes, soundfont_path

    sf_path, num = soundfont_path(), int(seconds * sample_rate)

    def level(x: np.ndarray) -> np.ndarray:  # each part at -20 dBFS RMS, as the chorales' stems
        return (x * 10 ** ((-20.0 - dbfs(x)) / 20) if dbfs(x) > -60.0 else x).astype(np.float32)

    out = []
    for composer, count in COMPOSERS.items():
        taken = 0
        paths = sorted(str(p) for p in corpus.getComposer(composer))
        stride = max(1, len(paths) // count)  # spread over the composer's works: every stride-th first
        for path in [p for offset in range(stride) for p in paths[offset::stride]]:
            if taken == count or len(out) == n:
                break
            score = corpus.parse(path)
            parts = list(score.parts)
            if len(parts) < 3:
                continue
            rng = np.random.default_rng([seed, len(out), taken])
            spq = 60.0 / float(rng.uniform(80, 120))  # seconds per quarter note
            voices = []
            for part in parts:
                notes, _ = part_notes(part, spq)
                velocity = int(rng.integers(80, 105))
                voices.append([NoteEvent(e.start, e.end, e.pitch, velocity) for e in notes if e.start < seconds])
            # the lowest part is the one whose mean pitch is lowest (score order varies)
            low = int(np.argmin([np.mean([e.pitch for e in v]) if v else 1e9 for v in voices]))
            programs = rng.choice(UNSEEN_PROGRAMS, size=len(parts) - 1, replace=len(parts) - 1 > len(UNSEEN_PROGRAMS))
            upper = [level(render_notes(v, int(prog), False, sample_rate, num, sf_path))
                     for v, prog in zip([v for i, v in enumerate(voices) if i != low], programs)]
            bass = level(render_notes(voices[low], BASS_PROGRAM, False, sample_rate, num, sf_path))
            # harmony to follow: the bass and at least two upper parts sound in the excerpt
            if dbfs(bass) <= -50.0 or sum(dbfs(u) > -50.0 for u in upper) < 2:
                continue
            name = path.split(f"/{composer}/", 1)[-1]
            out.append({"name": f"{composer}/{name}", "context": mix_down(upper), "bass": bass})
            taken += 1
    return out
