"""The normalizer over Security Hub (ASFF) findings, in each shape Security Hub delivers them."""

from __future__ import annotations

import copy
import json

import pytest

from cloud_sniper.domain import asff, naming
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import Direction, IndicatorKind, IndicatorRole
from cloud_sniper.domain.normalize import finding_source, iter_findings, normalize, unwrap

GUARDDUTY_VIA_HUB = "securityhub-guardduty-ssh-brute-force.json"


def bare(event, name: str) -> dict:
    """The one ASFF finding of a sample, whether kept as an event or bare."""
    document = event(name)
    return document["detail"]["findings"][0] if "detail" in document else document


def test_a_guardduty_finding_via_security_hub_is_the_guardduty_delivery_s_incident(event):
    # Given GuardDuty's own delivery of a finding update and the same update via Security Hub
    direct = normalize(event("guardduty-ssh-brute-force.json"))

    # When the Security Hub event is normalized
    via_hub = normalize(event(GUARDDUTY_VIA_HUB))

    # Then it has GuardDuty's id, type, severity, source and update time
    assert (via_hub.id, via_hub.type, via_hub.source) == (direct.id, direct.type, direct.source)
    assert via_hub.source == "aws.guardduty"
    assert via_hub.product == "GuardDuty"
    assert (via_hub.severity, via_hub.severity_label) == (direct.severity, direct.severity_label)
    assert via_hub.updated_at == direct.updated_at
    assert (via_hub.created_at, via_hub.first_seen, via_hub.last_seen, via_hub.count) == (
        direct.created_at,
        direct.first_seen,
        direct.last_seen,
        direct.count,
    )
    # And so the same incident and the same execution name: the second delivery is a duplicate
    assert naming.incident_id(via_hub.source, via_hub.id) == naming.incident_id(
        direct.source, direct.id
    )
    assert naming.execution_name(via_hub.id, via_hub.updated_at) == naming.execution_name(
        direct.id, direct.updated_at
    )
    # And what the policy reads is the same: the attacker, the resource kind and its network
    assert via_hub.indicators == direct.indicators
    for field in ("kind", "instance_id", "vpc_id", "subnet_ids", "public_ips", "private_ips"):
        assert getattr(via_hub.resource, field) == getattr(direct.resource, field), field
    assert via_hub.resource.tags == direct.resource.tags
    assert finding_source(event(GUARDDUTY_VIA_HUB)) == "aws.guardduty"


def test_an_older_guardduty_finding_gives_its_indicators_in_product_fields(event):
    # Given a GuardDuty finding as Security Hub kept it before ASFF had an Action
    finding = bare(event, GUARDDUTY_VIA_HUB)
    del finding["Action"]

    # When it is normalized
    (indicator,) = normalize(finding).indicators

    # Then the attacker is read from GuardDuty's flattened fields, ports and direction included
    assert (indicator.kind, indicator.value, indicator.role) == (
        IndicatorKind.IPV4,
        "198.51.100.7",
        IndicatorRole.ATTACKER,
    )
    assert (indicator.direction, indicator.local_port, indicator.remote_port) == (
        Direction.INBOUND,
        22,
        46542,
    )


@pytest.mark.parametrize(
    ("asff_type", "guardduty_type"),
    [
        (
            "TTPs/Initial Access/UnauthorizedAccess:EC2-SSHBruteForce",
            "UnauthorizedAccess:EC2/SSHBruteForce",
        ),
        ("TTPs/Policy:IAMUser-RootCredentialUsage", "Policy:IAMUser/RootCredentialUsage"),
        (
            "TTPs/AttackSequence:IAM/CompromisedCredentials",
            "AttackSequence:IAM/CompromisedCredentials",
        ),
        ("TTPs/DefenseEvasion/EC2:Unusual-DNS-Resolver", "DefenseEvasion:EC2/UnusualDNSResolver"),
        (
            "TTPs/Credential Access/IAMUser-AnomalousBehavior",
            "CredentialAccess:IAMUser/AnomalousBehavior",
        ),
        (
            "TTPs/Command and Control/Backdoor:EC2-C&CActivity.B!DNS",
            "Backdoor:EC2/C&CActivity.B!DNS",
        ),
        (
            "Unusual Behaviors/VM/Behavior:EC2-NetworkPortUnusual",
            "Behavior:EC2/NetworkPortUnusual",
        ),
        ("TTPs/Impact/Impact:EC2-NotYetDocumented", "Impact:EC2/NotYetDocumented"),
    ],
)
def test_guardduty_types_are_read_back_from_their_asff_names(asff_type, guardduty_type):
    # Given an ASFF type as GuardDuty's documented table spells it
    # When GuardDuty's type is read from it
    # Then it is GuardDuty's own, regular spelling or not
    assert asff.guardduty_type(asff_type) == guardduty_type


