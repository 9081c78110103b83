"""The whole pipeline on the local runtime: synthesized app, moto Step Functions, real handlers."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest
from botocore.credentials import Credentials

from cloud_sniper.approvals import ApprovalError, ApprovalsApi, local_api
from cloud_sniper.domain import naming
from cloud_sniper.local import pipeline
from cloud_sniper.local.demo import DEMO_FAULTS
from cloud_sniper.local.faults import FaultRule, set_faults
from cloud_sniper.local.runtime import ACCOUNT, LOCAL_APPROVER

pytestmark = pytest.mark.e2e


def run(clients: Any, *documents: dict[str, Any], dry_run: bool = False) -> list[pipeline.Result]:
    submissions, rejections = pipeline.submit(
        clients, [(f"test#{i}", doc) for i, doc in enumerate(documents)], dry_run=dry_run
    )
    assert not rejections
    return pipeline.wait(clients, submissions, timeout=90)


# Who answers through the local approvals API: the local caller, in the approvers group.
APPROVER = f"arn:aws:iam::{ACCOUNT}:user/{LOCAL_APPROVER}"


def respond(clients: Any, result: pipeline.Result, approve: bool, reason: str) -> pipeline.Result:
    """Answer through the approvals API, signed as a person's command signs, then follow it."""
    api = local_api(clients)
    (api.approve if approve else api.deny)(result.approval_id, reason)
    return pipeline.wait(clients, [result.submission], timeout=90)[0]


def markdown_report(clients: Any, result: pipeline.Result) -> str:
    """The incident's Markdown report, where the execution's report step wrote it."""
    sfn = clients("stepfunctions")
    arn = pipeline.execution_arn(clients, result.submission.execution_name)
    keys = json.loads(sfn.describe_execution(executionArn=arn)["output"])["report"]["report_keys"]
    bucket = pipeline.reports_bucket(clients)
    return clients("s3").get_object(Bucket=bucket, Key=keys["markdown"])["Body"].read().decode()


def waf_addresses(clients: Any, version: int) -> set[str]:
    name = naming.WAF_IPV4_SET if version == 4 else naming.WAF_IPV6_SET
    wafv2 = clients("wafv2")
    summary = next(s for s in wafv2.list_ip_sets(Scope="REGIONAL")["IPSets"] if s["Name"] == name)
    ip_set = wafv2.get_ip_set(Name=name, Scope="REGIONAL", Id=summary["Id"])["IPSet"]
    return set(ip_set["Addresses"])


def nacl_denies(clients: Any, acl_id: str) -> dict[str, int]:
    acl = clients("ec2").describe_network_acls(NetworkAclIds=[acl_id])["NetworkAcls"][0]
    return {
        entry.get("CidrBlock") or entry.get("Ipv6CidrBlock"): entry["RuleNumber"]
        for entry in acl["Entries"]
        if entry["RuleAction"] == "deny" and not entry["Egress"] and entry["RuleNumber"] < 32767
    }


def test_auto_path_blocks_the_attacker_in_waf_and_the_subnet_acl(clients, demo, estate, variant):
    # Given an inbound SSH brute force finding about the web instance
    finding = variant(demo["01-ssh-brute-force.json"], attacker="89.160.20.112")

    # When it goes through the pipeline
    (result,) = run(clients, finding)

    # Then the attacker is blocked in the web subnet's network ACL, within the range, and asked
    # of the WAF writer, which put it in the IP set within its interval
    assert result.status == "SUCCEEDED"
    assert result.incident["outcome"] == "mitigated"
    assert "89.160.20.112/32" in waf_addresses(clients, 4)
    rule = nacl_denies(clients, estate["web_nacl"])["89.160.20.112/32"]
    assert 50 <= rule <= 99
    statuses = {action["kind"]: action["status"] for action in result.incident["actions"]}
    assert statuses == {"waf_block": "queued", "nacl_block": "applied"}
    written = {kind: "written_at" in block for kind, block in _kinds(clients, "89.160.20.112")}
    assert written == {"waf_block": True, "nacl_block": False}


