"""The instrument conditioning vocabulary.

18 entries: the 16 General MIDI program families (ids 0-15, in program order), Drums
(id 16) and a null entry (id 17) used when the instrument condition is dropped. This is
the 17 Slakh2100 classes plus the null entry. Slakh's ``inst_class`` strings vary in
spelling, so stems are mapped by ``program_num`` (0-based) and ``is_drum``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from .errors import InstrumentError


@dataclass(frozen=True)
class Instrument:
    """One conditioning class: its id, display name and the 0-based GM programs it covers."""

    id: int
    name: str
    programs: tuple[int, ...]

    @property
    def is_drums(self) -> bool:
        return self.id == DRUMS_ID

    @property
    def is_null(self) -> bool:
        return self.id == NULL_ID


_FAMILIES = (
    "Piano", "Chromatic Percussion", "Organ", "Guitar", "Bass", "Strings",
    "Strings (continued)", "Brass", "Reed", "Pipe", "Synth Lead", "Synth Pad",
    "Synth Effects", "Ethnic", "Percussive", "Sound Effects",
)

#: id of the Drums class (``is_drum`` stems, any program).
DRUMS_ID = 16
#: id of the null entry (instrument condition dropped).
NULL_ID = 17
#: size of the conditioning vocabulary.
NUM_INSTRUMENTS = 18

INSTRUMENTS: tuple[Instrument, ...] = tuple(
    Instrument(i, name, tuple(range(8 * i, 8 * i + 8))) for i, name in enumerate(_FAMILIES)
) + (Instrument(DRUMS_ID, "Drums", ()), Instrument(NULL_ID, "Null", ()))

# Friendly names -> id. Keys are normalised with _norm(). "strings" names the first strings
# family (programs 40-47, solo strings); "ensemble" the second (48-55: string ensembles, choir).
_ALIASES = {
    "piano": 0, "keys": 0, "keyboard": 0,
    "chromatic percussion": 1, "chromatic": 1, "mallets": 1, "bells": 1,
    "organ": 2,
    "guitar": 3,
    "bass": 4,
    "strings": 5, "string": 5,
    "strings (continued)": 6, "strings continued": 6, "ensemble": 6, "string ensemble": 6,
    "brass": 7,
    "reed": 8, "reeds": 8, "woodwind": 8, "woodwinds": 8, "sax": 8, "saxophone": 8,
    "pipe": 9, "pipes": 9, "flute": 9,
    "synth lead": 10, "lead": 10,
    "synth pad": 11, "pad": 11,
    "synth effects": 12, "synth fx": 12,
    "ethnic": 13,
    "percussive": 14,
    "sound effects": 15, "sfx": 15,
    "drums": DRUMS_ID, "drum": DRUMS_ID, "drum kit": DRUMS_ID, "percussion": DRUMS_ID,
}


def _norm(name: str) -> str:
    return " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())


def valid_names() -> list[str]:
    """The names :func:`resolve` accepts (canonical names first, then aliases)."""
    canonical = [inst.name.lower() for inst in INSTRUMENTS if not inst.is_null]
    return canonical + sorted(set(_ALIASES) - set(canonical))


def resolve(instrument: "str | int | Instrument") -> Instrument:
    """Resolve a friendly name (case-insensitive), a class id or an :class:`Instrument`.

    The null entry is not a valid request (it is only used for condition dropout).

    Raises:
        InstrumentError: unknown name or id; the message lists the valid names.
    """
    if isinstance(instrument, Instrument):
        return instrument
    if isinstance(instrument, bool):
        raise InstrumentError(f"instrument must be a name or class id, got {instrument!r}.")
    if isinstance(instrument, int):
        if 0 <= instrument < NULL_ID:
            return INSTRUMENTS[instrument]
        raise InstrumentError(f"instrument id {instrument} is out of range: valid ids are "
                              f"0..{NULL_ID - 1} ({_listing()}).")
    if not isinstance(instrument, str):
        raise InstrumentError(f"instrument must be a name or class id, got {type(instrument).__name__}.")
    key = _norm(instrument)
    for inst in INSTRUMENTS[:NULL_ID]:
        if key == inst.name.lower():
            return inst
    if key in _ALIASES:
        return INSTRUMENTS[_ALIASES[key]]
    close = difflib.get_close_matches(key, valid_names(), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    classes = ", ".join(inst.name.lower() for inst in INSTRUMENTS[:NULL_ID])
    raise InstrumentError(f"unknown instrument {instrument!r}.{hint} Instrument classes: {classes} "
                          f"(more aliases: stemgen.instruments.valid_names()).")


def from_program(program_num: int, is_drum: bool = False) -> Instrument:
    """Class of a stem from its 0-based GM program number and drum flag (Slakh metadata)."""
    if is_drum:
        return INSTRUMENTS[DRUMS_ID]
    if isinstance(program_num, bool) or not isinstance(program_num, int) or not 0 <= program_num <= 127:
        raise InstrumentError(f"MIDI program {program_num!r} is not a 0-based General MIDI "
                              f"program (0..127).")
    return INSTRUMENTS[program_num // 8]


def by_id(class_id: int) -> Instrument:
    """The entry with this id, including the null entry (id 17)."""
    if isinstance(class_id, bool) or not isinstance(class_id, int) or not 0 <= class_id < NUM_INSTRUMENTS:
        raise InstrumentError(f"instrument id {class_id!r} is out of range 0..{NUM_INSTRUMENTS - 1}.")
    return INSTRUMENTS[class_id]


def _listing() -> str:
    return ", ".join(f"{inst.id}={inst.name}" for inst in INSTRUMENTS[:NULL_ID])
