"""Revoking credentials, planned: which key is deactivated, which role denies its sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from cloud_sniper.domain.models import ActionKind, PlannedAction
from cloud_sniper.domain.normalize import normalize
from cloud_sniper.domain.policy import _params
from services.mitigate.catalogue import ActionFailedError, ActionRun, catalogue
from services.mitigate.catalogue.credentials import (
    Approach,
    Holder,
    RevokeCredentials,
    denies_older_sessions,
    deny_older_sessions,
    issue_time,
    policy_name,
    revocation,
    role_name,
)

NOW = datetime(2024, 5, 1, 11, 0, 7, 250000, tzinfo=UTC)
USER_KEY = "AKIAIOSFODNN7EXAMPLE"
SESSION_KEY = "ASIAIOSFODNN7EXAMPLE"
USER = Holder(principal="ci-deployer", principal_id="AIDAEXAMPLEUSERID1234", user_type="IAMUser")
ROLE = Holder(
    principal="cloud-sniper-demo-web",
    principal_id="AROAEXAMPLEROLEID1234:i-0a1b2c3d4e5f60718",
    user_type="AssumedRole",
)


def no_clients(service_name: str) -> Any:
    raise AssertionError(f"planning called {service_name}")


def run_for(event, name: str, incident_id: str = "inc-0123456789abcdef") -> ActionRun:
    finding = normalize(event(name))
    target = finding.resource.access_key_id
    action = PlannedAction(
        id=f"revoke_credentials-{target}",
        kind=ActionKind.REVOKE_CREDENTIALS,
        target=target,
        params=_params(ActionKind.REVOKE_CREDENTIALS, target, finding),
    )
    return ActionRun(finding, action, incident_id, NOW, None, no_clients)


def test_a_users_long_term_key_is_deactivated():
    # Given an IAM user's AKIA key
    # When the revocation is chosen
    chosen = revocation(USER_KEY, USER)

    # Then the key itself is switched off
    assert (chosen.approach, chosen.key_id, chosen.role) == (
        Approach.DEACTIVATE_KEY,
        USER_KEY,
        None,
    )


def test_a_role_session_is_revoked_on_its_role():
    # Given temporary credentials of an assumed role
    # When the revocation is chosen
    chosen = revocation(SESSION_KEY, ROLE)

    # Then the role, named by the finding's principal, denies its older sessions
    assert (chosen.approach, chosen.role) == (Approach.REVOKE_SESSIONS, "cloud-sniper-demo-web")


@pytest.mark.parametrize(
    ("key_id", "holder", "reason"),
    [
        (USER_KEY, Holder(principal="admin", user_type="Root"), "root credentials"),
        (USER_KEY, Holder(principal="Root", user_type="IAMUser"), "root credentials"),
        (USER_KEY, Holder(principal_id="123456789012", user_type="IAMUser"), "root credentials"),
        (SESSION_KEY, Holder(principal="root", user_type="AssumedRole"), "root credentials"),
        (USER_KEY, Holder(principal="ci-deployer"), "user type None"),
        (USER_KEY, Holder(principal="web", user_type="AssumedRole"), "user type AssumedRole"),
        (
            USER_KEY,
            Holder(principal="ci", principal_id="AROAEXAMPLEROLEID1234", user_type="IAMUser"),
            "principal id AROAEXAMPLEROLEID1234",
        ),
        (SESSION_KEY, Holder(principal="ci-deployer", user_type="IAMUser"), "user type IAMUser"),
        (SESSION_KEY, Holder(principal="fed", user_type="FederatedUser"), "FederatedUser"),
        (
            SESSION_KEY,
            Holder(principal="web", principal_id="AIDAEXAMPLEUSERID1234", user_type="AssumedRole"),
            "principal id AIDAEXAMPLEUSERID1234",
        ),
        (
            SESSION_KEY,
            Holder(principal="AROAEXAMPLEROLEID1234:i-0a1b2c3d", user_type="AssumedRole"),
            "principal AROAEXAMPLEROLEID1234",
        ),
        (SESSION_KEY, Holder(user_type="AssumedRole"), "principal None"),
    ],
)
def test_what_it_cannot_tell_is_left_to_a_person(key_id, holder, reason):
    # Given a key whose holder is root, unknown, or told inconsistently
    # When the revocation is chosen
    with pytest.raises(ActionFailedError) as refused:
        revocation(key_id, holder)

    # Then it refuses, saying why and that a person must act
    assert reason in str(refused.value)
    assert str(refused.value).startswith(key_id)
    assert "a person must act" in str(refused.value)


@pytest.mark.parametrize("key_id", ["", "AKIA", "akiaiosfodnn7example", "AIDAEXAMPLEUSERID1234"])
def test_a_target_that_is_no_access_key_is_refused(key_id):
    # Given a target that is not an access key id
    # When the revocation is chosen
    # Then it says so, naming the target
    with pytest.raises(ActionFailedError, match="is not an access key id"):
        revocation(key_id, USER)


@pytest.mark.parametrize(
    ("principal", "role"),
    [
        ("cloud-sniper-demo-web", "cloud-sniper-demo-web"),
        ("web/i-0a1b2c3d4e5f60718", "web"),
        ("web:botocore-session-1714561207", "web"),
        ("arn:aws:sts::123456789012:assumed-role/web/i-0a1b2c3d", "web"),
        ("arn:aws-us-gov:iam::123456789012:role/service/web", "web"),
        ("AROAEXAMPLEROLEID1234:i-0a1b2c3d4e5f60718", None),
        ("AROAEXAMPLEROLEID1234", None),
        ("a role with spaces", None),
        ("x" * 65, None),
        ("", None),
        (None, None),
    ],
)
def test_the_role_is_read_from_the_principal(principal, role):
    # Given the principal a finding names for a role session
    # When the role is read from it
    # Then it is the role's name, or None where a role id or nonsense leaves it unknown
    assert role_name(principal) == role


def test_the_policy_is_the_consoles_revoke_older_sessions_under_our_name():
    # Given the time of the revocation, off UTC
    moment = datetime(2024, 5, 1, 13, 0, 7, tzinfo=timezone(timedelta(hours=2)))

    # When the policy is written
    bound = issue_time(moment)
    document = deny_older_sessions(bound)

    # Then it denies everything to sessions issued before that second, in UTC
    assert bound == "2024-05-01T11:00:07Z"
    assert document == {
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
    assert policy_name("inc-0123456789abcdef") == "cloud-sniper-revoke-inc-0123456789abcdef"


def test_a_policy_name_keeps_to_what_iam_allows():
    # Given an incident id with characters IAM policy names refuse, and a long one
    # When the policy is named
    odd, long = policy_name("inc/1 2#3"), policy_name("i" * 200)

    # Then the name is sanitized and at most 128 characters
    assert odd == "cloud-sniper-revoke-inc-1-2-3"
    assert len(long) == 128


@pytest.mark.parametrize(
    ("statement", "held"),
    [
        # The console writes a single statement object
        (
            {
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2024-05-01T11:00:07Z"}},
            },
            True,
        ),
        (
            [
                {
                    "Effect": "Deny",
                    "Action": ["*"],
                    "Resource": ["*"],
                    "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2024-05-01T11:00:07Z"}},
                }
            ],
            True,
        ),
        (
            {
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2024-04-01T00:00:00Z"}},
            },
            False,
        ),
        (
            {
                "Effect": "Allow",
                "Action": "*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2024-05-01T11:00:07Z"}},
            },
            False,
        ),
        (
            {
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2024-05-01T11:00:07Z"}},
            },
            False,
        ),
        (
            {
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": "2024-05-01T11:00:07Z"}},
            },
            False,
        ),
        ({"Effect": "Deny", "Action": "*", "Resource": "*"}, False),
        ([], False),
    ],
)
def test_verification_reads_the_deny_of_older_sessions(statement, held):
    # Given a role's inline policy, as read back
    document = {"Version": "2012-10-17", "Statement": statement}

    # When it is checked for our deny at the recorded time
    # Then only Deny * on * with that very bound counts
    assert denies_older_sessions(document, "2024-05-01T11:00:07Z") is held


def test_a_users_key_is_planned_from_the_sample_finding(event):
    # Given the S3 finding of a user's key, and clients that fail when called
    run = run_for(event, "guardduty-s3-malicious-ip-caller.json")

    # When it is planned
    # Then it names the key and the user, reading nothing
    assert RevokeCredentials().plan(run) == (
        "deactivate access key AKIAIOSFODNN7EXAMPLE of IAM user ci-deployer"
    )


def test_a_role_session_is_planned_from_the_sample_finding(event):
    # Given the instance credential exfiltration finding: an instance role's session
    run = run_for(event, "guardduty-instance-credential-exfiltration.json")

    # When it is planned
    plan = RevokeCredentials().plan(run)

    # Then the role's sessions issued before now are denied by our policy for the incident
    assert plan == (
        "deny every session of role cloud-sniper-demo-web issued before 2024-05-01T11:00:07Z "
        "(inline policy cloud-sniper-revoke-inc-0123456789abcdef), "
        "as ASIAIOSFODNN7EXAMPLE is one of them"
    )
    assert run.action.params["principal_id"] == "AROAEXAMPLEROLEID1234:i-0a1b2c3d4e5f60718"


def test_a_root_key_is_planned_as_a_refusal(event):
    # Given the user finding, told as root's key
    run = run_for(event, "guardduty-s3-malicious-ip-caller.json")
    resource = run.finding.resource.model_copy(update={"user_type": "Root", "principal": "root"})
    finding = run.finding.model_copy(update={"resource": resource})
    action = run.action.model_copy(
        update={"params": _params(ActionKind.REVOKE_CREDENTIALS, run.action.target, finding)}
    )

    # When it is planned
    plan = RevokeCredentials().plan(ActionRun(finding, action, "inc-1", NOW, None, no_clients))

    # Then the plan is a refusal
    assert plan.startswith("refuse to revoke AKIAIOSFODNN7EXAMPLE: root credentials")


def test_a_decision_without_the_principal_id_falls_back_to_the_finding(event):
    # Given a decision made before its parameters named the principal id, about root's key
    run = run_for(event, "guardduty-s3-malicious-ip-caller.json")
    resource = run.finding.resource.model_copy(update={"principal_id": "123456789012"})
    finding = run.finding.model_copy(update={"resource": resource})
    action = run.action.model_copy(
        update={"params": {"principal": "ci-deployer", "user_type": "IAMUser"}}
    )

    # When it is planned
    plan = RevokeCredentials().plan(ActionRun(finding, action, "inc-1", NOW, None, no_clients))

    # Then the finding's principal id, the account's, still makes it a refusal
    assert "root credentials" in plan


def test_the_action_declares_itself():
    # Given the catalogue
    action = catalogue()[ActionKind.REVOKE_CREDENTIALS]

    # Then revocation never expires, and every wildcard resource carries its reason
    assert isinstance(action, RevokeCredentials)
    assert action.expires is False
    assert {a for p in action.permissions for a in p.actions} == {
        "iam:GetAccessKeyLastUsed",
        "iam:ListAccessKeys",
        "iam:UpdateAccessKey",
        "iam:PutRolePolicy",
        "iam:GetRolePolicy",
        "iam:DeleteRolePolicy",
    }
    for permission in action.permissions:
        assert permission.resources != ["*"]
        assert all(r.startswith("arn:{partition}:iam::{account}:") for r in permission.resources)
        assert permission.reason
