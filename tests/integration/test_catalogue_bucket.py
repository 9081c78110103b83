"""Blocking a bucket's public access against an emulated account: applied, kept, put back."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import UTC, datetime
from fnmatch import fnmatch
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError
from cloud_sniper.domain.models import ActionKind, ActionStatus, PlannedAction
from cloud_sniper.domain.normalize import normalize
from services.mitigate.adapters.records import DynamoRecordStore
from services.mitigate.catalogue import (
    ActionRun,
    RecordStatus,
    catalogue,
    record_id,
    run_action,
    undo_action,
)
from tests.project_tables import create_table

NOW = datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
LATER = datetime(2024, 5, 1, 15, 30, tzinfo=UTC)
INCIDENT = "inc-0123456789abcdef"
OTHER_INCIDENT = "inc-fedcba9876543210"
BUCKET = "cloud-sniper-demo-data"
KIND = ActionKind.BLOCK_PUBLIC_ACCESS
ACTION = catalogue()[KIND]
ALL_ON = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
ACLS_ONLY = {**ALL_ON, "BlockPublicPolicy": False, "RestrictPublicBuckets": False}
PUBLIC_READ = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{BUCKET}/*",
        }
    ],
}
# The IAM action each S3 operation needs, where it is not "s3:" + the operation's name.
S3_ACTIONS = {
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
}


@dataclasses.dataclass
class Account:
    """The emulated account: a reader of S3 that is not counted, and the action's clients."""

    s3: Any
    records: DynamoRecordStore
    session: Any
    made: list[tuple[str, dict[str, Any]]]
    _clients: dict[str, Any] = dataclasses.field(default_factory=dict)

    def clients(self, service_name: str) -> Any:
        if service_name not in self._clients:
            self._clients[service_name] = self.session.client(service_name)
        return self._clients[service_name]

    def take(self) -> Counter[str]:
        """The operations the action made since the last take, each checked against its grant."""
        made, self.made[:] = list(self.made), []
        for operation, params in made:
            action = iam_action(operation)
            arn = f"arn:aws:s3:::{params['Bucket']}"
            assert granted(action, arn), f"{operation} on {arn} is not declared as {action}"
        return Counter(operation for operation, _ in made)

    def public_access_block(self) -> dict[str, bool] | None:
        try:
            response = self.s3.get_public_access_block(Bucket=BUCKET)
        except self.s3.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "NoSuchPublicAccessBlockConfiguration"
            return None
        return response["PublicAccessBlockConfiguration"]

    def policy(self) -> dict[str, Any]:
        return json.loads(self.s3.get_bucket_policy(Bucket=BUCKET)["Policy"])


def iam_action(operation: str) -> str:
    return S3_ACTIONS.get(operation, f"s3:{operation}")


def granted(action: str, arn: str) -> bool:
    return any(
        action in permission.actions
        and any(fnmatch(arn, resource.format(partition="aws")) for resource in permission.resources)
        for permission in ACTION.permissions
    )


@pytest.fixture
def account():
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        dynamodb = boto3.resource("dynamodb")
        table = create_table(dynamodb, naming.ACTIONS_TABLE)

        session = boto3.session.Session()
        made: list[tuple[str, dict[str, Any]]] = []

        def count(event_name: str, params: dict[str, Any], **_: Any) -> None:
            made.append((event_name.split(".")[-1], dict(params)))

        session.events.register("before-parameter-build.s3.*", count)
        yield Account(s3, DynamoRecordStore(table), session, made)


def run_on(account: Account, event, bucket: str = BUCKET, incident_id: str = INCIDENT):
    finding = normalize(event("guardduty-s3-malicious-ip-caller.json"))
    action = PlannedAction(id=f"{KIND.value}-{bucket}", kind=KIND, target=bucket)
    return ActionRun(finding, action, incident_id, NOW, None, account.clients)


