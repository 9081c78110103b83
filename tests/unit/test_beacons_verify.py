"""The verification of the top pairs: periodogram period, permutation p-value, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from cloud_sniper.beacons import verify as verify_module
from cloud_sniper.beacons.verify import PERMUTATIONS, active_spans, periodogram, verify
from tests.beacon_records import CHANCE_REGULAR

SEED = 20261204


def renewal(period: float, jitter: float, count: int, seed: int = 5, start: float = 0.0):
    """A beacon that sleeps period × (1 ± jitter) between calls."""
    rng = np.random.default_rng(seed)
    return np.round(start + np.cumsum(period * (1 + rng.uniform(-jitter, jitter, count))))


def test_a_clockwork_beacon_is_verified_with_its_period():
    # Given calls every 60 s for a day
    times = np.arange(0, 86400, 60)

    # When verified
    result = verify(times, SEED)

    # Then the periodogram finds 60 s, far above any random draw
    assert result.verified
    assert result.period_seconds == pytest.approx(60, abs=0.5)
    assert result.jitter == 0
    assert result.p_value == pytest.approx(2 / (PERMUTATIONS + 1))
    assert "periodogram peak at 60.0 s" in result.why


def test_the_fundamental_is_found_not_a_harmonic():
    # Given a sharp 300 s train, whose harmonics are as loud as its fundamental
    freqs, power = periodogram(np.arange(0, 86400, 300))

    # Then the strongest harmonic is a multiple of 1/300 Hz
    strongest = freqs[int(np.argmax(power[1:])) + 1]
    assert strongest * 300 == pytest.approx(round(strongest * 300), abs=0.05)
    # and the verification reports the fundamental itself
    assert verify(np.arange(0, 86400, 300), SEED).period_seconds == pytest.approx(300, abs=2)


def test_a_jittered_beacon_is_verified():
    result = verify(renewal(60, 0.2, 1440), SEED)

    assert result.verified
    assert result.period_seconds == pytest.approx(60, abs=2)
    assert 0.05 <= result.jitter <= 0.15


def test_a_beacon_jittered_by_half_its_period_is_verified_by_its_regularity():
    # Given a jitter of ±50%: the spectral line vanishes, the intervals stay regular
    result = verify(renewal(300, 0.5, 288), SEED)

    assert result.verified
    assert "no spectral line" in result.why
    assert result.period_seconds == pytest.approx(300, rel=0.05)


def test_a_beacon_with_pauses_is_verified_over_its_active_spans():
    times = np.concatenate([renewal(60, 0.1, 120, seed=k, start=k * 14400) for k in range(6)])

    assert len(active_spans(times)) == 6
    assert verify(times, SEED).verified


def test_random_arrivals_are_not_verified():
    rng = np.random.default_rng(11)
    times = np.round(np.cumsum(rng.exponential(120, 720)))

    result = verify(times, SEED)

    assert not result.verified
    assert result.p_value > 0.05
    assert result.why.startswith("no significant period")


def test_the_same_seed_gives_the_same_p_value_another_seed_another_draw():
    # Given a weak schedule (every 30 min) buried in 600 random calls: a p-value in between
    rng = np.random.default_rng(12)
    times = np.sort(np.concatenate([np.arange(0, 86400, 1800), rng.uniform(0, 86400, 600)]))

    first, second = verify(times, SEED), verify(times, SEED)
    other = verify(times, SEED + 1)

    assert first == second
    assert 0.1 < first.p_value < 0.9
    assert other.p_value != first.p_value  # the draws depend on the seed, the peak does not
    assert other.power == first.power


def test_too_few_events_are_not_verified():
    result = verify([0, 60, 120], SEED)

    assert not result.verified
    assert result.p_value is None
    assert "only 3" in result.why


def test_the_regularity_of_many_draws_at_once_is_each_draws_own():
    # Given rows of sorted times: random, rounded to whole seconds, clockwork, with a pause
    rng = np.random.default_rng(7)
    rows = np.sort(rng.exponential(10.0, (12, 40)).cumsum(axis=1), axis=1)
    rows[:4] = np.round(rows[:4])
    rows[4] = np.arange(40) * 5.0
    rows[5, 20:] += 1000.0

    # When measured together
    together = verify_module._regularities(rows)

    # Then each is the intervals' MAD over their median, pauses (over 4 medians) left out
    for row, value in zip(rows, together, strict=True):
        deltas = np.diff(row)
        deltas = deltas[deltas <= 4 * np.median(deltas)]
        median = np.median(deltas)
        assert value == pytest.approx(np.median(np.abs(deltas - median)) / median)


def test_regularity_alone_must_be_beyond_chance_among_the_candidates():
    # When the chance-regular calls are verified alone, and as one of the scan's many pairs
    alone = verify(CHANCE_REGULAR, SEED)
    among_many = verify(CHANCE_REGULAR, SEED, candidates=26_775)

    # Then alone they pass on their regularity; among many, as many would, they do not
    assert alone.verified and "far more regular than random" in alone.why
    assert not among_many.verified
    assert "not beyond chance among the scan's 26,775 candidate pairs" in among_many.why
    assert among_many.p_value == 1.0  # more than one such pair expected by chance


def test_a_schedule_holds_among_any_number_of_candidates():
    clockwork = verify(np.arange(0, 86400, 60), SEED, candidates=1_000_000)
    half_jitter = verify(renewal(300, 0.5, 288), SEED, candidates=1_000_000)

    assert clockwork.verified and "periodogram peak" in clockwork.why
    assert half_jitter.verified and "far more regular than random" in half_jitter.why
