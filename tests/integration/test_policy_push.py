"""`cloud-sniper policy push` and `policy show` against an emulated account (--region)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

import cloud_sniper
from cloud_sniper.cli import EXIT_OK, EXIT_REJECTED, main
from cloud_sniper.domain import naming
from cloud_sniper.domain.policy import load_policy
from cloud_sniper.domain.policy_parameter import parameter_value

DEFAULT_POLICY = Path(cloud_sniper.__file__).parent / "data" / "default-policy.yaml"
ACCOUNT = ["--region", "us-east-1"]


@pytest.fixture
def ssm():
    """An emulated account; the CLI reaches it through --region, as it would a deployed one."""
    with mock_aws():
        yield boto3.client("ssm", region_name="us-east-1")


def write_policy(tmp_path: Path, rules: int = 1, name: str = "policy.yaml") -> Path:
    """A valid policy of so many notify rules, each with a 200-character description."""
    lines = ["version: 1", "rules:"]
    for i in range(rules):
        lines += [f"  - name: rule-{i}", f"    description: {'d' * 200}", "    mode: notify"]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return path


def stored(ssm) -> dict:
    return ssm.get_parameter(Name=naming.POLICY_PARAMETER)["Parameter"]


def tier(ssm) -> str:
    filters = [{"Key": "Name", "Option": "Equals", "Values": [naming.POLICY_PARAMETER]}]
    return ssm.describe_parameters(ParameterFilters=filters)["Parameters"][0]["Tier"]


def test_push_puts_the_validated_policy_as_compact_json(ssm, capsys):
    # When a SOC pushes the default policy to an account
    status = main(["policy", "push", str(DEFAULT_POLICY), *ACCOUNT])

    # Then the parameter holds it as the stack would deploy it, in the tier its size needs
    assert status == EXIT_OK
    value = parameter_value(load_policy(DEFAULT_POLICY))
    assert stored(ssm)["Value"] == value
    assert tier(ssm) == ("Standard" if len(value.encode()) <= 4096 else "Advanced")
    out = capsys.readouterr().out
    assert f"to {naming.POLICY_PARAMETER}: version 1" in out
    assert "within 300 s" in out


def test_push_overwrites_the_deployed_policy(ssm, tmp_path):
    # Given a deployed policy
    ssm.put_parameter(
        Name=naming.POLICY_PARAMETER,
        Value=parameter_value(load_policy(DEFAULT_POLICY)),
        Type="String",
    )

    # When another one is pushed
    assert main(["policy", "push", str(write_policy(tmp_path)), *ACCOUNT]) == EXIT_OK

    # Then it replaces the first, as a new version, in the standard tier its size allows
    parameter = stored(ssm)
    assert parameter["Version"] == 2
    assert tier(ssm) == "Standard"
    assert [rule["name"] for rule in json.loads(parameter["Value"])["rules"]] == ["rule-0"]


def test_a_policy_over_4_kb_goes_to_the_advanced_tier_and_stays_there(ssm, tmp_path):
    # When a policy of about 6 KB is pushed, then a small one
    big = write_policy(tmp_path, rules=25, name="big.yaml")
    assert main(["policy", "push", str(big), *ACCOUNT]) == EXIT_OK
    assert tier(ssm) == "Advanced"
    assert main(["policy", "push", str(write_policy(tmp_path)), *ACCOUNT]) == EXIT_OK

    # Then the parameter holds the small one, still advanced: SSM never moves it back
    assert len(json.loads(stored(ssm)["Value"])["rules"]) == 1
    assert tier(ssm) == "Advanced"


def test_a_policy_over_8_kb_is_refused_and_nothing_changes(ssm, tmp_path, capsys):
    # Given a deployed policy, and a file too large for any parameter
    assert main(["policy", "push", str(DEFAULT_POLICY), *ACCOUNT]) == EXIT_OK
    huge = write_policy(tmp_path, rules=45, name="huge.yaml")

    # When it is pushed, then it is refused, naming the file and its size
    assert main(["policy", "push", str(huge), *ACCOUNT]) == EXIT_REJECTED
    assert f"{huge}: the policy is " in capsys.readouterr().err
    assert stored(ssm)["Version"] == 1


def test_an_invalid_policy_is_refused_with_the_field_and_nothing_changes(ssm, tmp_path, capsys):
    # Given a deployed policy, and a file with a rule in an unknown mode
    assert main(["policy", "push", str(DEFAULT_POLICY), *ACCOUNT]) == EXIT_OK
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nrules:\n  - name: x\n    mode: sometimes\n")

    # When it is pushed, then the error names the file and the field, and the parameter stays
    assert main(["policy", "push", str(broken), *ACCOUNT]) == EXIT_REJECTED
    assert f"{broken}: invalid policy: rules[0] (x).mode" in capsys.readouterr().err
    assert stored(ssm)["Version"] == 1


def test_a_missing_file_is_refused(ssm, tmp_path, capsys):
    assert main(["policy", "push", str(tmp_path / "absent.yaml"), *ACCOUNT]) == EXIT_REJECTED
    assert "no such policy file" in capsys.readouterr().err


def test_without_an_account_push_needs_the_local_server(tmp_path, monkeypatch, capsys):
    # Given no --profile/--region and no local server running
    monkeypatch.setenv("CLOUD_SNIPER_HOME", str(tmp_path / "nothing-running"))

    # When a valid policy is pushed, then the command says how to reach an account
    assert main(["policy", "push", str(DEFAULT_POLICY)]) == EXIT_REJECTED
    assert "cloud-sniper local up" in capsys.readouterr().err


def test_show_lists_the_deployed_rules_and_the_parameter_version(ssm, capsys):
    # Given the default policy pushed
    assert main(["policy", "push", str(DEFAULT_POLICY), *ACCOUNT]) == EXIT_OK
    capsys.readouterr()

    # When a SOC asks what is deployed
    assert main(["policy", "show", *ACCOUNT, "--json"]) == EXIT_OK

    # Then each rule is listed with its mode, with the parameter's version and last change
    document = json.loads(capsys.readouterr().out)
    assert document["parameter"] == naming.POLICY_PARAMETER
    assert document["version"] == 1
    assert document["last_modified"]
    expected = [
        {"name": rule.name, "mode": rule.mode.value} for rule in load_policy(DEFAULT_POLICY).rules
    ]
    assert document["rules"] == expected


def test_show_as_a_table(ssm, capsys):
    # Given the default policy pushed, when it is shown, then one line per rule follows the version
    assert main(["policy", "push", str(DEFAULT_POLICY), *ACCOUNT]) == EXIT_OK
    capsys.readouterr()

    assert main(["policy", "show", *ACCOUNT]) == EXIT_OK

    out = capsys.readouterr().out
    assert out.startswith(f"{naming.POLICY_PARAMETER}: version 1, last modified ")
    assert re.search(r"^brute-force-inbound +auto +nacl_block, waf_block", out, re.MULTILINE)


def test_show_without_a_parameter_says_how_to_make_one(ssm, capsys):
    assert main(["policy", "show", *ACCOUNT]) == EXIT_REJECTED
    assert "policy push FILE" in capsys.readouterr().err


def test_show_names_an_invalid_deployed_policy(ssm, capsys):
    # Given a parameter someone edited by hand into an invalid policy
    ssm.put_parameter(Name=naming.POLICY_PARAMETER, Value='{"version": 2}', Type="String")

    # When it is shown, then the error names the parameter and the field
    assert main(["policy", "show", *ACCOUNT]) == EXIT_REJECTED
    assert f"SSM parameter {naming.POLICY_PARAMETER}: invalid policy: version" in (
        capsys.readouterr().err
    )
