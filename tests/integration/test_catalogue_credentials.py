"""Revoking credentials against an emulated account: a user's key, a role's sessions, undone."""

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
from cloud_sniper.domain.models import ActionKind, ActionStatus, Finding, PlannedAction
from cloud_sniper.domain.normalize import normalize
from cloud_sniper.domain.policy import _params
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

NOW = datetime(2024, 5, 1, 11, 0, 7, tzinfo=UTC)
LATER = datetime(2024, 5, 1, 15, 30, tzinfo=UTC)
ACCOUNT_ID = "123456789012"  # moto's account
INCIDENT = "inc-0123456789abcdef"
OTHER_INCIDENT = "inc-fedcba9876543210"
USER = "ci-deployer"
ROLE = "cloud-sniper-demo-web"
SESSION_KEY = "ASIAIOSFODNN7EXAMPLE"
OUR_POLICY = f"cloud-sniper-revoke-{INCIDENT}"
THEIR_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
}
KIND = ActionKind.REVOKE_CREDENTIALS
ACTION = catalogue()[KIND]


@dataclasses.dataclass
class Account:
    """The emulated account: a reader of IAM that is not counted, and the action's clients."""

    iam: Any
    records: DynamoRecordStore
    session: Any
    made: list[tuple[str, str, dict[str, Any]]]
    _clients: dict[str, Any] = dataclasses.field(default_factory=dict)

    def clients(self, service_name: str) -> Any:
        if service_name not in self._clients:
            self._clients[service_name] = self.session.client(service_name)
        return self._clients[service_name]

    def take(self) -> Counter[str]:
        """The operations the action made since the last take, each checked against its grant."""
        made, self.made[:] = list(self.made), []
        for service, operation, params in made:
            action, arn = iam_action(service, operation), resource_arn(params)
            assert granted(action, arn), f"{operation} on {arn} is not declared as {action}"
        return Counter(operation for _, operation, _ in made)

    def key_status(self, key_id: str) -> str:
        keys = self.iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
        return next(key["Status"] for key in keys if key["AccessKeyId"] == key_id)

    def role_policies(self) -> dict[str, Any]:
        names = self.iam.list_role_policies(RoleName=ROLE)["PolicyNames"]
        return {
            name: self.iam.get_role_policy(RoleName=ROLE, PolicyName=name)["PolicyDocument"]
            for name in names
        }


def iam_action(service: str, operation: str) -> str:
    return f"{service}:{operation}"


def resource_arn(params: dict[str, Any]) -> str | None:
    # The resource a call acts on, where its parameters name it.
    if "UserName" in params:
        return f"arn:aws:iam::{ACCOUNT_ID}:user/{params['UserName']}"
    if "RoleName" in params:
        return f"arn:aws:iam::{ACCOUNT_ID}:role/{params['RoleName']}"
    return None


def granted(action: str, arn: str | None) -> bool:
    return any(
        action in permission.actions
        and (
            arn is None
            or any(
                fnmatch(
                    arn, resource.format(partition="aws", region="us-east-1", account=ACCOUNT_ID)
                )
                for resource in permission.resources
            )
        )
        for permission in ACTION.permissions
    )


@pytest.fixture
def account():
    with mock_aws():
        iam = boto3.client("iam")
        iam.create_user(UserName=USER)
        iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument="{}")
        dynamodb = boto3.resource("dynamodb")
        table = create_table(dynamodb, naming.ACTIONS_TABLE)

        session = boto3.session.Session()
        made: list[tuple[str, str, dict[str, Any]]] = []

        def count(event_name: str, params: dict[str, Any], **_: Any) -> None:
            _, service, operation = event_name.split(".")
            made.append((service, operation, dict(params)))

        session.events.register("before-parameter-build.*.*", count)
        yield Account(iam, DynamoRecordStore(table), session, made)


def finding_of(event, name: str, **resource: Any) -> Finding:
    finding = normalize(event(name))
    changed = finding.resource.model_copy(update=resource)
    return finding.model_copy(update={"resource": changed})


def user_finding(event, key_id: str) -> Finding:
    return finding_of(event, "guardduty-s3-malicious-ip-caller.json", access_key_id=key_id)


def role_finding(event) -> Finding:
    return finding_of(event, "guardduty-instance-credential-exfiltration.json")


def run_on(account: Account, finding: Finding, incident_id: str = INCIDENT, now=NOW) -> ActionRun:
    target = finding.resource.access_key_id
    action = PlannedAction(
        id=f"{KIND.value}-{target}", kind=KIND, target=target, params=_params(KIND, target, finding)
    )
    return ActionRun(finding, action, incident_id, now, None, account.clients)