def inject(account: Account, operation: str, code: str, status: int = 400) -> None:
    """Make the action's S3 client fail an operation with an AWS error code."""

    def fail(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {
            "Error": {"Code": code, "Message": f"{code} injected by the test"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return AWSResponse("https://aws.invalid/", status, {}, None), parsed

    account.clients("s3").meta.events.register(f"before-call.s3.{operation}", fail)


def test_an_open_bucket_is_blocked_verified_kept_and_reopened(account, event):
    # Given a bucket with no public access block and a public-read policy
    account.s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(PUBLIC_READ))

    # When public access is blocked
    result = run_action(run_on(account, event), account.records, dry_run=False)
    applied = account.take()

    # Then all four settings are on, the policy is untouched, and no block before is recorded
    assert result.status is ActionStatus.APPLIED, result.detail
    assert result.detail.startswith(
        f"blocked public access to bucket {BUCKET} (before: no public access block)"
    )
    assert account.public_access_block() == ALL_ON
    assert account.policy() == PUBLIC_READ
    record = account.records.get(record_id(KIND, BUCKET))
    assert record.state == {"previous": None, "serves_website": False}
    assert (record.verified, record.expires_at) == (True, None)

    # When it is verified on its own
    check = ACTION.verify(record, account.clients)
    verified = account.take()
    assert (check.ok, check.detail) == (True, f"bucket {BUCKET} has all four settings on")

    # When another finding names the bucket
    again = run_action(run_on(account, event, incident_id=OTHER_INCIDENT), account.records, False)
    reapplied = account.take()

    # Then it is already applied, and nothing was written
    assert again.status is ActionStatus.ALREADY_APPLIED, again.detail
    assert reapplied == Counter({"GetPublicAccessBlock": 1})

    # When a person undoes it
    undone = undo_action(record, account.clients, "analyst", "public by design", LATER)
    account.records.save(undone)
    undo_calls = account.take()

    # Then the bucket has no public access block again, and its policy is as it was
    assert account.public_access_block() is None
    assert account.policy() == PUBLIC_READ
    assert undone.status is RecordStatus.UNDONE
    assert undone.verification == (
        f"removed the public access block of bucket {BUCKET}, which had none"
    )
    assert applied == Counter(
        {"GetPublicAccessBlock": 2, "GetBucketWebsite": 1, "PutPublicAccessBlock": 1}
    )
    assert verified == Counter({"GetPublicAccessBlock": 1})
    assert undo_calls == Counter({"DeletePublicAccessBlock": 1})
    print(f"\nblock_public_access: apply+verify {dict(applied)}, verify {dict(verified)}")
    print(f"block_public_access: undo {dict(undo_calls)}")


def test_a_partial_block_is_put_back_as_it_was(account, event):
    # Given a bucket blocking public ACLs only
    account.s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration=ACLS_ONLY)

    # When public access is blocked, then undone
    result = run_action(run_on(account, event), account.records, dry_run=False)
    record = account.records.get(record_id(KIND, BUCKET))
    assert account.public_access_block() == ALL_ON
    undone = undo_action(record, account.clients, "analyst", "test", LATER)

    # Then the record held the partial block, and the undo wrote it back
    assert "(before: BlockPublicAcls, IgnorePublicAcls on)" in result.detail
    assert record.state["previous"] == ACLS_ONLY
    assert account.public_access_block() == ACLS_ONLY
    assert undone.verification == (
        f"put back BlockPublicAcls, IgnorePublicAcls on on bucket {BUCKET}"
    )


def test_a_bucket_already_closed_is_left_closed(account, event):
    # Given a bucket already fully blocked (a person's doing, or a run that crashed before
    # recording)
    account.s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration=ALL_ON)

    # When public access is blocked
    result = run_action(run_on(account, event), account.records, dry_run=False)
    applied = account.take()

    # Then nothing is written, and the undo leaves it closed
    assert result.status is ActionStatus.APPLIED, result.detail
    assert result.detail.startswith(f"bucket {BUCKET} already had all four settings on")
    assert "PutPublicAccessBlock" not in applied
    record = account.records.get(record_id(KIND, BUCKET))
    undone = undo_action(record, account.clients, "analyst", "test", LATER)
    assert account.public_access_block() == ALL_ON
    assert undone.verification == f"bucket {BUCKET} was fully blocked before; left as it was"
    assert account.take() == Counter()  # the undo wrote nothing


