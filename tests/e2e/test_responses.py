"""Undoing from the command line, as a person does it after the demo: list, roll back, release.

The demo runs on the local server with every approval granted, so the response catalogue
isolates the app instance, cuts its C2, revokes the leaked keys and closes the public bucket;
the commands then run in other processes against the same emulated account.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sniper.local.account import load_estate
from cloud_sniper.local.runtime import ACCOUNT, LOCAL_APPROVER, client_factory
from cloud_sniper.local.server import ServerStatus

pytestmark = pytest.mark.e2e

ANALYST_REASON = "the bucket serves the public site"


class Cli:
    """The cloud-sniper command, run in its own process against one state folder."""

    def __init__(self, home: Path, cwd: Path) -> None:
        self.home, self.cwd = home, cwd

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cloud_sniper.cli", *args],
            capture_output=True,
            text=True,
            env={**os.environ, "CLOUD_SNIPER_HOME": str(self.home)},
            cwd=self.cwd,
            timeout=300,
        )

    def json(self, *args: str) -> Any:
        done = self(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory, assembly_dir: Path) -> Iterator[Cli]:
    """A local server of its own, on the session's assembly, stopped when the module ends."""
    folder = tmp_path_factory.mktemp("responses")
    home = folder / "state"
    home.mkdir()
    (home / "cdk.out").symlink_to(assembly_dir, target_is_directory=True)
    command = Cli(home, folder)
    started = command("local", "up")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = json.loads((home / "server.json").read_text())["pid"]
    try:
        yield command
    finally:
        command("local", "down")
        _end(pid)


def _end(pid: int) -> None:
    """Make sure the server this module started is gone, even if its shutdown hangs."""
    for _ in range(300):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def account(cli: Cli) -> Any:
    """Clients on the local server's emulated account."""
    status = ServerStatus(**json.loads((cli.home / "server.json").read_text()))
    return client_factory(endpoint_url=status.endpoint_url)


@pytest.fixture(scope="module")
def estate(account: Any) -> dict[str, str]:
    return load_estate(account)


@pytest.fixture(scope="module")
def before(account: Any, estate: dict[str, str]) -> dict[str, Any]:
    """What the demo is about to change, as it is before the demo."""
    return observe(account, estate)


@pytest.fixture(scope="module")
def demo(cli: Cli, account: Any, estate: dict[str, str], before: dict[str, Any]) -> dict:
    """The demo with every approval granted: its document, and the account right after."""
    document = cli.json("demo", "--approve", "all")
    return {"findings": document["findings"], "after": observe(account, estate)}


def observe(account: Any, estate: dict[str, str]) -> dict[str, Any]:
    """What the response catalogue acts on in the demo estate."""
    s3 = account("s3")
    try:
        block = s3.get_public_access_block(Bucket=estate["public_bucket"])
    except s3.exceptions.ClientError:
        public_access_block = None
    else:
        public_access_block = block["PublicAccessBlockConfiguration"]
    instance = account("ec2").describe_instances(InstanceIds=[estate["app_instance"]])
    (interface,) = instance["Reservations"][0]["Instances"][0]["NetworkInterfaces"]
    membership = account("autoscaling").describe_auto_scaling_instances(
        InstanceIds=[estate["app_instance"]]
    )["AutoScalingInstances"]
    iam = account("iam")
    keys = iam.list_access_keys(UserName=estate["ci_user"])["AccessKeyMetadata"]
    return {
        "public_access_block": public_access_block,
        "groups": sorted(group["GroupId"] for group in interface["Groups"]),
        "group_names": sorted(group["GroupName"] for group in interface["Groups"]),
        "lifecycle": [item["LifecycleState"] for item in membership],
        "ci_key": {key["AccessKeyId"]: key["Status"] for key in keys},
        "role_policies": iam.list_role_policies(RoleName=estate["web_role"])["PolicyNames"],
    }


def by_type(findings: list[dict], finding_type: str) -> dict:
    (finding,) = [item for item in findings if item["type"] == finding_type]
    return finding


def incident_of(cli: Cli, kind: str) -> str:
    records = cli.json("actions", "list", "--all")
    (incident,) = {record["incident_id"] for record in records if record["kind"] == kind}
    return incident


def test_the_approved_demo_isolates_the_instance_revokes_the_keys_and_closes_the_bucket(
    demo, before, estate
):
    # Given the demo estate (an open bucket, an active key, an instance in service)
    assert before["public_access_block"] is None
    assert before["ci_key"] == {estate["ci_access_key"]: "Active"}
    assert before["lifecycle"] == ["InService"]

    # When the demo ran with every approval granted (the fixture)
    findings, after = demo["findings"], demo["after"]

    # Then each response of the catalogue was applied
    statuses = {
        (action["kind"], action["target"]): action["status"]
        for finding in findings
        for action in finding["actions"]
    }
    assert statuses[("isolate_instance", estate["app_instance"])] == "applied"
    assert statuses[("revoke_credentials", estate["ci_access_key"])] == "applied"
    assert statuses[("revoke_credentials", estate["web_role_session_key"])] == "applied"
    assert statuses[("block_public_access", estate["public_bucket"])] == "applied"
    bucket = by_type(findings, "Policy:S3/BucketPublicAccessGranted")
    assert (bucket["decision"]["mode"], bucket["outcome"]) == ("approval", "mitigated")
    # And the account shows it: the bucket closed, the key off, the role's sessions denied,
    # the instance in its isolation group and out of service
    assert after["public_access_block"] == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"),
        True,
    )
    assert after["ci_key"] == {estate["ci_access_key"]: "Inactive"}
    assert len(after["role_policies"]) == len(before["role_policies"]) + 1
    assert after["groups"] != before["groups"]
    assert all(name.startswith("cloud-sniper-isolation-") for name in after["group_names"])
    assert after["lifecycle"] == ["Standby"]
    # And the notify path is still shown, by the CloudTrail finding
    trail = by_type(findings, "Stealth:IAMUser/CloudTrailLoggingDisabled")
    assert (trail["decision"]["mode"], trail["outcome"]) == ("notify", "notified")


