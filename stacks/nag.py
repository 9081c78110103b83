"""cdk-nag's AwsSolutions checks on every synth, and acknowledgments that carry their reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def apply_checks(app: App) -> None:
    """Run AwsSolutions on the whole app; a finding nobody acknowledged fails the synth.

    Acknowledgments are also written to each resource's template Metadata, so a reader of the
    template sees what was accepted and why.
    """
    Validations.of(app).add_plugins(
        AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True)
    )


def acknowledge(scope: IConstruct, rule: str, reason: str, *findings: str) -> None:
    """Accept a rule on one construct and its children, for the named findings only if given.

    `findings` narrows a rule that reports one finding per item, e.g. IAM5's
    "Resource::arn:<AWS::Partition>:ec2:<AWS::Region>:<AWS::AccountId>:network-acl/*".
    """
    ids = [f"{rule}[{finding}]" for finding in findings] or [rule]
    Validations.of(scope).acknowledge(*(Acknowledgment(id=i, reason=reason) for i in ids))
