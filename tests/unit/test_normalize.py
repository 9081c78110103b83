"""The finding normalizer: every delivery shape of a GuardDuty finding read into one Finding."""

from __future__ import annotations

import copy
import csv
import gzip
import json
from datetime import UTC, datetime
from pathlib import Path

import botocore.session
import pytest

from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import (
    Direction,
    Finding,
    Indicator,
    IndicatorKind,
    IndicatorRole,
    SeverityLabel,
)
from cloud_sniper.domain.normalize import (
    camel_keys,
    finding_source,
    iter_findings,
    normalize,
    peel_replay,
    unwrap,
)

FINDING_TYPES = Path(__file__).parents[2] / "cloud_sniper" / "data" / "guardduty-finding-types.tsv"

GUARDDUTY_EVENTS = [
    "guardduty-ssh-brute-force.json",
    "guardduty-port-probe.json",
    "guardduty-malicious-ip-caller-custom.json",
    "guardduty-cc-activity.json",
    "guardduty-cc-activity-dns.json",
    "guardduty-bitcoin-tool.json",
    "guardduty-instance-credential-exfiltration.json",
    "guardduty-s3-malicious-ip-caller.json",
    "guardduty-eks-kubernetes-api-call.json",
    "guardduty-rds-anomalous-login.json",
    "guardduty-ipv6-rdp-brute-force.json",
    "guardduty-sample-tor-client.json",
    "guardduty-archived-network-port-unusual.json",
    "guardduty-unknown-type.json",
]


def attacker(value: str, kind: IndicatorKind = IndicatorKind.IPV4, **ports) -> Indicator:
    return Indicator(
        kind=kind, value=value, role=IndicatorRole.ATTACKER, direction=Direction.INBOUND, **ports
    )


def addresses(finding: Finding) -> dict[str, Indicator]:
    return {indicator.value: indicator for indicator in finding.addresses()}


def of_kind(finding: Finding, kind: IndicatorKind) -> list[str]:
    return [indicator.value for indicator in finding.indicators if indicator.kind is kind]


# --- fields -----------------------------------------------------------------------------------


def test_eventbridge_finding_fields(event):
    # Given GuardDuty's EventBridge event for an SSH brute force against an instance
    document = event("guardduty-ssh-brute-force.json")

    # When it is normalized
    finding = normalize(document)

    # Then the finding's facts are read from the event's detail
    assert finding.id == "a4c6f2e1b3d5978a0c2e4f6a8b0d1c3e"
    assert finding.type == "UnauthorizedAccess:EC2/SSHBruteForce"
    assert finding.source == "aws.guardduty"
    assert (finding.severity, finding.severity_label) == (2.0, SeverityLabel.LOW)
    assert (finding.account_id, finding.region, finding.partition) == (
        "123456789012",
        "us-east-1",
        "aws",
    )
    assert finding.created_at == datetime(2025, 3, 14, 9, 21, 7, 351000, tzinfo=UTC)
    assert finding.updated_at == datetime(2025, 3, 14, 10, 2, 44, 918000, tzinfo=UTC)
    assert finding.first_seen == datetime(2025, 3, 14, 9, 15, 2, tzinfo=UTC)
    assert finding.last_seen == datetime(2025, 3, 14, 9, 58, 31, tzinfo=UTC)
    assert finding.count == 27
    assert finding.title.startswith("198.51.100.7 is performing SSH brute force attacks")
    assert finding.description.endswith("by guessing the SSH password.")
    assert (finding.sample, finding.archived) == (False, False)


@pytest.mark.parametrize("name", GUARDDUTY_EVENTS)
def test_finding_survives_the_state_machine_json(event, name):
    # Given a normalized finding
    finding = normalize(event(name))

    # When it travels as the JSON a Task returns and the next state reads
    again = Finding.model_validate(json.loads(json.dumps(finding.model_dump(mode="json"))))

    # Then nothing is lost
    assert again == finding


def test_created_at_defaults_to_updated_at_and_naive_times_are_utc(event):
    # Given a finding without createdAt whose updatedAt carries no zone
    document = event("guardduty-ssh-brute-force.json")
    del document["detail"]["createdAt"]
    document["detail"]["updatedAt"] = "2025-03-14T10:02:44"

    # When it is normalized
    finding = normalize(document)

    # Then both times are the update, in UTC
    assert finding.created_at == finding.updated_at == datetime(2025, 3, 14, 10, 2, 44, tzinfo=UTC)


# --- indicators ---------------------------------------------------------------------------------


