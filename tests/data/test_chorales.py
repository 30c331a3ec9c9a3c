"""The embedded chorale dataset: layout, metadata, determinism, splits, drums."""

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import yaml

from stemgen.data.chorales import (CLOSED_HAT, KICK, SNARE, chorale_names, drum_pattern, render_chorales,
                                   select, split_of, transposition)
from stemgen.instruments import DRUMS_ID, from_program


def test_corpus_has_the_353_chorales():
    names = chorale_names()
    assert len(names) == 353 and names[0] == "bach/bwv2.6"


def test_split_is_stable_and_limit_keeps_each_split():
    names = chorale_names()
    splits = [split_of(n, 0) for n in names]
    assert 0.7 < splits.count("train") / len(names) < 0.9
    assert {split_of(n, 0) for n in names[:50]} == {"train", "validation", "test"}
    picked = select(names, 10, seed=0)
    assert len(picked) == 10
    assert sorted(s for _, _, s in picked).count("validation") == 1
    assert all(split_of(n, 0) == s for _, n, s in picked)  # a limit never moves a chorale
    assert [p[0] for p in select(names, 3, 0)] != [p[0] for p in select(names, 3, 1)]


def test_layout_and_metadata(chorales_dir):
    tracks = sorted(chorales_dir.glob("*/Track*"))
    assert {t.parent.name for t in tracks} == {"train", "validation", "test"}
    for track in tracks:
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        stems = meta["stems"]
        assert sorted(stems) == ["S00", "S01", "S02", "S03", "S04"]
        classes = {from_program(s["program_num"], s["is_drum"]).id for s in stems.values()}
        assert 4 in classes and DRUMS_ID in classes and len(classes) == 5  # Bass, Drums, 3 others
        for sid, s in stems.items():
            assert s["audio_rendered"] and s["inst_class"] == from_program(s["program_num"], s["is_drum"]).name
            audio, sr = sf.read(track / "stems" / f"{sid}.flac", dtype="float32")
            assert sr == 32000 and audio.ndim == 1 and np.abs(audio).max() > 0.01
            midi = pretty_midi.PrettyMIDI(str(track / "MIDI" / f"{sid}.mid"))
            assert len(midi.instruments) == 1 and midi.instruments[0].is_drum == s["is_drum"]
            assert len(midi.instruments[0].notes) > 10
        bass = next(s for s in stems.values() if s["voice"] == "bass")
        assert 32 <= bass["program_num"] <= 39


def test_mix_is_the_sum_of_stems(chorales_dir):
    track = next(chorales_dir.glob("train/Track*"))
    mix, _ = sf.read(track / "mix.flac", dtype="float32")
    total = sum(sf.read(p, dtype="float32")[0] for p in sorted((track / "stems").glob("*.flac")))
    assert np.abs(mix).max() <= 1.0
    assert np.abs(mix - total).max() < 5 * 2.0 ** -15 * 6  # 16-bit rounding of six files


def test_rendering_is_deterministic(tmp_path, chorales_dir):
    render_chorales(tmp_path, limit=3, seed=0, progress=False)
    for a in sorted(chorales_dir.glob("*/Track*/stems/*.flac")):
        b = tmp_path / a.relative_to(chorales_dir)
        np.testing.assert_array_equal(sf.read(a)[0], sf.read(b)[0])
    meta_a = sorted(chorales_dir.glob("*/Track*/metadata.yaml"))[0]
    assert meta_a.read_text() == (tmp_path / meta_a.relative_to(chorales_dir)).read_text()


def test_rerun_keeps_complete_tracks(chorales_dir):
    stamp = {p: p.stat().st_mtime_ns for p in chorales_dir.glob("*/Track*/mix.flac")}
    render_chorales(chorales_dir, limit=3, seed=0, progress=False)
    assert stamp == {p: p.stat().st_mtime_ns for p in chorales_dir.glob("*/Track*/mix.flac")}


def test_augmented_versions_transpose_the_training_chorales_only(tmp_path, chorales_dir):
    tracks = render_chorales(tmp_path, limit=3, seed=0, progress=False, versions=(1, 2))
    assert [t.parent.name for t in tracks] == ["train", "train"]  # held-out chorales are never augmented
    original = next(chorales_dir.glob("train/Track*"))
    assert sorted(t.name for t in tracks) == [f"{original.name}-v1", f"{original.name}-v2"]
    index = int(original.name[len("Track"):])
    shifts = []
    for track in tracks:
        meta = yaml.safe_load((track / "metadata.yaml").read_text())
        shift = meta["transpose_semitones"]
        assert shift == transposition(0, index, meta["version"]) and 1 <= abs(shift) <= 6
        shifts.append(shift)
        for sid, stem in meta["stems"].items():
            pitches = [n.pitch for n in pretty_midi.PrettyMIDI(str(track / "MIDI" / f"{sid}.mid")).instruments[0].notes]
            ref = [n.pitch for n in pretty_midi.PrettyMIDI(str(original / "MIDI" / f"{sid}.mid")).instruments[0].notes]
            if stem["is_drum"]:
                continue  # a new drum part, never transposed
            # the same notes in another key (order by onset, which a new tempo keeps)
            assert pitches == [p + shift for p in ref]
    assert transposition(0, index, 0) == 0
    with pytest.raises(ValueError, match="versions"):
        render_chorales(tmp_path, limit=3, versions=())


@pytest.mark.parametrize("beats_per_bar", [3, 4])
def test_drum_pattern_follows_the_meter(beats_per_bar):
    beats = [(0.5 * i, i % beats_per_bar, beats_per_bar) for i in range(4 * beats_per_bar)]
    events = drum_pattern(beats, np.random.default_rng(0), duration=100.0)
    kicks = sorted({round(e.start / 0.5) % beats_per_bar for e in events if e.pitch == KICK})
    snares = sorted({round(e.start / 0.5) % beats_per_bar for e in events if e.pitch == SNARE})
    assert kicks == ([0, 2] if beats_per_bar == 4 else [0])
    assert snares == ([1, 3] if beats_per_bar == 4 else [1, 2])
    hats = [e for e in events if e.pitch == CLOSED_HAT]
    assert len(hats) == 2 * len(beats)  # on the beat and off the beat
