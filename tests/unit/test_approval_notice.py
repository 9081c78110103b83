"""What approvers are told of an approval request, by SNS and by Slack."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cloud_sniper.domain import naming
from cloud_sniper.domain.models import OnApprovalTimeout
from services.decide.approval_request import (
    ApprovalRequest,
    new_record,
    notification,
    slack_message,
)

NOW = datetime(2025, 3, 14, 10, 5, 0, tzinfo=UTC)
REGION = "eu-west-1"
ISOLATION = "isolate_instance:i-0a1b2c3d4e5f60718"


@pytest.fixture
def request_(event) -> ApprovalRequest:
    return ApprovalRequest.model_validate(event("request-approval-escalate.json"))


def escalated(request: ApprovalRequest, after: timedelta = timedelta(hours=1, seconds=2)):
    """The record as it stands once the escalation took it over, its first request kept."""
    record = new_record(request.model_copy(update={"escalated": True}), NOW + after)
    return record.model_copy(update={"requested_at": NOW})


def test_the_notification_says_what_happened_to_what_and_what_would_be_done(request_):
    # Given a decision to isolate an instance others depend on and cut its C2 address
    record = new_record(request_, NOW)

    # When approvers are notified
    subject, message = notification(record, NOW, REGION)

    # Then they read the finding, the resource and where it lives, the indicators, and each
    # planned action with what it would disrupt
    assert subject == f"Cloud Sniper approval {record.approval_id}: Backdoor:EC2/C&CActivity.B"
    for expected in (
        f"Approval:  {record.approval_id}",
        "Finding:   Backdoor:EC2/C&CActivity.B, severity 8 (High)",
        "EC2 instance i-0a1b2c3d4e5f60718 is communicating with a Command and Control server.",
        "Resource:  Instance i-0a1b2c3d4e5f60718 in vpc-0f1e2d3c4b5a69788",
        "Account:   123456789012 in us-east-1",
        "Decision:  rule 'compromised-workload-c2' matched",
        "ipv4 89.160.20.112 (target, outbound, port 49152/tcp), on ProofPoint",
        "  - isolate_instance i-0a1b2c3d4e5f60718\n"
        "      blast radius: every connection of instance i-0a1b2c3d4e5f60718; 2 dependent(s): "
        "Auto Scaling group web, target group web-tg\n",
        "  - c2_block 89.160.20.112/32 in the network ACLs of subnet-0a9b8c7d6e5f43210 for 7d\n"
        "      blast radius: outbound traffic to 89.160.20.112/32 from those subnets\n",
    ):
        assert expected in message


def test_the_notification_says_when_it_expires_and_what_then(request_):
    # Given an approval the policy escalates when nobody answers
    record = new_record(request_, NOW)

    # When approvers are notified, then they read the expiry in UTC and how long is left, and
    # that it goes to the escalation topic unanswered
    _, message = notification(record, NOW, REGION)
    assert (
        "Expires:  2025-03-14 11:05:00 UTC, in 1h. Unanswered by then, it is escalated to "
        f"{naming.APPROVAL_ESCALATION_TOPIC} and waits 1h more; then nothing is done."
    ) in message

    # And, read later, how long is left then
    _, later = notification(record, NOW + timedelta(minutes=45), REGION)
    assert "2025-03-14 11:05:00 UTC, in 15m." in later


def test_a_denying_policy_says_nothing_is_done_unanswered(request_):
    # Given an approval the policy denies when nobody answers
    request_.decision.on_approval_timeout = OnApprovalTimeout.DENY

    # When approvers are notified, then they read that nothing is done unanswered
    _, message = notification(new_record(request_, NOW), NOW, REGION)
    assert "in 1h. Unanswered by then, it is denied: nothing is done." in message
    assert naming.APPROVAL_ESCALATION_TOPIC not in message


def test_the_notification_gives_the_exact_commands_and_never_the_token(request_):
    # Given an approval request
    record = new_record(request_, NOW)

    # When approvers are notified
    subject, message = notification(record, NOW, REGION)

    # Then they can answer a deployment and the local emulation by copying a line; the task
    # token, which would resume the execution, is nowhere
    deployed = f"--stack {naming.APPROVALS_API_STACK} --region {REGION}"
    assert "Answer with one of:\n" in message
    for verb in ("approve", "deny"):
        assert f"\n  cloud-sniper approvals {verb} {record.approval_id} --reason TEXT\n" in message
        assert (
            f"\n  cloud-sniper approvals {verb} {record.approval_id} --reason TEXT {deployed}\n"
        ) in message
    assert request_.token not in subject + message


def test_an_escalated_notification_says_nobody_answered_and_this_is_the_last_wait(request_):
    # Given the approval taken over by its escalation, an hour after the request
    record = escalated(request_)

    # When the escalation topic is notified
    subject, message = notification(record, record.escalated_at, REGION)

    # Then it says it is escalated, that nobody answered in time, and that unanswered again
    # nothing is done
    assert subject == (
        f"Cloud Sniper approval {record.approval_id} escalated: Backdoor:EC2/C&CActivity.B"
    )
    assert message.startswith(
        "Nobody answered this approval within 1h: Cloud Sniper asks you, once more, "
        "before acting on a finding.\n"
    )
    assert "2025-03-14 12:05:02 UTC, in 1h. Unanswered by then, it is denied" in message
    assert naming.APPROVAL_ESCALATION_TOPIC not in message


@pytest.mark.parametrize(
    ("dependents", "expected"),
    [
        (
            {},
            "every connection of instance i-0a1b2c3d4e5f60718; what depends on it was not counted",
        ),
        (
            {ISOLATION: []},
            "every connection of instance i-0a1b2c3d4e5f60718; nothing found depending on it",
        ),
    ],
)
def test_a_blast_radius_not_counted_or_empty_is_said_as_such(request_, dependents, expected):
    # Given an isolation whose dependents were not counted, or counted and none found
    request_.decision.dependents = dependents

    # When approvers are notified, then they read which
    _, message = notification(new_record(request_, NOW), NOW, REGION)
    assert f"blast radius: {expected}\n" in message


def test_the_record_keeps_the_blast_radius_of_the_planned_actions_only(request_):
    # Given a decision that counted the dependents of an action it no longer plans
    request_.decision.dependents = {**request_.decision.dependents, "gone:x": ["something"]}

    # When the record is made, then it keeps what it asks about, and the choice on timeout
    record = new_record(request_, NOW)
    assert record.dependents == {ISOLATION: ["Auto Scaling group web", "target group web-tg"]}
    assert record.on_timeout is OnApprovalTimeout.ESCALATE
    assert record.escalated_at is None


def test_only_an_escalating_decision_can_be_escalated(request_):
    # Given a decision that denies on timeout, when an escalation is asked for it, then it fails
    request_.decision.on_approval_timeout = OnApprovalTimeout.DENY
    with pytest.raises(ValueError, match="on_approval_timeout deny: .* is not to be escalated"):
        new_record(request_.model_copy(update={"escalated": True}), NOW)


def test_the_slack_message_says_the_same_in_blocks_with_a_command_to_copy(request_):
    # Given an approval request
    record = new_record(request_, NOW)

    # When it is written for Slack
    message = slack_message(record, NOW, REGION)

    # Then it is a header and mrkdwn sections with the same facts, the finding's text escaped
    # for Slack, and the commands in code blocks
    header, *sections = message["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": f"Cloud Sniper approval {record.approval_id}"},
    }
    assert all(block["type"] == "section" for block in sections)
    assert {block["text"]["type"] for block in sections} == {"mrkdwn"}
    text = "\n".join(block["text"]["text"] for block in sections)
    for expected in (
        "*Finding:* Backdoor:EC2/C&amp;CActivity.B, severity 8 (High)",
        "*Account:* 123456789012 in us-east-1",
        "• `ipv4 89.160.20.112 (target, outbound, port 49152/tcp), on ProofPoint`",
        "• `isolate_instance i-0a1b2c3d4e5f60718`\n    blast radius: every connection of "
        "instance i-0a1b2c3d4e5f60718; 2 dependent(s): Auto Scaling group web, "
        "target group web-tg",
        "*Expires:* 2025-03-14 11:05:00 UTC, in 1h.",
        f"```cloud-sniper approvals approve {record.approval_id} --reason TEXT "
        f"--stack {naming.APPROVALS_API_STACK} --region {REGION}\n",
        f"cloud-sniper approvals deny {record.approval_id} --reason TEXT```",
    ):
        assert expected in text
    assert message["text"] == (
        f"Cloud Sniper approval {record.approval_id}: Backdoor:EC2/C&CActivity.B on Instance "
        "i-0a1b2c3d4e5f60718 in vpc-0f1e2d3c4b5a69788"
    )
    # No link to follow, no token
    assert "http" not in json.dumps(message)
    assert request_.token not in json.dumps(message)


def test_the_slack_message_of_an_escalation_says_so(request_):
    record = escalated(request_)

    message = slack_message(record, record.escalated_at, REGION)

    assert message["blocks"][0]["text"]["text"].endswith("(escalated)")
    assert "Nobody answered this approval within 1h" in message["blocks"][1]["text"]["text"]


def test_a_finding_cannot_write_slack_markup_or_overflow_a_section(request_):
    # Given a finding whose title holds Slack markup, and is very long
    request_.finding.title = "<!channel> <https://evil.example|click> & " + "x" * 4000

    # When it is written for Slack, then the markup is text and every section fits
    message = slack_message(new_record(request_, NOW), NOW, REGION)
    texts = [block["text"]["text"] for block in message["blocks"][1:]]
    assert "&lt;!channel&gt; &lt;https://evil.example|click&gt; &amp; " in texts[1]
    assert "<!channel>" not in json.dumps(message)
    assert all(len(text) <= 3000 for text in texts)
    assert texts[1].endswith("…")


def test_a_subject_is_one_line_of_ascii_within_the_sns_limit(request_):
    request_.finding.type = "Backdoor:EC2/C&CActivity.B\n" + "é" * 200

    subject, _ = notification(new_record(request_, NOW), NOW, REGION)

    assert len(subject) == 100
    assert subject.isascii() and "\n" not in subject