def test_inbound_connection_names_the_remote_address_as_attacker(event):
    # Given an inbound SSH brute force
    finding = normalize(event("guardduty-ssh-brute-force.json"))

    # Then its one indicator is the attacker, with the ports and protocol of the connection
    assert finding.indicators == [
        Indicator(
            kind=IndicatorKind.IPV4,
            value="198.51.100.7",
            role=IndicatorRole.ATTACKER,
            direction=Direction.INBOUND,
            local_port=22,
            remote_port=46542,
            protocol="TCP",
        )
    ]


@pytest.mark.parametrize(
    ("name", "address", "remote_port", "threat_lists"),
    [
        ("guardduty-cc-activity.json", "203.0.113.50", 443, ["ProofPoint"]),
        ("guardduty-bitcoin-tool.json", "203.0.113.77", 3333, ["ProofPoint"]),
        ("guardduty-archived-network-port-unusual.json", "203.0.113.99", 6667, []),
    ],
)
def test_outbound_connection_names_the_remote_address_as_target(
    event, name, address, remote_port, threat_lists
):
    # Given a finding on a connection the instance opened
    finding = normalize(event(name))

    # Then the remote address is the target of the instance, not an attacker
    (indicator,) = finding.indicators
    assert (indicator.value, indicator.role, indicator.direction) == (
        address,
        IndicatorRole.TARGET,
        Direction.OUTBOUND,
    )
    assert indicator.remote_port == remote_port
    # And a threat list named both in additionalInfo and in the evidence is named once
    assert indicator.threat_lists == threat_lists


def test_unknown_direction_leaves_the_role_open(event):
    # Given a connection GuardDuty could not orient
    document = event("guardduty-cc-activity.json")
    action = document["detail"]["service"]["action"]["networkConnectionAction"]
    action["connectionDirection"] = "UNKNOWN"

    # When it is normalized
    (indicator,) = normalize(document).indicators

    # Then the address is observed, in no known direction
    assert (indicator.role, indicator.direction) == (IndicatorRole.OBSERVED, Direction.UNKNOWN)


def test_port_probe_names_every_prober_once(event):
    # Given probes of two ports from three addresses, one of them probing both ports
    finding = normalize(event("guardduty-port-probe.json"))

    # Then each address is one attacker, with the first port it probed
    assert finding.indicators == [
        attacker("198.51.100.21", local_port=22, threat_lists=["ProofPoint"]),
        attacker("198.51.100.22", local_port=22, threat_lists=["ProofPoint"]),
        attacker("203.0.113.5", local_port=3389, threat_lists=["ProofPoint"]),
    ]


def test_custom_threat_list_is_named(event):
    # Given an inbound connection from an address on the account's own threat list
    finding = normalize(event("guardduty-malicious-ip-caller-custom.json"))

    # Then the attacker carries the list's name
    assert finding.indicators == [
        attacker(
            "203.0.113.40",
            local_port=443,
            remote_port=51820,
            protocol="TCP",
            threat_lists=["cloud-sniper-demo-blocklist"],
        )
    ]


def test_dns_request_names_the_domain_as_observed(event):
    # Given an instance querying a command and control domain
    finding = normalize(event("guardduty-cc-activity-dns.json"))

    # Then the domain is the indicator, observed, with the threat list that named it
    assert finding.indicators == [
        Indicator(
            kind=IndicatorKind.DOMAIN,
            value="beacon.c2-relay.example",
            role=IndicatorRole.OBSERVED,
            direction=Direction.OUTBOUND,
            protocol="UDP",
            threat_lists=["AmazonThreatIntel"],
        )
    ]
    assert finding.addresses() == []


def test_dns_request_with_a_remote_address_names_it_too(event):
    # Given a DNS finding that also names the address the domain resolved to
    document = event("guardduty-cc-activity-dns.json")
    action = document["detail"]["service"]["action"]["dnsRequestAction"]
    action["domain"] = "Beacon.C2-Relay.Example."
    action["remoteIpDetails"] = {"ipAddressV4": "203.0.113.66"}

    # When it is normalized
    finding = normalize(document)

    # Then the domain is read in canonical form and the address is observed beside it
    assert of_kind(finding, IndicatorKind.DOMAIN) == ["beacon.c2-relay.example"]
    assert addresses(finding)["203.0.113.66"].role is IndicatorRole.OBSERVED