def test_the_same_delivery_twice_starts_one_execution_and_changes_nothing(clients, demo, variant):
    # Given a finding already processed
    finding = variant(demo["01-ssh-brute-force.json"], attacker="81.2.69.142")
    run(clients, finding)
    executions_before = _execution_names(clients)

    # When the same update is delivered again
    (again,) = run(clients, finding)

    # Then no second execution starts and the block is as it was
    assert _execution_names(clients) == executions_before
    assert again.status == "SUCCEEDED"
    assert "81.2.69.142/32" in waf_addresses(clients, 4)


def test_a_later_update_of_the_finding_updates_its_incident_and_renews_the_block(
    clients, demo, estate, variant
):
    # Given a finding processed once, its attacker blocked in WAF and the web subnet's NACL
    address, cidr = "81.2.69.143", "81.2.69.143/32"
    first = variant(demo["01-ssh-brute-force.json"], attacker=address)
    (before,) = run(clients, first)
    blocks_before = _blocks_of(clients, cidr)
    assert {block["kind"] for block in blocks_before.values()} == {"waf_block", "nacl_block"}

    # When GuardDuty delivers a later update of it, the activity having gone on
    later = copy.deepcopy(first)
    later["detail"]["updatedAt"] = "2026-12-03T14:45:03.000Z"
    later["detail"]["service"].update(count=530, eventLastSeen="2026-12-03T14:41:52.000Z")
    # Expiries are kept to the second: the renewal must be able to move one.
    time.sleep(1)
    (after,) = run(clients, later)

    # Then a second execution reported the same incident, with the new count and last seen
    assert after.submission.execution_name != before.submission.execution_name
    incident_id = before.incident["incident_id"]
    assert after.incident["incident_id"] == incident_id
    deliveries = after.incident["deliveries"]
    assert (deliveries["total"], deliveries["count"]) == (2, 530)
    assert deliveries["first_seen"] == "2026-12-03T08:01:10Z"
    assert deliveries["last_seen"] == "2026-12-03T14:41:52Z"
    item = clients("dynamodb").get_item(
        TableName=naming.INCIDENTS_TABLE, Key={"incident_id": {"S": incident_id}}
    )["Item"]
    assert (item["deliveries"]["N"], item["count"]["N"]) == ("2", "530")
    assert item["execution_name"]["S"] == after.submission.execution_name

    # And the blocks are in force with a later expiry, in the same records, written once
    statuses = {action["kind"]: action["status"] for action in after.incident["actions"]}
    assert statuses == {"waf_block": "already_applied", "nacl_block": "already_applied"}
    assert all("expiry renewed" in action["detail"] for action in after.incident["actions"])
    blocks_after = _blocks_of(clients, cidr)
    assert sorted(blocks_after) == sorted(blocks_before)
    for block_id, block in blocks_after.items():
        assert block["status"] == "active"
        assert block["expires_at"] > blocks_before[block_id]["expires_at"]
    assert cidr in waf_addresses(clients, 4)
    acl = clients("ec2").describe_network_acls(NetworkAclIds=[estate["web_nacl"]])
    entries = [
        entry for entry in acl["NetworkAcls"][0]["Entries"] if entry.get("CidrBlock") == cidr
    ]
    assert len(entries) == 1


def test_approval_path_waits_then_blocks_on_approve(clients, demo, variant):
    # Given a finding the policy sends for approval
    finding = variant(demo["03-malicious-ip-caller.json"], attacker="81.2.69.160")

    # When it goes through the pipeline, it waits without acting
    (waiting,) = run(clients, finding)
    assert waiting.status == pipeline.WAITING_FOR_APPROVAL
    assert waiting.approval_id
    assert "81.2.69.160/32" not in waf_addresses(clients, 4)

    # And when an analyst approves through the approvals API, the execution resumes and blocks
    done = respond(clients, waiting, approve=True, reason="known scanner")
    assert done.incident["outcome"] == "mitigated"
    assert "81.2.69.160/32" in waf_addresses(clients, 4)

    # And the report names the approver, the principal that signed the request, and why
    assert done.incident["approval"]["status"] == "approved"
    assert done.incident["approval"]["approver"] == APPROVER
    assert done.incident["approval"]["reason"] == "known scanner"
    report = markdown_report(clients, done)
    assert APPROVER in report and "known scanner" in report

    # And its timeline, read from the execution's own history, shows the wait for the answer
    timeline = done.incident["timeline"]
    assert timeline["missing"] is None
    states = [visit["name"] for visit in timeline["states"]]
    assert {"Decide", "RequestApproval", "Mitigate"} <= set(states)
    assert states[-1] == "Report"
    assert done.incident["response_times"]["approval_wait"] > 0