def test_a_website_bucket_is_flagged(account, event):
    # Given a bucket serving a static website
    account.s3.put_bucket_website(
        Bucket=BUCKET, WebsiteConfiguration={"IndexDocument": {"Suffix": "index.html"}}
    )

    # When public access is blocked
    result = run_action(run_on(account, event), account.records, dry_run=False)

    # Then the detail and the state say the site stops being public
    assert result.status is ActionStatus.APPLIED, result.detail
    assert "it serves a static website, no longer public" in result.detail
    record = account.records.get(record_id(KIND, BUCKET))
    assert record.state["serves_website"] is True


def test_a_block_loosened_since_fails_verification(account, event):
    # Given a blocked bucket that someone opened to public policies again
    run_action(run_on(account, event), account.records, dry_run=False)
    account.s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration=ACLS_ONLY)

    # When another finding names the bucket
    result = run_action(run_on(account, event, incident_id=OTHER_INCIDENT), account.records, False)

    # Then the action in force is reported failed, saying which settings are on
    assert result.status is ActionStatus.FAILED
    assert result.detail.endswith(f"bucket {BUCKET} has BlockPublicAcls, IgnorePublicAcls on")


def test_a_bucket_deleted_since_needs_no_undo(account, event):
    # Given a blocked bucket that its owner deleted since
    run_action(run_on(account, event), account.records, dry_run=False)
    record = account.records.get(record_id(KIND, BUCKET))
    account.s3.delete_bucket(Bucket=BUCKET)

    # When it is verified and undone
    check = ACTION.verify(record, account.clients)
    undone = undo_action(record, account.clients, "analyst", "cleanup", LATER)

    # Then nothing is public, and nothing is put back
    assert (check.ok, check.detail) == (True, f"bucket {BUCKET} no longer exists")
    assert undone.verification == f"bucket {BUCKET} no longer exists; nothing to put back"


def test_a_bucket_that_does_not_exist_is_not_found(account, event):
    # Given a finding naming a bucket the account does not have
    # When public access is blocked
    result = run_action(run_on(account, event, "no-such-bucket"), account.records, False)

    # Then it is not found, and nothing is recorded
    assert (result.status, result.detail) == (
        ActionStatus.NOT_FOUND,
        "bucket no-such-bucket not found",
    )
    assert account.records.get(record_id(KIND, "no-such-bucket")) is None
    assert account.take() == Counter({"GetPublicAccessBlock": 1})


def test_access_denied_is_a_failure_and_slowdown_is_retried(account, event):
    # Given S3 refusing the write, then throttling it
    inject(account, "PutPublicAccessBlock", "AccessDenied", 403)

    # When public access is blocked
    denied = run_action(run_on(account, event), account.records, dry_run=False)

    # Then the refusal is a failure with its cause, and nothing is recorded
    assert denied.status is ActionStatus.FAILED
    assert denied.detail.startswith(f"PutPublicAccessBlock {BUCKET}: AccessDenied")
    assert account.records.get(record_id(KIND, BUCKET)) is None

    account._clients.clear()
    inject(account, "PutPublicAccessBlock", "SlowDown", 503)
    with pytest.raises(TransientAwsError, match="SlowDown"):
        run_action(run_on(account, event), account.records, dry_run=False)


def test_the_declared_permissions_are_exactly_those_called(account, event):
    # Given buckets with and without a block before
    account.s3.create_bucket(Bucket="cloud-sniper-demo-logs")
    account.s3.put_public_access_block(
        Bucket="cloud-sniper-demo-logs", PublicAccessBlockConfiguration=ACLS_ONLY
    )

    # When each is blocked, verified and undone
    used: set[str] = set()
    for bucket in (BUCKET, "cloud-sniper-demo-logs"):
        run_action(run_on(account, event, bucket), account.records, dry_run=False)
        record = account.records.get(record_id(KIND, bucket))
        ACTION.verify(record, account.clients)
        undo_action(record, account.clients, "analyst", "test", LATER)
        used |= {iam_action(operation) for operation in account.take()}

    # Then every declared action was needed, and none beyond them was called
    assert used == {action for permission in ACTION.permissions for action in permission.actions}
