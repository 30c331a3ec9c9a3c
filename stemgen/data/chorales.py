"""The embedded dataset: Bach chorales from music21's corpus, rendered to stems (Slakh layout).

Each chorale voice becomes a stem played by a General MIDI program drawn (seeded) from
families that suit its range (the bass voice always a Bass program); a Drums stem is
generated from the meter. Audio is rendered with the ``TimGM6mb.sf2`` soundfont that
``pretty_midi`` ships, through ``tinysoundfont``. Output per song::

    OUT/{train,validation,test}/TrackNNNNN/
        mix.flac  stems/S00.flac ... S04.flac  MIDI/S00.mid ...  metadata.yaml

Stems are loudness-normalised (RMS of the sounding part) and the mix is their sum, scaled
down together with the stems only if it would clip. The split is by chorale, from a hash
of the chorale name and the seed, so it does not depend on ``limit``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import write_audio
from ..errors import DependencyError
from ..instruments import from_program
from ..paths import atomic_write
from .songs import SPLITS


# Programs (0-based GM) per voice, grouped by family so that a song uses distinct families.
# Chosen for range: soprano C4-A5, alto G3-D5, tenor C3-G4, bass E2-D4.
VOICE_PROGRAMS = {
    "soprano": {"Piano": [0, 1], "Chromatic Percussion": [11, 12], "Organ": [16, 19],
                "Strings": [40], "Brass": [56], "Reed": [68, 71], "Pipe": [73, 75],
                "Synth Lead": [80, 81]},
    "alto": {"Piano": [0, 4], "Organ": [16, 19], "Guitar": [24, 25], "Strings": [41],
             "Ensemble": [48, 52], "Brass": [60], "Reed": [65, 71], "Synth Pad": [88, 89]},
    "tenor": {"Piano": [0, 2], "Organ": [19, 20], "Guitar": [24, 26], "Strings": [42],
              "Ensemble": [48, 49], "Brass": [57, 60], "Reed": [66, 70], "Synth Pad": [89, 91]},
    "bass": {"Bass": [32, 33, 34, 35, 38]},
}
VOICE_ORDER = ("soprano", "alto", "tenor", "bass")
# augmented versions are transposed by up to this many semitones either way: keeps each voice
# within about a fourth of its written range, where its programs still sound
MAX_TRANSPOSE = 6

# GM drum keys
KICK, SNARE, CLOSED_HAT, CRASH = 36, 38, 42, 49


@dataclass(frozen=True)
class NoteEvent:
    """A note in seconds: onset, offset, MIDI pitch, velocity."""

    start: float
    end: float
    pitch: int
    velocity: int


def default_chorales_dir() -> Path:
    """Where ``stemgen data chorales`` writes by default: ``$STEMGEN_HOME/data/chorales``."""
    from ..paths import data_dir

    return data_dir() / "chorales"


def soundfont_path() -> Path:
    """The General MIDI soundfont shipped inside ``pretty_midi``."""
    import pretty_midi

    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.exists():
        raise DependencyError(f"the soundfont {path} is missing: reinstall pretty_midi "
                              f"(pip install --force-reinstall pretty_midi).")
    return path


def chorale_names() -> list[str]:
    """All Bach chorales in music21's corpus (353), in corpus order."""
    from music21 import corpus

    return list(corpus.chorales.Iterator(numberingSystem="bwv", returnType="filename"))


def split_of(name: str, seed: int) -> str:
    """Split of a chorale: 80% train, 10% validation, 10% test, stable for a seed."""
    h = int(hashlib.sha1(f"{seed}:{name}".encode()).hexdigest(), 16) % 10
    return "train" if h < 8 else ("validation" if h == 8 else "test")


def select(names: list[str], limit: int | None, seed: int) -> list[tuple[int, str, str]]:
    """Pick ``limit`` chorales as ``(corpus_index, name, split)``.

    With a limit, each split gets its share (validation and test at least one each when
    ``limit >= 3``), taking chorales in corpus order within a split.
    """
    tagged = [(i, n, split_of(n, seed)) for i, n in enumerate(names)]
    if limit is None or limit >= len(tagged):
        return tagged
    n_hold = max(1, round(0.1 * limit)) if limit >= 3 else 0
    quota = {"validation": n_hold, "test": n_hold, "train": limit - 2 * n_hold}
    chosen = []
    for split in SPLITS:
        chosen += [t for t in tagged if t[2] == split][: quota[split]]
    return sorted(chosen)