def test_approval_path_stops_on_deny_and_a_second_answer_is_refused(clients, demo, variant):
    # Given a finding waiting for approval
    finding = variant(demo["03-malicious-ip-caller.json"], attacker="216.160.83.56")
    (waiting,) = run(clients, finding)

    # When an analyst denies it
    done = respond(clients, waiting, approve=False, reason="partner address")

    # Then nothing is blocked, and the report says denied, by whom and why
    assert done.incident["outcome"] == "denied"
    assert "216.160.83.56/32" not in waf_addresses(clients, 4)
    approval = done.incident["approval"]
    assert (approval["status"], approval["approver"]) == ("denied", APPROVER)
    assert approval["reason"] == "partner address"
    report = markdown_report(clients, done)
    assert APPROVER in report and "partner address" in report

    # And the denial reached the execution as a failed task, caught into the report
    sfn = clients("stepfunctions")
    arn = pipeline.execution_arn(clients, waiting.submission.execution_name)
    history = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    failures = [e["taskFailedEventDetails"] for e in history if e["type"] == "TaskFailed"]
    assert [failure["error"] for failure in failures] == [naming.APPROVAL_DENIED_ERROR]

    # And answering again is refused: the first answer stands
    with pytest.raises(ApprovalError) as refused:
        respond(clients, waiting, approve=True, reason="changed my mind")
    assert refused.value.status == 409
    assert "already answered: denied" in str(refused.value)


def test_the_local_approvals_api_answers_only_approvers(clients):
    # Given an IAM user of the account who is not in the approvers group
    iam = clients("iam")
    iam.create_user(UserName="intern")
    key = iam.create_access_key(UserName="intern")["AccessKey"]
    api = local_api(clients)
    outsider = ApprovalsApi(
        api.url, Credentials(key["AccessKeyId"], key["SecretAccessKey"]), api.region
    )

    # When each lists the approvals, then the local caller may and the intern may not
    assert isinstance(api.list("all"), list)
    with pytest.raises(ApprovalError) as refused:
        outsider.list()
    assert refused.value.status == 403
    assert (
        f"user/intern is not an approver: an administrator adds the user to the IAM group "
        f"{naming.APPROVERS_GROUP}" in str(refused.value)
    )


def test_notify_path_only_reports(clients, demo, variant):
    # Given CloudTrail logging turned off: a person must look, nothing is to be blocked
    finding = variant(demo["11-cloudtrail-logging-disabled.json"])

    # When it goes through the pipeline
    (result,) = run(clients, finding)

    # Then it is reported, at high priority, and nothing is done
    assert result.incident["outcome"] == "notified"
    assert result.incident["decision"]["priority"] == "high"
    assert result.incident["actions"] == []


def test_an_outbound_c2_finding_never_blocks_its_remote_inbound(clients, demo, variant):
    # Given an outbound command-and-control finding: the instance reached out to the remote
    finding = variant(demo["04-c2-outbound.json"])

    # When it goes through the pipeline
    (result,) = run(clients, finding)

    # Then a person is asked to isolate the instance and cut the C2, and the remote is never
    # put in the WAF IP sets (an inbound block): the C2 cut is outbound only
    assert result.approval_id
    assert result.decision["mode"] == "approval"
    kinds = {action["kind"] for action in result.decision["actions"]}
    assert kinds == {"isolate_instance", "c2_block"}
    assert "104.21.48.201/32" not in waf_addresses(clients, 4)


def test_sample_findings_are_ignored(clients, demo, variant):
    (result,) = run(clients, variant(demo["05-sample-finding.json"]))

    assert result.incident["outcome"] == "ignored"
    assert "sample" in result.incident["decision"]["reason"].lower()
    assert "80.66.88.208/32" not in waf_addresses(clients, 4)


def test_exempt_resources_are_never_touched(clients, demo, variant):
    (result,) = run(clients, variant(demo["07-exempt-bastion.json"]))

    assert result.incident["outcome"] == "refused"
    assert "141.98.11.19/32" not in waf_addresses(clients, 4)


