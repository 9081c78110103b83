"""request-approval against an emulated account: the escalation's record, and the Slack webhook."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws

from cloud_sniper.domain import naming
from services.decide import adapters, handler
from services.decide.approval_request import ApprovalConflictError
from tests.integration.test_decide import Context
from tests.integration.test_report_thehive import API_KEY as THEHIVE_KEY
from tests.integration.test_report_thehive import SECRET as THEHIVE_SECRET

# TheHive on a loopback port, as the report's tests run it: the fixture thehive_server.
from tests.integration.test_report_thehive import thehive as thehive_server  # noqa: F401
from tests.project_tables import create_table

SECRET = "cloud-sniper/slack-webhook"


@dataclass
class Account:
    """The approvals table, both approval topics and a queue reading each."""

    table: Any
    queues: dict[str, str]
    sqs: Any

    def notices(self, topic: str) -> list[dict[str, Any]]:
        received = self.sqs.receive_message(QueueUrl=self.queues[topic], MaxNumberOfMessages=10)
        return [json.loads(message["Body"]) for message in received.get("Messages", [])]

    def item(self, approval_id: str) -> dict[str, Any]:
        return self.table.get_item(Key={"approval_id": approval_id})["Item"]

    def set(self, approval_id: str, **values: str) -> None:
        names = {f"#{key}": key for key in values}
        self.table.update_item(
            Key={"approval_id": approval_id},
            UpdateExpression="SET " + ", ".join(f"#{key} = :{key}" for key in values),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={f":{key}": value for key, value in values.items()},
        )


def cold_start() -> None:
    adapters.clear_caches()
    handler._approval_settings.cache_clear()


@pytest.fixture
def account(monkeypatch) -> Iterator[Account]:
    for name in ("SLACK_WEBHOOK_SECRET", "ESCALATION_TOPIC_ARN", "THEHIVE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("THEHIVE_API_KEY_SECRET", raising=False)
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "request-approval")
    monkeypatch.setenv("APPROVALS_TABLE", naming.APPROVALS_TABLE)
    cold_start()
    with mock_aws():
        sns, sqs = boto3.client("sns"), boto3.client("sqs")
        queues = {}
        for topic, variable in (
            (naming.APPROVAL_TOPIC, "APPROVAL_TOPIC_ARN"),
            (naming.APPROVAL_ESCALATION_TOPIC, "ESCALATION_TOPIC_ARN"),
        ):
            arn = sns.create_topic(Name=topic)["TopicArn"]
            monkeypatch.setenv(variable, arn)
            queues[topic] = sqs.create_queue(QueueName=f"{topic}-reader")["QueueUrl"]
            queue_arn = sqs.get_queue_attributes(
                QueueUrl=queues[topic], AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
        table = create_table(boto3.resource("dynamodb"), naming.APPROVALS_TABLE)
        yield Account(table=table, queues=queues, sqs=sqs)
    cold_start()


def request_approval(request: dict[str, Any], **changes: Any) -> str:
    return handler.request_approval({**request, **changes}, Context())["approval_id"]


# --- escalation --------------------------------------------------------------------------------


def test_the_escalation_takes_over_the_approval_with_its_own_token(account, event):
    # Given an approval requested, whose first wait timed out unanswered
    request = event("request-approval-escalate.json")
    approval_id = request_approval(request)
    first = account.item(approval_id)
    account.notices(naming.APPROVAL_TOPIC)

    # When the state machine escalates it, with the new task's token
    assert request_approval(request, token="token-of-the-escalation", escalated=True) == (
        approval_id
    )

    # Then the same approval waits again for the escalation's token, marked escalated, as long
    # again from now; the request is still the first one
    item = account.item(approval_id)
    assert account.table.scan()["Count"] == 1
    assert (item["status"], item["token"]) == ("pending", "token-of-the-escalation")
    assert item["requested_at"] == first["requested_at"]
    escalated_at = datetime.fromisoformat(item["escalated_at"])
    assert escalated_at >= datetime.fromisoformat(first["requested_at"])
    assert datetime.fromisoformat(item["expires_at"]) - escalated_at == timedelta(hours=1)

    # And only the escalation topic hears of it, told it is escalated
    assert account.notices(naming.APPROVAL_TOPIC) == []
    (notice,) = account.notices(naming.APPROVAL_ESCALATION_TOPIC)
    assert notice["Subject"].startswith(f"Cloud Sniper approval {approval_id} escalated:")
    assert "Nobody answered this approval within 1h" in notice["Message"]
    assert "token-of-the-escalation" not in json.dumps(notice)


def test_a_retried_escalation_takes_over_again(account, event):
    # Given an escalated approval, when the escalation task is retried with another token
    request = event("request-approval-escalate.json")
    approval_id = request_approval(request)
    request_approval(request, token="token-of-the-escalation", escalated=True)
    request_approval(request, token="token-of-the-retry", escalated=True)

    # Then the retry's token is the one waited for
    assert account.item(approval_id)["token"] == "token-of-the-retry"


def test_an_approval_a_late_answer_timed_out_is_escalated_once(account, event):
    # Given an approval a late answer marked timed out before the escalation came
    request = event("request-approval-escalate.json")
    approval_id = request_approval(request)
    account.set(approval_id, status="timed_out")

    # When it is escalated, then it waits again for the escalation
    request_approval(request, token="token-of-the-escalation", escalated=True)
    assert account.item(approval_id)["status"] == "pending"

    # But once the escalation timed out too, no escalation takes it over again
    account.set(approval_id, status="timed_out")
    with pytest.raises(ApprovalConflictError, match=f"approval {approval_id} is already timed_out"):
        request_approval(request, token="token-of-another-escalation", escalated=True)
    item = account.item(approval_id)
    assert (item["status"], item["token"]) == ("timed_out", "token-of-the-escalation")


@pytest.mark.parametrize("status", ["approved", "denied"])
def test_an_answered_approval_is_never_escalated(account, event, status):
    # Given an approval answered just as its first wait ended
    request = event("request-approval-escalate.json")
    approval_id = request_approval(request)
    account.set(approval_id, status=status)

    # When the escalation comes with its new token, then it fails and the answer stands
    with pytest.raises(ApprovalConflictError, match=f"is already {status}"):
        request_approval(request, token="token-of-the-escalation", escalated=True)
    assert account.item(approval_id)["token"] == request["token"]
    assert account.notices(naming.APPROVAL_ESCALATION_TOPIC) == []


def test_an_escalation_without_its_approval_fails(account, event):
    # Given no approval was ever stored for the execution, when it is escalated, then it fails
    request = event("request-approval-escalate.json")
    with pytest.raises(ApprovalConflictError, match="is not in the approvals table"):
        request_approval(request, escalated=True)
    assert account.table.scan()["Count"] == 0


def test_an_escalation_without_its_topic_names_the_setting(account, event, monkeypatch):
    # Given a function whose escalation topic is unset
    request = event("request-approval-escalate.json")
    request_approval(request)
    monkeypatch.delenv("ESCALATION_TOPIC_ARN")
    handler._approval_settings.cache_clear()

    # When an approval is escalated, then the error names the variable
    with pytest.raises(ValueError, match="ESCALATION_TOPIC_ARN is unset"):
        request_approval(request, token="token-of-the-escalation", escalated=True)


# --- Slack -------------------------------------------------------------------------------------


@dataclass
class Webhook:
    """A local HTTP server standing in for Slack's incoming webhook."""

    url: str
    posts: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    received = Webhook(url="")

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.posts.append(
                {
                    "path": self.path,
                    "content_type": self.headers["Content-Type"],
                    "body": json.loads(body),
                }
            )
            time.sleep(received.delay)
            self.send_response(received.status)
            self.end_headers()
            self.wfile.write(b"ok" if received.status == 200 else b"invalid_payload")

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    received.url = f"http://127.0.0.1:{server.server_address[1]}/services/T000/B000/XXXX"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield received
    server.shutdown()
    server.server_close()