def part_notes(part, seconds_per_quarter: float) -> tuple[list[NoteEvent], float]:
    """The notes of one music21 part in seconds (velocity 0, to be set by the caller), every
    chord tone a note, ties joined, and where the part ends, in quarter notes."""
    notes, end_q = [], 0.0
    for el in part.stripTies().flatten().notes:
        start = float(el.offset)
        dur = float(el.quarterLength)
        if dur <= 0:
            continue
        end_q = max(end_q, start + dur)
        for p in el.pitches:
            # slightly detached playing so repeated notes re-attack
            notes.append(NoteEvent(start * seconds_per_quarter, (start + dur) * seconds_per_quarter - 0.02,
                                   int(p.midi), 0))
    return notes, end_q


def parse_voices(name: str, tempo_bpm: float) -> tuple[dict[str, list[NoteEvent]], list[tuple[float, int, float]], float]:
    """Parse a chorale into note events per voice (seconds) and its beat grid.

    Returns ``(voices, beats, duration)``: ``voices`` maps soprano/alto/tenor/bass to notes;
    ``beats`` lists ``(time_s, beat_index_in_bar, beats_per_bar)``; ``duration`` in seconds.
    """
    from music21 import corpus

    score = corpus.parse(name)
    parts = list(score.parts)
    if len(parts) < 4:
        raise ValueError(f"chorale {name} has {len(parts)} parts, expected 4")
    spq = 60.0 / tempo_bpm  # seconds per quarter note
    voices: dict[str, list[NoteEvent]] = {}
    end_q = 0.0
    for voice, part in zip(VOICE_ORDER, parts[:4]):
        voices[voice], part_end = part_notes(part, spq)
        end_q = max(end_q, part_end)
    beats = beat_grid(parts[0], spq)
    return voices, beats, end_q * spq


def beat_grid(part, seconds_per_quarter: float) -> list[tuple[float, int, int]]:
    """The beats of a music21 part's measures: ``(time_s, beat_index_in_bar, beats_per_bar)``,
    following its time signatures (4/4 until one is given); a short first measure is a pickup."""
    from music21 import meter, stream

    beats = []
    ts = None
    for m in part.getElementsByClass(stream.Measure):
        found = m.getElementsByClass(meter.TimeSignature)
        if found:
            ts = found[0]
        if ts is None:
            ts = meter.TimeSignature("4/4")
        bar_q = float(ts.barDuration.quarterLength)
        beat_q = float(ts.beatDuration.quarterLength)
        n_beats = max(1, round(bar_q / beat_q))
        m_len = float(m.duration.quarterLength)
        # a short first measure is a pickup: its content sits at the end of the bar
        lead = bar_q - m_len if (m_len < bar_q and not beats) else 0.0
        for b in range(n_beats):
            pos = b * beat_q
            if lead - 1e-6 <= pos < lead + m_len - 1e-6:
                beats.append(((float(m.offset) + pos - lead) * seconds_per_quarter, b, n_beats))
    return beats


def drum_pattern(beats: list[tuple[float, int, int]], rng: np.random.Generator,
                 duration: float) -> list[NoteEvent]:
    """A simple kit part from the beat grid: kick on the downbeat (and mid-bar in even
    meters), snare on the back beats, closed hi-hat on every beat and off-beat, a crash
    every four bars."""
    events = []
    hit = 0.08
    bar_no = -1
    for k, (t, b, n) in enumerate(beats):
        if t >= duration:
            break
        if b == 0:
            bar_no += 1
            events.append(NoteEvent(t, t + hit, KICK, int(rng.integers(100, 120))))
            if bar_no % 4 == 0:
                events.append(NoteEvent(t, t + hit, CRASH, int(rng.integers(80, 100))))
        elif n % 2 == 0 and b == n // 2:
            events.append(NoteEvent(t, t + hit, KICK, int(rng.integers(90, 110))))
        if b % 2 == 1 or (n == 3 and b == 2):
            events.append(NoteEvent(t, t + hit, SNARE, int(rng.integers(90, 115))))
        events.append(NoteEvent(t, t + hit, CLOSED_HAT, int(rng.integers(55, 80))))
        nxt = beats[k + 1][0] if k + 1 < len(beats) else t + (t - beats[k - 1][0] if k else 0.5)
        half = 0.5 * (t + nxt)
        if half < duration:
            events.append(NoteEvent(half, half + hit, CLOSED_HAT, int(rng.integers(40, 65))))
    return events


