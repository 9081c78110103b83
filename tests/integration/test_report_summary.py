"""The period summary against emulated tables and bucket: the scheduled function and the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

import boto3
import pytest
from moto import mock_aws

from cloud_sniper import cli
from cloud_sniper.domain import naming
from cloud_sniper.domain.models import ActionKind
from services.mitigate.actions import Block
from services.mitigate.adapters import DynamoBlockStore
from services.mitigate.adapters.records import DynamoRecordStore
from services.mitigate.catalogue import ActionRecord, RecordStatus
from services.report import summary_handler
from services.report.summary_render import read_json
from tests.project_tables import create_table
from tests.summary_incidents import SINCE, UNTIL, week

BUCKET = "cloud-sniper-reports-111122223333-us-east-1"
NAME = "summary-20240428T0000Z-20240505T0000Z"
IN_PERIOD = SINCE + timedelta(days=3)


@dataclass
class Context:
    function_name: str = "cloud-sniper-summary"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:111122223333:function:cloud-sniper-summary"
    )
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


def block(number: int, created_days_before: int = 4) -> Block:
    created_at = IN_PERIOD - timedelta(days=created_days_before)
    return Block(
        block_id=f"waf#{naming.WAF_IPV4_SET}#198.51.100.{number}/32",
        kind=ActionKind.WAF_BLOCK,
        target=f"198.51.100.{number}",
        cidr=f"198.51.100.{number}/32",
        ip_version=4,
        ip_set=naming.WAF_IPV4_SET,
        incident_id=f"inc-{number:016x}",
        finding_id=f"{number:032x}",
        action_id="act-waf-1",
        created_at=created_at,
        expires_at=created_at + timedelta(days=1),
    )


def record(kind: ActionKind, target: str, status: RecordStatus) -> ActionRecord:
    return ActionRecord(
        record_id=f"{kind.value}#{target}",
        kind=kind,
        target=target,
        incident_id="inc-0000000000000003",
        finding_id="0" * 32,
        action_id=f"{kind.value}:{target}",
        status=status,
        applied_at=IN_PERIOD - timedelta(days=1),
        undone_at=IN_PERIOD,
        undone_by="alice" if status is RecordStatus.UNDONE else None,
        undo_reason="rebuilt" if status is RecordStatus.UNDONE else None,
    )


@pytest.fixture
def account(monkeypatch):
    """The week's incidents, blocks and actions in emulated tables, and the reports bucket."""
    with mock_aws():
        dynamodb = boto3.resource("dynamodb")
        tables = {
            name: create_table(dynamodb, name)
            for name in (naming.INCIDENTS_TABLE, naming.BLOCKS_TABLE, naming.ACTIONS_TABLE)
        }
        for item in week():
            tables[naming.INCIDENTS_TABLE].put_item(Item=item)

        blocks = DynamoBlockStore(tables[naming.BLOCKS_TABLE])
        for number in (1, 2, 3, 4):
            assert blocks.put_new(block(number))
        assert blocks.mark_removed(block(1).block_id, "expired", IN_PERIOD)
        assert blocks.mark_removed(block(2).block_id, "rolled_back", IN_PERIOD, by="alice")
        # Lifted after the period: not in its summary
        assert blocks.mark_removed(block(3).block_id, "expired", UNTIL + timedelta(hours=1))

        records = DynamoRecordStore(tables[naming.ACTIONS_TABLE])
        records.save(
            record(ActionKind.ISOLATE_INSTANCE, "i-0abc1234def567890", RecordStatus.UNDONE)
        )
        records.save(record(ActionKind.C2_BLOCK, "203.0.113.99", RecordStatus.EXPIRED))

        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        for key, value in {
            "INCIDENTS_TABLE": naming.INCIDENTS_TABLE,
            "BLOCKS_TABLE": naming.BLOCKS_TABLE,
            "ACTIONS_TABLE": naming.ACTIONS_TABLE,
            "REPORTS_BUCKET": BUCKET,
            "SUMMARY_PERIOD_DAYS": "7",
        }.items():
            monkeypatch.setenv(key, value)
        summary_handler._dependencies.cache_clear()
        yield s3
        summary_handler._dependencies.cache_clear()


