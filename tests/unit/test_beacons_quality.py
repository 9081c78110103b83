"""Precision, recall and ranks of the scan on a generated set, and how they are counted."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloud_sniper.beacons import quality, synthetic
from cloud_sniper.beacons.models import InputStats, PairScore, ScanResult
from cloud_sniper.beacons.synthetic import Confounder, GroundTruth, PlantedBeacon
from tests.beacon_records import scored_pair

AT = datetime(2026, 12, 3, tzinfo=UTC)


def beacon(src: str, dst: str) -> PlantedBeacon:
    return PlantedBeacon(
        src=src,
        dst=dst,
        dst_port=443,
        protocol=6,
        period_seconds=60,
        jitter=0.1,
        size_variation=0.1,
        sleep_gaps=0,
        connections=1440,
        first_seen=AT,
        last_seen=AT,
        interface_id="eni-00000000000000001",
        instance_id="i-00000000000000001",
    )


def pair(src: str, dst: str, score: float) -> PairScore:
    return scored_pair(src, dst, score)


TRUTH = GroundTruth(
    seed=1,
    format="v2",
    records=1000,
    files=1,
    hosts=3,
    start=AT,
    end=AT,
    bad_lines=0,
    nodata=0,
    skipdata=0,
    data_dir="AWSLogs",
    beacons=[beacon("10.0.1.4", "45.1.1.1"), beacon("10.0.1.5", "45.1.1.2")],
    confounders=[
        Confounder(kind="popular_service", src=None, dst="45.9.9.9", dst_port=443, protocol=6),
        Confounder(kind="backup", src="10.0.1.6", dst="45.8.8.8", dst_port=443, protocol=6),
    ],
)


def result(*pairs: PairScore) -> ScanResult:
    return ScanResult(pairs=list(pairs), candidates=10, stats=InputStats(records=1000), seconds=1)


def test_precision_and_recall_are_read_at_the_threshold_from_every_candidate():
    # Given a scan that scored every candidate: one beacon high, the other under the threshold,
    # two look-alikes and a background pair above it
    scanned = result(
        pair("10.0.1.4", "45.1.1.1", 0.95),
        pair("10.0.1.7", "45.9.9.9", 0.9),
        pair("10.0.1.6", "45.8.8.8", 0.8),
        pair("10.0.1.8", "45.7.7.7", 0.75),
        pair("10.0.1.5", "45.1.1.2", 0.6),
    )

    # When it is judged at 0.7
    judged = quality.evaluate(TRUTH, scanned, threshold=0.7)

    # Then one of four reported is a beacon, one of two beacons is found, each has its rank,
    # and each false positive is named after what the generator made it as
    assert (judged.reported, judged.found) == (4, 1)
    assert (judged.precision, judged.recall) == (0.25, 0.5)
    assert [(b.beacon.src, b.rank, b.reported) for b in judged.beacons] == [
        ("10.0.1.4", 1, True),
        ("10.0.1.5", 5, False),
    ]
    assert [item.kind for item in judged.false_positives] == [
        "popular_service",
        "backup",
        "background",
    ]
    assert not judged.meets()
    text = quality.describe(judged)
    assert "precision 0.250 (1 of 4 reported), recall 0.500 (1 of 2 planted)" in text
    assert "10.0.1.5 -> 45.1.1.2:443/6  MISSED" in text


def test_a_pair_the_verification_dismissed_keeps_its_rank_but_is_not_reported():
    # Given a scan whose verification dismissed a beacon and a background pair above 0.7
    scanned = ScanResult(
        pairs=[pair("10.0.1.4", "45.1.1.1", 0.95)],
        dismissed=[pair("10.0.1.5", "45.1.1.2", 0.8), pair("10.0.1.8", "45.7.7.7", 0.75)],
        candidates=10,
        stats=InputStats(records=1000),
        seconds=1,
    )

    # When it is judged at 0.7
    judged = quality.evaluate(TRUTH, scanned, threshold=0.7)

    # Then only the reported pair counts: no false positive, one beacon missed at its rank
    assert (judged.reported, judged.found, judged.false_positives) == (1, 1, [])
    assert [(b.beacon.src, b.rank, b.reported) for b in judged.beacons] == [
        ("10.0.1.4", 1, True),
        ("10.0.1.5", 2, False),
    ]


def test_a_beacon_that_is_not_even_a_candidate_has_no_rank():
    judged = quality.evaluate(TRUTH, result(pair("10.0.1.4", "45.1.1.1", 0.95)), threshold=0.7)

    missing = judged.beacons[-1]
    assert (missing.rank, missing.score, missing.why) == (None, None, "not a candidate")
    assert (judged.precision, judged.recall) == (1.0, 0.5)


def test_nothing_reported_is_not_imprecise():
    judged = quality.evaluate(TRUTH, result(), threshold=0.7)

    assert (judged.precision, judged.recall, judged.reported) == (1.0, 0.0, 0)


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    """The generator's defaults (16 beacons, a day, gzip text as S3 delivers it), small."""
    out = tmp_path_factory.mktemp("quality")
    synthetic.generate(out, records=300_000)
    return out


def test_the_scan_meets_its_targets_on_a_generated_set(default_set):
    # When the scan runs with the default options on a set with known answers
    measured = quality.measure(default_set)

    # Then it finds nine in ten beacons or more, and nine in ten of what it reports are beacons
    assert measured.meets(precision=0.9, recall=0.9), quality.describe(measured)
    # And every planted beacon is at least a candidate, ranked
    assert all(item.rank is not None for item in measured.beacons), quality.describe(measured)
    truth = synthetic.load_truth(default_set)
    assert measured.records == truth.records - truth.bad_lines


def test_the_measure_command_prints_the_figures_and_every_beacons_rank(default_set, capsys):
    from cloud_sniper.cli import main

    # When a person measures the generated set, as text and as JSON
    status = main(["beacons", "measure", str(default_set)])
    printed = capsys.readouterr().out
    as_json = main(["beacons", "measure", str(default_set), "--json", "--min-score", "0.9"])
    measured = quality.Quality.model_validate_json(capsys.readouterr().out)

    # Then the text gives precision, recall and a row per planted beacon, with its rank
    truth = synthetic.load_truth(default_set)
    assert status == as_json == 0
    assert printed.startswith("threshold 0.7: precision ")
    for planted in truth.beacons:
        assert f"{planted.src} -> {planted.dst}:{planted.dst_port}/{planted.protocol}" in printed
    assert measured.threshold == 0.9 and len(measured.beacons) == len(truth.beacons)


def test_the_measure_command_names_a_folder_without_ground_truth(tmp_path, capsys):
    from cloud_sniper.cli import main

    assert main(["beacons", "measure", str(tmp_path)]) == 1
    assert "no ground truth" in capsys.readouterr().err
    assert main(["beacons", "measure", str(tmp_path), "--min-score", "2"]) == 1
    assert "--min-score 2.0: a score is between 0 and 1" in capsys.readouterr().err
