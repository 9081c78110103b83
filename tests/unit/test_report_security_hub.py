"""Security Hub: which finding an incident updates, to what workflow status, with what note."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import botocore.session
import pytest

from cloud_sniper.domain.models import Incident, Outcome
from cloud_sniper.domain.normalize import normalize
from services.report.incident import ReportRequest, build_incident
from services.report.security_hub import (
    NOTE_LIMIT,
    UPDATED_BY,
    FindingIdentifier,
    Skipped,
    Workflow,
    note_text,
    plan_update,
    workflow_of,
)

REPORTED_AT = datetime(2024, 5, 1, 10, 30, 15, tzinfo=UTC)
LOCATION = "s3://cloud-sniper-reports-111122223333-us-east-1/reports/inc-1/run-1.md"
GUARDDUTY_ARN = (
    "arn:aws:guardduty:us-east-1:111122223333:detector/12abc34d567e8fa901bc2d34e56789f0/"
    "finding/7ac6b5b0d9e1f2a3b4c5d6e7f8a9b0c1"
)
GUARDDUTY_PRODUCT = "arn:aws:securityhub:us-east-1::product/aws/guardduty"


@pytest.fixture
def mitigated(event):
    return lambda: copy.deepcopy(event("report-request-mitigated.json"))


def incident_from(request: dict) -> Incident:
    return build_incident(ReportRequest.model_validate(request), REPORTED_AT)


def delivered(request: dict, delivery: dict) -> dict:
    """The request with another delivery: its event and the finding read from it."""
    request["state"]["event"] = delivery
    request["state"]["finding"] = normalize(delivery).model_dump(mode="json")
    request["state"].pop("incident_id")
    return request


def plan(request: dict):
    return plan_update(incident_from(request), request["state"]["event"], LOCATION)


def validate_against_model(operation: str, params: dict) -> None:
    """Check a request against botocore's model of Security Hub: members, types and enums."""
    model = botocore.session.get_session().get_service_model("securityhub")
    _check(model.operation_model(operation).input_shape, params, operation)


def _check(shape, value, path: str) -> None:
    if shape.type_name == "structure":
        assert isinstance(value, dict), path
        assert set(value) <= set(shape.members), f"{path}: {set(value) - set(shape.members)}"
        for name in shape.required_members:
            assert name in value, f"{path}.{name} is required"
        for name, member in value.items():
            _check(shape.members[name], member, f"{path}.{name}")
    elif shape.type_name == "list":
        assert isinstance(value, list), path
        for number, item in enumerate(value):
            _check(shape.member, item, f"{path}[{number}]")
    elif shape.type_name == "string":
        assert isinstance(value, str) and value.strip(), path
        if shape.enum:
            assert value in shape.enum, f"{path}: {value} not in {shape.enum}"


def test_a_mitigated_guardduty_finding_is_resolved_by_its_arn(mitigated):
    # Given a GuardDuty delivery whose actions all took effect
    request = mitigated()

    # When its Security Hub update is planned
    update = plan(request)

    # Then the finding is named by GuardDuty's ARN and GuardDuty's product, and resolved
    assert update.finding == FindingIdentifier(id=GUARDDUTY_ARN, product_arn=GUARDDUTY_PRODUCT)
    assert update.workflow is Workflow.RESOLVED

    # And the request is BatchUpdateFindings' own, by botocore's model of the API
    params = update.request()
    validate_against_model("BatchUpdateFindings", params)
    assert params["Workflow"] == {"Status": "RESOLVED"}
    assert params["Note"]["UpdatedBy"] == UPDATED_BY
    note = params["Note"]["Text"]
    assert note.startswith("Cloud Sniper incident inc-0f1e2d3c4b5a6978: mitigated.")
    assert "waf_block 198.51.100.7 applied" in note
    assert note.endswith(f"Report: {LOCATION}")


@pytest.mark.parametrize(
    ("outcome", "workflow"),
    [
        (Outcome.MITIGATED, Workflow.RESOLVED),
        (Outcome.PARTIALLY_MITIGATED, Workflow.NOTIFIED),
        (Outcome.NOTIFIED, Workflow.NOTIFIED),
        (Outcome.DENIED, Workflow.NOTIFIED),
        (Outcome.TIMED_OUT, Workflow.NOTIFIED),
        (Outcome.REFUSED, Workflow.NOTIFIED),
        (Outcome.FAILED, Workflow.NOTIFIED),
    ],
)
def test_only_a_full_mitigation_resolves_the_finding(outcome, workflow):
    assert workflow_of(outcome) is workflow


def test_a_failed_mitigation_notifies(mitigated):
    # Given a delivery whose actions all failed
    request = mitigated()
    for result in request["state"]["mitigation"]["results"]:
        result["status"] = "failed"

    # When its update is planned
    update = plan(request)

    # Then a person is told: NOTIFIED, the failure in the note
    assert update.workflow is Workflow.NOTIFIED
    assert "failure NoActionApplied" in update.note


