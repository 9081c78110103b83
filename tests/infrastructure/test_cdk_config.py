"""The CDK context: cdk.json's defaults, and the settings the stacks read from it."""

from __future__ import annotations

import json

import pytest
from aws_cdk import aws_logs as logs

from stacks.config import CONTEXT_DEFAULTS, PROJECT_ROOT, ConfigError, Settings

CDK_JSON = json.loads((PROJECT_ROOT / "cdk.json").read_text())


def test_cdk_json_runs_the_app_with_the_project_venv():
    assert CDK_JSON["app"] == ".venv/bin/python app.py"


def test_cdk_json_context_has_the_same_defaults_as_the_stacks():
    # `cdk synth` reads cdk.json, the stacks fall back on CONTEXT_DEFAULTS: the two agree
    context = CDK_JSON["context"]

    assert {key: context.get(key) for key in CONTEXT_DEFAULTS} == CONTEXT_DEFAULTS


def test_default_settings():
    settings = Settings.from_context({})

    assert settings.policy == PROJECT_ROOT / "cloud_sniper/data/default-policy.yaml"
    assert settings.nacl_rule_range == "50-99"
    assert settings.block_ttl_seconds == 86400
    assert settings.log_level == "INFO"
    assert settings.log_retention == logs.RetentionDays.THREE_MONTHS
    assert settings.waf_writer_interval.to_seconds() == 30


def test_context_from_the_command_line_is_read_as_text():
    # `cdk synth -c block_ttl_seconds=3600 -c nacl_rule_range=" 100 - 120 "`
    settings = Settings.from_context(
        {"block_ttl_seconds": "3600", "nacl_rule_range": " 100 - 120 ", "log_level": "debug"}
    )

    assert settings.block_ttl_seconds == 3600
    assert settings.nacl_rule_range == "100-120"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"policy": "no/such/policy.yaml"}, "context policy: no such file"),
        ({"nacl_rule_range": "99-50"}, "context nacl_rule_range"),
        ({"nacl_rule_range": "fifty"}, "context nacl_rule_range"),
        ({"block_ttl_seconds": "a day"}, "context block_ttl_seconds"),
        ({"block_ttl_seconds": 0}, "context block_ttl_seconds: 0 is not positive"),
        ({"log_retention_days": 45}, "context log_retention_days: 45"),
        ({"log_level": "LOUD"}, "context log_level"),
        ({"waf_writer_interval_seconds": 301}, "context waf_writer_interval_seconds: 301 is over"),
        ({"waf_writer_interval_seconds": 0}, "context waf_writer_interval_seconds: 0 is not"),
    ],
)
def test_invalid_context_fails_the_synth_naming_the_key(context, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_context(context)
