"""The cloud-sniper command as a user runs it: files in, one JSON document and an exit status."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud_sniper.cli import EXIT_USAGE, main

pytestmark = pytest.mark.e2e

EVENTS = Path(__file__).parent.parent / "events"


def cloud_sniper(*args: str, home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "CLOUD_SNIPER_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "cloud_sniper.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def home(tmp_path: Path, assembly_dir: Path) -> Path:
    """A state folder whose assembly is the session's, so the command does not synthesize again."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "cdk.out").symlink_to(assembly_dir, target_is_directory=True)
    return state


def test_run_processes_the_good_findings_and_reports_the_rejected_ones(tmp_path, home):
    # Given a JSON lines file with a valid finding and a record without severity
    good = json.loads((EVENTS / "guardduty-ssh-brute-force.json").read_text())
    bad = json.loads((EVENTS / "invalid-missing-severity.json").read_text())
    findings = tmp_path / "findings.jsonl"
    findings.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")

    # When the user runs them through the local pipeline, as a dry run, asking for JSON
    done = cloud_sniper(
        "run", str(findings), "--dry-run", "--json", "--ephemeral", home=home, cwd=tmp_path
    )

    # Then the exit status says one was rejected, and stdout is one document saying which
    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    (processed,) = document["findings"]
    assert processed["finding_id"] == good["detail"]["id"]
    assert processed["execution"]["status"] == "SUCCEEDED"
    assert processed["execution"]["name"].startswith("dry-")
    assert processed["decision"]["mode"]
    assert all(action["status"] == "planned" for action in processed["actions"])
    (rejected,) = document["rejected"]
    assert rejected["source"].endswith("findings.jsonl#2")
    assert "severity" in rejected["error"]
    assert list((tmp_path / "out").rglob("*.md")), "the incident report is written under ./out"


def test_a_usage_error_exits_with_2(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["run"])

    assert exited.value.code == EXIT_USAGE
    assert "PATH" in capsys.readouterr().err


def test_commands_that_need_the_local_server_say_how_to_start_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CLOUD_SNIPER_HOME", str(tmp_path / "nothing-running"))

    status = main(["approvals", "list"])

    assert status == 1
    assert "cloud-sniper local up" in capsys.readouterr().err


def test_the_demo_shows_every_path_of_the_pipeline(tmp_path, home):
    # When a newcomer runs the demo and lets it deny every approval
    done = cloud_sniper(
        "demo", "--ephemeral", "--approve", "none", "--json", home=home, cwd=tmp_path
    )

    # Then each path has at least one finding, and every finding has its report under ./out
    assert done.returncode == 0, done.stderr
    findings = json.loads(done.stdout)["findings"]
    outcomes = {finding["outcome"] for finding in findings}
    modes = {finding["decision"]["mode"] for finding in findings}
    assert modes == {"auto", "approval", "notify", "ignore"}
    assert {"mitigated", "denied", "notified", "ignored", "refused", "failed"} <= outcomes
    assert all(finding["reports"] for finding in findings)


def test_a_policy_under_test_decides_instead_of_the_default(tmp_path):
    # Given a policy that only notifies, whatever the finding
    policy = tmp_path / "notify-only.yaml"
    policy.write_text(
        "version: 1\n"
        "rules:\n"
        "  - name: watch-everything\n"
        '    match: {types: ["*"]}\n'
        "    mode: notify\n"
    )
    finding = tmp_path / "finding.json"
    finding.write_text((EVENTS / "guardduty-ssh-brute-force.json").read_text())
    home = tmp_path / "state"

    # When a finding the default policy would block runs under it
    done = cloud_sniper(
        "run",
        str(finding),
        "--policy",
        str(policy),
        "--ephemeral",
        "--json",
        home=home,
        cwd=tmp_path,
    )

    # Then the policy under test decided
    assert done.returncode == 0, done.stderr
    (processed,) = json.loads(done.stdout)["findings"]
    assert processed["decision"]["mode"] == "notify"
    assert "watch-everything" in processed["decision"]["reason"]


def test_an_invalid_policy_is_refused_with_the_file_and_the_field(tmp_path, capsys):
    policy = tmp_path / "broken.yaml"
    policy.write_text("version: 1\nrules:\n  - name: x\n    mode: sometimes\n")

    status = main(["run", str(EVENTS / "guardduty-ssh-brute-force.json"), "--policy", str(policy)])

    assert status == 1
    error = capsys.readouterr().err
    assert "broken.yaml" in error and "mode" in error


# One type per family of the default policy, on its first documented resource type.
FAMILY_TYPES = (
    "UnauthorizedAccess:EC2/SSHBruteForce",
    "Recon:EC2/PortProbeUnprotectedPort",
    "UnauthorizedAccess:IAMUser/TorIPCaller",
    "Discovery:S3/MaliciousIPCaller",
    "Backdoor:EC2/C&CActivity.B!DNS",
    "CryptoCurrency:EC2/BitcoinTool.B",
    "Backdoor:EC2/Spambot",
    "Execution:Runtime/ReverseShell",
    "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
    "Policy:S3/BucketPublicAccessGranted",
    "Stealth:IAMUser/CloudTrailLoggingDisabled",
    "AttackSequence:EKS/CompromisedCluster",
    "CredentialAccess:RDS/AnomalousBehavior.SuccessfulLogin",
    "Object:S3/MaliciousFile",
)


def _promised_decisions() -> dict[str, str]:
    """Each type's decision as docs/finding-types.md states it: `mode (rule)`."""
    table = (Path(__file__).resolve().parents[2] / "docs" / "finding-types.md").read_text()
    promised = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.replace("\\|", "/").split(" | ")]
        if len(cells) == 6 and cells[0].startswith("| "):
            # A type whose decision differs by resource lists each: take its first resource's.
            first_resource = cells[1].split(", ")[0]
            decision = cells[5].removesuffix(" |").removeprefix(f"{first_resource}: ")
            promised[cells[0].removeprefix("| ")] = decision.split(":")[0].split(";")[0]
    return promised


def test_a_dry_run_over_mixed_findings_decides_as_the_docs_promise(tmp_path, home):
    # Given a folder of realistic findings, one per policy family, in the three file shapes
    from cloud_sniper.synthetic_findings import as_event, finding_types, synthetic_finding

    rows = {row.type: row for row in finding_types()}
    findings = [synthetic_finding(rows[name]) for name in FAMILY_TYPES]
    folder = tmp_path / "findings"
    (folder / "events").mkdir(parents=True)
    for number, finding in enumerate(findings[:6]):
        (folder / "events" / f"{number:02}.json").write_text(json.dumps(as_event(finding)))
    (folder / "export.jsonl").write_text("".join(json.dumps(f) + "\n" for f in findings[6:10]))
    (folder / "export-2.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(f) + "\n" for f in findings[10:]).encode())
    )

    # When the folder goes through the local pipeline as a dry run
    done = cloud_sniper(
        "run", str(folder), "--dry-run", "--json", "--ephemeral", home=home, cwd=tmp_path
    )

    # Then every finding is decided as the generated docs table promises for its type
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["rejected"] == []
    promised = _promised_decisions()
    got = {
        f["type"]: f"{f['decision']['mode']} ({f['decision']['rule']})"
        for f in document["findings"]
    }
    assert got == {name: promised[name] for name in FAMILY_TYPES}
    # And nothing was changed: every action is only planned, or waits for a person
    statuses = {a["status"] for f in document["findings"] for a in f["actions"]}
    assert statuses <= {"planned", "awaiting_approval"}