def test_the_scheduled_summary_writes_the_last_period_under_summaries(account):
    # Given the schedule's event at the end of the week
    event = {
        "source": "aws.events",
        "detail-type": "Scheduled Event",
        "time": "2024-05-05T00:00:00Z",
    }

    # When the summary function runs
    result = summary_handler.summary(event, Context())

    # Then the week before that time is summarized, in the three formats, under summaries/
    assert (result["since"], result["until"]) == (SINCE.isoformat(), UNTIL.isoformat())
    keys = {f"summaries/{NAME}{suffix}" for suffix in (".html", ".md", ".json")}
    listed = account.list_objects_v2(Bucket=BUCKET, Prefix="summaries/")["Contents"]
    assert {item["Key"] for item in listed} == keys == set(result["keys"].values())
    page = account.get_object(Bucket=BUCKET, Key=f"summaries/{NAME}.html")
    assert page["ContentType"] == "text/html; charset=utf-8"
    assert b"<svg" in page["Body"].read()

    # And the document counts the week's incidents and what was undone in it
    body = account.get_object(Bucket=BUCKET, Key=f"summaries/{NAME}.json")["Body"].read()
    summary = read_json(body.decode())
    assert summary.incidents == 7 and summary.dry_runs == 1
    recover = {count.name: count.count for count in summary.nist_csf[2].evidence}
    assert recover == {
        "blocks expired": 1,
        "blocks rolled back": 1,
        "actions expired": 1,
        "actions rolled back": 0,
        "releases": 1,
    }


def test_a_past_period_can_be_asked_for(account):
    # Given an invocation by hand naming a period
    event = {"since": "2024-05-01T00:00:00Z", "until": "2024-05-02T00:00:00Z"}

    # When the function runs, Then that day alone is summarized
    result = summary_handler.summary(event, Context())
    assert result["keys"]["json"] == "summaries/summary-20240501T0000Z-20240502T0000Z.json"
    assert result["incidents"] == 6


def test_the_report_command_writes_the_files_and_prints_the_headline(account, tmp_path, capsys):
    # When the summary of the week is asked of the account
    code = cli.main(
        [
            "report",
            "--since",
            "2024-04-28",
            "--until",
            "2024-05-05",
            "--region",
            "us-east-1",
            "--out",
            str(tmp_path),
        ]
    )

    # Then the three files are written and the main figures printed
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        f"{NAME}.html",
        f"{NAME}.json",
        f"{NAME}.md",
    ]
    assert f"wrote {tmp_path / NAME}.html" in out
    assert (
        "2024-04-28 00:00 UTC to 2024-05-05 00:00 UTC: 7 incident(s), 3 mitigated, "
        "1 denied or timed out, 1 failed"
    ) in out
    assert "time to mitigation: median 32 min, p95 32 min" in out
    assert "most frequent family: Backdoor (2)" in out
    document = json.loads((tmp_path / f"{NAME}.json").read_text())
    assert document["schema"] == "cloud-sniper/summary-report"


def test_the_report_command_writes_the_formats_asked_for(account, tmp_path):
    code = cli.main(
        [
            "report",
            *("--since", "2024-04-28", "--until", "2024-05-05"),
            *("--format", "markdown", "--format", "markdown", "--region", "us-east-1"),
            *("--out", str(tmp_path)),
        ]
    )
    assert code == cli.EXIT_OK
    assert [path.name for path in tmp_path.iterdir()] == [f"{NAME}.md"]


def test_a_bad_period_is_a_usage_error_naming_the_option(account, tmp_path, capsys):
    code = cli.main(["report", "--since", "yesterday", "--region", "us-east-1"])
    assert code == cli.EXIT_USAGE
    assert "--since 'yesterday': not a time ago" in capsys.readouterr().err

    code = cli.main(["report", "--since", "2024-05-05", "--until", "2024-05-01", "--region", "x"])
    assert code == cli.EXIT_USAGE
    assert "period: since 2024-05-05T00:00:00+00:00 is not before until" in capsys.readouterr().err
