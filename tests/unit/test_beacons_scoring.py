"""Beacon scoring on hand-made series: clockwork, jittered, asleep, a long connection, random."""

from __future__ import annotations

from dataclasses import replace

import pytest

from cloud_sniper.beacons import scoring
from cloud_sniper.beacons.models import ScanOptions
from cloud_sniper.beacons.scoring import Weights, bowley, judge, size_mad_score, timing_mad_score
from tests.beacon_records import T0, beacon, features, long_connection, random_calls

BEACON_KEY = ("10.0.1.5", "203.0.113.7", 443)


def scored(records, key):
    return judge(features(records)[key])


def test_a_perfect_beacon_scores_near_1_with_its_period():
    # Given a host calling out every 60 s exactly, same size, all day
    records = beacon(period=60)

    # When it is scored
    result = scored(records, ("10.0.1.5", "203.0.113.7", 443))

    # Then every subscore is full and the period is the beacon's
    assert result.score >= 0.99
    assert result.period_seconds == 60
    assert result.jitter == 0
    assert not result.long_connection
    assert set(result.subscores) == {
        "ts_skew",
        "ts_mad",
        "ts_hist",
        "ts_duration",
        "size_skew",
        "size_mad",
        "confidence",
    }
    assert result.subscores["confidence"] > 0.99


def test_a_jittered_beacon_with_varying_sizes_still_scores_above_the_threshold():
    # Given a beacon sleeping 300 s ± 30%, its sizes ± 20%
    records = beacon(period=300, jitter=0.3, size=1200, size_jitter=0.2)

    result = scored(records, ("10.0.1.5", "203.0.113.7", 443))

    assert result.score >= 0.8
    assert 0.1 <= result.jitter <= 0.2  # MAD of uniform ±30% jitter is 15% of the period
    assert result.subscores["ts_mad"] < 1


def test_a_beacon_that_sleeps_is_scored_over_its_active_spans():
    # Given a 60 s beacon awake one hour in four
    records = beacon(period=60, awake=3600, asleep=3 * 3600)

    # When scored
    f = features(records)[("10.0.1.5", "203.0.113.7", 443)]
    result = judge(f)

    # Then the pauses are left out of the timing, which stays perfect
    assert f.gaps == 5
    assert f.ts_median == 60 and f.ts_mad == 0
    assert result.subscores["ts_skew"] == result.subscores["ts_mad"] == 1.0
    assert result.score >= 0.8


def test_a_long_connection_split_by_600_s_windows_is_marked_and_not_a_beacon():
    # Given one streaming connection logged once per 600 s capture window, one source port
    records = long_connection(window=600)

    f = features(records)[("10.0.1.6", "198.51.100.9", 443)]
    result = judge(f)

    # Then it is judged one long connection, though its timing alone looks perfect
    assert f.port_reuse == pytest.approx(143 / 144)  # every record but the first continues
    assert f.window_share == 1.0
    assert result.subscores["ts_mad"] == 1.0
    assert result.long_connection
    assert "split by the capture window" in result.why


def test_a_long_connection_split_by_60_s_windows_is_marked_too():
    result = scored(long_connection(window=60, hours=6), ("10.0.1.6", "198.51.100.9", 443))

    assert result.long_connection


def test_random_calls_score_below_the_threshold():
    # Given a host calling at random times (Poisson), with random sizes
    result = scored(random_calls(mean=120), ("10.0.1.7", "192.0.2.50", 443))

    # Then its timing is scored as random and the pair stays below the default threshold
    assert result.subscores["ts_mad"] < 0.2
    assert result.score < 0.6
    assert not result.long_connection


def test_parallel_streams_each_split_by_the_window_are_long_connections_too():
    # Given a backup: 12 uploads side by side, each logged every 60 s on its own port
    streams = []
    for n in range(12):
        stream = long_connection(window=60, hours=1, seed=n, start=T0 + 3 * n)
        streams += [replace(r, src_port=50000 + n) for r in stream]

    result = scored(streams, ("10.0.1.6", "198.51.100.9", 443))

    assert result.long_connection


