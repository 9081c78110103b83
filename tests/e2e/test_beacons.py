"""A beacon the scheduled scan finds becomes a finding on the project bus, and the pipeline's.

The emulated Athena runs no SQL: it answers the scan's query with the rows the same query gives
on DuckDB over a generated day of flow logs, in which the app instance beacons to its C2.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from cloud_sniper.beacons import synthetic
from cloud_sniper.beacons.findings import FINDING_TYPE, beacon_event, beacon_finding
from cloud_sniper.beacons.models import ScanOptions
from cloud_sniper.domain import naming
from cloud_sniper.domain.normalize import normalize
from cloud_sniper.local import pipeline
from cloud_sniper.local.runtime import ACCOUNT, REGION
from services.beacons import service
from tests.beacons_athena import queue_in_moto, run_events_on_duckdb, run_on_duckdb

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def app_address(cloud: Any, estate: dict[str, str]) -> str:
    ec2 = cloud.clients("ec2")
    reservations = ec2.describe_instances(InstanceIds=[estate["app_instance"]])["Reservations"]
    return reservations[0]["Instances"][0]["PrivateIpAddress"]


def test_a_beacon_found_by_the_scan_is_sent_for_approval_to_isolate_and_cut(
    cloud, estate, app_address, tmp_path
):
    clients = cloud.clients
    # Given a day of the estate's flow logs in which the app instance calls home on a schedule
    truth = synthetic.generate(
        tmp_path, records=150_000, format="parquet", beacons=1, beacon_sources=[app_address]
    )
    (planted,) = truth.beacons
    # And the emulated Athena answering the scan's query as the query answers over that day
    scan = service.window(truth.end, 24)
    options = ScanOptions(since=scan.since)
    columns, rows = run_on_duckdb(tmp_path, scan, options)
    queue_in_moto(columns, rows, ACCOUNT, REGION)
    # And its verification's query, for the best pairs' event times
    best = service.beacons(service.read_features(columns, rows), options)
    keys = [(p.src, p.dst, p.dst_port, p.protocol) for p in best]
    queue_in_moto(*run_events_on_duckdb(tmp_path, scan, options, keys), ACCOUNT, REGION)

    # When the deployed scan runs for the schedule's time
    response = clients("lambda").invoke(
        FunctionName=naming.FUNCTIONS["beacons"],
        Payload=json.dumps({"source": "aws.events", "time": "2026-12-04T00:00:00Z"}),
    )
    outcome = json.loads(response["Payload"].read())
    assert not response.get("FunctionError"), outcome

    # Then it put the beacon on the project bus, verified, as one finding
    (pair,) = best
    assert (pair.src, pair.dst, pair.dst_port) == (planted.src, planted.dst, planted.dst_port)
    assert (outcome["beacons"], outcome["dismissed"], outcome["published"]) == (1, 0, 1)
    assert outcome["verified"] == 1
    document = beacon_finding(pair, account_id=ACCOUNT, region=REGION, detected_at=scan.until)
    assert outcome["finding_ids"] == [document["id"]]
    # And the intake started its execution, which waits for a person: the default policy asks
    # to isolate the app instance and cut its C2 address outbound
    finding = normalize(_delivered(document))
    submission = pipeline.Submission(
        locator="beacons#1",
        finding=finding,
        execution_name=naming.execution_name(document["id"], finding.updated_at),
        dry_run=False,
    )
    (result,) = pipeline.wait(clients, [submission], timeout=60)
    assert result.status == pipeline.WAITING_FOR_APPROVAL, result
    assert result.approval_id
    decision = result.decision
    assert (decision["mode"], decision["rule"]) == ("approval", "compromised-workload-c2")
    targets = {(action["kind"], action["target"]) for action in decision["actions"]}
    assert targets == {
        ("isolate_instance", estate["app_instance"]),
        ("c2_block", f"{planted.dst}/32"),
    }
    # And the execution's input is the scan's finding, about the app instance
    execution = clients("stepfunctions").describe_execution(
        executionArn=pipeline.execution_arn(clients, submission.execution_name)
    )
    started = json.loads(execution["input"])
    detail = started["event"]["detail"]
    assert started["event"]["source"] == naming.EVENT_SOURCE
    assert detail["type"] == FINDING_TYPE
    assert detail["resource"]["instanceDetails"]["instanceId"] == estate["app_instance"]


def _delivered(document: dict[str, Any]) -> dict[str, Any]:
    entry = beacon_event(document)
    return {"source": entry["Source"], "detail-type": entry["DetailType"], "detail": document}
