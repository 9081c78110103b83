"""`cloud-sniper approvals`: which API it calls, signed as whom, and what it prints."""

from __future__ import annotations

import argparse

import pytest

from cloud_sniper import cli

API_URL = "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/v1/"


def arguments(**given) -> argparse.Namespace:
    values = {"profile": None, "region": None, "stack": None, "api_url": None, **given}
    return argparse.Namespace(**values)


def test_a_deployed_api_by_url_is_signed_for_the_region_its_url_names():
    # Given credentials in the environment, as the AWS CLI reads them (tests/conftest.py)
    # When the command is given the API's URL
    api = cli._approvals_api(arguments(api_url=API_URL))

    # Then it signs for the API's region with those credentials
    assert (api.url, api.region) == (API_URL, "eu-west-1")
    assert api.credentials.access_key == "testing"


def test_an_api_url_that_names_no_region_needs_one(monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")

    with pytest.raises(cli.CliError, match="the region of https://approvals.example.com/ is"):
        cli._approvals_api(arguments(api_url="https://approvals.example.com/"))


def test_without_credentials_the_command_says_how_to_give_them(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

    with pytest.raises(cli.CliError, match="no AWS credentials to sign the request with"):
        cli._approvals_api(arguments(api_url=API_URL))


def test_an_approval_is_shown_with_its_request_then_its_answer():
    approval = {
        "approval_id": "apr-0123456789",
        "status": "denied",
        "incident_id": "inc-1",
        "execution_name": "exec-1",
        "finding": {
            "type": "UnauthorizedAccess:EC2/MaliciousIPCaller.Custom",
            "severity": 5.0,
            "severity_label": "Medium",
            "account_id": "111122223333",
            "region": "eu-west-1",
        },
        "decision_reason": "a threat list address",
        "actions": [{"kind": "waf_block", "target": "216.160.83.56/32"}],
        "requested_at": "2024-05-01T10:30:00Z",
        "expires_at": "2024-05-01T11:30:00Z",
        "answered_at": "2024-05-01T10:35:00Z",
        "approver": "arn:aws:iam::111122223333:user/alice",
        "reason": "partner address",
    }

    lines = cli.approval_lines(approval)

    assert lines[0] == "apr-0123456789: denied"
    assert "  actions:    waf_block 216.160.83.56/32" in lines
    assert lines[-2:] == [
        "  answered:   2024-05-01T10:35:00Z by arn:aws:iam::111122223333:user/alice",
        "  why:        partner address",
    ]


def test_the_approvals_commands_take_a_stack_or_a_url():
    parsed = cli._parser().parse_args(
        ["approvals", "approve", "apr-1", "--reason", "ok", "--stack", "Mine", "--region", "x"]
    )
    listing = cli._parser().parse_args(["approvals", "list", "--status", "denied"])

    assert (parsed.stack, parsed.region, parsed.api_url) == ("Mine", "x", None)
    assert listing.status == "denied"
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["approvals", "list", "--status", "maybe"])