def test_api_call_names_caller_key_and_principal(event):
    # Given instance credentials used from outside AWS
    finding = normalize(event("guardduty-instance-credential-exfiltration.json"))

    # Then the caller is the attacker, and the key and principal it used are observed
    assert finding.indicators == [
        attacker("198.51.100.23"),
        Indicator(kind=IndicatorKind.ACCESS_KEY, value="ASIAIOSFODNN7EXAMPLE"),
        Indicator(kind=IndicatorKind.PRINCIPAL, value="cloud-sniper-demo-web"),
    ]


def test_kubernetes_api_call_names_the_source_address_once(event):
    # Given an API call named both in sourceIPs and in remoteIpDetails
    finding = normalize(event("guardduty-eks-kubernetes-api-call.json"))

    # Then the caller is one attacker
    assert finding.indicators == [attacker("198.51.100.61", threat_lists=["AmazonThreatIntel"])]


def test_kubernetes_source_addresses_without_remote_details(event):
    # Given an API call whose callers are only listed in sourceIPs: IPv4, IPv6, IPv4 seen as
    # IPv6, and one unparseable
    document = event("guardduty-eks-kubernetes-api-call.json")
    action = document["detail"]["service"]["action"]["kubernetesApiCallAction"]
    del action["remoteIpDetails"]
    action["sourceIPs"] = [
        "198.51.100.62",
        "2a05:d018:1::1",
        "::ffff:203.0.113.8",
        "not-an-address",
    ]

    # When it is normalized
    finding = normalize(document)

    # Then every parseable source is an attacker, an IPv4 one as IPv4
    assert [(item.kind, item.value, item.role) for item in finding.indicators] == [
        (IndicatorKind.IPV4, "198.51.100.62", IndicatorRole.ATTACKER),
        (IndicatorKind.IPV6, "2a05:d018:1::1", IndicatorRole.ATTACKER),
        (IndicatorKind.IPV4, "203.0.113.8", IndicatorRole.ATTACKER),
    ]


def test_rds_login_attempt_names_the_remote_address_as_attacker(event):
    # Given an anomalous successful database login
    finding = normalize(event("guardduty-rds-anomalous-login.json"))

    # Then the remote address is the attacker
    assert finding.indicators == [attacker("203.0.113.120")]


def test_ipv6_attacker_is_read_in_canonical_form(event):
    # Given an RDP brute force from an IPv6 address written in full, upper case
    finding = normalize(event("guardduty-ipv6-rdp-brute-force.json"))

    # Then the attacker is an IPv6 indicator in compressed lower-case form
    assert finding.indicators == [
        attacker(
            "2a05:d018:1::1",
            kind=IndicatorKind.IPV6,
            local_port=3389,
            remote_port=50211,
            protocol="TCP",
        )
    ]


def test_unparseable_address_makes_no_indicator(event):
    # Given a connection whose remote address is not an address
    document = event("guardduty-ssh-brute-force.json")
    action = document["detail"]["service"]["action"]["networkConnectionAction"]
    action["remoteIpDetails"]["ipAddressV4"] = "198.51.100.300"

    # When it is normalized
    finding = normalize(document)

    # Then the finding is kept, without an indicator nobody could block
    assert finding.indicators == []


# --- resources --------------------------------------------------------------------------------


def test_instance_identifiers_addresses_and_tags(event):
    # Given a finding on an instance
    resource = normalize(event("guardduty-ssh-brute-force.json")).resource

    # Then the instance, its network and its tags are read
    assert resource.kind == "Instance"
    assert resource.instance_id == "i-0a1b2c3d4e5f60718"
    assert resource.vpc_id == "vpc-0f1e2d3c4b5a69788"
    assert resource.subnet_ids == ["subnet-0a9b8c7d6e5f43210"]
    assert resource.public_ips == ["192.0.2.10"]
    assert resource.private_ips == ["10.0.1.25", "10.0.1.26"]
    assert resource.tags == {
        "Name": "cloud-sniper-demo-web",
        "Environment": "Production",
        "Owner": "SecOps Team",
    }


def test_instance_ipv6_addresses_are_public(event):
    # Given an instance with an IPv6 address
    resource = normalize(event("guardduty-ipv6-rdp-brute-force.json")).resource

    # Then the IPv6 address is among the instance's public addresses
    assert resource.public_ips == ["192.0.2.10", "2600:1f18:4a3:6900:1a2b:3c4d:5e6f:7081"]