@pytest.fixture
def slack(account, webhook, monkeypatch) -> Webhook:
    """The webhook's URL kept in Secrets Manager, the function naming the secret alone."""
    boto3.client("secretsmanager").create_secret(Name=SECRET, SecretString=webhook.url)
    monkeypatch.setenv("SLACK_WEBHOOK_SECRET", SECRET)
    handler._approval_settings.cache_clear()
    return webhook


def test_an_approval_request_is_posted_to_slack(slack, account, event):
    # Given a Slack webhook kept in Secrets Manager
    request = event("request-approval-escalate.json")

    # When an approval is requested
    approval_id = request_approval(request)

    # Then Slack receives one JSON message: a header and sections saying what the notice says
    (post,) = slack.posts
    assert post["path"] == "/services/T000/B000/XXXX"
    assert post["content_type"] == "application/json; charset=utf-8"
    body = post["body"]
    assert body["text"].startswith(f"Cloud Sniper approval {approval_id}: ")
    assert body["blocks"][0]["text"]["text"] == f"Cloud Sniper approval {approval_id}"
    text = "\n".join(block["text"]["text"] for block in body["blocks"][1:])
    assert "*Finding:* Backdoor:EC2/C&amp;CActivity.B, severity 8 (High)" in text
    assert f"cloud-sniper approvals approve {approval_id} --reason TEXT" in text
    assert request["token"] not in json.dumps(body)

    # And SNS, the channel of record, was told as ever
    assert len(account.notices(naming.APPROVAL_TOPIC)) == 1


def test_a_webhook_kept_as_json_is_read_too(account, webhook, event, monkeypatch):
    # Given the secret holds the URL in a JSON document, as the console's key/value form keeps it
    boto3.client("secretsmanager").create_secret(
        Name=SECRET, SecretString=json.dumps({"url": webhook.url})
    )
    monkeypatch.setenv("SLACK_WEBHOOK_SECRET", SECRET)

    # When an approval is requested, then Slack receives it
    request_approval(event("request-approval-escalate.json"))
    assert len(webhook.posts) == 1


