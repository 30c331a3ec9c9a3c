"""The listening benchmarks score on held-out chorales of a chosen split: test (reported) or
validation (for choosing between models without choosing on the test chorales)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def listening():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("listening_bench", BENCH / "listening.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCH))


def test_held_out_chorales_come_from_the_split_asked_for(listening, chorales_dir):
    names = {split: sorted(p.name for p in (chorales_dir / split).iterdir() if p.is_dir())
             for split in ("test", "validation")}
    for split in ("test", "validation"):
        songs = listening.held_out_chorales(chorales_dir, 5, 16000, 2.0, 1.0, split=split)
        assert [s["name"] for s in songs] == names[split] and len(songs) == 1
        assert songs[0]["bass"].shape == songs[0]["harmony"].shape == (32000,)
    assert names["test"] != names["validation"]


def test_paired_comparison_refuses_runs_on_different_splits(listening):
    sys.path.insert(0, str(BENCH))
    try:
        import listening_paired
    finally:
        sys.path.remove(str(BENCH))
    run = {"songs": 16, "seconds": 8.0, "steps": [32, 16, 8, 8], "overlap_seconds": 1.0, "context_drums": False}
    seeds = {"1": {"chroma_heard_own": 0.4}, "2": {"chroma_heard_own": 0.5}}
    # a run written before --split existed was on the test chorales
    assert "chroma_heard_own" in listening_paired.compare(run, seeds, {**run, "split": "test"}, seeds)
    with pytest.raises(SystemExit, match="split"):
        listening_paired.compare(run, seeds, {**run, "split": "validation"}, seeds)


def test_resume_keeps_a_run_only_on_the_same_split_and_audio(listening, tmp_path):
    out = tmp_path / "run"
    run = {"model": "m", "songs": 16, "seconds": 8.0, "steps": [32, 16, 8, 8], "overlap_seconds": 1.0,
           "context_drums": False, "split": "validation", "songs_file": "songs.npz", "ce_nats": {}}
    listening.result_file(out, ".json").write_text(json.dumps(run))
    args = ("m", 16, 8.0, [32, 16, 8, 8], 1.0, False)
    assert listening.previous_result(out, *args, "validation", "songs.npz") == run
    # the rendered audio differs from the float16 file in the last bits: not the same run
    assert listening.previous_result(out, *args, "validation", None) == {}
    assert listening.previous_result(out, *args, "test", "songs.npz") == {}


def test_each_song_is_scored_and_comparisons_run_over_songs(listening):
    from ..conftest import SR, melody

    basses = [melody([48, 48, 55, 55]), melody([50, 50, 45, 45]), melody([43, 47, 50, 43])]
    voices = [melody([60, 64, 67, 72]), melody([62, 66, 69, 74]), melody([55, 59, 62, 67])]
    r = listening.arm_scores(basses, voices, SR, basses)
    own, gap = r["per_song"]["chroma_heard_own"], r["per_song"]["chroma_heard_gap"]
    assert len(own) == len(gap) == 3
    assert sum(own) / 3 == pytest.approx(r["chroma_heard_own"], abs=1e-4)
    assert sum(gap) / 3 == pytest.approx(r["chroma_heard_gap"], abs=1e-4)
    assert r["pitch_match"] > 0.9  # the real basses themselves
    assert len(r["per_song"]["pitch_match"]) == 3
    assert sum(r["per_song"]["pitch_match"]) / 3 == pytest.approx(r["pitch_match"], abs=1e-4)

    sys.path.insert(0, str(BENCH))
    try:
        import listening_paired
    finally:
        sys.path.remove(str(BENCH))
    song = lambda own, gap: {"chroma_heard_own": own, "chroma_heard_gap": gap}  # noqa: E731
    a = {"1": {"per_song": song([0.5, 0.4, 0.3], [0.1, 0.1, 0.1])}, "2": {"per_song": song([0.7, 0.4, 0.1], [0.1, 0.1, 0.1])}}
    b = {"1": {"per_song": song([0.4, 0.3, 0.4], [0.0, 0.1, 0.1])}, "2": {"per_song": song([0.4, 0.3, 0.2], [0.0, 0.1, 0.1])}}
    songs = listening_paired.compare_songs(a, b)
    assert songs["chroma_heard_own"].diff == pytest.approx((0.2 + 0.1 - 0.1) / 3) and songs["chroma_heard_own"].n == 3
    assert songs["chroma_heard_gap"].n_up == 1
    assert listening_paired.compare_songs(a, {"1": {}, "2": {}}) == {}  # older runs: seeds only
    assert "pitch_match" not in songs  # compared over songs only where both runs scored it per song
