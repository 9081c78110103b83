"""The deployed policy lives in an SSM parameter of the decide stack, as the bundle ships it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template

from cloud_sniper.domain import naming
from cloud_sniper.domain.policy import load_policy, parse_policy
from cloud_sniper.domain.policy_parameter import parameter_value
from stacks.config import DECIDE_STACK, PROJECT_ROOT, ConfigError
from stacks.decide import policy_parameter

DEFAULT_POLICY = PROJECT_ROOT / "cloud_sniper/data/default-policy.yaml"


def policy_file(tmp_path: Path, rules: int) -> Path:
    """A valid policy of so many notify rules, each with a 200-character description."""
    document = {
        "version": 1,
        "rules": [
            {"name": f"rule-{i}", "description": "d" * 200, "mode": "notify"} for i in range(rules)
        ],
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(document))
    return path


def test_the_decide_stack_holds_the_policy_as_compact_json(assembly):
    # Given the decide stack synthesized with the default policy
    _, parameter = assembly.one(DECIDE_STACK, "AWS::SSM::Parameter", Name=naming.POLICY_PARAMETER)
    properties = parameter["Properties"]

    # Then the parameter is a String holding the validated policy, without spaces, in the tier
    # its size needs
    assert properties["Type"] == "String"
    assert properties["Value"] == parameter_value(load_policy(DEFAULT_POLICY))
    size = len(properties["Value"].encode())
    assert properties["Tier"] == ("Standard" if size <= 4096 else "Advanced")
    compact = json.dumps(json.loads(properties["Value"]), separators=(",", ":"))
    assert properties["Value"] == compact


def test_the_parameter_holds_what_the_bundle_ships(assembly):
    # Given the decide function's staged bundle in the assembly
    _, function = assembly.function(naming.FUNCTIONS["decide"])
    asset = function["Code"]["S3Key"].removesuffix(".zip")
    bundled = json.loads(
        (assembly.directory / f"asset.{asset}" / "cloud_sniper/data/policy.json").read_text()
    )

    # Then the parameter's value reads as the same policy, field for field
    _, parameter = assembly.one(DECIDE_STACK, "AWS::SSM::Parameter", Name=naming.POLICY_PARAMETER)
    value = json.loads(parameter["Properties"]["Value"])
    assert parse_policy(value) == parse_policy(bundled)


def test_a_policy_over_4_kb_is_an_advanced_parameter(tmp_path):
    # Given a policy of about 6 KB as compact JSON
    path = policy_file(tmp_path, rules=25)
    assert 4096 < len(parameter_value(load_policy(path))) <= 8192

    # When its parameter is synthesized
    stack = Stack(App(), "PolicyOnly")
    policy_parameter(stack, path)

    # Then it is in the advanced tier
    Template.from_stack(stack).has_resource_properties(
        "AWS::SSM::Parameter", {"Name": naming.POLICY_PARAMETER, "Tier": "Advanced"}
    )


def test_a_policy_over_8_kb_fails_the_synth_naming_the_file_and_its_size(tmp_path):
    # Given a policy larger than an advanced parameter holds
    path = policy_file(tmp_path, rules=45)
    size = len(parameter_value(load_policy(path)).encode())

    # When its parameter is synthesized, then the synth stops, naming the file and its size
    with pytest.raises(ConfigError, match=rf"context policy: {path}: the policy is {size} bytes"):
        policy_parameter(Stack(App(), "PolicyOnly"), path)
