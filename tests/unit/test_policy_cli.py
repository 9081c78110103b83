"""The `cloud-sniper policy` commands: validate, test and explain, with their exit statuses."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from cloud_sniper.cli import EXIT_OK, EXIT_REJECTED, EXIT_USAGE, main
from cloud_sniper.policy_check import DEFAULT_POLICY_FILE

EVENTS = Path(__file__).parents[1] / "events"

POLICY = """\
version: 1
rules:
  - name: brute-force
    match:
      types: ["UnauthorizedAccess:EC2/*BruteForce"]
      directions: [inbound]
    mode: auto
    actions: [waf_block]
  - name: probes
    match:
      types: ["Recon:*"]
      max_severity: 3.9
    mode: ignore
  - name: everything-else
    mode: notify
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def findings(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(EVENTS / name, folder / name)
    return folder


# --- validate ---------------------------------------------------------------------------------


def test_validate_a_good_policy_prints_a_summary_and_exits_0(tmp_path, capsys):
    policy = write(tmp_path, "policy.yaml", POLICY)

    status = main(["policy", "validate", str(policy)])

    assert status == EXIT_OK
    assert capsys.readouterr().out == f"{policy}: valid, 3 rule(s), modes: auto, ignore, notify\n"


def test_validate_the_default_policy_exits_0(capsys):
    assert main(["policy", "validate", str(DEFAULT_POLICY_FILE)]) == EXIT_OK
    assert ": valid, " in capsys.readouterr().out


def test_validate_a_bad_policy_lists_every_problem_with_its_line_and_exits_1(tmp_path, capsys):
    # Given a policy with an unknown key and a rule without its mode
    policy = write(
        tmp_path,
        "policy.yaml",
        """\
        version: 1
        rules:
          - name: probes
            match: {types: ["Recon:*"]}
            mode: ignore
            colour: red
          - name: no-mode
        """,
    )

    # When it is validated
    status = main(["policy", "validate", str(policy)])

    # Then each problem is a line of its own: file, line, column, field, reason
    assert status == EXIT_REJECTED
    assert capsys.readouterr().out.splitlines() == [
        f"{policy}:6:5: rules[0] (probes).colour: Extra inputs are not permitted",
        f"{policy}:7:5: rules[1] (no-mode).mode: Field required",
        f"{policy}: invalid, 2 problem(s)",
    ]


def test_validate_json_prints_one_document_with_the_warnings(tmp_path, capsys):
    # Given a valid policy whose last rule comes after a catch-all
    policy = write(
        tmp_path,
        "policy.yaml",
        """\
        version: 1
        rules:
          - name: all
            mode: notify
          - name: late
            match: {types: ["Backdoor:*"]}
            mode: ignore
        """,
    )

    # When it is validated with --json
    status = main(["policy", "validate", str(policy), "--json"])

    # Then it is valid and the dead rule is warned about, on its line
    document = json.loads(capsys.readouterr().out)
    assert status == EXIT_OK
    assert document["valid"] is True
    assert document["problems"] == []
    assert document["rules"] == 2
    assert document["modes"] == ["notify", "ignore"]
    [warning] = document["warnings"]
    assert (warning["line"], warning["path"]) == (5, "rules[1] (late)")


def test_validate_a_missing_file_is_a_usage_error(tmp_path, capsys):
    status = main(["policy", "validate", str(tmp_path / "absent.yaml")])

    assert status == EXIT_USAGE
    assert "absent.yaml: no such policy file" in capsys.readouterr().err


# --- test -------------------------------------------------------------------------------------


def test_policy_test_with_expectations_that_hold_exits_0(tmp_path, capsys):
    # Given three sample findings and what the policy should decide for each
    folder = findings(
        tmp_path / "findings",
        "guardduty-ipv6-rdp-brute-force.json",
        "guardduty-port-probe.json",
        "guardduty-cc-activity.json",
    )
    write(
        folder,
        "guardduty-ipv6-rdp-brute-force.expect.yaml",
        "{mode: auto, rule: brute-force, actions: [waf_block]}\n",
    )
    write(
        folder,
        "expectations.yaml",
        """\
        b5d7a3f2c4e6089b1d3f5a7c9e1f2d4a: {mode: ignore, rule: probes}
        d7f9c5b4e6a8201d3f5b7c9e1a3b4f6c: {mode: notify, rule: everything-else, actions: []}
        """,
    )
    policy = write(tmp_path, "policy.yaml", POLICY)

    # When the policy is tested on the folder
    status = main(["policy", "test", str(policy), "--findings", str(folder)])

    # Then every finding has its row, says that it passed, and the header names what is left out
    out = capsys.readouterr().out
    assert status == EXIT_OK
    lines = out.splitlines()
    assert lines[0] == f"policy {policy} (enrichment empty, estate addresses empty)"
    rows = {line.split()[0]: line.split() for line in lines[4:7]}
    assert rows["4e6a2c1d3f5b"][1:6] == [
        "UnauthorizedAccess:EC2/RDPBruteForce",
        "2.0",
        "auto",
        "brute-force",
        "waf_block",
    ]
    assert rows["4e6a2c1d3f5b"][-2:] == ["0", "pass"]
    assert [rows[key][-1] for key in ("b5d7a3f2c4e6", "d7f9c5b4e6a8")] == ["pass", "pass"]
    assert lines[-1] == "3 finding(s), 3 expectation(s): 3 passed, 0 failed; 0 rejected"


def test_policy_test_shows_expected_and_got_and_exits_1_when_one_fails(tmp_path, capsys):
    folder = findings(tmp_path / "findings", "guardduty-port-probe.json")
    write(folder, "guardduty-port-probe.expect.yaml", "{mode: auto, actions: [nacl_block]}\n")
    policy = write(tmp_path, "policy.yaml", POLICY)

    status = main(["policy", "test", str(policy), "--findings", str(folder)])

    out = capsys.readouterr().out
    assert status == EXIT_REJECTED
    assert f"FAIL {folder / 'guardduty-port-probe.json'}#1 b5d7a3f2c4e6" in out
    assert "  mode: expected auto, got ignore\n" in out
    assert "  actions: expected [nacl_block], got []\n" in out


def test_policy_test_json_is_one_document_and_rejected_findings_exit_1(tmp_path, capsys):
    # Given a good finding with its expectation and an invalid one
    folder = findings(
        tmp_path / "findings", "guardduty-ssh-brute-force.json", "invalid-missing-severity.json"
    )
    write(folder, "guardduty-ssh-brute-force.expect.yaml", "{rule: brute-force, refusals: 1}\n")
    policy = write(tmp_path, "policy.yaml", POLICY)

    # When it is tested with --json
    status = main(["policy", "test", str(policy), "--findings", str(folder), "--json"])

    # Then the document holds the result, its expectation and the rejection
    document = json.loads(capsys.readouterr().out)
    assert status == EXIT_REJECTED
    assert document["policy"] == str(policy)
    [result] = document["results"]
    assert result["finding_id"] == "a4c6f2e1b3d5978a0c2e4f6a8b0d1c3e"
    assert result["type"] == "UnauthorizedAccess:EC2/SSHBruteForce"
    assert result["severity"] == 2.0
    assert result["decision"]["mode"] == "notify"
    assert result["decision"]["rule"] == "brute-force"
    assert result["actions"] == []
    assert [refusal["kind"] for refusal in result["refusals"]] == ["waf_block"]
    assert result["expectation"]["passed"] is True
    assert result["expectation"]["failures"] == []
    assert document["rejected"] == [
        {
            "source": f"{folder / 'invalid-missing-severity.json'}#1",
            "error": "finding.severity: missing",
        }
    ]
    assert document["summary"] == {
        "findings": 1,
        "expectations": 1,
        "passed": 1,
        "failed": 0,
        "rejected": 1,
    }


def test_policy_test_with_an_invalid_policy_exits_1_and_a_missing_path_2(tmp_path, capsys):
    bad = write(tmp_path, "bad.yaml", "version: 1\nrules: [{name: x}]\n")
    good = write(tmp_path, "policy.yaml", POLICY)
    folder = findings(tmp_path / "findings", "guardduty-port-probe.json")

    assert main(["policy", "test", str(bad), "--findings", str(folder)]) == EXIT_REJECTED
    assert "rules[0] (x).mode: Field required" in capsys.readouterr().err
    assert main(["policy", "test", str(good), "--findings", str(tmp_path / "no")]) == EXIT_USAGE
    assert "no such file or folder" in capsys.readouterr().err


# --- explain ----------------------------------------------------------------------------------


def test_explain_shows_each_rule_and_condition_with_the_deciding_rule(tmp_path, capsys):
    # Given a port probe (severity 2.0) and a policy whose second rule takes it
    policy = write(tmp_path, "policy.yaml", POLICY)

    # When it is explained
    status = main(
        ["policy", "explain", str(EVENTS / "guardduty-port-probe.json"), "--policy", str(policy)]
    )

    # Then the safety rules come first, then each rule with each condition and its verdict
    out = capsys.readouterr().out.splitlines()
    assert status == EXIT_OK
    assert out[0].startswith("finding b5d7a3f2c4e6089b1d3f5a7c9e1f2d4a (")
    assert out[3:6] == [
        "safety rules, first",
        "  passes   finding: sample no, archived no: the rules decide",
        "  passes   resource: not tagged cloud-sniper:exempt=true",
    ]
    assert out[6:] == [
        "rules, in order: the first that matches decides",
        "  1. brute-force (auto): no match",
        "       FAILED  type Recon:EC2/PortProbeUnprotectedPort matches none of "
        "[UnauthorizedAccess:EC2/*BruteForce]",
        "       held    directions: finding has {inbound}, rule wants [inbound]",
        "  2. probes (ignore): DECIDES",
        "       held    type Recon:EC2/PortProbeUnprotectedPort matches Recon:*",
        "       held    severity 2.0 <= max_severity 3.9",
        "  3. everything-else (notify): not considered (would match)",
        "       held    type Recon:EC2/PortProbeUnprotectedPort matches *",
        "decision: ignore by rule probes: rule 'probes' matched",
    ]


def test_explain_uses_the_default_policy_and_prints_json(capsys):
    status = main(["policy", "explain", str(EVENTS / "guardduty-cc-activity.json"), "--json"])

    document = json.loads(capsys.readouterr().out)
    assert status == EXIT_OK
    assert document["policy"] == str(DEFAULT_POLICY_FILE)
    [finding] = document["findings"]
    assert finding["finding_id"] == "d7f9c5b4e6a8201d3f5b7c9e1a3b4f6c"
    assert finding["directions"] == ["outbound"]
    deciding = [rule for rule in finding["rules"] if rule["status"] == "decides"]
    assert len(deciding) == 1
    assert deciding[0]["matched"] is True
    assert all(check["held"] for check in deciding[0]["checks"])
    assert finding["decision"]["rule"] == deciding[0]["name"]
    before = finding["rules"][: deciding[0]["index"]]
    assert all(rule["status"] == "no match" and not rule["matched"] for rule in before)


def test_explain_a_file_that_is_no_finding_exits_1_and_a_missing_one_2(tmp_path, capsys):
    status = main(["policy", "explain", str(EVENTS / "invalid-missing-severity.json")])
    assert status == EXIT_REJECTED
    assert "finding.severity: missing" in capsys.readouterr().out

    assert main(["policy", "explain", str(tmp_path / "absent.json")]) == EXIT_USAGE
    assert "no such findings file" in capsys.readouterr().err