def test_the_provider_s_type_wins_over_one_a_person_changed(event):
    # Given a GuardDuty finding whose Types a person changed in Security Hub
    finding = bare(event, GUARDDUTY_VIA_HUB)
    finding["Types"] = ["Unusual Behaviors/Custom/Reviewed"]

    # When it is normalized
    # Then the type is GuardDuty's, from FindingProviderFields
    assert normalize(finding).type == "UnauthorizedAccess:EC2/SSHBruteForce"


@pytest.mark.parametrize(
    ("name", "product", "severity", "kind"),
    [
        ("securityhub-inspector-ec2-cve.json", "Inspector", 7.0, "Instance"),
        ("securityhub-inspector-ecr-cve.json", "Inspector", 5.3, "AwsEcrContainerImage"),
        ("securityhub-macie-sensitive-data.json", "Macie", 7.0, "S3Bucket"),
        (
            "securityhub-access-analyzer-external-access.json",
            "IAM Access Analyzer",
            4.0,
            "S3Bucket",
        ),
    ],
)
def test_other_products_findings_are_security_hub_s(event, name, product, severity, kind):
    # Given a finding another product sent to Security Hub
    # When it is normalized
    finding = normalize(event(name))

    # Then it is Security Hub's, with its ASFF id and type, product, severity and resource kind
    document = bare(event, name)
    assert finding.source == "aws.securityhub"
    assert (finding.id, finding.type) == (document["Id"], document["Types"][0])
    assert finding.product == product
    assert finding.severity == severity
    assert finding.resource.kind == kind
    assert not finding.archived and not finding.sample


def test_resources_are_read_for_what_identifies_them(event):
    # Given findings about an instance, an image, a bucket and its object
    instance = normalize(event("securityhub-inspector-ec2-cve.json")).resource
    image = normalize(event("securityhub-inspector-ecr-cve.json")).resource
    bucket = normalize(event("securityhub-macie-sensitive-data.json")).resource

    # Then each identifies the resource as GuardDuty's findings do
    assert instance.instance_id == "i-0a1b2c3d4e5f60718"
    assert (instance.vpc_id, instance.subnet_ids) == (
        "vpc-0f1e2d3c4b5a69788",
        ["subnet-0a9b8c7d6e5f43210"],
    )
    assert (instance.public_ips, instance.private_ips) == (["192.0.2.10"], ["10.0.1.25"])
    assert image.arns == [bare(event, "securityhub-inspector-ecr-cve.json")["Resources"][0]["Id"]]
    assert bucket.bucket_names == ["customer-exports-prod"]
    assert bucket.object_keys == ["customer-exports-prod/2025/03/customers.csv"]
    assert bucket.tags == {"data-classification": "confidential"}


