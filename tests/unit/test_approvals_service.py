"""The approvals service's rules: who is an approver, what an answer holds, how it resumes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from cloud_sniper.domain import naming
from cloud_sniper.domain.approvals import ApprovalRecord
from cloud_sniper.domain.models import ApprovalStatus, OnApprovalTimeout
from services.approvals import access, service
from services.approvals.access import AccessDeniedError, Caller, CallerKind
from services.approvals.service import (
    BadRequestError,
    ConflictError,
    Ports,
    TaskGoneError,
    Verdict,
)
from services.approvals.settings import Settings
from services.decide.approval_request import ApprovalRequest, new_record

ACCOUNT = "111122223333"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
NOW = datetime(2024, 5, 1, 10, 35, tzinfo=UTC)


class Directory:
    """The approvers as IAM would list them, counting what was asked."""

    def __init__(self, members=(ALICE,), roles=None) -> None:
        self.members = frozenset(members)
        self.roles = roles or {}
        self.asked: list[str] = []

    @property
    def group(self) -> str:
        return naming.APPROVERS_GROUP

    def group_members(self) -> frozenset[str]:
        self.asked.append("group")
        return self.members

    def role_arn(self, role_name: str) -> str | None:
        self.asked.append(role_name)
        return self.roles.get(role_name)


class Store:
    """The approvals table in memory, with the conditions the DynamoDB adapter writes under."""

    def __init__(self, *records: ApprovalRecord) -> None:
        self.records = {record.approval_id: record for record in records}

    def get(self, approval_id):
        return self.records.get(approval_id)

    def scan(self, status):
        return [r for r in self.records.values() if status is None or r.status == status]

    def record_answer(self, answered):
        current = self.records.get(answered.approval_id)
        if current is None or current.status != ApprovalStatus.PENDING:
            return False
        if current.token != answered.token:
            return False
        self.records[answered.approval_id] = answered
        return True

    def move(self, approval_id, status, expected):
        current = self.records[approval_id]
        if current.status != expected:
            return False
        update = {"status": status, "approver": None, "reason": None, "answered_at": None}
        self.records[approval_id] = current.model_copy(update=update)
        return True


class Tasks:
    """The waiting tasks: records each answer, or fails as Step Functions would."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.sent: list[tuple] = []

    def succeed(self, token, output):
        self._send(("success", token, output))

    def fail(self, token, error, cause):
        self._send(("failure", token, error, cause))

    def _send(self, answer):
        if self.error is not None:
            raise self.error
        self.sent.append(answer)


def record(event, name="request-approval.json", **update) -> ApprovalRecord:
    request = ApprovalRequest.model_validate(event(name))
    return new_record(request, now=NOW - timedelta(minutes=5)).model_copy(update=update)


def body(reason: str) -> str:
    return json.dumps({"reason": reason})


# --- who may answer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arn", "kind", "name"),
    [
        (ALICE, CallerKind.USER, "alice"),
        (f"arn:aws:iam::{ACCOUNT}:user/team/soc/alice", CallerKind.USER, "alice"),
        (
            f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Responder_0a1b/alice@example.com",
            CallerKind.ASSUMED_ROLE,
            "AWSReservedSSO_Responder_0a1b",
        ),
        (f"arn:aws:iam::{ACCOUNT}:root", CallerKind.OTHER, None),
        (f"arn:aws:sts::{ACCOUNT}:federated-user/alice", CallerKind.OTHER, None),
    ],
)
def test_the_caller_is_read_from_the_signers_arn(arn, kind, name):
    caller = access.caller_of(arn)

    assert (caller.kind, caller.name, caller.account_id) == (kind, name, ACCOUNT)


def test_a_request_without_an_iam_identity_is_refused():
    with pytest.raises(AccessDeniedError, match="carries no IAM identity: sign it with SigV4"):
        access.caller_of(None)


def test_a_user_of_the_group_is_an_approver_and_one_outside_is_not():
    directory = Directory()

    access.authorize(access.caller_of(ALICE), directory, ACCOUNT, ())
    with pytest.raises(AccessDeniedError, match="adds the user to the IAM group cloud-sniper"):
        access.authorize(access.caller_of(f"{ALICE}-not"), directory, ACCOUNT, ())