def render_notes(notes: list[NoteEvent], program: int, is_drum: bool, sample_rate: int,
                 num_samples: int, sf_path: Path) -> np.ndarray:
    """Render notes with tinysoundfont to mono float32 ``(num_samples,)``."""
    try:
        import tinysoundfont
    except ImportError as err:
        raise DependencyError("rendering the chorales needs tinysoundfont: "
                              "pip install --no-deps tinysoundfont (part of `make install`).") from err
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(str(sf_path))
    chan = 9 if is_drum else 0
    synth.program_select(chan, sfid, 128 if is_drum else 0, 0 if is_drum else program, is_drums=is_drum)
    # (sample, kind, pitch, velocity): note-offs (kind 0) before note-ons at the same sample
    events = []
    for n in notes:
        events.append((int(round(n.start * sample_rate)), 1, n.pitch, n.velocity))
        events.append((int(round(n.end * sample_rate)), 0, n.pitch, 0))
    events.sort()
    out = np.zeros(num_samples, dtype=np.float32)
    pos = 0
    for sample, kind, pitch, vel in events:
        sample = min(sample, num_samples)
        if sample > pos:
            block = np.frombuffer(synth.generate(sample - pos), dtype=np.float32)
            out[pos:sample] = block.reshape(-1, 2).mean(axis=1)
            pos = sample
        if kind == 1:
            synth.noteon(chan, pitch, vel)
        else:
            synth.noteoff(chan, pitch)
    if pos < num_samples:
        out[pos:] = np.frombuffer(synth.generate(num_samples - pos), dtype=np.float32).reshape(-1, 2).mean(axis=1)
    return out