def new_key(account: Account, status: str = "Active") -> str:
    key_id = account.iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"]
    if status != "Active":
        account.iam.update_access_key(UserName=USER, AccessKeyId=key_id, Status=status)
    return key_id


def inject(account: Account, operation: str, code: str, status: int = 400) -> None:
    """Make the action's IAM client fail an operation with an AWS error code."""

    def fail(**_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        parsed = {
            "Error": {"Code": code, "Message": f"{code} injected by the test"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        }
        return AWSResponse("https://aws.invalid/", status, {}, None), parsed

    account.clients("iam").meta.events.register(f"before-call.iam.{operation}", fail)


# --- an IAM user's long-term key -----------------------------------------------------------


def test_a_users_key_is_deactivated_verified_kept_and_reactivated(account, event):
    # Given an IAM user's active key, named by an S3 finding
    key_id = new_key(account)
    finding = user_finding(event, key_id)

    # When the revocation runs
    result = run_action(run_on(account, finding), account.records, dry_run=False)
    applied = account.take()

    # Then the key is inactive, not deleted, and recorded with its previous status
    assert result.status is ActionStatus.APPLIED, result.detail
    assert result.detail.startswith(f"deactivated access key {key_id} of IAM user {USER}")
    assert account.key_status(key_id) == "Inactive"
    record = account.records.get(record_id(KIND, key_id))
    assert record.state == {"approach": "deactivate_key", "user": USER, "previous_status": "Active"}
    assert (record.verified, record.expires_at, result.block_id) == (True, None, record.record_id)

    # When it is verified on its own
    check = ACTION.verify(record, account.clients)
    verified = account.take()
    assert check.ok and check.detail == f"access key {key_id} is inactive"

    # When another finding about the same key comes in
    again = run_action(run_on(account, finding, OTHER_INCIDENT), account.records, dry_run=False)
    reapplied = account.take()

    # Then it is already applied, by the first incident, and nothing in the account changed
    assert again.status is ActionStatus.ALREADY_APPLIED, again.detail
    assert INCIDENT in again.detail
    assert reapplied == Counter({"ListAccessKeys": 1})
    assert account.key_status(key_id) == "Inactive"

    # When a person undoes it
    undone = undo_action(record, account.clients, "analyst", "rotated", LATER)
    account.records.save(undone)
    undo_calls = account.take()

    # Then the key is active again, as it was, and the record says who undid it
    assert account.key_status(key_id) == "Active"
    assert undone.status is RecordStatus.UNDONE
    assert undone.verification == f"reactivated access key {key_id} of IAM user {USER}"
    assert applied == Counter(
        {"GetAccessKeyLastUsed": 1, "ListAccessKeys": 2, "UpdateAccessKey": 1}
    )
    assert verified == Counter({"ListAccessKeys": 1})
    assert undo_calls == Counter({"UpdateAccessKey": 1})
    print(f"\nrevoke_credentials user key: apply+verify {dict(applied)}, verify {dict(verified)}")
    print(f"revoke_credentials user key: undo {dict(undo_calls)}")


def test_a_key_found_inactive_stays_inactive_after_the_undo(account, event):
    # Given a key already inactive (a person's doing, or a run that crashed before recording)
    key_id = new_key(account, status="Inactive")

    # When the revocation runs
    result = run_action(run_on(account, user_finding(event, key_id)), account.records, False)
    applied = account.take()

    # Then it is recorded as found, with no write to IAM
    assert result.status is ActionStatus.APPLIED, result.detail
    assert "was already inactive" in result.detail
    record = account.records.get(record_id(KIND, key_id))
    assert record.state["previous_status"] == "Inactive"
    assert "UpdateAccessKey" not in applied

    # When it is undone
    undone = undo_action(record, account.clients, "analyst", "false positive", LATER)

    # Then the key stays inactive: nobody vouched for it
    assert account.key_status(key_id) == "Inactive"
    assert undone.verification == f"access key {key_id} was inactive before; left inactive"
    assert account.take() == Counter()


def test_a_crash_before_recording_is_retried_without_harm(account, event):
    # Given a revocation applied to IAM by a run that died before recording it
    key_id = new_key(account)
    run = run_on(account, user_finding(event, key_id))
    ACTION.apply(run)
    assert account.key_status(key_id) == "Inactive"

    # When the state machine retries the step
    result = run_action(run, account.records, dry_run=False)

    # Then the retry succeeds, and the key stays revoked
    assert result.status is ActionStatus.APPLIED, result.detail
    assert account.key_status(key_id) == "Inactive"


def test_a_key_turned_back_on_fails_verification(account, event):
    # Given a revoked key that someone turned back on
    key_id = new_key(account)
    finding = user_finding(event, key_id)
    run_action(run_on(account, finding), account.records, dry_run=False)
    account.iam.update_access_key(UserName=USER, AccessKeyId=key_id, Status="Active")

    # When another finding about it comes in
    result = run_action(run_on(account, finding, OTHER_INCIDENT), account.records, False)

    # Then the action in force is reported failed, saying the key is active
    assert result.status is ActionStatus.FAILED
    assert result.detail.endswith(f"access key {key_id} is active")


def test_a_key_deleted_since_needs_no_undo(account, event):
    # Given a revoked key that a person deleted since
    key_id = new_key(account)
    run_action(run_on(account, user_finding(event, key_id)), account.records, dry_run=False)
    record = account.records.get(record_id(KIND, key_id))
    account.iam.delete_access_key(UserName=USER, AccessKeyId=key_id)

    # When it is verified and undone
    check = ACTION.verify(record, account.clients)
    undone = undo_action(record, account.clients, "analyst", "cleanup", LATER)

    # Then it still holds, and the undo has nothing to reactivate
    assert (check.ok, check.detail) == (True, f"access key {key_id} no longer exists")
    assert undone.verification.endswith("no longer exists; nothing to reactivate")


def test_a_key_that_does_not_exist_is_not_found(account, event):
    # Given a finding about a key the account does not have
    finding = user_finding(event, "AKIAIOSFODNN7EXAMPLE")

    # When the revocation runs
    result = run_action(run_on(account, finding), account.records, dry_run=False)

    # Then it is not found, and nothing is recorded
    assert result.status is ActionStatus.NOT_FOUND
    assert result.detail == "access key AKIAIOSFODNN7EXAMPLE not found"
    assert account.records.get(record_id(KIND, "AKIAIOSFODNN7EXAMPLE")) is None
    assert account.take() == Counter({"GetAccessKeyLastUsed": 1})


def test_root_credentials_are_left_to_a_person(account, event):
    # Given a finding about root's access key
    key_id = new_key(account)
    finding = finding_of(
        event,
        "guardduty-s3-malicious-ip-caller.json",
        access_key_id=key_id,
        principal="Root",
        principal_id=ACCOUNT_ID,
        user_type="Root",
    )

    # When the revocation runs
    result = run_action(run_on(account, finding), account.records, dry_run=False)

    # Then it fails before any call, saying a person must act
    assert result.status is ActionStatus.FAILED
    assert "root credentials" in result.detail and "a person must act" in result.detail
    assert account.take() == Counter()
    assert account.key_status(key_id) == "Active"


def test_throttling_goes_up_for_the_state_machine_to_retry(account, event):
    # Given IAM throttling the key update
    key_id = new_key(account)
    inject(account, "UpdateAccessKey", "Throttling")

    # When the revocation runs
    # Then the error is transient, and nothing is recorded
    with pytest.raises(TransientAwsError, match="Throttling"):
        run_action(run_on(account, user_finding(event, key_id)), account.records, False)
    assert account.records.get(record_id(KIND, key_id)) is None


# --- a role's sessions ------------------------------------------------------------------


def test_a_roles_sessions_are_revoked_verified_kept_and_restored(account, event):
    # Given an instance role with an inline policy of its own, whose session leaked
    account.iam.put_role_policy(
        RoleName=ROLE, PolicyName="read-data", PolicyDocument=json.dumps(THEIR_POLICY)
    )
    finding = role_finding(event)

    # When the revocation runs
    result = run_action(run_on(account, finding), account.records, dry_run=False)
    applied = account.take()

    # Then the role denies every session issued before now, in our policy beside theirs
    assert result.status is ActionStatus.APPLIED, result.detail
    policies = account.role_policies()
    assert policies["read-data"] == THEIR_POLICY
    assert policies[OUR_POLICY] == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2024-05-01T11:00:07Z"}},
            }
        ],
    }
    record = account.records.get(record_id(KIND, SESSION_KEY))
    assert record.state == {
        "approach": "revoke_sessions",
        "role": ROLE,
        "policy_name": OUR_POLICY,
        "issued_before": "2024-05-01T11:00:07Z",
    }
    assert record.verified is True

    # When it is verified on its own
    check = ACTION.verify(record, account.clients)
    verified = account.take()
    assert check.ok, check.detail

    # When another finding about the same session comes in
    again = run_action(run_on(account, finding, OTHER_INCIDENT, LATER), account.records, False)
    reapplied = account.take()

    # Then it is already applied, and the role is as the first run left it
    assert again.status is ActionStatus.ALREADY_APPLIED, again.detail
    assert reapplied == Counter({"GetRolePolicy": 1})
    assert set(account.role_policies()) == {"read-data", OUR_POLICY}

    # When a person undoes it
    undone = undo_action(record, account.clients, "analyst", "instance rebuilt", LATER)
    undo_calls = account.take()

    # Then only our policy is gone; the role's own stays
    assert account.role_policies() == {"read-data": THEIR_POLICY}
    assert undone.verification.startswith(f"deleted inline policy {OUR_POLICY} from role {ROLE}")
    assert applied == Counter({"PutRolePolicy": 1, "GetRolePolicy": 1})
    assert verified == Counter({"GetRolePolicy": 1})
    assert undo_calls == Counter({"DeleteRolePolicy": 1})
    print(f"\nrevoke_credentials role: apply+verify {dict(applied)}, verify {dict(verified)}")
    print(f"revoke_credentials role: undo {dict(undo_calls)}")