def test_a_caller_of_another_account_is_refused_before_iam_is_asked():
    # Given bob of another account, even one whose ARN the group would list
    bob = "arn:aws:iam::444455556666:user/bob"
    directory = Directory(members=(bob,))

    # When he calls, then he is refused for his account, and IAM was not asked
    with pytest.raises(AccessDeniedError, match="is not of account 111122223333"):
        access.authorize(access.caller_of(bob), directory, ACCOUNT, ())
    assert directory.asked == []


def test_a_role_session_is_an_approver_only_when_its_role_matches_a_pattern():
    # Given an Identity Center role, its path in its ARN but not in its sessions'
    role = "AWSReservedSSO_Responder_0a1b"
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/eu-west-1/{role}"
    session = access.caller_of(f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/alice")
    directory = Directory(roles={role: role_arn})
    pattern = (
        f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/*AWSReservedSSO_Responder_*"
    )

    # Then a pattern matching the role's full ARN makes its sessions approvers
    access.authorize(session, directory, ACCOUNT, (pattern,))

    # And with no pattern, or none that matches, they are refused, saying why
    with pytest.raises(AccessDeniedError, match="no role is, unless the deployment names it"):
        access.authorize(session, directory, ACCOUNT, ())
    other = f"arn:aws:iam::{ACCOUNT}:role/Admin*"
    with pytest.raises(AccessDeniedError, match=f"its role {role_arn} matches none"):
        access.authorize(session, directory, ACCOUNT, (other,))


def test_a_session_of_a_role_that_is_gone_is_refused():
    session = access.caller_of(f"arn:aws:sts::{ACCOUNT}:assumed-role/Deleted/alice")

    with pytest.raises(AccessDeniedError, match="its role Deleted matches none"):
        access.authorize(session, Directory(), ACCOUNT, (f"arn:aws:iam::{ACCOUNT}:role/*",))


def test_the_root_user_is_not_an_approver():
    root = Caller(arn=f"arn:aws:iam::{ACCOUNT}:root", kind=CallerKind.OTHER, account_id=ACCOUNT)

    with pytest.raises(AccessDeniedError, match="answered by the IAM users of the group"):
        access.authorize(root, Directory(), ACCOUNT, ())


@pytest.mark.parametrize(
    "pattern",
    ["arn:aws:iam::111122223333:user/alice", "AWSReservedSSO_*", "arn:aws:iam::1234:role/x"],
)
def test_a_role_pattern_must_be_a_role_arn(pattern):
    with pytest.raises(ValueError, match="is not a role ARN pattern"):
        access.check_role_pattern(pattern)


# --- the function's settings -------------------------------------------------------------------


def test_settings_split_the_role_patterns_and_name_what_is_missing():
    settings = Settings.from_env(
        {
            "APPROVALS_TABLE": naming.APPROVALS_TABLE,
            "APPROVERS_GROUP": naming.APPROVERS_GROUP,
            "APPROVER_ROLE_PATTERNS": " arn:aws:iam::*:role/A* ,, arn:aws:iam::111122223333:role/B",
        }
    )

    assert settings.approver_role_patterns == (
        "arn:aws:iam::*:role/A*",
        "arn:aws:iam::111122223333:role/B",
    )
    assert settings.membership_max_age_seconds == 60
    with pytest.raises(ValueError, match="APPROVERS_GROUP: Field required"):
        Settings.from_env({"APPROVALS_TABLE": naming.APPROVALS_TABLE})
    with pytest.raises(ValueError, match="APPROVER_ROLE_PATTERNS: .*not a role ARN pattern"):
        Settings.from_env(
            {
                "APPROVALS_TABLE": naming.APPROVALS_TABLE,
                "APPROVERS_GROUP": naming.APPROVERS_GROUP,
                "APPROVER_ROLE_PATTERNS": "everyone",
            }
        )


# --- what an answer holds ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (None, "it is empty"),
        ("  ", "it is empty"),
        ("not json", "it is not JSON"),
        ("[1]", "body: Input should be an object"),
        ("{}", "reason: Field required"),
        (body("   "), "reason: String should have at least 1 character"),
        ('{"reason": 5}', "reason: Input should be a valid string"),
        (body("x" * 1001), "reason: String should have at most 1000 characters"),
        (
            '{"reason": "ok", "approver": "someone"}',
            "approver is not a field of an answer (the approver is who signed the request)",
        ),
    ],
)
def test_a_bad_answer_body_names_what_is_wrong(text, expected):
    with pytest.raises(BadRequestError) as refused:
        service.parse_body(text)

    assert str(refused.value).startswith('the body must be a JSON object {"reason": ')
    assert expected in str(refused.value)


def test_a_reason_is_kept_without_its_surrounding_blanks():
    assert service.parse_body(body("  partner address \n")).reason == "partner address"


@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, ApprovalStatus.PENDING), ("all", None), (" Denied ", ApprovalStatus.DENIED)],
)
def test_a_listing_asks_for_one_status_or_all(given, expected):
    assert service.status_filter(given) == expected


# --- how an answer resumes the execution -------------------------------------------------------


def test_an_approval_resumes_the_task_with_the_approval_as_its_output(event):
    waiting = record(event)
    tasks = Tasks()
    ports = Ports(Store(waiting), tasks, Directory())

    approval = service.answer(ports, waiting.approval_id, Verdict.APPROVE, body("ok"), ALICE, NOW)

    (sent,) = tasks.sent
    assert sent[:2] == ("success", waiting.token)
    assert json.loads(sent[2]) == json.loads(approval.model_dump_json())
    assert waiting.token not in sent[2]


def test_a_denial_fails_the_task_with_the_denial_error_and_the_approval_as_cause(event):
    waiting = record(event)
    tasks = Tasks()
    ports = Ports(Store(waiting), tasks, Directory())

    service.answer(ports, waiting.approval_id, Verdict.DENY, body("our CDN"), ALICE, NOW)

    ((kind, token, error, cause),) = tasks.sent
    assert (kind, token, error) == ("failure", waiting.token, naming.APPROVAL_DENIED_ERROR)
    denial = json.loads(cause)
    assert (denial["status"], denial["approver"], denial["reason"]) == ("denied", ALICE, "our CDN")
    assert waiting.token not in cause


def test_an_answer_past_the_expiry_times_the_approval_out_unanswered(event):
    # Given an approval whose expiry has passed, and a policy that denies on timeout
    waiting = record(event, expires_at=NOW - timedelta(seconds=1))
    store, tasks = Store(waiting), Tasks()

    # When it is answered, then it is refused, timed out, and no task is answered
    with pytest.raises(ConflictError, match=f"^approval {waiting.approval_id} expired at "):
        service.answer(
            Ports(store, tasks, Directory()),
            waiting.approval_id,
            Verdict.APPROVE,
            body("x"),
            ALICE,
            NOW,
        )
    assert store.records[waiting.approval_id].status == ApprovalStatus.TIMED_OUT
    assert tasks.sent == []


def test_an_answer_past_the_expiry_of_an_approval_to_escalate_leaves_it_pending(event):
    # Given an approval past its first expiry, which the policy escalates
    waiting = record(event, "request-approval-escalate.json", expires_at=NOW)
    assert waiting.on_timeout == OnApprovalTimeout.ESCALATE
    store = Store(waiting)

    # When it is answered, then it is refused, and left for the escalation to ask again
    with pytest.raises(ConflictError, match="it is escalated: answer it once it is asked again"):
        service.answer(
            Ports(store, Tasks(), Directory()),
            waiting.approval_id,
            Verdict.DENY,
            body("x"),
            ALICE,
            NOW,
        )
    assert store.records[waiting.approval_id].status == ApprovalStatus.PENDING


def test_an_escalated_approval_times_out_for_good(event):
    # Given an escalated approval whose task no longer waits: the second timeout is final
    waiting = record(
        event, "request-approval-escalate.json", escalated_at=NOW - timedelta(minutes=1)
    )
    store = Store(waiting)
    ports = Ports(store, Tasks(TaskGoneError("TaskTimedOut")), Directory())

    # When it is answered, then it is refused and timed out, without the answer
    with pytest.raises(ConflictError, match="no longer waits for it"):
        service.answer(ports, waiting.approval_id, Verdict.APPROVE, body("late"), ALICE, NOW)
    stored = store.records[waiting.approval_id]
    assert (stored.status, stored.approver) == (ApprovalStatus.TIMED_OUT, None)