def write_midi(path: Path, notes: list[NoteEvent], program: int, is_drum: bool) -> None:
    """Write one stem's notes as a single-instrument MIDI file (the ground truth)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program, is_drum=is_drum)
    inst.notes = [pretty_midi.Note(velocity=max(1, n.velocity), pitch=n.pitch, start=n.start, end=n.end)
                  for n in notes]
    pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


def _rms_active(x: np.ndarray, sample_rate: int) -> float:
    """RMS over the 50 ms blocks that sound (above -60 dB of the loudest block)."""
    block = sample_rate // 20
    n = len(x) // block
    if n == 0:
        return float(np.sqrt(np.mean(x ** 2)) + 1e-12)
    e = (x[: n * block].reshape(n, block) ** 2).mean(axis=1)
    active = e[e > e.max() * 1e-6]
    return float(np.sqrt(active.mean()) + 1e-12)


def transposition(seed: int, index: int, version: int) -> int:
    """Semitones by which version ``version`` of chorale ``index`` is transposed: 0 for the
    original (version 0), else drawn from +-1..MAX_TRANSPOSE (never 0, so a version is never the
    original's key), stable for a seed."""
    if version == 0:
        return 0
    steps = [t for t in range(-MAX_TRANSPOSE, MAX_TRANSPOSE + 1) if t != 0]
    return steps[int(np.random.default_rng([seed, index, version, 1]).integers(len(steps)))]


def track_name(index: int, version: int = 0) -> str:
    """``TrackNNNNN`` for the original rendering, ``TrackNNNNN-vK`` for version K."""
    return f"Track{index:05d}" + (f"-v{version}" if version else "")


def with_velocities(notes: list[NoteEvent], rng: np.random.Generator) -> list[NoteEvent]:
    """A voice's notes played at one level drawn in 80-104, each note within +-8 of it."""
    base = int(rng.integers(80, 105))
    return [NoteEvent(n.start, n.end, n.pitch, int(np.clip(base + rng.integers(-8, 9), 1, 127))) for n in notes]


def draw_programs(voice_types: tuple[str, ...] | list[str], rng: np.random.Generator) -> list[int]:
    """One GM program per voice (``soprano``/``alto``/``tenor``/``bass``, in the order given), from
    :data:`VOICE_PROGRAMS`, each voice from a family no earlier voice took while one is left."""
    used: set[str] = set()
    programs = []
    for v in voice_types:
        fams = [f for f in VOICE_PROGRAMS[v] if f not in used] or list(VOICE_PROGRAMS[v])
        fam = fams[int(rng.integers(len(fams)))]
        used.add(fam)
        choices = VOICE_PROGRAMS[v][fam]
        programs.append(int(choices[int(rng.integers(len(choices)))]))
    return programs


def render_chorale(index: int, name: str, split: str, out: Path, seed: int,
                   sample_rate: int = 32000, target_dbfs: float = -20.0, version: int = 0) -> Path:
    """Render one chorale into ``out/split/TrackNNNNN`` (version K >= 1: ``TrackNNNNN-vK``, a
    re-rendering with its own programs, tempo, velocities and drums, transposed by
    :func:`transposition`) and return that folder."""
    rng = np.random.default_rng([seed, index] + ([version] if version else []))
    tempo = float(rng.uniform(72, 100))
    voices, beats, duration = parse_voices(name, tempo)
    transpose = transposition(seed, index, version)
    if transpose:
        voices = {v: [NoteEvent(n.start, n.end, n.pitch + transpose, n.velocity) for n in notes]
                  for v, notes in voices.items()}
    for v in VOICE_ORDER:
        voices[v] = with_velocities(voices[v], rng)
    programs = dict(zip(VOICE_ORDER, draw_programs(VOICE_ORDER, rng)))
    drums = drum_pattern(beats, rng, duration)
    specs = [(v, voices[v], programs[v], False) for v in VOICE_ORDER] + [("drums", drums, 0, True)]
    meta = {
        "UUID": hashlib.sha1((f"{seed}:{name}" + (f":v{version}" if version else "")).encode()).hexdigest()[:32],
        "source": "music21 Bach chorales (embedded stemgen dataset)",
        "chorale": name,
        "seed": seed,
        "version": version,
        "transpose_semitones": transpose,
        "tempo_bpm": round(tempo, 3),
    }
    return write_track(out / split / track_name(index, version), specs, duration, meta, sample_rate, target_dbfs)


def write_track(track: Path, specs: list[tuple[str, list[NoteEvent], int, bool]], duration: float, meta: dict,
                sample_rate: int = 32000, target_dbfs: float = -20.0) -> Path:
    """Render one song's stems into ``track`` (Slakh layout) and return it.

    ``specs`` lists ``(voice, notes, program, is_drum)`` per stem (``S00``, ``S01``, ... in that
    order); ``duration`` is the song's length in seconds (1.5 s more are rendered for release
    tails); ``meta`` is merged into ``metadata.yaml``, which is written last, so a track that has it
    is complete. Each stem is normalised to ``target_dbfs`` RMS over its sounding blocks; the mix is
    their sum, scaled down together with the stems only if it would clip.
    """
    num_samples = int(math.ceil((duration + 1.5) * sample_rate))
    sf_path = soundfont_path()
    stems: dict[str, np.ndarray] = {}
    meta_stems = {}
    for s_idx, (voice, notes, program, is_drum) in enumerate(specs):
        sid = f"S{s_idx:02d}"
        audio = render_notes(notes, program, is_drum, sample_rate, num_samples, sf_path)
        audio *= 10 ** (target_dbfs / 20) / _rms_active(audio, sample_rate)
        stems[sid] = audio
        inst = from_program(program, is_drum)
        write_midi(track / "MIDI" / f"{sid}.mid", notes, program, is_drum)
        meta_stems[sid] = {
            "audio_rendered": True,
            "inst_class": inst.name,
            "is_drum": is_drum,
            "midi_program_name": "Drums" if is_drum else _program_name(program),
            "midi_saved": True,
            "plugin_name": "TimGM6mb.sf2",
            "program_num": program,
            "voice": voice,
        }
    mix = np.sum(list(stems.values()), axis=0)
    peak = float(np.abs(mix).max())
    gain = 0.99 / peak if peak > 0.99 else 1.0  # scale stems with the mix so mix == sum(stems)
    for sid, audio in stems.items():
        write_audio(track / "stems" / f"{sid}.flac", audio * gain, sample_rate)
    write_audio(track / "mix.flac", mix * gain, sample_rate)
    meta = {"audio_dir": "stems", "midi_dir": "MIDI", **meta, "sample_rate": sample_rate,
            "overall_gain": round(gain, 6), "stems": meta_stems}
    import yaml

    # metadata last: a track with it is complete
    atomic_write(track / "metadata.yaml", lambda tmp: tmp.write_text(yaml.safe_dump(meta, sort_keys=True)))
    return track


def _program_name(program: int) -> str:
    import pretty_midi

    return pretty_midi.program_to_instrument_name(program)


def render_chorales(out: str | Path, limit: int | None = None, seed: int = 0,
                    sample_rate: int = 32000, progress: bool = True,
                    versions: tuple[int, ...] = (0,)) -> list[Path]:
    """Render chorales to ``out`` in the Slakh layout; tracks already complete are kept.

    Args:
        out: output folder.
        limit: number of chorales (``None``: all 353).
        seed: drives the split, programs, tempi and velocities.
        sample_rate: rendering rate in Hz (32000, the codec rate; readers resample anyway).
        progress: show a progress bar.
        versions: which renderings: 0 is the dataset itself (every split); K >= 1 is an
            augmented version of the *training* chorales only (``train/TrackNNNNN-vK``: other
            instruments, tempo and velocities, transposed by 1-6 semitones up or down), so the
            held-out chorales are never seen in any key. ``(1, 2)`` writes two augmented copies
            and nothing else (a folder of its own, for ``stemgen data tokens``).

    Returns:
        The track folders, in corpus order (version by version).
    """
    from tqdm.auto import tqdm

    if not versions or any(v < 0 for v in versions):
        raise ValueError(f"versions must be non-negative integers (0: the dataset, K >= 1: augmented "
                         f"copies of the training chorales), got {versions!r}")
    out = Path(out)
    picked = select(chorale_names(), limit, seed)
    jobs = [(index, name, split, v) for v in sorted(set(versions)) for index, name, split in picked
            if v == 0 or split == "train"]
    tracks = []
    for index, name, split, v in tqdm(jobs, desc="rendering chorales", unit="song", disable=not progress):
        track = out / split / track_name(index, v)
        if not _complete(track, seed, sample_rate, v):
            track = render_chorale(index, name, split, out, seed, sample_rate, version=v)
        tracks.append(track)
    (out / "chorales.json").write_text(json.dumps(
        {"seed": seed, "sample_rate": sample_rate, "limit": limit, "versions": sorted(set(versions)),
         "tracks": [str(t.relative_to(out)) for t in tracks]}, indent=1))
    return tracks


def _complete(track: Path, seed: int, sample_rate: int, version: int = 0) -> bool:
    m = complete_metadata(track)
    return (m is not None and m.get("seed") == seed and m.get("sample_rate") == sample_rate
            and m.get("version", 0) == version)


def complete_metadata(track: Path) -> dict | None:
    """A rendered track's ``metadata.yaml`` if the track is complete (the file, written last, is
    readable and every stem it lists exists), else ``None``."""
    meta = track / "metadata.yaml"
    if not meta.exists():
        return None
    import yaml

    try:
        m = yaml.safe_load(meta.read_text())
    except yaml.YAMLError:
        return None
    if not isinstance(m, dict) or not all((track / "stems" / f"{sid}.flac").exists() for sid in m.get("stems") or {}):
        return None
    return m