def test_an_access_key_finding_names_the_key_and_its_principal(event):
    # Given a GuardDuty credential finding as Security Hub shows it
    finding = bare(event, GUARDDUTY_VIA_HUB)
    finding["Types"] = finding["FindingProviderFields"]["Types"] = [
        "TTPs/Policy:IAMUser-RootCredentialUsage"
    ]
    finding["Resources"] = [
        {
            "Type": "AwsIamAccessKey",
            "Id": "AWS::IAM::AccessKey:ASIAEXAMPLEKEY123456",
            "Partition": "aws",
            "Region": "us-east-1",
            "Details": {
                "AwsIamAccessKey": {
                    "PrincipalId": "123456789012",
                    "PrincipalType": "Root",
                    "PrincipalName": "Root",
                }
            },
        }
    ]
    finding["Action"] = {
        "ActionType": "AWS_API_CALL",
        "AwsApiCallAction": {
            "Api": "GetDetector",
            "ServiceName": "guardduty.amazonaws.com",
            "CallerType": "remoteIp",
            "RemoteIpDetails": {"IpAddressV4": "203.0.113.50"},
        },
    }

    # When it is normalized
    normalized = normalize(finding)

    # Then the key, its principal and the caller are named, and the call is described
    resource = normalized.resource
    assert (resource.kind, resource.access_key_id, resource.principal, resource.user_type) == (
        "AccessKey",
        "ASIAEXAMPLEKEY123456",
        "Root",
        "Root",
    )
    found = {(i.kind, i.value, i.role) for i in normalized.indicators}
    assert found == {
        (IndicatorKind.IPV4, "203.0.113.50", IndicatorRole.ATTACKER),
        (IndicatorKind.ACCESS_KEY, "ASIAEXAMPLEKEY123456", IndicatorRole.OBSERVED),
        (IndicatorKind.PRINCIPAL, "Root", IndicatorRole.OBSERVED),
    }
    assert normalized.type == "Policy:IAMUser/RootCredentialUsage"
    assert (normalized.activity.api_call.name, normalized.activity.action_type) == (
        "GetDetector",
        "AWS_API_CALL",
    )


@pytest.mark.parametrize(
    ("direction", "expected"),
    [
        ("IN", ("203.0.113.9", IndicatorRole.ATTACKER, Direction.INBOUND, 443, 51515)),
        ("OUT", ("198.51.100.44", IndicatorRole.TARGET, Direction.OUTBOUND, 51515, 443)),
    ],
)
def test_network_names_the_remote_end_by_direction(event, direction, expected):
    # Given a finding whose Network goes in or out
    finding = bare(event, "securityhub-inspector-ec2-cve.json")
    inbound = direction == "IN"
    finding["Network"] = {
        "Direction": direction,
        "Protocol": "TCP",
        "SourceIpV4": "203.0.113.9" if inbound else "10.0.1.25",
        "SourcePort": 51515,
        "DestinationIpV4": "10.0.1.25" if inbound else "198.51.100.44",
        "DestinationPort": 443,
    }

    # When it is normalized
    (indicator,) = normalize(finding).indicators

    # Then the remote end is the indicator, with its role as the GuardDuty normalizer gives it
    value, role, flow, local_port, remote_port = expected
    assert (indicator.value, indicator.role, indicator.direction) == (value, role, flow)
    assert (indicator.local_port, indicator.remote_port) == (local_port, remote_port)


def test_network_without_a_direction_names_no_address(event):
    # Given a finding whose Network has no direction: either end may be our own
    finding = bare(event, "securityhub-inspector-ec2-cve.json")
    finding["Network"] = {"SourceIpV4": "203.0.113.9", "DestinationIpV4": "10.0.1.25"}

    # Then no address is an indicator
    assert normalize(finding).indicators == []


