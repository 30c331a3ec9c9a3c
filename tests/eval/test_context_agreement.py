"""Context agreement: a stem in the context's harmony and tempo beats a mismatched pairing."""

import numpy as np
import pytest

from stemgen.eval.context_agreement import ContextAgreement, agreement_per_example, agreement_table, beat_f_measure

SR = 22050


def tone(midi, sec, amp=0.2, decay=3.0):
    t = np.arange(int(sec * SR)) / SR
    f = 440 * 2 ** ((midi - 69) / 12)
    return sum(amp / (k + 1) * np.sin(2 * np.pi * f * (k + 1) * t) for k in range(4)) * np.exp(-decay * t)


def song(root, period, seconds=8.0):
    """A chord pulse on `root` every `period` seconds, and a bass on the same beats."""
    n = int(seconds * SR)
    ctx, bass = np.zeros(n), np.zeros(n)
    for start in np.arange(0, seconds - 0.5, period):
        s = int(start * SR)
        chord = sum(tone(root + i, 0.5) for i in (12, 16, 19))
        ctx[s: s + len(chord)] += chord[: n - s]
        b = tone(root - 12, 0.4, amp=0.4)
        bass[s: s + len(b)] += b[: n - s]
    return ctx.astype(np.float32), bass.astype(np.float32)


def test_beat_f_measure():
    ref = np.arange(0, 8, 0.5)
    assert beat_f_measure(ref, ref) == 1.0 and beat_f_measure(ref, ref + 0.25) == 0.0
    assert beat_f_measure(ref, []) == 0.0


def test_table_gap_on_fabricated_features():
    own = {"chroma": np.eye(12)[:, [0, 0, 4, 4]], "energy": np.ones(4), "beats": np.array([0.5, 1.0, 1.5])}
    other = {"chroma": np.eye(12)[:, [7, 7, 9, 9]], "energy": np.ones(4), "beats": np.array([0.7, 1.4])}
    table = agreement_table([own, other], [own, other])
    assert table["chroma"] == 1.0 and table["chroma_mismatched"] == 0.0 and table["chroma_gap"] == 1.0
    assert table["beat"] == 1.0 and table["beat_gap"] == 1.0
    assert "chroma_heard" not in table  # only when the stems carry their frame levels
    with pytest.raises(ValueError, match="at least 2"):
        agreement_table([own], [own])
    # as heard: the own stem is silent on its last two frames, which then agree with nothing
    heard = agreement_table([dict(own, level=np.array([-20.0, -20.0, -80.0, -80.0])), dict(other, level=np.full(4, -20.0))],
                            [own, other])
    assert heard["chroma"] == 1.0 and heard["chroma_heard"] == 0.75  # (0.5 + 1.0) / 2
    assert heard["chroma_heard_mismatched"] == 0.0 and heard["chroma_heard_gap"] == 0.75
    # per example, in order: the means above are theirs
    each = agreement_per_example([dict(own, level=np.array([-20.0, -20.0, -80.0, -80.0])), dict(other, level=np.full(4, -20.0))],
                                 [own, other])
    assert each["chroma_heard"].tolist() == [0.5, 1.0] and each["chroma_heard_mismatched"].tolist() == [0.0, 0.0]
    assert each["chroma"].tolist() == [1.0, 1.0] and each["beat"].shape == (2,)


@pytest.mark.slow
def test_matched_stems_beat_mismatched_ones():
    songs = [song(48, 0.5), song(54, 0.75), song(51, 0.6)]  # C at 120 BPM, F# at 80, D# at 100
    metric = ContextAgreement()
    metric.update([b for _, b in songs], [c for c, _ in songs], SR)
    out = {k: float(v) for k, v in metric.compute().items()}
    # measured: chroma 0.48 vs 0.31 mismatched, beat 0.47 vs 0.16
    assert out["chroma_gap"] == pytest.approx(out["chroma"] - out["chroma_mismatched"]) and out["chroma_gap"] > 0.1
    # the basses sound throughout (only their note onsets' first frames can fall below the floor)
    assert out["chroma_heard"] == pytest.approx(out["chroma"], abs=0.03)
    assert out["beat_gap"] > 0.2 and out["beat"] > 0.35
    each = metric.per_example()
    assert each["chroma_heard"].shape == (3,) and each["chroma_heard"].mean() == pytest.approx(out["chroma_heard"])


def test_beats_are_cached_by_content_and_the_tracker_shared(tmp_path, monkeypatch):
    from stemgen.eval.context_agreement import BeatTracker

    ctx, bass = song(48, 0.5, seconds=4.0)
    tracker = BeatTracker(tmp_path)
    beats = tracker(ctx, SR)
    assert len(beats) >= 4 and np.allclose(np.diff(beats), 0.5, atol=0.05)  # 120 BPM
    assert len(list(tmp_path.glob("*.json"))) == 1

    def no_tracking(x):
        raise AssertionError("tracked again")

    monkeypatch.setattr(tracker, "_track", no_tracking)
    np.testing.assert_array_equal(tracker(ctx, SR), beats)  # from the cache, the same times
    with pytest.raises(AssertionError, match="tracked again"):
        tracker(bass, SR)  # other audio is tracked
    metric = ContextAgreement(beats=tracker)
    assert metric.tracker is tracker