def test_instance_without_public_address_and_with_exempt_tag(event):
    # Given a private instance tagged by the project
    resource = normalize(event("guardduty-bitcoin-tool.json")).resource

    # Then it has no public address and the tag is kept verbatim
    assert resource.public_ips == []
    assert resource.tags["cloud-sniper:exempt"] == "false"


def test_access_key_resource(event):
    # Given a finding on an access key
    resource = normalize(event("guardduty-instance-credential-exfiltration.json")).resource

    # Then the key and the principal are read, and no instance is invented
    assert (resource.kind, resource.access_key_id, resource.principal) == (
        "AccessKey",
        "ASIAIOSFODNN7EXAMPLE",
        "cloud-sniper-demo-web",
    )
    assert resource.instance_id is None


def test_principal_falls_back_to_the_principal_id(event):
    # Given an access key without a user name
    document = event("guardduty-instance-credential-exfiltration.json")
    del document["detail"]["resource"]["accessKeyDetails"]["userName"]

    # When it is normalized
    finding = normalize(document)

    # Then the principal id names the principal
    assert finding.resource.principal == "AROAEXAMPLEROLEID1234:i-0a1b2c3d4e5f60718"
    assert of_kind(finding, IndicatorKind.PRINCIPAL) == [
        "AROAEXAMPLEROLEID1234:i-0a1b2c3d4e5f60718"
    ]


def test_s3_bucket_resource(event):
    # Given an S3 API call from a malicious address
    finding = normalize(event("guardduty-s3-malicious-ip-caller.json"))

    # Then the bucket, the key, the principal and the bucket's tags are read
    resource = finding.resource
    assert resource.kind == "S3Bucket"
    assert resource.bucket_names == ["cloud-sniper-demo-data"]
    assert (resource.access_key_id, resource.principal) == ("AKIAIOSFODNN7EXAMPLE", "ci-deployer")
    assert resource.tags == {"DataClassification": "Confidential"}
    # And the caller is the attacker
    assert addresses(finding)["203.0.113.91"].role is IndicatorRole.ATTACKER


def test_eks_cluster_resource(event):
    # Given a Kubernetes API call against an EKS cluster
    resource = normalize(event("guardduty-eks-kubernetes-api-call.json")).resource

    # Then the cluster, its network, its tags and the Kubernetes user are read
    assert (resource.kind, resource.cluster, resource.vpc_id) == (
        "EKSCluster",
        "cloud-sniper-demo",
        "vpc-0e2d4c6b8a0f13579",
    )
    assert resource.principal == "system:anonymous"
    assert resource.tags == {"Team": "Platform"}


def test_rds_instance_resource(event):
    # Given a login to an RDS database instance
    resource = normalize(event("guardduty-rds-anomalous-login.json")).resource

    # Then the database instance and its tags are read
    assert (resource.kind, resource.db_instance_id) == ("RDSDBInstance", "cloud-sniper-demo-db-1")
    assert resource.tags == {"Application": "Orders"}


def test_lambda_and_ecs_resources(event):
    # Given findings on a Lambda function in a VPC and on an ECS cluster
    document = event("guardduty-cc-activity.json")
    document["detail"]["resource"] = {
        "resourceType": "Lambda",
        "lambdaDetails": {
            "functionName": "cloud-sniper-demo-fn",
            "vpcConfig": {"vpcId": "vpc-0aaa", "subnetIds": ["subnet-0bbb"], "securityGroups": []},
            "tags": [{"key": "Stage", "value": "prod"}],
        },
    }
    ecs = copy.deepcopy(document)
    ecs["detail"]["resource"] = {
        "resourceType": "ECSCluster",
        "ecsClusterDetails": {"name": "cloud-sniper-demo-ecs", "status": "ACTIVE"},
    }

    # When they are normalized
    function = normalize(document).resource
    cluster = normalize(ecs).resource

    # Then each is identified
    assert (function.function_name, function.vpc_id, function.subnet_ids) == (
        "cloud-sniper-demo-fn",
        "vpc-0aaa",
        ["subnet-0bbb"],
    )
    assert function.tags == {"Stage": "prod"}
    assert cluster.cluster == "cloud-sniper-demo-ecs"


def test_unknown_type_and_resource_type_are_kept(event):
    # Given a finding type and a resource type this code has never heard of
    finding = normalize(event("guardduty-unknown-type.json"))

    # Then both are kept as given, with the indicators the known action still names
    assert finding.type == "Exfiltration:DynamoDB/AnomalousExport.Preview"
    assert finding.resource.kind == "DynamoDBTable"
    assert finding.severity_label is SeverityLabel.HIGH
    assert of_kind(finding, IndicatorKind.IPV4) == ["203.0.113.130"]
    assert of_kind(finding, IndicatorKind.ACCESS_KEY) == ["ASIAI44QH8DHBEXAMPLE"]