def test_threat_intelligence_probes_dns_and_file_hashes_are_indicators(event):
    # Given a finding naming threat intelligence, a port probe, a DNS request and malware
    finding = bare(event, "securityhub-inspector-ec2-cve.json")
    digest = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
    finding["ThreatIntelIndicators"] = [
        {"Type": "IPV4_ADDRESS", "Value": "45.155.205.233", "Source": "ProofPoint"},
        {"Type": "DOMAIN", "Value": "Bad.Example.", "Source": "ProofPoint"},
        {"Type": "HASH_SHA256", "Value": digest},
    ]
    finding["Action"] = {
        "ActionType": "PORT_PROBE",
        "PortProbeAction": {
            "PortProbeDetails": [
                {
                    "LocalPortDetails": {"Port": 3389, "PortName": "RDP"},
                    "RemoteIpDetails": {"IpAddressV4": "193.142.146.35"},
                }
            ]
        },
        "DnsRequestAction": {"Domain": "c2.example.net", "Protocol": "UDP"},
    }
    finding["Threats"] = [
        {
            "Name": "EICAR-Test-File",
            "Severity": "HIGH",
            "FilePaths": [{"FilePath": "/tmp/eicar.com", "Hash": digest.lower()}],
        }
    ]

    # When it is normalized
    normalized = normalize(finding)

    # Then each is an indicator, the addresses and domains with their threat lists
    found = {(i.kind, i.value, i.role): i for i in normalized.indicators}
    probe = found[(IndicatorKind.IPV4, "193.142.146.35", IndicatorRole.ATTACKER)]
    assert (probe.local_port, probe.threat_lists) == (3389, ["ProofPoint"])
    assert (IndicatorKind.IPV4, "45.155.205.233", IndicatorRole.OBSERVED) in found
    assert (IndicatorKind.DOMAIN, "bad.example", IndicatorRole.OBSERVED) in found
    assert (IndicatorKind.DOMAIN, "c2.example.net", IndicatorRole.OBSERVED) in found
    assert (IndicatorKind.FILE_HASH, digest.lower(), IndicatorRole.OBSERVED) in found
    (threat,) = normalized.activity.threats
    assert (threat.name, threat.file_paths) == ("EICAR-Test-File", ["/tmp/eicar.com"])


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        ({"Label": "CRITICAL", "Normalized": 95}, 9.5),
        ({"Label": "HIGH"}, 7.0),
        ({"Label": "LOW", "Normalized": 40}, 0.1),  # a stale Normalized: the label wins
        ({"Label": "informational"}, 0.0),
        ({"Normalized": 55}, 5.5),
    ],
)
def test_severity_is_the_label_s_band_on_guardduty_s_scale(event, severity, expected):
    # Given an Inspector finding with this severity
    finding = bare(event, "securityhub-inspector-ec2-cve.json")
    finding["Severity"] = severity

    # When it is normalized
    # Then its severity is on the 0-10 scale, within the label's documented band
    assert normalize(finding).severity == expected


@pytest.mark.parametrize(
    ("change", "archived"),
    [
        ({"Workflow": {"Status": "SUPPRESSED"}}, True),
        ({"Workflow": {"Status": "RESOLVED"}}, True),
        ({"RecordState": "ARCHIVED"}, True),
        ({"Workflow": {"Status": "NOTIFIED"}}, False),
    ],
)
def test_closed_findings_are_archived(event, change, archived):
    # Given a finding a person or the product closed, or only notified
    finding = {**bare(event, "securityhub-access-analyzer-external-access.json"), **change}

    # When it is normalized
    # Then it is archived, so no action is ever taken on it, and the intake would skip it
    assert normalize(finding).archived is archived
    assert (asff.closed(finding) is not None) is archived


def test_sample_findings_are_marked(event):
    # Given a GuardDuty sample finding as Security Hub shows it
    finding = bare(event, GUARDDUTY_VIA_HUB)
    finding["Sample"] = True

    # Then it is a sample
    assert normalize(finding).sample is True


def test_a_multi_finding_event_is_one_record_per_finding(event):
    # Given a Security Hub event of four findings, one of them invalid
    content = json.dumps(event("securityhub-imported-several.json"))

    # When the file is read
    records = list(iter_findings(content, "imported.json"))

    # Then each finding is a record of its own, an event of one finding
    assert [locator for locator, _ in records] == [f"imported.json#{n}" for n in range(1, 5)]
    assert all(len(item["detail"]["findings"]) == 1 for _, item in records)
    # And names only its own finding among the event's resources
    for _, item in records:
        (resource,) = item["resources"]
        assert resource.endswith(item["detail"]["findings"][0]["Id"])
    results = []
    for _, item in records:
        try:
            results.append(normalize(item).product)
        except InvalidFindingError as exc:
            results.append(str(exc))
    assert results == ["Inspector", "Inspector", "finding.Severity: missing", "IAM Access Analyzer"]