def test_a_throttled_waf_change_is_retried_by_the_state_machine_then_succeeds(
    cloud, clients, demo, variant
):
    # Given a WAF changes queue that throttles more changes of this address than one attempt
    # retries
    address = "2.125.160.216"
    rule = FaultRule(service="sqs", operation="SendMessage", body_contains=address, times=4)
    set_faults(clients("ssm"), [rule])

    # When a finding about it goes through the pipeline
    (result,) = run(clients, variant(demo["01-ssh-brute-force.json"], attacker=address))

    # Then Mitigate failed, was retried by the state machine, and the block holds
    assert result.incident["outcome"] == "mitigated"
    assert f"{address}/32" in waf_addresses(clients, 4)
    assert _failed_attempts(clients, result, "Mitigate") >= 1
    assert cloud.faults.served() == [4]


def test_a_throttled_ip_set_write_is_retried_by_the_waf_writer_then_succeeds(
    cloud, clients, demo, variant
):
    # Given a WAF that throttles a few writes of the IP set holding this address
    address = "2.125.160.217"
    rule = FaultRule(service="wafv2", operation="UpdateIPSet", body_contains=address, times=3)
    set_faults(clients("ssm"), [rule])

    # When a finding about it goes through the pipeline
    (result,) = run(clients, variant(demo["01-ssh-brute-force.json"], attacker=address))

    # Then Mitigate ran once, and the writer, out of the execution, wrote the address at last
    assert result.incident["outcome"] == "mitigated"
    assert _failed_attempts(clients, result, "Mitigate") == 0
    assert f"{address}/32" in waf_addresses(clients, 4)
    assert cloud.faults.served() == [3]


def test_a_failing_action_ends_in_a_failure_report(clients, demo, variant):
    # Given a WAF that throttles every write for the demo's throttled address
    set_faults(clients("ssm"), DEMO_FAULTS)

    # When the finding goes through the pipeline
    (result,) = run(clients, variant(demo["06-throttled-waf.json"]))

    # Then the retries give up and the Catch path still reports, with the cause
    assert result.status == "SUCCEEDED"
    assert result.incident["outcome"] == "failed"
    assert result.incident["failure"]["error"] == "TransientAwsError"
    assert "ThrottlingException" in result.incident["failure"]["cause"]
    # And the network ACL block made before the WAF write failed is reported as in force
    in_force = {(block["kind"], block["target"]) for block in result.incident["blocks_in_force"]}
    assert ("nacl_block", "89.248.165.84/32") in in_force


def test_dry_run_plans_without_changing_anything(clients, demo, variant):
    finding = variant(demo["01-ssh-brute-force.json"], attacker="89.160.20.113")

    (result,) = run(clients, finding, dry_run=True)

    assert result.incident["outcome"] == "planned"
    assert {action["status"] for action in result.incident["actions"]} == {"planned"}
    assert "89.160.20.113/32" not in waf_addresses(clients, 4)


def test_a_finding_about_a_missing_instance_ends_with_not_found(clients, demo, variant):
    # Given a finding about a subnet that does not exist in the account
    finding = variant(demo["01-ssh-brute-force.json"], attacker="89.160.20.114")
    text = json.dumps(finding)
    subnet = finding["detail"]["resource"]["instanceDetails"]["networkInterfaces"][0]["subnetId"]
    finding = json.loads(text.replace(subnet, "subnet-0000000000000dead"))

    # When it goes through the pipeline
    (result,) = run(clients, finding)

    # Then the WAF block goes to the writer and the network ACL block says what is missing
    statuses = {action["kind"]: action["status"] for action in result.incident["actions"]}
    assert statuses["waf_block"] == "queued"
    assert statuses["nacl_block"] == "not_found"