# --- sample and archived ----------------------------------------------------------------------


def test_sample_finding_is_marked(event):
    # Given a sample finding, marked inline in additionalInfo
    finding = normalize(event("guardduty-sample-tor-client.json"))

    # Then it is a sample
    assert finding.sample is True


@pytest.mark.parametrize(
    ("additional_info", "sample"),
    [
        ({"value": '{"sample":true}', "type": "default"}, True),
        ({"value": '{"sample":"true"}', "type": "default"}, True),
        ({"sample": "True"}, True),
        ({"sample": False}, False),
        ({"value": '{"threatListName":"ProofPoint"}', "type": "default"}, False),
        ({"value": "not JSON", "type": "default"}, False),
    ],
)
def test_sample_mark_in_every_form(event, additional_info, sample):
    # Given additionalInfo inline or as a JSON value, with a boolean or a string
    document = event("guardduty-ssh-brute-force.json")
    document["detail"]["service"]["additionalInfo"] = additional_info

    # When it is normalized
    finding = normalize(document)

    # Then the sample mark is read
    assert finding.sample is sample


def test_archived_finding_is_marked(event):
    # Given a finding archived in GuardDuty
    finding = normalize(event("guardduty-archived-network-port-unusual.json"))

    # Then it is marked archived
    assert finding.archived is True


# --- delivery shapes --------------------------------------------------------------------------


def test_api_shape_normalizes_equal_to_the_eventbridge_shape(event):
    # Given findings as the GetFindings API returns them, in PascalCase
    response = event("getfindings-response.json")
    camel = {
        normalize(event(name)).id: normalize(event(name))
        for name in (
            "guardduty-ssh-brute-force.json",
            "guardduty-cc-activity-dns.json",
            "guardduty-s3-malicious-ip-caller.json",
            "guardduty-rds-anomalous-login.json",
        )
    }

    # When each is normalized
    from_api = [normalize(document) for document in response["Findings"]]

    # Then each equals the same finding delivered by EventBridge
    assert {finding.id for finding in from_api} == set(camel)
    for finding in from_api:
        assert finding == camel[finding.id]


@pytest.mark.parametrize(
    ("position", "name"),
    [
        (0, "guardduty-ssh-brute-force.json"),
        (1, "guardduty-cc-activity-dns.json"),
        (2, "guardduty-s3-malicious-ip-caller.json"),
    ],
)
def test_api_member_names_convert_to_the_wire_names(event, position, name):
    # Given a finding in API shape and the same finding as EventBridge delivers it
    api = event("getfindings-response.json")["Findings"][position]
    wire = event(name)["detail"]

    # When the API member names are converted
    converted = camel_keys(api)

    # Then the document is the wire document, tags and map keys untouched
    assert converted == wire


def test_conversion_keeps_tags_and_data_keys(event):
    # Given API-shaped findings whose tags, API names and profiles are PascalCase data
    findings = event("getfindings-response.json")["Findings"]

    # When they are converted
    s3, rds = camel_keys(findings[2]), camel_keys(findings[3])

    # Then data stays as it was
    call = s3["service"]["action"]["awsApiCallAction"]
    assert call["affectedResources"] == {"AWS::S3::Bucket": "cloud-sniper-demo-data"}
    assert s3["resource"]["s3BucketDetails"][0]["tags"] == [
        {"key": "DataClassification", "value": "Confidential"}
    ]
    profiles = rds["service"]["detection"]["anomaly"]["profiles"]
    assert list(profiles) == ["RDSLoginActivity"]
    assert list(profiles["RDSLoginActivity"]) == ["RemoteIp"]
    assert profiles["RDSLoginActivity"]["RemoteIp"][0]["profileType"] == "frequency"


def _api_and_wire(shape, path: tuple[str, ...] = ()) -> tuple[object, object]:
    """One document per naming of every member under a shape, from the GuardDuty API model."""
    if shape.type_name == "structure":
        api, wire = {}, {}
        for name, member in shape.members.items():
            # Account.Name is "account" on the wire, the one member name that means two things;
            # neither the pipeline nor its reports read it.
            if member.name in path or member.name == "Account":
                continue
            api[name], wire[member.serialization.get("name", name)] = _api_and_wire(
                member, (*path, member.name)
            )
        return api, wire
    if shape.type_name == "list":
        api, wire = _api_and_wire(shape.member, path)
        return [api], [wire]
    if shape.type_name == "map":
        api, wire = _api_and_wire(shape.value, path)
        return {"DataKey": api}, {"DataKey": wire}
    return "value", "value"


