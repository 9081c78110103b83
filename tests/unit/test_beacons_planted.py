"""The scan on a small generated set with known answers: every planted beacon, no look-alike."""

from __future__ import annotations

import pytest

from cloud_sniper.beacons import quality, synthetic
from cloud_sniper.beacons.models import ScanOptions


@pytest.fixture(scope="module", params=["v2-gz", "parquet"])
def generated(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"planted-{request.param}")
    truth = synthetic.generate(out, records=150_000, format=request.param, beacons=8)
    return out, truth


def test_every_planted_beacon_is_reported_and_no_look_alike(generated):
    # Given a day of an estate with 8 beacons and benign periodic traffic planted
    out, truth = generated

    # When it is scanned with the default options
    measured = quality.measure(out, ScanOptions())

    # Then each beacon is found, and neither the long connections, NTP, DNS, the agent, the
    # backups nor the rejected retries are reported
    assert measured.recall == 1.0, quality.describe(measured)
    confounders = {(c.src, c.dst, c.dst_port, c.protocol) for c in truth.confounders}
    reported = {
        (p.pair.src, p.pair.dst, p.pair.dst_port, p.pair.protocol) for p in measured.false_positives
    }
    assert not reported & confounders, quality.describe(measured)
    assert measured.precision >= 0.9, quality.describe(measured)
    assert measured.records == truth.records - truth.bad_lines


def test_the_top_beacons_are_verified_with_their_period(generated):
    out, truth = generated
    from cloud_sniper.beacons.engine import scan

    result = scan([out / truth.data_dir], ScanOptions(top=4))

    planted = {(b.src, b.dst, b.dst_port, b.protocol): b for b in truth.beacons}
    for pair in result.pairs[:4]:
        beacon = planted[(pair.src, pair.dst, pair.dst_port, pair.protocol)]
        assert pair.verified, pair.why
        # a sleep is the period less up to the jitter's share: the intervals sit below it
        assert beacon.period_seconds * (1 - beacon.jitter) - 2 <= pair.period_seconds
        assert pair.period_seconds <= beacon.period_seconds + 2
    assert result.stats.bad_lines == truth.bad_lines
    assert (result.stats.nodata, result.stats.skipdata) == (truth.nodata, truth.skipdata)