def test_a_few_regular_calls_by_chance_are_trusted_less():
    # Given six calls whose intervals happen to be close, and a day of the same beacon
    few_features = features(beacon(period=3600, jitter=0.1, hours=6))[BEACON_KEY]
    few = judge(few_features)
    many = judge(features(beacon(period=3600, jitter=0.1, hours=24))[BEACON_KEY])

    assert few_features.active_deltas == 6
    assert few.subscores["confidence"] == 0.6  # 6 intervals / (6 + 4)
    assert few.score < many.score
    assert many.score >= 0.8


def test_random_calls_of_one_size_stay_below_the_threshold():
    # Given random times but a constant size (a chatty client): the timing decides
    records = [r.__class__(**{**r.__dict__, "bytes": 512}) for r in random_calls(mean=90)]

    result = scored(records, ("10.0.1.7", "192.0.2.50", 443))

    assert result.subscores["size_mad"] == 1.0
    assert result.score < 0.7


def test_bowley_skewness_is_zero_for_a_symmetric_or_narrow_spread():
    assert bowley(50, 60, 70) == (0.0, 1.0)
    assert bowley(59, 60, 64) == (0.0, 1.0)  # a spread under 10 is jitter, not skew
    skew, score = bowley(10, 20, 70)
    assert skew == pytest.approx(0.6667, abs=1e-3)
    assert score == pytest.approx(0.3333, abs=1e-3)


def test_timing_mad_score_is_0_for_random_arrivals_and_1_for_clockwork():
    assert timing_mad_score(60, 0) == 1.0
    assert timing_mad_score(100, 100 * scoring.POISSON_MAD_RATIO) == pytest.approx(0.0)
    assert timing_mad_score(100, 200) == 0.0


def test_size_mad_score_follows_rita():
    assert size_mad_score(1000, 250) == 0.75
    assert size_mad_score(0, 0) == 0.0


def test_weights_must_sum_to_1():
    with pytest.raises(ValueError, match="sum to 1"):
        Weights(ts_mad=0.9)


@pytest.mark.parametrize(
    ("bins", "total", "run"),
    [
        ([], 24, 0),
        ([5], 24, 1),
        ([0, 1, 2, 10, 11], 24, 3),
        ([0, 1, 20, 21, 22, 23], 24, 6),  # the window's end runs on into its start
        ([0, 23], 24, 2),
        (list(range(24)), 24, 24),
        ([3, 3, 4, 30, -1], 24, 2),  # repeated and out-of-window bins count once or not at all
    ],
)
def test_the_longest_run_of_active_bins_wraps_around_the_window(bins, total, run):
    assert scoring._longest_run(bins, total) == run


@pytest.mark.parametrize(
    "records",
    [
        beacon(period=60),
        beacon(period=300, jitter=0.3, size=1200, size_jitter=0.2),
        beacon(period=3600, jitter=0.1, hours=6),
        random_calls(),
    ],
    ids=["clockwork", "jittered", "few-calls", "random"],
)
def test_the_ceiling_is_never_below_the_score(records):
    for f in features(records).values():
        assert scoring.ceiling(f) >= judge(f).score


def test_random_calls_have_a_ceiling_below_the_threshold_so_are_not_judged():
    # Given random calls: their timing alone keeps them below what a beacon needs
    f = features(random_calls())[("10.0.1.7", "192.0.2.50", 443)]

    assert scoring.ceiling(f) < 0.7
    assert scoring.reported([f], scoring_options(0.7)) == []
    assert [item for item, _ in scoring.reported([f], scoring_options(0.0))] == [f]


def scoring_options(min_score: float) -> ScanOptions:
    return ScanOptions(min_score=min_score)


def test_a_burst_of_calls_a_second_apart_is_no_schedule():
    # Given a day of a beacon elsewhere, and one host opening 24 connections in 24 seconds to a
    # site (a page's resources): intervals of one second, as even as a clock at that resolution
    burst = beacon(src="10.0.1.8", dst="198.51.100.20", period=1, hours=24 / 3600)
    records = beacon() + burst

    result = scored(records, ("10.0.1.8", "198.51.100.20", 443))

    # Then its histogram, one active hour, counts for nothing, and it stays below the threshold
    assert result.subscores["ts_mad"] == 1.0
    assert result.subscores["ts_hist"] == result.subscores["ts_duration"] == 0.0
    assert result.score < 0.7
