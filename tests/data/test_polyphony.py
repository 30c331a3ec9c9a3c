"""The Palestrina training set: held-out movements, voice roles, layout, determinism."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from stemgen.data.chorales import split_of
from stemgen.data.polyphony import HELD_OUT, movement, polyphony_names, render_polyphony, voice_types
from stemgen.data.songs import scan
from stemgen.instruments import DRUMS_ID, from_program

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def test_movement_joins_the_sections_of_one_movement():
    assert movement("/x/corpus/palestrina/Credo_45_e.krn") == "palestrina/Credo_45"
    assert movement("palestrina/Sanctus_rpt_a.krn") == "palestrina/Sanctus_rpt"
    assert movement("palestrina/Kyrie_71.krn") == "palestrina/Kyrie_71"
    assert movement("palestrina/Agnus.krn") == "palestrina/Agnus"


def test_the_unseen_music_benchmark_pieces_are_never_in_the_set():
    names = polyphony_names()
    assert len(names) > 1200 and names == sorted(names)
    tested = set()
    for result in ("listening_unseen.json", "listening_unseen_full_context.json"):
        tested |= {n for n in json.loads((RESULTS / result).read_text())["song_names"] if n.startswith("palestrina/")}
    assert len(tested) == 5
    assert {movement(t) for t in tested} == set(HELD_OUT)
    assert not {movement(n) for n in names} & set(HELD_OUT)


def test_voice_types_follow_the_mean_pitch():
    assert voice_types([60.0, 48.0, 72.0, 55.0]) == ["alto", "bass", "soprano", "tenor"]
    assert voice_types([70.0, 50.0, 60.0]) == ["soprano", "bass", "alto"]
    six = voice_types([72.0, 67.0, 64.0, 60.0, 55.0, 48.0])
    assert six == ["soprano", "alto", "alto", "tenor", "tenor", "bass"]
    with pytest.raises(ValueError, match="at least 3"):
        voice_types([60.0, 48.0])


def test_render_layout_metadata_and_determinism(tmp_path, monkeypatch):
    names = polyphony_names()
    tracks = render_polyphony(tmp_path, limit=3, seconds=6.0, progress=False)
    # the first, middle and last piece; in the first two the voices enter one by one, and only two
    # of them sound in the first 6 s: skipped
    assert [t.name for t in tracks] == ["Pal01302"]
    listing = json.loads((tmp_path / "polyphony.json").read_text())
    assert listing["skipped"] == [names[0], names[651]] == ["palestrina/Agnus.krn", "palestrina/Credo_77_b.krn"]
    assert listing["held_out"] == list(HELD_OUT) and listing["tracks"] == [f"{tracks[0].parent.name}/Pal01302"]
    for track in tracks:
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        assert meta["piece"] == names[int(track.name[3:])]
        assert track.parent.name == split_of(meta["piece"], 0)  # the split does not depend on the limit
        stems = meta["stems"]
        voices = [s["voice"] for s in stems.values()]
        assert voices[0] == "soprano" and voices[-2:] == ["bass", "drums"] and len(stems) >= 4
        bass = next(s for s in stems.values() if s["voice"] == "bass")
        assert 32 <= bass["program_num"] <= 39
        drums = stems[f"S{len(stems) - 1:02d}"]
        assert drums["is_drum"] and from_program(drums["program_num"], True).id == DRUMS_ID
        assert sum(s["is_drum"] for s in stems.values()) == 1
        mix, sr = sf.read(track / "mix.flac", dtype="float32")
        assert sr == 32000 and abs(len(mix) / sr - 7.5) < 0.01  # 6 s and the 1.5 s release tail
        total = sum(sf.read(p, dtype="float32")[0] for p in sorted((track / "stems").glob("*.flac")))
        assert np.abs(mix - total).max() < 2.0 ** -15 * 2 * (len(stems) + 1)
        for sid in stems:
            audio, _ = sf.read(track / "stems" / f"{sid}.flac", dtype="float32")
            assert np.abs(audio).max() > 0.01
    # complete tracks are kept, not rendered again
    stamp = (tracks[0] / "mix.flac").stat().st_mtime_ns
    again = render_polyphony(tmp_path, limit=3, seconds=6.0, progress=False)
    assert again == tracks and (tracks[0] / "mix.flac").stat().st_mtime_ns == stamp
    # and the pieces skipped before are not parsed again (their names are in the listing)
    import stemgen.data.polyphony as polyphony

    parsed = []
    real = polyphony.render_piece
    monkeypatch.setattr(polyphony, "render_piece", lambda index, name, *a: parsed.append(name) or real(index, name, *a))
    assert render_polyphony(tmp_path, limit=3, seconds=6.0, progress=False) == tracks and parsed == []
    assert json.loads((tmp_path / "polyphony.json").read_text())["skipped"] == listing["skipped"]
    # other settings: every piece is parsed again, the skips decided again
    render_polyphony(tmp_path, limit=3, seconds=5.0, progress=False)
    assert parsed == [names[0], names[651], names[1302]]
    # the set reads as any Slakh-layout dataset
    split = tracks[0].parent.name
    report = scan(tmp_path, split=split)
    assert report.skipped == {} and [Path(song.id).name for song in report.songs] == [
        t.name for t in tracks if t.parent.name == split]


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="seconds must be positive"):
        render_polyphony(tmp_path, seconds=0)
    with pytest.raises(ValueError, match="limit must be at least 1"):
        render_polyphony(tmp_path, limit=0)
    with pytest.raises(ValueError, match="no pieces by"):
        polyphony_names(("nobody_at_all",))