def test_every_api_member_of_a_finding_converts_like_its_wire_name():
    # Given every member of the API's Finding shape, named as the API and as the wire name it
    model = botocore.session.get_session().get_service_model("guardduty")
    api, wire = _api_and_wire(model.shape_for("Finding"))

    # When both are converted
    # Then they agree: no member is lost or misnamed, and map keys stay data
    assert camel_keys(api) == camel_keys(wire)


def test_bare_finding_as_exported_to_s3_equals_the_event(event):
    # Given the same finding as a bare S3-export document and as an EventBridge event
    bare = event("s3-export-bitcoin-tool.json")

    # When both are normalized
    # Then they are the same finding
    assert normalize(bare) == normalize(event("guardduty-bitcoin-tool.json"))


def test_unwrap_each_delivery_shape(event):
    # Given an event, a bare finding and a replay of an event
    sent = event("guardduty-ssh-brute-force.json")
    replay = event("replay-dry-run.json")

    # When they are unwrapped
    # Then each gives the finding document and whether it is a dry run
    assert unwrap(sent) == (sent["detail"], False)
    assert unwrap(sent["detail"]) == (sent["detail"], False)
    assert unwrap(replay) == (sent["detail"], True)
    assert peel_replay(replay) == (sent, True)
    assert peel_replay(sent) == (sent, False)


def test_replay_normalizes_as_the_finding_it_carries(event):
    # Given a dry-run replay of a GuardDuty event
    replay = event("replay-dry-run.json")

    # When it is normalized
    # Then it is the replayed finding, still GuardDuty's
    assert normalize(replay) == normalize(event("guardduty-ssh-brute-force.json"))
    assert finding_source(replay) == "aws.guardduty"


def test_finding_source_tells_project_detectors_apart(event):
    # Given a finding published by a project detector on the project bus, and a bare one
    published = event("guardduty-ssh-brute-force.json")
    published["source"] = "cloud-sniper"
    bare = copy.deepcopy(published["detail"])
    bare["service"]["serviceName"] = "cloud-sniper"
    replayed = {"detail-type": "Cloud Sniper Replay", "detail": {"finding": published}}

    # When their source is asked
    # Then each is the project's, and GuardDuty's own finding is GuardDuty's
    assert finding_source(published) == "cloud-sniper"
    assert finding_source(bare) == "cloud-sniper"
    assert finding_source(replayed) == "cloud-sniper"
    assert normalize(published).source == "cloud-sniper"
    assert finding_source(event("guardduty-ssh-brute-force.json")) == "aws.guardduty"


# --- reading files ----------------------------------------------------------------------------


def _read(content: bytes | str, name: str = "findings") -> list[tuple[str, object]]:
    return list(iter_findings(content, name))


def test_json_lines_with_a_bad_line_read_the_others(event):
    # Given JSON lines: two events, a broken line, a bare finding and a blank line
    ssh, cc = event("guardduty-ssh-brute-force.json"), event("guardduty-cc-activity.json")
    bare = event("s3-export-bitcoin-tool.json")
    content = "\n".join([json.dumps(ssh), json.dumps(cc), '{"detail": ', json.dumps(bare), ""])

    # When the content is read
    records = _read(content, "batch.jsonl")

    # Then every record comes out, the broken one as an error in its place
    assert [locator for locator, _ in records] == [f"batch.jsonl#{n}" for n in range(1, 5)]
    assert [records[0][1], records[1][1], records[3][1]] == [ssh, cc, bare]
    assert isinstance(records[2][1], InvalidFindingError)
    assert str(records[2][1]).startswith("record: not JSON (Expecting value at line 3 column")


def test_gzip_is_detected_by_its_magic_bytes(event):
    # Given gzipped JSON lines and a gzipped GetFindings response, named without .gz
    ssh, cc = event("guardduty-ssh-brute-force.json"), event("guardduty-cc-activity.json")
    lines = gzip.compress(f"{json.dumps(ssh)}\n{json.dumps(cc)}\n".encode())
    response = event("getfindings-response.json")
    document = gzip.compress(json.dumps(response).encode())

    # When they are read
    # Then they read as the plain content would
    assert _read(lines) == [("findings#1", ssh), ("findings#2", cc)]
    assert [item for _, item in _read(document, "export")] == response["Findings"]