def test_an_invalid_event_on_the_bus_is_quarantined_with_its_reason(clients, cloud):
    # Given a replay whose finding has no severity
    detail = {"finding": {"id": "broken", "type": "Recon:EC2/PortProbeUnprotectedPort"}}
    clients("events").put_events(
        Entries=[
            {
                "Source": naming.EVENT_SOURCE,
                "DetailType": naming.REPLAY_DETAIL_TYPE,
                "Detail": json.dumps(detail),
                "EventBusName": naming.EVENT_BUS,
            }
        ]
    )

    # When the intake delivers it
    cloud.wait_idle()
    cloud.wait_idle()

    # Then it is kept in the dead-letter queue with an error naming the field
    sqs = clients("sqs")
    queue = sqs.get_queue_url(QueueName=naming.INTAKE_DLQ)["QueueUrl"]
    messages = sqs.receive_message(
        QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", [])
    errors = [m["MessageAttributes"]["error"]["StringValue"] for m in messages]
    assert any("severity" in error for error in errors), errors


def _blocks_of(clients: Any, cidr: str) -> dict[str, dict[str, str]]:
    """The blocks table's records of one address by block id, their values as strings."""
    items = clients("dynamodb").scan(TableName=naming.BLOCKS_TABLE)["Items"]
    return {
        item["block_id"]["S"]: {key: next(iter(value.values())) for key, value in item.items()}
        for item in items
        if item["cidr"]["S"] == cidr
    }


def _kinds(clients: Any, address: str) -> list[tuple[str, dict[str, str]]]:
    """The blocks of one address, by kind."""
    return [(block["kind"], block) for block in _blocks_of(clients, f"{address}/32").values()]


def _execution_names(clients: Any) -> set[str]:
    sfn = clients("stepfunctions")
    executions = sfn.list_executions(stateMachineArn=pipeline.state_machine_arn(clients))
    return {execution["name"] for execution in executions["executions"]}


def _failed_attempts(clients: Any, result: pipeline.Result, state: str) -> int:
    sfn = clients("stepfunctions")
    arn = pipeline.execution_arn(clients, result.submission.execution_name)
    events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return sum(1 for event in events if event["type"] == "LambdaFunctionFailed")


def test_expired_blocks_are_lifted_by_the_deployed_expiry_function(clients, demo, estate, variant):
    # Given an attacker blocked by the pipeline, whose blocks have come to their end
    address = "89.160.20.115"
    run(clients, variant(demo["01-ssh-brute-force.json"], attacker=address))
    table = clients("dynamodb")
    blocks = [
        item
        for item in table.scan(TableName=naming.BLOCKS_TABLE)["Items"]
        if item["target"]["S"] == f"{address}/32"
    ]
    assert {item["kind"]["S"] for item in blocks} == {"waf_block", "nacl_block"}
    for item in blocks:
        table.update_item(
            TableName=naming.BLOCKS_TABLE,
            Key={"block_id": item["block_id"]},
            UpdateExpression="SET expires_at = :past, expires_at_epoch = :epoch",
            ExpressionAttributeValues={
                ":past": {"S": "2026-01-01T00:00:00Z"},
                ":epoch": {"N": "1767225600"},
            },
        )

    table.update_item(
        TableName=naming.INDICATORS_TABLE,
        Key={"kind": {"S": "ipv4"}, "value": {"S": address}},
        UpdateExpression="SET blocked_until = :past",
        ExpressionAttributeValues={":past": {"S": "2026-01-01T00:00:00Z"}},
    )

    # When the expiry function runs, as its schedule would run it
    response = clients("lambda").invoke(FunctionName=naming.FUNCTIONS["expire"], Payload=b"{}")
    summary = json.loads(response["Payload"].read())

    # Then the address leaves the WAF IP set (once the writer ran) and the network ACL, and the
    # records say so
    assert "FunctionError" not in response, summary
    assert summary["expired"] >= 2
    assert pipeline.wait_for_waf_writer(clients, 30)
    assert f"{address}/32" not in waf_addresses(clients, 4)
    assert f"{address}/32" not in nacl_denies(clients, estate["web_nacl"])
    indicator = table.get_item(
        TableName=naming.INDICATORS_TABLE, Key={"kind": {"S": "ipv4"}, "value": {"S": address}}
    )["Item"]
    assert indicator["block_state"]["S"] == "expired"


def test_the_local_runtime_runs_the_deployed_schedules(cloud):
    schedules = {schedule.function_name: schedule.every_seconds for schedule in cloud.schedules()}

    # The expiry every 15 minutes, the beacon scan on Athena every 6 hours, the summary weekly
    assert schedules == {
        naming.FUNCTIONS["expire"]: 15 * 60,
        naming.FUNCTIONS["beacons"]: 6 * 3600,
        naming.FUNCTIONS["summary"]: 7 * 24 * 3600,
    }
