import pytest

from stemgen.errors import InstrumentError
from stemgen.instruments import (DRUMS_ID, INSTRUMENTS, NULL_ID, NUM_INSTRUMENTS, by_id, from_program,
                                 resolve, valid_names)


def test_vocabulary_layout():
    assert NUM_INSTRUMENTS == len(INSTRUMENTS) == 18
    assert [i.id for i in INSTRUMENTS] == list(range(18))
    assert INSTRUMENTS[DRUMS_ID].name == "Drums" and INSTRUMENTS[NULL_ID].is_null
    covered = sorted(p for inst in INSTRUMENTS for p in inst.programs)
    assert covered == list(range(128))


@pytest.mark.parametrize("program,name", [(0, "Piano"), (7, "Piano"), (8, "Chromatic Percussion"),
                                          (33, "Bass"), (40, "Strings"), (48, "Strings (continued)"),
                                          (56, "Brass"), (71, "Reed"), (73, "Pipe"), (127, "Sound Effects")])
def test_program_mapping(program, name):
    assert from_program(program).name == name


def test_drum_flag_wins_over_program():
    assert from_program(0, is_drum=True).id == DRUMS_ID
    assert from_program(118, is_drum=True).id == DRUMS_ID


@pytest.mark.parametrize("name,expected", [("bass", 4), ("BASS", 4), ("Drums", DRUMS_ID), ("piano", 0),
                                           ("guitar", 3), ("strings", 5), (" Synth-Pad ", 11),
                                           ("Strings (continued)", 6), (4, 4)])
def test_friendly_names(name, expected):
    assert resolve(name).id == expected


def test_unknown_name_lists_valid_names():
    with pytest.raises(InstrumentError) as err:
        resolve("kazoo")
    assert "kazoo" in str(err.value) and "bass" in str(err.value) and "drums" in str(err.value)
    assert "bass" in valid_names()
    assert "did you mean" not in str(err.value).lower()


@pytest.mark.parametrize("typo,suggested", [("bas", "'bass'"), ("gutar", "'guitar'"), ("Pianno", "'piano'"),
                                            ("drm", "'drums'")])
def test_a_typo_gets_the_closest_names(typo, suggested):
    with pytest.raises(InstrumentError, match=f"Did you mean .*{suggested}"):
        resolve(typo)


def test_null_and_out_of_range_are_errors():
    with pytest.raises(InstrumentError):
        resolve("null")
    with pytest.raises(InstrumentError, match="out of range"):
        resolve(NULL_ID)
    with pytest.raises(InstrumentError):
        from_program(128)
    with pytest.raises(InstrumentError):
        by_id(18)
    assert by_id(NULL_ID).is_null
