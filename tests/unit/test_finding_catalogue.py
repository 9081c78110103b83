"""The finding-type catalogue in the docs agrees with the data and the default policy."""

from pathlib import Path

import pytest

from cloud_sniper.domain.models import ActionKind, Mode
from cloud_sniper.domain.policy import load_policy
from cloud_sniper.finding_catalogue import DEFAULT_POLICY, catalogue_markdown, decisions_for
from cloud_sniper.synthetic_findings import finding_types

CATALOGUE = Path(__file__).resolve().parents[2] / "docs" / "finding-types.md"
TYPES = {row.type: row for row in finding_types()}


def test_the_docs_table_is_the_one_the_data_and_policy_give():
    # Given the table kept in the docs, when it is generated again from the data and the policy,
    # then it is the same: a policy change shows in the docs or fails here
    assert CATALOGUE.read_text() == catalogue_markdown(), (
        "docs/finding-types.md is stale: "
        "run `.venv/bin/python -m cloud_sniper.finding_catalogue > docs/finding-types.md`"
    )


def test_every_type_has_a_row_and_a_decision():
    table = CATALOGUE.read_text()

    for name in TYPES:
        assert f"| {name} |" in table.replace("\\|", "|"), name


@pytest.mark.parametrize(
    ("finding_type", "mode", "rule", "kinds"),
    [
        ("UnauthorizedAccess:EC2/SSHBruteForce", "auto", "brute-force-inbound", {"nacl_block"}),
        ("Recon:EC2/PortProbeUnprotectedPort", "ignore", "recon-low", set()),
        (
            "UnauthorizedAccess:IAMUser/TorIPCaller",
            "auto",
            "api-from-malicious-address",
            {"waf_block"},
        ),
        ("Backdoor:EC2/C&CActivity.B", "approval", "compromised-workload-c2", {"isolate_instance"}),
        ("Trojan:EC2/DropPoint!DNS", "approval", "compromised-workload-c2", {"c2_block"}),
        ("Backdoor:EC2/Spambot", "approval", "instance-attacks-others", {"isolate_instance"}),
        (
            "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
            "approval",
            "compromised-credentials",
            {"revoke_credentials"},
        ),
        (
            "Policy:S3/BucketPublicAccessGranted",
            "approval",
            "bucket-made-public",
            {"block_public_access"},
        ),
        ("Policy:IAMUser/RootCredentialUsage", "notify", "high-priority-notify", set()),
        ("Stealth:IAMUser/CloudTrailLoggingDisabled", "notify", "high-priority-notify", set()),
        ("PenTest:IAMUser/KaliLinux", "notify", "high-priority-notify", set()),
    ],
)
def test_each_family_gets_the_decision_the_readme_promises(finding_type, mode, rule, kinds):
    # Given a realistic finding of a family's type on its first resource type
    (first, *_) = decisions_for(TYPES[finding_type], load_policy(DEFAULT_POLICY))

    # Then the family's rule decides, planning its actions (run now, or not yet available)
    decision = first.decision
    assert (decision.mode, decision.rule) == (Mode(mode), rule)
    planned = {a.kind for a in decision.actions + decision.unavailable}
    assert {ActionKind(kind) for kind in kinds} <= planned
