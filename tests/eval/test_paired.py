import math

import pytest

from stemgen.eval.paired import Paired, Rule, paired_difference, passes, song_paired_difference


def test_paired_difference_values():
    a = {"0": 0.40, "100": 0.50, "200": 0.45, "7": 0.9}  # seed 7 only in A: left out
    b = {"0": 0.38, "100": 0.47, "200": 0.46, "9": 0.1}
    p = paired_difference(a, b)
    d = [0.02, 0.03, -0.01]
    mean = sum(d) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 2 / 3)
    assert p.n == 3 and p.n_up == 2
    assert p.diff == pytest.approx(mean) and p.se == pytest.approx(se)
    assert p.mean_a == pytest.approx(0.45) and p.mean_b == pytest.approx((0.38 + 0.47 + 0.46) / 3)


def test_shared_noise_cancels():
    # a constant shift on noisy seeds: the paired error is 0, far below either arm's own spread
    b = {str(s): v for s, v in enumerate([0.30, 0.45, 0.38, 0.52])}
    a = {s: v + 0.01 for s, v in b.items()}
    p = paired_difference(a, b)
    assert p.diff == pytest.approx(0.01) and p.se == pytest.approx(0.0, abs=1e-12) and p.n_up == 4


def test_paired_difference_errors():
    with pytest.raises(ValueError, match="at least two seeds"):
        paired_difference({"0": 0.4, "1": 0.5}, {"1": 0.4, "2": 0.3})
    with pytest.raises(ValueError, match="non-finite"):
        paired_difference({"0": 0.4, "1": float("nan")}, {"0": 0.4, "1": 0.3})


def _p(diff, se):
    return Paired(mean_a=0.0, mean_b=0.0, diff=diff, se=se, n=8, n_up=0)


def test_rule():
    ok, reasons = passes({"chroma_heard_own": _p(0.012, 0.005), "chroma_heard_gap": _p(-0.009, 0.01),
                          "pitch_match": _p(-0.019, 0.01)})
    assert ok and reasons == []
    # each clause fails on its own
    ok, reasons = passes({"chroma_heard_own": _p(0.010, 0.005), "chroma_heard_gap": _p(0.0, 0.01),
                          "pitch_match": _p(0.0, 0.01)})
    assert not ok and len(reasons) == 1 and "heard own" in reasons[0]
    ok, reasons = passes({"chroma_heard_own": _p(0.03, 0.005), "chroma_heard_gap": _p(-0.02, 0.01),
                          "pitch_match": _p(-0.03, 0.01)})
    assert not ok and len(reasons) == 2
    assert passes({"chroma_heard_own": _p(0.010, 0.005), "chroma_heard_gap": _p(0.0, 0.01),
                   "pitch_match": _p(0.0, 0.01)}, Rule(z=1.0))[0]
    with pytest.raises(ValueError, match="pitch_match"):
        passes({"chroma_heard_own": _p(0.03, 0.005), "chroma_heard_gap": _p(0.0, 0.01)})


def test_song_paired_difference_is_over_songs():
    # three songs, two seeds (seed 5 only in A: left out); A is better on two songs, worse on one
    a = {"0": [0.5, 0.4, 0.3], "1": [0.7, 0.4, 0.1], "5": [9.0, 9.0, 9.0]}
    b = {"0": [0.4, 0.3, 0.4], "1": [0.4, 0.3, 0.2]}
    p = song_paired_difference(a, b)
    d = [0.2, 0.1, -0.1]  # per song, over seeds 0 and 1
    mean = sum(d) / 3
    assert p.n == 3 and p.n_up == 2 and p.diff == pytest.approx(mean)
    assert p.se == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in d) / 2 / 3))
    assert p.mean_a == pytest.approx(sum(a["0"] + a["1"]) / 6) and p.mean_b == pytest.approx(sum(b["0"] + b["1"]) / 6)
    # the seed-paired error of the same runs is far smaller when every seed moves alike: it does not
    # see that the songs disagree
    seed_level = paired_difference({s: sum(v) / 3 for s, v in a.items()}, {s: sum(v) / 3 for s, v in b.items()})
    assert seed_level.diff == pytest.approx(p.diff) and seed_level.se < p.se
    with pytest.raises(ValueError, match="no seed scored in both"):
        song_paired_difference({"0": [0.1, 0.2]}, {"1": [0.1, 0.2]})
    with pytest.raises(ValueError, match="same two or more songs"):
        song_paired_difference({"0": [0.1, 0.2]}, {"0": [0.1, 0.2, 0.3]})
    with pytest.raises(ValueError, match="non-finite"):
        song_paired_difference({"0": [0.1, float("nan")]}, {"0": [0.1, 0.2]})
