"""The report's Security Hub update, against botocore's model of BatchUpdateFindings.

moto 5 does not emulate BatchUpdateFindings, so botocore's Stubber stands in: it checks each
request against the real API model and answers in the API's own shape.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from services.report import handler as report_handler
from services.report import security_hub_adapter
from services.report.incident import ReportRequest, build_incident
from services.report.security_hub import SecurityHubError, plan_update
from services.report.security_hub_adapter import SecurityHubFindings, Unprocessed
from tests.integration.report_account import BUCKET, Context, report_account

FINDING_ARN = (
    "arn:aws:guardduty:us-east-1:111122223333:detector/12abc34d567e8fa901bc2d34e56789f0/"
    "finding/7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1"
)
IDENTIFIER = {
    "Id": FINDING_ARN,
    "ProductArn": "arn:aws:securityhub:us-east-1::product/aws/guardduty",
}


@pytest.fixture
def mitigated(event):
    return lambda: copy.deepcopy(event("report-request-mitigated.json"))


@pytest.fixture
def stubbed():
    """A Security Hub client whose answers the test gives; it refuses any unplanned call."""
    client = boto3.client("securityhub", region_name="us-east-1")
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def update_of(request: dict):
    incident = build_incident(ReportRequest.model_validate(request), datetime.now(UTC))
    return plan_update(incident, request["state"]["event"], f"s3://{BUCKET}/report.md")


def test_the_update_is_sent_as_planned_and_processed(stubbed, mitigated):
    # Given the planned update of a mitigated finding, and Security Hub processing it
    client, stubber = stubbed
    update = update_of(mitigated())
    stubber.add_response(
        "batch_update_findings",
        {"ProcessedFindings": [IDENTIFIER], "UnprocessedFindings": []},
        expected_params=update.request(),
    )

    # When it is sent
    unprocessed = SecurityHubFindings(client).update(update)

    # Then Security Hub left nothing undone
    assert unprocessed == []


def test_unprocessed_findings_come_back_with_their_error_codes(stubbed, mitigated):
    # Given Security Hub does not hold the finding
    client, stubber = stubbed
    update = update_of(mitigated())
    stubber.add_response(
        "batch_update_findings",
        {
            "ProcessedFindings": [],
            "UnprocessedFindings": [
                {
                    "FindingIdentifier": IDENTIFIER,
                    "ErrorCode": "FindingNotFound",
                    "ErrorMessage": "Finding Not Found",
                }
            ],
        },
        expected_params=update.request(),
    )

    # When the update is sent
    unprocessed = SecurityHubFindings(client).update(update)

    # Then the finding is returned with Security Hub's code and message
    assert unprocessed == [Unprocessed(FINDING_ARN, "FindingNotFound", "Finding Not Found")]


def test_a_refused_call_is_an_error_naming_the_code(stubbed, mitigated):
    # Given an account where Security Hub is not enabled
    client, stubber = stubbed
    stubber.add_client_error(
        "batch_update_findings",
        service_error_code="InvalidAccessException",
        service_message="Account 111122223333 is not subscribed to AWS Security Hub",
        http_status_code=401,
    )

    # When the update is sent, then the error says why
    with pytest.raises(SecurityHubError, match="InvalidAccessException: Account 111122223333"):
        SecurityHubFindings(client).update(update_of(mitigated()))


def test_the_report_updates_security_hub_and_says_so(monkeypatch, stubbed, mitigated):
    # Given the report function with Security Hub updates on, and Security Hub answering
    client, stubber = stubbed
    request = mitigated()
    stubber.add_response(
        "batch_update_findings",
        {"ProcessedFindings": [IDENTIFIER], "UnprocessedFindings": []},
        expected_params={
            "FindingIdentifiers": [IDENTIFIER],
            "Workflow": {"Status": "RESOLVED"},
            "Note": {"Text": ANY, "UpdatedBy": "cloud-sniper"},
        },
    )
    monkeypatch.setattr(security_hub_adapter, "securityhub_client", lambda: client)

    with report_account(monkeypatch, SECURITY_HUB_UPDATES="true"):
        # When the execution is reported
        result = report_handler.report(request, Context())

    # Then the handler's result says the finding was resolved
    assert result["integrations"] == {"security_hub": {"status": "updated", "workflow": "RESOLVED"}}


def test_a_security_hub_failure_never_fails_the_report(monkeypatch, stubbed, mitigated):
    # Given Security Hub refusing the update
    client, stubber = stubbed
    stubber.add_client_error(
        "batch_update_findings",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform securityhub:BatchUpdateFindings",
        http_status_code=403,
    )
    monkeypatch.setattr(security_hub_adapter, "securityhub_client", lambda: client)

    with report_account(monkeypatch, SECURITY_HUB_UPDATES="true") as s3:
        # When the execution is reported
        result = report_handler.report(mitigated(), Context())

        # Then the reports are written all the same
        keys = s3.list_objects_v2(Bucket=BUCKET)["Contents"]
        assert {item["Key"] for item in keys} >= set(result["report_keys"].values())

    # And the failure is in the handler's result, with Security Hub's reason
    [integration] = result["integrations"].values()
    assert integration["status"] == "failed"
    assert "AccessDeniedException" in integration["error"]


def test_moto_does_not_emulate_batch_update_findings(mitigated):
    # Given moto in process, as the local runtime runs the report
    with mock_aws():
        findings = SecurityHubFindings(boto3.client("securityhub", region_name="us-east-1"))

        # Then the update fails as Security Hub's error, moto's "not yet implemented"
        with pytest.raises(SecurityHubError, match="BatchUpdateFindings: 404: Not yet"):
            findings.update(update_of(mitigated()))


def test_with_updates_off_the_report_calls_no_security_hub(monkeypatch, stubbed, mitigated):
    # Given the function's environment without SECURITY_HUB_UPDATES (the stubber refuses calls)
    client, _ = stubbed
    monkeypatch.setattr(security_hub_adapter, "securityhub_client", lambda: client)

    with report_account(monkeypatch):
        # When the execution is reported
        result = report_handler.report(mitigated(), Context())

    # Then no integration ran, and the result is as before
    assert "integrations" not in result
