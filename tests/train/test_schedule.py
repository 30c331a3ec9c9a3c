import math

import pytest

from stemgen.train.schedule import fit_schedule, tri_stage_lr_scale


def test_stage_boundaries_paper_settings():
    f = tri_stage_lr_scale
    assert f(0) == pytest.approx(1e-4)  # first step of the warm-up
    assert f(4_999) == pytest.approx(0.5)
    assert f(9_999) == pytest.approx(1.0)  # end of warm-up
    assert f(10_000) == 1.0 and f(59_999) == 1.0  # the hold
    assert f(60_000) == pytest.approx(1.0)  # decay starts at the peak
    assert f(60_000 + 150_000) == pytest.approx(math.sqrt(0.01))  # halfway in log space
    assert f(360_000) == pytest.approx(0.01) and f(10**7) == 0.01
    peak = 5e-4
    assert peak * f(30_000) == pytest.approx(5e-4)


def test_schedule_is_monotone_within_stages():
    ups = [tri_stage_lr_scale(s, 10, 5, 20) for s in range(10)]
    downs = [tri_stage_lr_scale(s, 10, 5, 20) for s in range(15, 40)]
    assert ups == sorted(ups) and downs == sorted(downs, reverse=True)


def test_a_schedule_that_does_not_fit_the_run_is_scaled_with_a_warning(caplog):
    assert fit_schedule(10_000, 50_000, 300_000, 150_000) == (10_000, 50_000, 300_000)  # the paper's run
    assert fit_schedule(10_000, 50_000, 300_000, -1) == (10_000, 50_000, 300_000)  # unbounded
    with caplog.at_level("WARNING"):
        warmup, hold, decay = fit_schedule(10_000, 50_000, 300_000, 360)
    assert (warmup, hold, decay) == (10, 50, 300) and "scaled" in caplog.text
    assert fit_schedule(10_000, 50_000, 300_000, 20) == (1, 3, 17)
