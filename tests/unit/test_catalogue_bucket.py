"""Blocking a bucket's public access, planned: the name checked, the block described."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cloud_sniper.domain.models import ActionKind, PlannedAction
from cloud_sniper.domain.normalize import normalize
from services.mitigate.catalogue import ActionFailedError, ActionRun, catalogue
from services.mitigate.catalogue.bucket_public_access import (
    ALL_BLOCKED,
    BlockPublicAccess,
    bucket_name,
    describe,
    fully_blocked,
)

NOW = datetime(2024, 5, 1, 11, 0, tzinfo=UTC)
ACLS_ONLY = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": False,
    "RestrictPublicBuckets": False,
}


def no_clients(service_name: str) -> Any:
    raise AssertionError(f"planning called {service_name}")


def run_on(event, target: str | None = None) -> ActionRun:
    finding = normalize(event("guardduty-s3-malicious-ip-caller.json"))
    target = target or finding.resource.bucket_names[0]
    action = PlannedAction(
        id=f"block_public_access-{target}", kind=ActionKind.BLOCK_PUBLIC_ACCESS, target=target
    )
    return ActionRun(finding, action, "inc-0123456789abcdef", NOW, None, no_clients)


@pytest.mark.parametrize(
    ("settings", "blocked"),
    [
        (ALL_BLOCKED, True),
        (ACLS_ONLY, False),
        ({**ALL_BLOCKED, "RestrictPublicBuckets": False}, False),
        ({}, False),
        (None, False),
    ],
)
def test_only_all_four_settings_on_count_as_blocked(settings, blocked):
    # Given a bucket's public access block, or none
    # When it is checked
    # Then it is fully blocked only with all four settings on
    assert fully_blocked(settings) is blocked


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        (None, "no public access block"),
        (ALL_BLOCKED, "all four settings on"),
        (ACLS_ONLY, "BlockPublicAcls, IgnorePublicAcls on"),
        (dict.fromkeys(ALL_BLOCKED, False), "all four settings off"),
    ],
)
def test_a_block_is_described_in_a_few_words(settings, words):
    # Given a public access block
    # When it is described for the report
    # Then the words say which settings are on
    assert describe(settings) == words


@pytest.mark.parametrize(
    "name", ["cloud-sniper-demo-data", "abc", "logs.example.com", "a" * 63, "0-bucket-9"]
)
def test_bucket_names_s3_allows_are_taken(name):
    # Given a name S3 allows for a bucket
    # Then it is taken as it is
    assert bucket_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "ab", "a" * 64, "Upper-Case", "-leading", "trailing-", "two..dots", "a/b"]
)
def test_a_target_that_cannot_be_a_bucket_is_refused(name):
    # Given a target no bucket can be named
    # When it is read as a bucket name
    # Then the error names it and says why
    with pytest.raises(ActionFailedError, match="is not an S3 bucket name"):
        bucket_name(name)


def test_the_sample_findings_bucket_is_planned(event):
    # Given the S3 finding, and clients that fail when called
    run = run_on(event)

    # When it is planned
    # Then the plan names the bucket, reading nothing
    assert BlockPublicAccess().plan(run) == (
        "turn on all four public access block settings of bucket cloud-sniper-demo-data"
    )


def test_a_bad_target_is_planned_as_a_refusal(event):
    # Given a target that cannot be a bucket
    run = run_on(event, target="Not A Bucket")

    # When it is planned
    # Then the plan is a refusal naming it
    assert BlockPublicAccess().plan(run) == "refuse: 'Not A Bucket' is not an S3 bucket name"


def test_the_action_declares_itself():
    # Given the catalogue
    action = catalogue()[ActionKind.BLOCK_PUBLIC_ACCESS]

    # Then the block never expires and asks for the public access block and website reads only
    assert isinstance(action, BlockPublicAccess)
    assert action.expires is False
    (permission,) = action.permissions
    assert sorted(permission.actions) == [
        "s3:GetBucketPublicAccessBlock",
        "s3:GetBucketWebsite",
        "s3:PutBucketPublicAccessBlock",
    ]
    assert permission.resources == ["arn:{partition}:s3:::*"]
    assert permission.reason
