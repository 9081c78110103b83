"""A beacon as a finding: GuardDuty's shape, read by ingest, decided by the default policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cloud_sniper.beacons.findings import (
    FINDING_TYPE,
    BeaconSource,
    beacon_event,
    beacon_finding,
    finding_id,
    severity,
)
from cloud_sniper.beacons.models import PairScore
from cloud_sniper.domain import naming
from cloud_sniper.domain.attack import mapping_for
from cloud_sniper.domain.models import (
    ActionKind,
    Direction,
    Enrichment,
    IndicatorKind,
    IndicatorRole,
    Mode,
)
from cloud_sniper.domain.normalize import normalize
from cloud_sniper.domain.policy import evaluate, load_policy
from cloud_sniper.domain.safety import is_c2_type
from cloud_sniper.finding_catalogue import DEFAULT_POLICY
from cloud_sniper.synthetic_findings import finding_types
from services.ingest import intake
from tests.conftest import load_event

DETECTED = datetime(2026, 12, 4, tzinfo=UTC)
PAIR = PairScore(
    src="10.20.2.17",
    dst="91.92.109.14",
    dst_port=443,
    protocol=6,
    score=0.93,
    period_seconds=297.0,
    jitter=0.08,
    connections=281,
    bytes=412_377,
    first_seen=datetime(2026, 12, 3, 0, 41, 7, tzinfo=UTC),
    last_seen=datetime(2026, 12, 3, 23, 58, 12, tzinfo=UTC),
    subscores={
        "ts_skew": 0.97,
        "ts_mad": 0.91,
        "ts_hist": 0.95,
        "ts_duration": 1.0,
        "size_skew": 0.88,
        "size_mad": 0.93,
    },
    why="every 297 s (middle half 289 s-305 s), 1411 B ±96, active in 24 of 25 bins",
)
SOURCE = BeaconSource(
    address="10.20.2.17",
    interface_id="eni-0b2d4f6a8c1e3a5b7",
    instance_id="i-0c3e5a7b9d1f2a4c6",
    subnet_id="subnet-0a9b8c7d6e5f43211",
    vpc_id="vpc-0f1e2d3c4b5a69788",
    availability_zone="us-east-1b",
    private_dns_name="ip-10-20-2-17.ec2.internal",
    security_groups={"sg-0a1b2c3d4e5f60719": "app"},
    instance_type="t3.small",
    image_id="ami-0c101f26f147fa7fd",
    instance_profile_arn="arn:aws:iam::123456789012:instance-profile/app",
    tags={"Name": "app-1", "env": "prod"},
)


def finding(source: BeaconSource | None = SOURCE, pair: PairScore = PAIR) -> dict:
    return beacon_finding(
        pair, account_id="123456789012", region="us-east-1", detected_at=DETECTED, source=source
    )


def delivered(document: dict) -> dict:
    """The event EventBridge delivers for an entry put on the bus."""
    entry = beacon_event(document)
    return {"source": entry["Source"], "detail-type": entry["DetailType"], "detail": document}


def test_the_finding_is_the_sample_event_kept_for_it():
    # The sample under tests/events is what the scan publishes for this pair and this source
    assert load_event("beacon-finding.json")["detail"] == finding()


def test_ingest_reads_a_beacon_as_the_instance_calling_out_to_its_c2():
    # Given a beacon found from an instance, as the scan puts it on the project bus
    event = delivered(finding())

    # When ingest normalizes the delivery
    normalized = normalize(event)

    # Then it is the project's own finding of the beacon type, about the instance and its
    # interface, with the destination as the outbound remote on its port
    assert normalized.source == naming.EVENT_SOURCE
    assert normalized.type == FINDING_TYPE
    assert normalized.severity == 8.5 and normalized.severity_label == "High"
    assert normalized.count == PAIR.connections
    assert (normalized.first_seen, normalized.last_seen) == (PAIR.first_seen, PAIR.last_seen)
    resource = normalized.resource
    assert resource.kind == "Instance"
    assert resource.instance_id == SOURCE.instance_id
    assert resource.subnet_ids == [SOURCE.subnet_id]
    assert resource.vpc_id == SOURCE.vpc_id
    assert resource.private_ips == [SOURCE.address]
    assert resource.security_group_ids == list(SOURCE.security_groups)
    assert resource.tags == SOURCE.tags
    (indicator,) = normalized.indicators
    assert (indicator.kind, indicator.value) == (IndicatorKind.IPV4, PAIR.dst)
    assert (indicator.role, indicator.direction) == (IndicatorRole.TARGET, Direction.OUTBOUND)
    assert (indicator.remote_port, indicator.protocol) == (443, "TCP")


def test_the_evidence_rides_along_for_the_analyst():
    info = json.loads(finding()["service"]["additionalInfo"]["value"])

    assert info["beaconScore"] == PAIR.score
    assert info["periodSeconds"] == PAIR.period_seconds
    assert info["subscores"] == PAIR.subscores
    assert "about every 5 min" in finding()["title"]


def test_the_intake_admits_it_as_one_incident_per_pair():
    # Given the same beacon found by two runs, a day apart
    first = finding()
    later = beacon_finding(
        PAIR,
        account_id="123456789012",
        region="us-east-1",
        detected_at=datetime(2026, 12, 5, tzinfo=UTC),
        source=SOURCE,
    )

    # When the intake admits both deliveries
    one = intake.admit(delivered(first), dry_run=False, received_at=DETECTED)
    two = intake.admit(delivered(later), dry_run=False, received_at=DETECTED)

    # Then they are one incident (the pair's finding, updated) in two executions
    assert one.finding.id == two.finding.id == finding_id("123456789012", "us-east-1", PAIR)
    assert one.incident_id == two.incident_id
    assert one.incident_id == naming.incident_id(naming.EVENT_SOURCE, one.finding.id)
    assert one.execution_name != two.execution_name


def test_another_port_or_source_is_another_finding():
    other_port = PAIR.model_copy(update={"dst_port": 8443})
    other_source = PAIR.model_copy(update={"src": "10.20.2.18"})

    ids = {finding_id("123456789012", "us-east-1", p) for p in (PAIR, other_port, other_source)}
    assert len(ids) == 3


def test_the_default_policy_asks_to_isolate_the_instance_and_cut_the_c2():
    # Given the normalized beacon finding, no history, no estate addresses
    normalized = normalize(delivered(finding()))

    # When the default policy decides
    decision = evaluate(load_policy(DEFAULT_POLICY), normalized, Enrichment(), [])

    # Then a person is asked to isolate the instance and cut the destination outbound
    assert decision.mode == Mode.APPROVAL
    assert decision.rule == "compromised-workload-c2"
    targets = {(action.kind, action.target) for action in decision.actions}
    assert targets == {
        (ActionKind.ISOLATE_INSTANCE, SOURCE.instance_id),
        (ActionKind.C2_BLOCK, f"{PAIR.dst}/32"),
    }
    assert not decision.refusals
    assert is_c2_type(FINDING_TYPE)


def test_a_source_the_estate_does_not_know_is_still_reported_by_its_address():
    # Given a beacon from an address no interface holds any more
    normalized = normalize(delivered(finding(source=None)))

    # Then the finding names the host by its address, and the policy cannot isolate it
    assert normalized.resource.instance_id is None
    assert normalized.resource.private_ips == [PAIR.src]
    assert finding(source=None)["title"].startswith(f"Host {PAIR.src} is calling")


@pytest.mark.parametrize(("score", "expected"), [(0.7, 6.9), (0.72, 7.0), (0.93, 8.5), (1.0, 8.9)])
def test_severity_follows_the_score_into_high(score, expected):
    assert severity(score) == expected


def test_the_type_is_documented_mapped_and_in_the_catalogue():
    row = {row.type: row for row in finding_types()}[FINDING_TYPE]
    mapping = mapping_for(FINDING_TYPE)

    assert row.resource_types == ("Instance",) and row.default_severity == "High"
    assert mapping is not None
    assert [t.id for t in mapping.techniques] == ["T1071", "T1573"]
    assert [t.id for t in mapping.tactics] == ["TA0011"]
