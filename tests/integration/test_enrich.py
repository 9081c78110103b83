"""The enrich handler against an emulated indicators table."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from cloud_sniper.domain.errors import TransientAwsError
from cloud_sniper.domain.models import Enrichment, Indicator, IndicatorKind
from services.enrich import handler as enrich
from services.enrich.adapters import DynamoIndicatorStore
from services.enrich.knowledge_base import Sighting

TABLE = "cloud-sniper-indicators"
ATTACKER = "198.51.100.7"


@dataclass
class Context:
    function_name: str = "cloud-sniper-enrich"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:111122223333:function:cloud-sniper-enrich"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setenv("INDICATORS_TABLE", TABLE)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "enrich")
    enrich._store.cache_clear()
    with mock_aws():
        yield boto3.resource("dynamodb").create_table(
            TableName=TABLE,
            KeySchema=[
                {"AttributeName": "kind", "KeyType": "HASH"},
                {"AttributeName": "value", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "kind", "AttributeType": "S"},
                {"AttributeName": "value", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
    enrich._store.cache_clear()


@pytest.fixture
def request_for(event):
    """Build an enrich request for the sample finding, with another id and type if asked."""

    def build(finding_id: str | None = None, finding_type: str | None = None) -> dict:
        request = copy.deepcopy(event("enrich-request.json"))
        if finding_id:
            request["finding"]["id"] = finding_id
        if finding_type:
            request["finding"]["type"] = finding_type
        return request

    return build


def enrich_once(request: dict) -> Enrichment:
    return Enrichment.model_validate(enrich.handler(request, Context()))


def stored(table, value: str = ATTACKER) -> dict:
    return table.get_item(Key={"kind": "ipv4", "value": value})["Item"]


def test_first_sighting_is_not_seen_before(table, request_for):
    # Given an empty knowledge base
    # When a finding names an address for the first time
    enrichment = enrich_once(request_for())

    # Then its history is empty and the sighting is recorded
    [history] = enrichment.indicators
    assert (history.kind, history.value) == (IndicatorKind.IPV4, ATTACKER)
    assert history.seen_before is False
    assert history.sightings == 0
    assert history.blocked_before is False
    item = stored(table)
    assert item["sightings"] == 1
    assert item["finding_ids"] == {"7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1"}
    assert item["finding_types"] == {"UnauthorizedAccess:EC2/SSHBruteForce"}
    assert item["accounts"] == {"111122223333"}
    assert item["first_seen"] == item["last_seen"]


def test_second_finding_with_the_same_address_is_seen_before(table, request_for):
    # Given a finding that named the address
    enrich_once(request_for())

    # When another finding names the same address
    enrichment = enrich_once(request_for("second-finding", "Recon:EC2/PortProbeUnprotectedPort"))

    # Then the history shows the first finding, and both are now counted
    [history] = enrichment.indicators
    assert history.seen_before is True
    assert history.sightings == 1
    assert history.finding_types == ["UnauthorizedAccess:EC2/SSHBruteForce"]
    item = stored(table)
    assert item["sightings"] == 2
    assert item["finding_types"] == {
        "UnauthorizedAccess:EC2/SSHBruteForce",
        "Recon:EC2/PortProbeUnprotectedPort",
    }


def test_redelivered_finding_is_not_counted_twice(table, request_for):
    # Given a finding already recorded
    first = enrich_once(request_for())
    first_seen = stored(table)["first_seen"]

    # When the same finding arrives again
    again = enrich_once(request_for())

    # Then it reads the same history and the count does not move; only last_seen does
    assert again.indicators[0].seen_before is False
    assert again.indicators[0].sightings == first.indicators[0].sightings == 0
    item = stored(table)
    assert item["sightings"] == 1
    assert item["first_seen"] == first_seen
    assert item["last_seen"] >= first_seen


def test_redelivery_after_other_findings_keeps_their_history(table, request_for):
    # Given two findings naming the address
    enrich_once(request_for("finding-a"))
    enrich_once(request_for("finding-b"))

    # When the second one is redelivered
    again = enrich_once(request_for("finding-b"))

    # Then it still sees only the first finding before it
    assert again.indicators[0].seen_before is True
    assert again.indicators[0].sightings == 1
    assert stored(table)["sightings"] == 2


def test_block_history_comes_from_the_item_and_is_left_alone(table, request_for):
    # Given an address the mitigate service blocked before
    table.put_item(
        Item={
            "kind": "ipv4",
            "value": ATTACKER,
            "first_seen": "2024-04-01T00:00:00+00:00",
            "last_seen": "2024-04-02T00:00:00+00:00",
            "sightings": 3,
            "finding_ids": {"a", "b", "c"},
            "finding_types": {"Recon:EC2/PortProbeUnprotectedPort"},
            "accounts": {"111122223333"},
            "blocked_before": True,
            "block_state": "expired",
            "blocked_until": "2024-04-03T00:00:00+00:00",
        }
    )

    # When a new finding names it
    enrichment = enrich_once(request_for())

    # Then the history says it was blocked, and the block attributes are untouched
    [history] = enrichment.indicators
    assert history.blocked_before is True
    assert history.block_state == "expired"
    assert history.sightings == 3
    assert history.first_seen == datetime(2024, 4, 1, tzinfo=UTC)
    item = stored(table)
    assert item["sightings"] == 4
    assert item["first_seen"] == "2024-04-01T00:00:00+00:00"
    assert (item["blocked_before"], item["block_state"], item["blocked_until"]) == (
        True,
        "expired",
        "2024-04-03T00:00:00+00:00",
    )


def test_an_item_with_only_block_attributes_is_not_seen_before(table, request_for):
    # Given an address known only from a block
    table.put_item(
        Item={"kind": "ipv4", "value": ATTACKER, "blocked_before": True, "block_state": "active"}
    )

    # When a finding names it
    [history] = enrich_once(request_for()).indicators

    # Then it was blocked but never seen in a finding
    assert (history.seen_before, history.sightings, history.blocked_before) == (False, 0, True)
    assert stored(table)["sightings"] == 1


def test_each_indicator_is_recorded_once(table, request_for):
    # Given a finding naming the same address twice and a domain
    request = request_for()
    indicators = request["finding"]["indicators"]
    indicators.append(dict(indicators[0], role="target", direction="outbound"))
    indicators.append({"kind": "domain", "value": "evil.example.com"})

    # When it is enriched
    enrichment = enrich_once(request)

    # Then each indicator has one history and one sighting
    assert [(h.kind, h.value) for h in enrichment.indicators] == [
        (IndicatorKind.IPV4, ATTACKER),
        (IndicatorKind.DOMAIN, "evil.example.com"),
    ]
    assert stored(table)["sightings"] == 1
    assert table.get_item(Key={"kind": "domain", "value": "evil.example.com"})["Item"]


def test_a_finding_without_indicators_has_an_empty_enrichment(table, request_for):
    # Given a finding that names no indicator
    request = request_for()
    request["finding"]["indicators"] = []

    # When it is enriched
    enrichment = enrich_once(request)

    # Then nothing is recorded
    assert enrichment.indicators == []
    assert table.scan()["Count"] == 0


class ThrottledTable:
    """A table whose every update is throttled."""

    def update_item(self, **_):
        raise ClientError(
            {
                "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "UpdateItem",
        )


class MissingTable:
    """A table that does not exist."""

    def update_item(self, **_):
        raise ClientError(
            {
                "Error": {"Code": "ResourceNotFoundException", "Message": "no table"},
                "ResponseMetadata": {"HTTPStatusCode": 400},
            },
            "UpdateItem",
        )


SIGHTING = Sighting("f-1", "Recon:EC2/Portscan", "111122223333", datetime(2024, 5, 1, tzinfo=UTC))
INDICATOR = Indicator(kind=IndicatorKind.IPV4, value=ATTACKER)


def test_throttling_is_a_transient_error():
    # Given a throttled table
    store = DynamoIndicatorStore(ThrottledTable())

    # When a sighting is recorded / Then the state machine's Retry can match the error
    with pytest.raises(TransientAwsError):
        store.record(INDICATOR, SIGHTING)


def test_other_errors_are_raised_as_they_are():
    # Given a missing table
    store = DynamoIndicatorStore(MissingTable())

    # When a sighting is recorded / Then the error is not retried as transient
    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        store.record(INDICATOR, SIGHTING)


def test_missing_table_setting_is_named(monkeypatch, request_for):
    # Given a function without its table variable
    monkeypatch.delenv("INDICATORS_TABLE", raising=False)
    enrich._store.cache_clear()

    # When it runs / Then the error names the variable
    with pytest.raises(ValueError, match="INDICATORS_TABLE"):
        enrich.handler(request_for(), Context())


def test_the_enrichment_carries_the_finding_types_attack_mapping(table, request_for):
    # Given a known finding type, when it is enriched
    enrichment = enrich_once(request_for(finding_type="UnauthorizedAccess:EC2/SSHBruteForce"))

    # Then the enrichment says what it means in ATT&CK, with the version and the reason
    attack = enrichment.attack
    assert attack is not None and attack.attack_version == "18.1"
    assert "T1110.001" in {technique.id for technique in attack.techniques}
    assert attack.reason


def test_an_unknown_type_has_no_attack_mapping(table, request_for):
    enrichment = enrich_once(request_for(finding_type="Made:Up/NeverSeenBefore"))

    assert enrichment.attack is None