def test_a_get_findings_response_of_security_hub_is_one_record_per_finding(event):
    # Given Security Hub's GetFindings response, whose "Findings" GuardDuty's also has
    response = {
        "Findings": [
            bare(event, GUARDDUTY_VIA_HUB),
            bare(event, "securityhub-macie-sensitive-data.json"),
        ]
    }

    # When it is read
    records = [item for _, item in iter_findings(json.dumps(response), "findings.json")]

    # Then each ASFF finding is normalized as one, GuardDuty's as GuardDuty's
    assert [normalize(item).source for item in records] == ["aws.guardduty", "aws.securityhub"]
    with pytest.raises(InvalidFindingError, match="iter_findings"):
        normalize(response)


def test_an_event_of_several_findings_is_not_one_finding(event):
    # Given an event of several findings
    # When it is normalized whole
    # Then the error says to split it
    with pytest.raises(InvalidFindingError, match="4 findings"):
        normalize(event("securityhub-imported-several.json"))


def test_unwrap_finds_the_asff_finding_in_an_event(event):
    # Given a Security Hub event of one finding
    sent = event(GUARDDUTY_VIA_HUB)

    # Then unwrap finds the finding in it
    assert unwrap(sent) == (sent["detail"]["findings"][0], False)


def test_unknown_fields_and_resource_types_are_kept_or_ignored(event):
    # Given a finding with members ASFF may add later and a resource type unknown to us
    finding = bare(event, "securityhub-access-analyzer-external-access.json")
    finding["SomeNewMember"] = {"Nested": [1, 2]}
    finding["Resources"][0]["Type"] = "AwsBedrockAgent"

    # Then it is read, the resource kind kept as given
    assert normalize(finding).resource.kind == "AwsBedrockAgent"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Severity": None, "FindingProviderFields": None}, "finding.Severity: missing"),
        ({"Severity": {"Label": "SEVERE"}}, "finding.Severity.Label: not one of"),
        ({"Severity": {"Normalized": 140}}, "finding.Severity.Normalized"),
        ({"Types": None, "FindingProviderFields": None}, "finding.Types: missing"),
        ({"AwsAccountId": "12345"}, "finding.AwsAccountId: not a 12-digit account id"),
        ({"UpdatedAt": None}, "finding.UpdatedAt: missing"),
        ({"UpdatedAt": "yesterday"}, "finding.UpdatedAt:"),
        ({"Resources": []}, "finding.Resources: not a non-empty array"),
        ({"Resources": [{"Id": "x"}]}, r"finding.Resources\[0\].Type: missing"),
        ({"Region": "mars-1", "ProductArn": "x"}, "finding.Region: not an AWS region"),
    ],
)
def test_invalid_asff_is_rejected_naming_the_field(event, change, message):
    # Given an ASFF finding with one field missing or wrong
    finding = copy.deepcopy(bare(event, "securityhub-inspector-ec2-cve.json"))
    for key, value in change.items():
        if value is None:
            finding.pop(key, None)
        else:
            finding[key] = value

    # When it is normalized
    # Then the error names the ASFF field
    with pytest.raises(InvalidFindingError, match=message):
        normalize(finding)


def test_the_invalid_sample_names_its_missing_severity(event):
    with pytest.raises(InvalidFindingError, match=r"^finding.Severity: missing$"):
        normalize(event("invalid-asff-missing-severity.json"))


@pytest.mark.parametrize(
    ("detail", "message"),
    [
        (None, "event.detail: missing"),
        ({}, "event.detail.findings: missing"),
        ({"findings": {}}, "event.detail.findings: not a JSON array"),
        ({"findings": []}, "event.detail.findings: empty"),
        ({"findings": ["x"]}, r"event.detail.findings\[0\]: not a JSON object"),
    ],
)
def test_a_malformed_security_hub_event_is_rejected(event, detail, message):
    # Given a Security Hub event without readable findings
    sent = event(GUARDDUTY_VIA_HUB)
    sent["detail"] = detail

    # Then the error names the member of the event
    with pytest.raises(InvalidFindingError, match=message):
        normalize(sent)
