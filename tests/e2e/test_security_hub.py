"""Security Hub findings through the local pipeline, GuardDuty's among them."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_sniper.domain import asff, naming
from cloud_sniper.local import pipeline

pytestmark = pytest.mark.e2e


def as_security_hub(event: dict[str, Any]) -> dict[str, Any]:
    """GuardDuty's event of a finding update as Security Hub sends the same update, in ASFF."""
    detail = event["detail"]
    instance = detail["resource"]["instanceDetails"]
    interface = instance["networkInterfaces"][0]
    connection = detail["service"]["action"]["networkConnectionAction"]
    region, account = detail["region"], detail["accountId"]
    asff_type = detail["type"].replace("/", "-", 1)
    finding = {
        "SchemaVersion": asff.SCHEMA_VERSION,
        "Id": detail["arn"],
        "ProductArn": f"arn:aws:securityhub:{region}::product/aws/guardduty",
        "ProductName": "GuardDuty",
        "CompanyName": "Amazon",
        "Region": region,
        "GeneratorId": detail["arn"].split("/finding/")[0],
        "AwsAccountId": account,
        "Types": [f"TTPs/Initial Access/{asff_type}"],
        "FirstObservedAt": detail["service"]["eventFirstSeen"],
        "LastObservedAt": detail["service"]["eventLastSeen"],
        "CreatedAt": detail["createdAt"],
        "UpdatedAt": detail["updatedAt"],
        "Severity": {"Product": detail["severity"], "Label": "MEDIUM", "Normalized": 50},
        "Title": detail["title"],
        "Description": detail["description"],
        "ProductFields": {"aws/securityhub/ProductName": "GuardDuty"},
        "Resources": [
            {
                "Type": "AwsEc2Instance",
                "Id": f"arn:aws:ec2:{region}:{account}:instance/{instance['instanceId']}",
                "Partition": "aws",
                "Region": region,
                "Tags": {tag["key"]: tag["value"] for tag in instance["tags"]},
                "Details": {
                    "AwsEc2Instance": {
                        "IpV4Addresses": [interface["publicIp"], interface["privateIpAddress"]],
                        "VpcId": interface["vpcId"],
                        "SubnetId": interface["subnetId"],
                    }
                },
            }
        ],
        "Workflow": {"Status": "NEW"},
        "RecordState": "ACTIVE",
        "Action": {
            "ActionType": "NETWORK_CONNECTION",
            "NetworkConnectionAction": {
                "ConnectionDirection": connection["connectionDirection"],
                "RemoteIpDetails": {"IpAddressV4": connection["remoteIpDetails"]["ipAddressV4"]},
                "LocalPortDetails": {"Port": connection["localPortDetails"]["port"]},
                "RemotePortDetails": {"Port": connection["remotePortDetails"]["port"]},
                "Protocol": connection["protocol"],
            },
        },
    }
    return {
        "version": "0",
        "id": "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6",
        "detail-type": asff.IMPORTED_DETAIL_TYPE,
        "source": asff.SECURITY_HUB_SOURCE,
        "account": account,
        "time": event["time"],
        "region": region,
        "resources": [],
        "detail": {"findings": [finding]},
    }


def test_a_guardduty_finding_arriving_both_ways_is_one_incident_acted_on_once(
    clients, demo, variant
):
    # Given two brute-force findings: one sent by GuardDuty, one first through Security Hub
    direct_first = variant(demo["01-ssh-brute-force.json"], attacker="31.13.24.9")
    hub_first = variant(demo["01-ssh-brute-force.json"], attacker="31.13.24.10")

    # When each also arrives the other way
    (direct,) = _run(clients, direct_first)
    before = _execution_names(clients)
    (via_hub,) = _run(clients, as_security_hub(direct_first))
    (first_via_hub,) = _run(clients, as_security_hub(hub_first))
    (then_direct,) = _run(clients, hub_first)

    # Then each finding ran one execution, through GuardDuty's incident, and no second one
    assert direct.status == first_via_hub.status == "SUCCEEDED"
    assert via_hub.submission.execution_name == direct.submission.execution_name
    assert then_direct.submission.execution_name == first_via_hub.submission.execution_name
    assert _execution_names(clients) == before | {first_via_hub.submission.execution_name}
    for result, event in ((via_hub, direct_first), (then_direct, hub_first)):
        incident = naming.incident_id("aws.guardduty", event["detail"]["id"])
        assert result.incident["incident_id"] == incident
        assert result.incident["outcome"] == "mitigated"
        # And the attacker was blocked once: one action per kind, from the one execution
        kinds = [action["kind"] for action in result.incident["actions"]]
        assert sorted(kinds) == ["nacl_block", "waf_block"]
    # And the finding read through Security Hub decided as GuardDuty's own would
    assert first_via_hub.incident["finding"]["type"] == "UnauthorizedAccess:EC2/SSHBruteForce"
    assert first_via_hub.incident["finding"]["product"] == "GuardDuty"


def test_a_suppressed_finding_is_rejected_by_run_with_the_reason(clients, demo, variant):
    # Given a finding a person suppressed in Security Hub
    event = as_security_hub(variant(demo["01-ssh-brute-force.json"], attacker="31.13.24.11"))
    event["detail"]["findings"][0]["Workflow"] = {"Status": "SUPPRESSED"}

    # When it is submitted
    submissions, rejections = pipeline.submit(clients, [("test#1", event)])

    # Then it is not sent, and the rejection says why
    assert submissions == []
    (rejection,) = rejections
    assert rejection.error.startswith("finding.Workflow.Status: SUPPRESSED")


def _run(clients: Any, document: dict[str, Any]) -> list[pipeline.Result]:
    submissions, rejections = pipeline.submit(clients, [("test#1", document)])
    assert not rejections
    return pipeline.wait(clients, submissions, timeout=90)


def _execution_names(clients: Any) -> set[str]:
    sfn = clients("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=pipeline.state_machine_arn(clients))
    return {execution["name"] for execution in executions["executions"]}