def test_the_demos_approvals_were_answered_through_the_approvals_api(cli, demo):
    # When a person lists the approved approvals from another process, and shows one
    approved = cli.json("approvals", "list", "--status", "approved")
    waiting = [finding for finding in demo["findings"] if finding["decision"]["mode"] == "approval"]
    shown = cli("approvals", "show", approved[0]["approval_id"])

    # Then each approval the demo asked for was approved by the local caller, with the reason
    assert len(approved) == len(waiting)
    approver = f"arn:aws:iam::{ACCOUNT}:user/{LOCAL_APPROVER}"
    assert {item["approver"] for item in approved} == {approver}
    assert {item["reason"] for item in approved} == {"approved by `cloud-sniper demo --approve`"}
    assert all("token" not in item for item in approved)
    assert shown.returncode == 0, shown.stderr
    assert f"by {approver}" in shown.stdout

    # And answering one again is refused with the first answer, the exit status saying so
    again = cli("approvals", "deny", approved[0]["approval_id"], "--reason", "second thoughts")
    assert again.returncode == 1
    assert "was already answered: approved" in again.stderr


def test_actions_list_shows_what_the_catalogue_did(cli, demo, estate):
    # When a person lists the actions, as JSON and as a table
    records = cli.json("actions", "list", "--all")
    table = cli("actions", "list", "--all")

    # Then each action of the demo is there with its incident, the isolation until released
    targets = {(record["kind"], record["target"]) for record in records}
    assert {
        ("isolate_instance", estate["app_instance"]),
        ("revoke_credentials", estate["ci_access_key"]),
        ("revoke_credentials", estate["web_role_session_key"]),
        ("block_public_access", estate["public_bucket"]),
    } <= targets
    assert all(record["incident_id"].startswith("inc-") for record in records)
    assert table.returncode == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if estate["app_instance"] in row)
    assert "until released" in line
    assert "blocks list" in cli("actions", "list", "--help").stdout


def test_rolling_back_the_bucket_closure_restores_the_bucket_once(cli, demo, account, estate):
    # Given the incident of the bucket closure
    incident = incident_of(cli, "block_public_access")

    # When a person rolls it back, then again
    first = cli("rollback", incident, "--reason", ANALYST_REASON)
    second = cli("rollback", incident, "--reason", ANALYST_REASON)

    # Then the bucket is as it was before the demo: no public access block
    assert first.returncode == 0, first.stderr
    assert "block_public_access" in first.stdout
    assert observe(account, estate)["public_access_block"] is None
    # And the second rollback finds nothing in force
    assert second.returncode == 0, second.stderr
    assert "nothing in force" in second.stdout
    # And the record says who undid it, when and why
    (undone,) = [
        record
        for record in cli.json("actions", "list", "--all", "--incident", incident)
        if record["kind"] == "block_public_access"
    ]
    assert undone["status"] == "undone"
    assert undone["undo_reason"] == ANALYST_REASON
    assert undone["undone_by"] and undone["undone_at"]
    assert undone["record_id"] not in {r["record_id"] for r in cli.json("actions", "list")}


def test_rolling_back_an_incident_lifts_its_blocks_too(cli, demo, account):
    # Given the SSH brute force incident, whose address is blocked in WAF and a network ACL
    blocks = cli.json("blocks", "list")
    (incident,) = {item["incident_id"] for item in blocks if item["target"] == "45.155.205.233/32"}

    # When a person rolls it back
    done = cli.json("rollback", incident, "--reason", "a partner's scanner")

    # Then both blocks are lifted and recorded as rolled back
    assert {item["kind"] for item in done["undone"]} == {"waf_block", "nacl_block"}
    assert done["failed"] == {}
    lifted = [
        item for item in cli.json("blocks", "list", "--all") if item["incident_id"] == incident
    ]
    assert {item["removed_reason"] for item in lifted} == {"rolled_back"}
    assert {item["removal_note"] for item in lifted} == {"a partner's scanner"}
    assert all(item["removed_by"] for item in lifted)
    assert "45.155.205.233/32" not in {item["target"] for item in cli.json("blocks", "list")}


def test_releasing_the_instance_restores_its_security_groups(cli, demo, before, account, estate):
    # When a person releases the isolated instance, then tries again
    released = cli("release", estate["app_instance"], "--reason", "rebuilt from a clean image")
    again = cli("release", estate["app_instance"], "--reason", "rebuilt from a clean image")

    # Then its network interface has its groups back, and it is in service again
    assert released.returncode == 0, released.stderr
    now = observe(account, estate)
    assert now["groups"] == before["groups"]
    assert now["lifecycle"] == ["InService"]
    # And a second release says it is not isolated any more
    assert again.returncode == 1
    assert f"instance {estate['app_instance']} is not isolated" in again.stderr


def test_an_unknown_incident_is_a_clear_error(cli, demo):
    done = cli("rollback", "inc-0000000000000000", "--reason", "typo")

    assert done.returncode == 1
    assert "no incident inc-0000000000000000" in done.stderr