def test_a_role_policy_changed_since_fails_verification(account, event):
    # Given revoked sessions whose deny someone loosened to S3 only
    run_action(run_on(account, role_finding(event)), account.records, dry_run=False)
    record = account.records.get(record_id(KIND, SESSION_KEY))
    loosened = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2024-05-01T11:00:07Z"}},
            }
        ],
    }
    account.iam.put_role_policy(
        RoleName=ROLE, PolicyName=OUR_POLICY, PolicyDocument=json.dumps(loosened)
    )

    # When it is verified
    check = ACTION.verify(record, account.clients)

    # Then it does not hold
    assert (check.ok, check.detail) == (
        False,
        f"inline policy {OUR_POLICY} of role {ROLE} was changed",
    )


def test_a_role_revocation_applied_twice_leaves_one_policy(account, event):
    # Given a revocation written to IAM by a run that died before recording it
    run = run_on(account, role_finding(event))
    ACTION.apply(run)

    # When the state machine retries the step, later
    retry = dataclasses.replace(run, now=LATER)
    result = run_action(retry, account.records, dry_run=False)

    # Then the role holds one policy of ours, with the retry's bound
    assert result.status is ActionStatus.APPLIED, result.detail
    policies = account.role_policies()
    assert list(policies) == [OUR_POLICY]
    condition = policies[OUR_POLICY]["Statement"][0]["Condition"]
    assert condition == {"DateLessThan": {"aws:TokenIssueTime": "2024-05-01T15:30:00Z"}}