def test_json_document_shapes(event):
    # Given one event, a list of deliveries and a GetFindings response
    ssh = event("guardduty-ssh-brute-force.json")
    bare = event("s3-export-bitcoin-tool.json")
    response = event("getfindings-response.json")

    # When each is read
    # Then each finding is one record, numbered in order
    assert _read(json.dumps(ssh)) == [("findings#1", ssh)]
    assert _read(json.dumps([ssh, bare, response]).encode()) == [
        ("findings#1", ssh),
        ("findings#2", bare),
        *[(f"findings#{n}", item) for n, item in enumerate(response["Findings"], start=3)],
    ]


def test_bad_record_in_a_batch_does_not_stop_it(event):
    # Given a list holding a valid event, a string, an invalid finding and a valid one
    content = json.dumps(
        [
            event("guardduty-ssh-brute-force.json"),
            "UnauthorizedAccess:EC2/SSHBruteForce",
            event("invalid-missing-severity.json"),
            event("guardduty-port-probe.json"),
        ]
    )

    # When it is read and every record normalized
    results = []
    for locator, item in iter_findings(content, "batch.json"):
        try:
            if isinstance(item, InvalidFindingError):
                raise item
            results.append((locator, normalize(item).type))
        except InvalidFindingError as exc:
            results.append((locator, str(exc)))

    # Then the valid findings come through around the bad ones
    assert results == [
        ("batch.json#1", "UnauthorizedAccess:EC2/SSHBruteForce"),
        ("batch.json#2", "record: not a JSON object (string)"),
        ("batch.json#3", "finding.severity: missing"),
        ("batch.json#4", "Recon:EC2/PortProbeUnprotectedPort"),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file: empty"),
        ('{\n  "detail-type": "GuardDuty Finding",\n', "file: not JSON"),
        (b"\x1f\x8b\x08\x00broken", "file: not readable gzip"),
        (b"\xff\xfe\x00{", "file: not UTF-8 text"),
        ('{"Findings": {"Id": "x"}}', "Findings: not a JSON array (object)"),
    ],
)
def test_unreadable_file_is_one_error(content, message):
    # Given content that holds no readable record
    # When it is read
    records = _read(content, "bad.json")

    # Then one error says why, and nothing raises
    assert len(records) == 1
    locator, error = records[0]
    assert locator == "bad.json#1"
    assert isinstance(error, InvalidFindingError)
    assert str(error).startswith(message)


# --- invalid findings -------------------------------------------------------------------------


def test_invalid_event_files_name_the_field(event):
    # Given the invalid sample events
    # When they are normalized
    # Then each error names the field at fault
    with pytest.raises(InvalidFindingError, match=r"^finding\.severity: missing$"):
        normalize(event("invalid-missing-severity.json"))
    with pytest.raises(InvalidFindingError, match=r"^finding\.updatedAt: .*valid datetime"):
        normalize(event("invalid-bad-updated-at.json"))
    with pytest.raises(InvalidFindingError, match=r"^finding: not a JSON object \(string\)$"):
        normalize(event("invalid-not-an-object.json"))


