"""The policy as its SSM parameter holds it: compact JSON, its tier, and reading it back."""

from __future__ import annotations

from pathlib import Path

import pytest

import cloud_sniper
from cloud_sniper.domain.policy import PolicyError, load_policy
from cloud_sniper.domain.policy_parameter import (
    ADVANCED_TIER,
    STANDARD_TIER,
    parameter_tier,
    parameter_value,
    read_parameter_value,
)

DEFAULT_POLICY = Path(cloud_sniper.__file__).parent / "data" / "default-policy.yaml"


def test_the_value_reads_back_as_the_same_policy():
    # Given the default policy written as the parameter's value
    policy = load_policy(DEFAULT_POLICY)
    value = parameter_value(policy)

    # Then it has no spaces between tokens, and reads back as the same policy
    assert "\n" not in value and '": ' not in value and '", "' not in value
    assert read_parameter_value(value, "test") == policy


@pytest.mark.parametrize(
    ("size", "tier"),
    [(1, STANDARD_TIER), (4096, STANDARD_TIER), (4097, ADVANCED_TIER), (8192, ADVANCED_TIER)],
)
def test_the_tier_follows_the_size_in_bytes(size, tier):
    assert parameter_tier("x" * size, "test") == tier


def test_a_multibyte_value_is_sized_in_bytes():
    # 2049 two-byte characters are 4098 bytes: over the standard tier's 4 KB
    assert parameter_tier("é" * 2049, "test") == ADVANCED_TIER


def test_a_value_over_8_kb_is_refused_naming_the_source_and_the_size():
    with pytest.raises(PolicyError, match="mine.yaml: the policy is 8193 bytes as compact JSON"):
        parameter_tier("x" * 8193, "mine.yaml")


def test_a_value_that_is_not_json_names_the_source():
    with pytest.raises(PolicyError, match="the parameter: not valid JSON: .* line 1 column"):
        read_parameter_value("{version: 1}", "the parameter")
