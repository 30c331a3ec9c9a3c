"""MIR descriptors: the pure reductions, and madmom on synthetic audio with a known answer."""

import numpy as np
import pytest

from stemgen.eval.descriptors import (Descriptors, beat_sync, beats_per_bar, chord_variety, first_appearance_labels,
                                      laplacian_segmentation, max_onsets_in_window, pitch_range, tonality_alteration,
                                      triad)

SR = 44100


def test_note_and_onset_reductions():
    notes = np.array([[0.0, 48, 0.5], [0.5, 64, 0.5], [1.0, 67, 0.5], [1.5, 60, 0.5]])
    assert pitch_range(notes) == 19 and pitch_range(np.zeros((0, 3))) == 0
    assert max_onsets_in_window([0.0, 0.1, 0.2, 0.5, 1.0, 1.05]) == 4  # 0.0..0.5 inside [0, 0.6)
    assert max_onsets_in_window([0.0, 0.6, 1.2]) == 1 and max_onsets_in_window([]) == 0
    waltz = np.array([[0.0, 1], [0.5, 2], [1.0, 3], [1.5, 1], [2.0, 2], [2.5, 3], [3.0, 1], [3.5, 2]])
    assert beats_per_bar(waltz) == 3 and beats_per_bar(np.zeros((0, 2))) == 0


def test_chord_reductions():
    assert triad("C:maj") == "C:maj" and triad("A:min7") == "A:min" and triad("G:7") == "G:maj"
    assert triad("Bb:min") == "A#:min" and triad("N") == "N" and triad("D") == "D:maj"
    assert chord_variety(["C:maj", "N", "G:maj", "C:maj"]) == 2
    assert tonality_alteration(["C:maj", "A:min", "F:maj", "N", "G:maj"]) == pytest.approx(2 / 3)
    assert tonality_alteration(["C:maj"]) == 0.0


def test_laplacian_segmentation_finds_repeated_sections():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(16, 1)), rng.normal(size=(16, 1))
    sections = [a, a, b, a]  # an A A B A form, 12 frames each, with noise
    feats = np.concatenate([np.repeat(s, 12, 1) + 0.1 * rng.normal(size=(16, 12)) for s in sections], 1)
    labels = laplacian_segmentation(feats, k=2)
    assert len(labels) == 48 and labels[0] == 0
    assert set(labels[:24]) == {0} and set(labels[24:36]) == {1} and set(labels[36:]) == {0}
    assert first_appearance_labels(np.array([2, 2, 0, 2, 1])) == [0, 0, 1, 0, 2]
    assert laplacian_segmentation(feats[:, :5]) == [0] * 5


def test_beat_sync_averages_between_beats():
    f = np.arange(10, dtype=float)[None].repeat(2, 0)  # (2, 10), frame rate 10 Hz
    out = beat_sync(f, 10.0, np.array([0.3, 0.7]))
    assert out.shape == (2, 3) and out[0].tolist() == [1.0, 4.5, 8.0]


def test_descriptor_values_and_round_trip():
    d = Descriptors("C major", 12, 3, 2, 4, 3, 0.33, [48, 60], [0, 0], ["C:maj"], [0, 0, 1])
    assert d.values("key") == ["C major"] and d.values("tonality_alteration") == [0.3]
    assert d.values("note_pitches") == [48, 60] and Descriptors.from_dict(d.to_dict()) == d


# -- madmom on synthetic audio ----------------------------------------------------------------

def tone(midi, sec, amp=0.15, harmonics=5, decay=4.0):
    t = np.arange(int(sec * SR)) / SR
    f = 440 * 2 ** ((midi - 69) / 12)
    env = np.minimum(1, t / 0.005) * np.exp(-t * decay)
    return sum(amp / (k + 1) * np.sin(2 * np.pi * f * (k + 1) * t) for k in range(harmonics)) * env


def place(events, seconds):
    out = np.zeros(int(seconds * SR))
    for start, sig in events:
        s = int(start * SR)
        out[s: s + len(sig)] += sig[: len(out) - s]
    return out.astype(np.float32)


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    from stemgen.eval.descriptors import DescriptorExtractor

    return DescriptorExtractor(cache_dir=tmp_path_factory.mktemp("descriptors"))


@pytest.mark.slow
def test_known_key_chords_and_notes(extractor):
    progression = [[48, 60, 64, 67], [53, 60, 65, 69], [55, 59, 62, 67], [48, 60, 64, 67]] * 2  # I IV V I
    audio = place([(i, sum(tone(n, 1.0, decay=1.5) for n in c)) for i, c in enumerate(progression)], 8.0)
    d = extractor(audio, SR)
    assert d.key == "C major"
    assert d.chord_triads[:4] == ["C:maj", "F:maj", "G:maj", "C:maj"] and d.chord_variety == 3
    assert d.tonality_alteration == 0.0
    assert set(d.note_pitch_classes) == {0, 2, 4, 5, 7, 9, 11} and d.unique_pitch_classes == 7
    assert d.pitch_range == 69 - 48
    assert extractor(audio, SR) == d and len(list(extractor.cache_dir.glob("*.json"))) == 1  # cached


@pytest.mark.slow
def test_click_track_tempo_meter_and_percussive_density(extractor):
    rng = np.random.default_rng(0)

    def burst(amp):
        n = int(0.05 * SR)
        return amp * rng.normal(size=n) * np.exp(-np.arange(n) / SR * 60)

    clicks = place([(0.5 * i, burst(0.5 if i % 4 == 0 else 0.2)) for i in range(20)], 10.0)  # 120 BPM, 4/4
    raw = extractor.raw(np.asarray(clicks))
    beats = raw["downbeats"][:, 0]
    assert np.median(np.diff(beats)) == pytest.approx(0.5, abs=0.02)  # 120 BPM
    assert beats_per_bar(raw["downbeats"]) == 4
    assert abs(len(raw["onsets"]) - 20) <= 1 and max_onsets_in_window(raw["onsets"]) == 2
    # oom-pah-pah: a waltz is three beats per bar
    chords = [[48, 64, 67], [53, 65, 69], [55, 65, 71], [48, 64, 67]]
    events = []
    for bar in range(8):
        c = chords[bar % 4]
        events.append((1.5 * bar, tone(c[0] - 12, 0.45, amp=0.5)))
        events += [(1.5 * bar + 0.5 * k, tone(c[1], 0.3) + tone(c[2], 0.3)) for k in (1, 2)]
    assert extractor(place(events, 12.0), SR).beats_per_bar == 3