def _set(path: str, value: object):
    """A change to an event's detail: set (or, with ..., delete) the value at a dotted path."""

    def change(document: dict) -> None:
        *parents, last = path.split(".")
        target = document
        for part in parents:
            target = target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_set("detail.id", ...), "finding.id: missing"),
        (_set("detail.id", 1234), "finding.id: Input should be a valid string"),
        (_set("detail.type", " "), "finding.type: missing"),
        (_set("detail.severity", "high"), "finding.severity: not a number ('high')"),
        (_set("detail.severity", True), "finding.severity: not a number (boolean)"),
        (_set("detail.severity", 11), "finding.severity: 11.0 is outside 0-10"),
        (_set("detail.accountId", "12345"), "finding.accountId: not a 12-digit account id"),
        (_set("detail.region", ...), "finding.region: missing"),
        (_set("detail.region", "mars-1"), "finding.region: not an AWS region"),
        (_set("detail.updatedAt", ...), "finding.updatedAt: missing"),
        (_set("detail.createdAt", "soon"), "finding.createdAt: "),
        (_set("detail.resource", ...), "finding.resource: missing"),
        (_set("detail.resource", []), "finding.resource: not a JSON object (array)"),
        (_set("detail.resource.resourceType", ...), "finding.resource.resourceType: missing"),
        (_set("detail.service.eventFirstSeen", "yesterday"), "finding.service.eventFirstSeen: "),
        (_set("detail.service.count", "many"), "finding.service.count: Input should be"),
        (_set("detail.title", 5), "finding.title: Input should be a valid string"),
        (_set("detail", ...), "event.detail: missing"),
        (_set("detail-type", "GuardDuty Malware Scan"), "event.detail-type: unsupported"),
    ],
)
def test_invalid_field_is_named(event, change, message):
    # Given an otherwise valid event with one field missing or wrong
    document = event("guardduty-ssh-brute-force.json")
    change(document)

    # When it is normalized
    with pytest.raises(InvalidFindingError) as raised:
        normalize(document)

    # Then the error names the field
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize(
    ("detail", "message"),
    [
        ({"dry_run": True}, "event.detail.finding: missing"),
        ({"finding": "x", "dry_run": True}, "event.detail.finding: not a JSON object (string)"),
        ({"finding": {}, "dry_run": "yes"}, "event.detail.dry_run: not a boolean (string)"),
        (
            {"finding": {"detail-type": "Cloud Sniper Replay", "detail": {}}},
            "event.detail-type: a replay cannot replay another replay",
        ),
    ],
)
def test_invalid_replay_is_named(detail, message):
    # Given a replay event with a broken detail
    replay = {"source": "cloud-sniper", "detail-type": "Cloud Sniper Replay", "detail": detail}

    # When it is normalized
    with pytest.raises(InvalidFindingError) as raised:
        normalize(replay)

    # Then the error names the replay's field
    assert str(raised.value).startswith(message)


def test_getfindings_response_is_not_one_finding(event):
    # Given a whole GetFindings response
    # When it is normalized as one finding
    # Then the error says to read it record by record
    with pytest.raises(InvalidFindingError, match="iter_findings"):
        normalize(event("getfindings-response.json"))


# --- every documented finding type ------------------------------------------------------------

# Identifying details to give a minimal finding of each resource type, and what they identify.
RESOURCE_DETAILS = {
    "Instance": ({"instanceDetails": {"instanceId": "i-0123456789abcdef0"}}, "instance_id"),
    "AccessKey": ({"accessKeyDetails": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE"}}, "access_key_id"),
    "S3Bucket": ({"s3BucketDetails": [{"name": "demo-bucket"}]}, "bucket_names"),
    "S3Object": ({"s3BucketDetails": [{"name": "demo-bucket"}]}, "bucket_names"),
    "EKSCluster": ({"eksClusterDetails": {"name": "demo-eks"}}, "cluster"),
    "ECSCluster": ({"ecsClusterDetails": {"name": "demo-ecs"}}, "cluster"),
    "Lambda": ({"lambdaDetails": {"functionName": "demo-fn"}}, "function_name"),
    "RDSDBInstance": (
        {"rdsDbInstanceDetails": {"dbInstanceIdentifier": "demo-db"}},
        "db_instance_id",
    ),
}
SEVERITIES = {"Low": 2.0, "Medium": 5.0, "High": 8.0, "Critical": 9.0}


def _finding_types() -> list[dict[str, str]]:
    with FINDING_TYPES.open(newline="") as table:
        return list(csv.DictReader(table, delimiter="\t"))


@pytest.mark.parametrize("row", _finding_types(), ids=lambda row: row["type"])
def test_every_documented_finding_type_normalizes(row):
    # Given a minimal finding of the type, on its first documented resource type; custom
    # detection rules document none, and that text is kept as an unknown resource type would be
    resource_type = row["resource_type"].split("|")[0]
    details, field = RESOURCE_DETAILS.get(resource_type, ({}, None))
    label = row["default_severity"].split("|")[0].rstrip("*")
    document = {
        "schemaVersion": "2.0",
        "accountId": "123456789012",
        "region": "us-east-1",
        "id": "0f" * 16,
        "type": row["type"],
        "severity": SEVERITIES.get(label, 5.0),
        "createdAt": "2025-03-14T09:21:07.351Z",
        "updatedAt": "2025-03-14T10:02:44.918Z",
        "resource": {"resourceType": resource_type, **details},
        "service": {"serviceName": "guardduty", "count": 1},
    }

    # When it is normalized
    finding = normalize(document)

    # Then the type and resource type are kept and the resource is identified
    assert finding.type == row["type"]
    assert finding.resource.kind == resource_type
    if field:
        assert getattr(finding.resource, field)
    if label in SEVERITIES:
        assert finding.severity_label.value == label
