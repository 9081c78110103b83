"""The beacons service's adapters against moto: Athena's queries, EC2's interfaces, the bus."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from cloud_sniper.domain import naming
from cloud_sniper.domain.errors import TransientAwsError
from services.beacons.adapters import AthenaQueries, Ec2Addresses, ProjectBus, build_ports
from services.beacons.service import BeaconScanError
from services.beacons.settings import Settings
from tests.beacons_athena import queue_in_moto

ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def aws():
    """An account with the scan's workgroup, its results kept encrypted in its bucket."""
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        session.client("athena").create_work_group(
            Name=naming.BEACONS_WORKGROUP,
            Configuration={
                "EnforceWorkGroupConfiguration": True,
                "ResultConfiguration": {
                    "OutputLocation": "s3://results/queries/",
                    "EncryptionConfiguration": {"EncryptionOption": "SSE_S3"},
                },
            },
        )
        yield session


def test_a_query_is_started_in_the_workgroup_followed_and_read_back_page_by_page(aws):
    # Given Athena holding the answer to the next query: a header row and two rows
    columns = ["src", "hist_bins", "ts_mad"]
    queue_in_moto(
        columns, [["10.0.1.4", "[0, 1]", "1.5"], ["10.0.1.5", "[]", None]], ACCOUNT, REGION
    )
    athena = aws.client("athena")
    queries = AthenaQueries(athena, naming.BEACONS_WORKGROUP)

    # When a query is started and followed to its end
    query_id = queries.start("SELECT 1", naming.FLOW_LOGS_DATABASE)
    states = [queries.status(query_id).state for _ in range(3)]
    names, rows = queries.rows(query_id)

    # Then it ran in the workgroup and the database, ended, and its rows come without the header
    execution = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
    assert execution["WorkGroup"] == naming.BEACONS_WORKGROUP
    assert execution["QueryExecutionContext"]["Database"] == naming.FLOW_LOGS_DATABASE
    assert states[-1] == "SUCCEEDED"
    assert names == columns
    assert list(rows) == [["10.0.1.4", "[0, 1]", "1.5"], ["10.0.1.5", "[]", None]]


def test_a_query_can_be_cancelled(aws):
    queries = AthenaQueries(aws.client("athena"), naming.BEACONS_WORKGROUP)
    query_id = queries.start("SELECT 1", naming.FLOW_LOGS_DATABASE)

    queries.stop(query_id)

    assert queries.status(query_id).state == "CANCELLED"


def test_throttling_is_transient_and_a_refusal_is_named():
    # Given Athena throttling a start, then refusing one
    athena = boto3.client("athena", region_name=REGION)
    stubber = Stubber(athena)
    stubber.add_client_error(
        "start_query_execution", "TooManyRequestsException", http_status_code=400
    )
    stubber.add_client_error(
        "start_query_execution", "InvalidRequestException", "workgroup is disabled"
    )
    queries = AthenaQueries(athena, naming.BEACONS_WORKGROUP)

    with stubber:
        with pytest.raises(TransientAwsError, match=r"^StartQueryExecution: TooManyRequests"):
            queries.start("SELECT 1", "db")
        with pytest.raises(
            BeaconScanError, match=r"InvalidRequestException: workgroup is disabled"
        ):
            queries.start("SELECT 1", "db")


def test_an_address_resolves_to_its_interface_and_instance(aws):
    # Given an instance in a subnet, tagged, with its network interface
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.2.0/24")["Subnet"]["SubnetId"]
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image,
        InstanceType="t3.small",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "app-1"}]}
        ],
    )["Instances"][0]
    address = instance["PrivateIpAddress"]

    # When the beacons' sources are resolved, one of them unknown
    found = Ec2Addresses(ec2).resolve([address, "10.20.9.9"])

    # Then the known one has its interface, subnet, VPC, instance and tags; the other is absent
    source = found[address]
    assert set(found) == {address}
    assert source.instance_id == instance["InstanceId"]
    assert source.interface_id == instance["NetworkInterfaces"][0]["NetworkInterfaceId"]
    assert (source.subnet_id, source.vpc_id) == (subnet, vpc)
    assert source.instance_type == "t3.small"
    assert source.tags == {"Name": "app-1"}


def test_findings_go_on_the_project_bus_where_a_rule_delivers_them(aws):
    # Given the project's bus with a rule for the project's findings, delivering to a queue
    events, sqs = aws.client("events"), aws.client("sqs")
    events.create_event_bus(Name=naming.EVENT_BUS)
    queue = sqs.create_queue(QueueName="intake")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    events.put_rule(
        Name="findings",
        EventBusName=naming.EVENT_BUS,
        EventPattern=json.dumps(
            {"source": [naming.EVENT_SOURCE], "detail-type": [naming.FINDING_DETAIL_TYPE]}
        ),
    )
    events.put_targets(
        Rule="findings",
        EventBusName=naming.EVENT_BUS,
        Targets=[{"Id": "intake", "Arn": arn["QueueArn"]}],
    )

    # When a finding is published
    entry = {
        "Source": naming.EVENT_SOURCE,
        "DetailType": naming.FINDING_DETAIL_TYPE,
        "Detail": json.dumps({"id": "f-1", "type": "Backdoor:EC2/Beaconing.FlowLogs"}),
    }
    ProjectBus(events, naming.EVENT_BUS).publish([entry])

    # Then the rule delivered it to the queue
    (message,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    assert json.loads(message["Body"])["detail"]["id"] == "f-1"


class FailingEvents:
    """PutEvents answering with failed entries, in turn."""

    def __init__(self, *answers: list[str | None]) -> None:
        self.answers = list(answers)
        self.calls: list[list[dict[str, Any]]] = []

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:  # noqa: N803
        self.calls.append(Entries)
        codes = self.answers.pop(0)
        return {
            "FailedEntryCount": sum(code is not None for code in codes),
            "Entries": [{"ErrorCode": code} if code else {"EventId": "e"} for code in codes],
        }


def test_entries_throttled_are_sent_again_once():
    events = FailingEvents(["ThrottlingException", None], [None])

    ProjectBus(events, naming.EVENT_BUS).publish([{"Detail": "1"}, {"Detail": "2"}])

    assert [[e["Detail"] for e in call] for call in events.calls] == [["1", "2"], ["1"]]


def test_entries_that_keep_failing_are_an_error_naming_why():
    throttled = FailingEvents(["ThrottlingException"], ["ThrottlingException"])
    refused = FailingEvents(["AccessDeniedException"])

    with pytest.raises(TransientAwsError, match=r"1 finding\(s\) not put on the bus"):
        ProjectBus(throttled, naming.EVENT_BUS).publish([{"Detail": "1"}])
    with pytest.raises(BeaconScanError, match=r"\(AccessDeniedException\)$"):
        ProjectBus(refused, naming.EVENT_BUS).publish([{"Detail": "1"}])


def test_the_ports_are_built_for_the_account_and_region(aws):
    settings = Settings.from_env(
        {
            "ATHENA_WORKGROUP": naming.BEACONS_WORKGROUP,
            "GLUE_DATABASE": naming.FLOW_LOGS_DATABASE,
            "FLOW_LOGS_TABLE": naming.FLOW_LOGS_TABLE,
            "EVENT_BUS_NAME": naming.EVENT_BUS,
            "WINDOW_HOURS": "24",
            "MIN_SCORE": "0.7",
            "MAX_FINDINGS": "25",
        }
    )

    ports = build_ports(settings, aws)

    assert (ports.account_id, ports.region) == (ACCOUNT, REGION)