def test_without_its_arn_a_guardduty_finding_is_named_from_its_detector(mitigated):
    # Given a GuardDuty delivery without its ARN
    request = mitigated()
    del request["state"]["event"]["detail"]["arn"]

    # When its update is planned
    update = plan(request)

    # Then the ARN is made as GuardDuty makes it, from the detector id
    assert update.finding.id == GUARDDUTY_ARN


def test_an_arn_of_another_finding_is_not_taken(mitigated):
    # Given a delivery whose ARN names another finding than its id
    request = mitigated()
    detail = request["state"]["event"]["detail"]
    detail["arn"] = detail["arn"].replace(detail["id"], "0" * 32)

    # Then the ARN is made from the finding's own id
    assert plan(request).finding.id == GUARDDUTY_ARN


def test_a_guardduty_finding_from_getfindings_keeps_its_pascalcase_arn(mitigated, event):
    # Given a finding as GuardDuty's GetFindings returns it
    finding = event("getfindings-response.json")["Findings"][0]
    request = delivered(mitigated(), finding)

    # When its update is planned
    update = plan(request)

    # Then its Arn names it
    assert update.finding == FindingIdentifier(id=finding["Arn"], product_arn=GUARDDUTY_PRODUCT)


def test_guardduty_through_security_hub_is_named_by_its_asff_id(mitigated, event):
    # Given GuardDuty's finding delivered by Security Hub
    delivery = event("securityhub-guardduty-ssh-brute-force.json")
    request = delivered(mitigated(), delivery)

    # When its update is planned
    update = plan(request)

    # Then the finding is the ASFF one, as Security Hub named it
    [asff] = delivery["detail"]["findings"]
    assert update.finding == FindingIdentifier(id=asff["Id"], product_arn=asff["ProductArn"])
    validate_against_model("BatchUpdateFindings", update.request())


def test_another_products_finding_is_named_by_its_asff_id(mitigated, event):
    # Given an Inspector finding from Security Hub, reported as notified
    delivery = event("securityhub-inspector-ec2-cve.json")
    request = delivered(mitigated(), delivery)
    request["state"]["decision"] = {"mode": "notify", "reason": "other products are reported"}
    request["state"].pop("mitigation")

    # When its update is planned
    update = plan(request)

    # Then Inspector's finding is named and NOTIFIED
    assert update.finding == FindingIdentifier(
        id=delivery["Id"], product_arn=delivery["ProductArn"]
    )
    assert update.workflow is Workflow.NOTIFIED


def test_a_sample_finding_is_never_touched(mitigated, event):
    # Given a GuardDuty sample finding
    request = delivered(mitigated(), event("guardduty-sample-tor-client.json"))

    # Then Security Hub is left alone
    assert plan(request) == Skipped("a sample finding")


def test_a_dry_run_and_an_ignored_finding_are_left_alone(mitigated):
    # Given a dry run, and a finding the policy ignores
    dry = mitigated()
    dry["state"]["dry_run"] = True
    ignored = mitigated()
    ignored["state"]["decision"] = {"mode": "ignore", "reason": "archived"}

    # Then neither is updated
    assert plan(dry) == Skipped("a dry run changes nothing")
    assert plan(ignored) == Skipped("the policy ignores the finding")


def test_a_project_detectors_finding_is_not_in_security_hub(mitigated):
    # Given a finding of a Cloud Sniper detector, on the project bus
    request = mitigated()
    request["state"]["event"]["source"] = "cloud-sniper"
    request["state"]["finding"]["source"] = "cloud-sniper"

    # Then Security Hub holds no such finding
    assert plan(request) == Skipped("Security Hub does not hold findings of cloud-sniper")


def test_an_unreadable_delivery_is_left_alone(mitigated):
    # Given a delivery that could not be read as a finding
    request = mitigated()
    request["state"]["finding"] = None
    request["state"]["failure"] = {"Error": "InvalidFindingError", "Cause": "finding.id: missing"}

    # Then there is no finding to update
    assert plan(request) == Skipped("the delivery could not be read as a finding")


def test_the_note_keeps_its_location_whole_within_512_characters(mitigated):
    # Given an incident with many actions
    request = mitigated()
    results = request["state"]["mitigation"]["results"]
    request["state"]["mitigation"]["results"] = [
        {**results[0], "action_id": f"act-{n}", "target": f"198.51.100.{n}"} for n in range(60)
    ]
    incident = incident_from(request)

    # When its note is written
    note = note_text(incident, LOCATION)

    # Then it fits Security Hub's limit, shortened in the middle, the location whole
    assert len(note) == NOTE_LIMIT
    assert "…" in note
    assert note.endswith(f"Report: {LOCATION}")
    assert "\n" not in note


def test_a_location_too_long_for_the_note_is_cut_at_the_limit(mitigated):
    # Given a report location longer than the note itself
    incident = incident_from(mitigated())

    # When the note is written
    note = note_text(incident, "s3://bucket/" + "k" * 600)

    # Then it still fits
    assert len(note) == NOTE_LIMIT
    assert note.startswith("Cloud Sniper incident inc-0f1e2d3c4b5a6978: mitigated.")