def test_a_policy_deleted_since_is_reported_by_verify_and_undo(account, event):
    # Given revoked sessions whose policy a person deleted
    run_action(run_on(account, role_finding(event)), account.records, dry_run=False)
    record = account.records.get(record_id(KIND, SESSION_KEY))
    account.iam.delete_role_policy(RoleName=ROLE, PolicyName=OUR_POLICY)

    # When it is verified and undone
    check = ACTION.verify(record, account.clients)
    undone = undo_action(record, account.clients, "analyst", "cleanup", LATER)

    # Then verification fails, and the undo says it was already gone
    assert (check.ok, check.detail) == (False, f"role {ROLE} has no inline policy {OUR_POLICY}")
    assert undone.verification == f"inline policy {OUR_POLICY} was already gone from role {ROLE}"


def test_a_role_that_does_not_exist_is_not_found(account, event):
    # Given a session of a role the account does not have
    finding = finding_of(event, "guardduty-instance-credential-exfiltration.json", principal="gone")

    # When the revocation runs
    result = run_action(run_on(account, finding), account.records, dry_run=False)

    # Then it is not found, and nothing is recorded
    assert (result.status, result.detail) == (ActionStatus.NOT_FOUND, "role gone not found")
    assert account.records.get(record_id(KIND, SESSION_KEY)) is None


def test_a_service_linked_role_is_left_to_a_person(account, event):
    # Given IAM refusing to change the role, as it does for a service-linked role
    inject(account, "PutRolePolicy", "UnmodifiableEntity")

    # When the revocation runs
    result = run_action(run_on(account, role_finding(event)), account.records, dry_run=False)

    # Then it fails, saying why and that a person must act
    assert result.status is ActionStatus.FAILED
    assert "service-linked" in result.detail and "a person must act" in result.detail


def test_the_declared_permissions_are_exactly_those_called(account, event):
    # Given both kinds of credentials
    key_id = new_key(account)
    runs = [run_on(account, user_finding(event, key_id)), run_on(account, role_finding(event))]

    # When each is applied, verified and undone
    used: set[str] = set()
    for run in runs:
        run_action(run, account.records, dry_run=False)
        record = account.records.get(record_id(KIND, run.action.target))
        ACTION.verify(record, account.clients)
        undo_action(record, account.clients, "analyst", "test", LATER)
        used |= {f"iam:{operation}" for operation in account.take()}

    # Then every declared action was needed, and none beyond them was called
    assert used == {action for permission in ACTION.permissions for action in permission.actions}