def test_a_warm_function_keeps_the_webhook_it_read(slack, event):
    # Given an approval posted to Slack, then the secret deleted
    request = event("request-approval-escalate.json")
    request_approval(request)
    boto3.client("secretsmanager").delete_secret(SecretId=SECRET, ForceDeleteWithoutRecovery=True)

    # When the next approval is requested by the same warm function, then it still posts
    request_approval(request, execution_name="another-execution")
    assert len(slack.posts) == 2


def failing_slack(webhook: Webhook, monkeypatch, how: str) -> None:
    """Make the Slack side fail in one way."""
    secrets = boto3.client("secretsmanager")
    if how == "error status":
        webhook.status = 500
    elif how == "slow":
        webhook.delay = 1.0
        monkeypatch.setattr(adapters, "SLACK_TIMEOUT_SECONDS", 0.2)
    elif how == "no secret":
        secrets.delete_secret(SecretId=SECRET, ForceDeleteWithoutRecovery=True)
    elif how == "not https":
        secrets.put_secret_value(SecretId=SECRET, SecretString="http://hooks.example.com/x")
    elif how == "not a URL":
        secrets.put_secret_value(SecretId=SECRET, SecretString='{"url": 42}')
    elif how == "nobody listening":
        secrets.put_secret_value(SecretId=SECRET, SecretString="http://127.0.0.1:9/closed")


@pytest.mark.parametrize(
    ("how", "said"),
    [
        ("error status", "the Slack webhook answered 500: invalid_payload"),
        ("slow", "posting to the Slack webhook: timed out"),
        ("no secret", f"reading the secret {SECRET}"),
        ("not https", f"the secret {SECRET} holds no https URL"),
        ("not a URL", f"the secret {SECRET} holds no https URL"),
        ("nobody listening", "posting to the Slack webhook: [Errno 111] Connection refused"),
    ],
)
def test_a_slack_failure_is_logged_and_the_approval_still_requested(
    slack, account, event, monkeypatch, caplog, how, said
):
    # Given Slack fails one way or another
    failing_slack(slack, monkeypatch, how)
    request = event("request-approval-escalate.json")

    # When an approval is requested
    approval_id = request_approval(request)

    # Then the approval is stored and published as ever
    assert account.item(approval_id)["status"] == "pending"
    assert len(account.notices(naming.APPROVAL_TOPIC)) == 1

    # And the failure is logged, saying why but never the webhook's URL
    (failed,) = [r for r in caplog.records if r.getMessage() == "slack notification failed"]
    assert failed.levelname == "WARNING"
    assert said in failed.error
    assert failed.secret == SECRET
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "/services/T000/B000/XXXX" not in logged
    assert "hooks.example.com" not in logged


def test_without_a_webhook_secret_nothing_goes_to_slack(account, webhook, event):
    # Given no secret is named, when an approval is requested, then Slack hears nothing
    request_approval(event("request-approval-escalate.json"))
    assert webhook.posts == []


# --- TheHive -------------------------------------------------------------------------------------


def test_an_approval_request_opens_the_thehive_case_with_its_task(
    account,
    thehive_server,  # noqa: F811 - the imported fixture
    event,
    monkeypatch,
):
    # Given TheHive configured, its API key in Secrets Manager
    boto3.client("secretsmanager").create_secret(Name=THEHIVE_SECRET, SecretString=THEHIVE_KEY)
    monkeypatch.setenv("THEHIVE_URL", thehive_server.url)
    monkeypatch.setenv("THEHIVE_API_KEY_SECRET", THEHIVE_SECRET)
    cold_start()

    # When an approval is requested
    approval_id = request_approval(event("request-approval.json"))

    # Then the incident's case holds a task asking for the answer
    [case] = thehive_server.cases.values()
    [task] = thehive_server.tasks[case["_id"]]
    assert task["title"] == f"Answer approval {approval_id}"
    assert account.item(approval_id)["status"] == "pending"


def test_an_unreachable_thehive_leaves_the_approval_requested(account, event, monkeypatch, caplog):
    # Given TheHive configured at an address nothing answers
    boto3.client("secretsmanager").create_secret(Name=THEHIVE_SECRET, SecretString=THEHIVE_KEY)
    monkeypatch.setenv("THEHIVE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("THEHIVE_API_KEY_SECRET", THEHIVE_SECRET)
    cold_start()

    # When an approval is requested
    approval_id = request_approval(event("request-approval.json"))

    # Then it is stored and published as ever, and the failure logged
    assert account.item(approval_id)["status"] == "pending"
    assert len(account.notices(naming.APPROVAL_TOPIC)) == 1
    assert [r.levelname for r in caplog.records if r.getMessage() == "TheHive case not opened"] == [
        "WARNING"
    ]
