"""The beacons service's AWS side: Athena's queries, EC2's interfaces, the project's bus."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from cloud_sniper.beacons.findings import BeaconSource
from cloud_sniper.domain.errors import TransientAwsError, is_transient
from services.beacons.service import BeaconScanError, Ports, QueryStatus
from services.beacons.settings import Settings

CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})
_NETWORK_ERRORS = (BotoConnectionError, HTTPClientError)
# DescribeNetworkInterfaces takes at most 200 values in one filter.
_ADDRESSES_PER_CALL = 200
# Entries EventBridge failed for a reason that may pass: sent once more, then given up.
_RETRIED_ENTRY_ERRORS = frozenset({"ThrottlingException", "InternalFailure", "InternalException"})


def build_ports(settings: Settings, session: Any = None) -> Ports:
    """The clients and the adapters over them; once per cold start."""
    session = session or boto3.session.Session()
    with _translated("GetCallerIdentity"):
        identity = session.client("sts", config=CLIENT_CONFIG).get_caller_identity()
    return Ports(
        queries=AthenaQueries(session.client("athena", config=CLIENT_CONFIG), settings.workgroup),
        addresses=Ec2Addresses(session.client("ec2", config=CLIENT_CONFIG)),
        bus=ProjectBus(session.client("events", config=CLIENT_CONFIG), settings.event_bus_name),
        account_id=identity["Account"],
        region=session.region_name,
    )


class AthenaQueries:
    """Queries run in the workgroup, whose enforced settings say where and how results are kept."""

    def __init__(self, client: Any, workgroup: str) -> None:
        self._client = client
        self._workgroup = workgroup

    def start(self, sql: str, database: str) -> str:
        """Start the query; its execution id."""
        with _translated("StartQueryExecution"):
            response = self._client.start_query_execution(
                QueryString=sql,
                QueryExecutionContext={"Database": database},
                WorkGroup=self._workgroup,
            )
        return response["QueryExecutionId"]

    def status(self, query_id: str) -> QueryStatus:
        """The query's state, why it ended so, and what it scanned."""
        with _translated("GetQueryExecution"):
            execution = self._client.get_query_execution(QueryExecutionId=query_id)
        execution = execution["QueryExecution"]
        status = execution.get("Status", {})
        statistics = execution.get("Statistics", {})
        return QueryStatus(
            state=status.get("State", "QUEUED"),
            reason=status.get("StateChangeReason", ""),
            scanned_bytes=int(statistics.get("DataScannedInBytes", 0)),
            engine_millis=int(statistics.get("EngineExecutionTimeInMillis", 0)),
        )

    def stop(self, query_id: str) -> None:
        """Cancel the query, so it costs no more."""
        with _translated("StopQueryExecution"):
            self._client.stop_query_execution(QueryExecutionId=query_id)

    def rows(self, query_id: str) -> tuple[list[str], Iterable[list[str | None]]]:
        """The result's column names and its rows, page by page, every value a string or None."""
        pages = self._pages(query_id)
        first = next(pages, None)
        if first is None:
            return [], []
        columns = [c["Name"] for c in first["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]]

        def values() -> Iterator[list[str | None]]:
            rows = first["ResultSet"].get("Rows", [])
            # A SELECT's first row repeats the column names.
            if rows and [cell.get("VarCharValue") for cell in rows[0]["Data"]] == columns:
                rows = rows[1:]
            yield from (_cells(row) for row in rows)
            for page in pages:
                yield from (_cells(row) for row in page["ResultSet"].get("Rows", []))

        return columns, values()

    def _pages(self, query_id: str) -> Iterator[dict[str, Any]]:
        paginator = self._client.get_paginator("get_query_results")
        with _translated("GetQueryResults"):
            yield from paginator.paginate(QueryExecutionId=query_id)


class Ec2Addresses:
    """The network interfaces holding internal addresses, and the instances they belong to."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def resolve(self, addresses: Sequence[str]) -> dict[str, BeaconSource]:
        """What EC2 knows of each address; an address no interface holds is left out."""
        interfaces: dict[str, dict[str, Any]] = {}
        for start in range(0, len(addresses), _ADDRESSES_PER_CALL):
            chunk = list(addresses[start : start + _ADDRESSES_PER_CALL])
            filters = [{"Name": "addresses.private-ip-address", "Values": chunk}]
            with _translated("DescribeNetworkInterfaces"):
                pages = self._client.get_paginator("describe_network_interfaces").paginate(
                    Filters=filters
                )
                for page in pages:
                    for interface in page.get("NetworkInterfaces", []):
                        for address in _addresses(interface):
                            if address in chunk:
                                interfaces[address] = interface
        instances = self._instances(
            sorted({i["Attachment"]["InstanceId"] for i in interfaces.values() if _attached(i)})
        )
        return {
            address: _source(address, interface, instances.get(_instance_id(interface), {}))
            for address, interface in interfaces.items()
        }

    def _instances(self, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not instance_ids:
            return {}
        found = {}
        with _translated("DescribeInstances"):
            pages = self._client.get_paginator("describe_instances").paginate(
                InstanceIds=instance_ids
            )
            for page in pages:
                for reservation in page.get("Reservations", []):
                    for instance in reservation.get("Instances", []):
                        found[instance["InstanceId"]] = instance
        return found


class ProjectBus:
    """The project's event bus, where the intake rule picks up project detectors' findings."""

    def __init__(self, client: Any, bus_name: str) -> None:
        self._client = client
        self._bus_name = bus_name

    def publish(self, entries: Sequence[dict[str, Any]]) -> None:
        """Put the entries (ten at most); those EventBridge fails for a passing reason, twice."""
        pending = [{**entry, "EventBusName": self._bus_name} for entry in entries]
        for attempt in range(2):
            with _translated("PutEvents"):
                response = self._client.put_events(Entries=pending)
            if not response.get("FailedEntryCount"):
                return
            failed = [
                (entry, result)
                for entry, result in zip(pending, response["Entries"], strict=True)
                if result.get("ErrorCode")
            ]
            retried = [e for e, r in failed if r["ErrorCode"] in _RETRIED_ENTRY_ERRORS]
            if attempt == 0 and len(retried) == len(failed):
                pending = retried
                continue
            codes = sorted({result["ErrorCode"] for _, result in failed})
            message = f"PutEvents: {len(failed)} finding(s) not put on the bus ({', '.join(codes)})"
            if set(codes) <= _RETRIED_ENTRY_ERRORS:
                raise TransientAwsError(message)
            raise BeaconScanError(message)


def _cells(row: dict[str, Any]) -> list[str | None]:
    return [cell.get("VarCharValue") for cell in row.get("Data", [])]


def _addresses(interface: dict[str, Any]) -> list[str]:
    found = [interface.get("PrivateIpAddress")]
    found += [item.get("PrivateIpAddress") for item in interface.get("PrivateIpAddresses", [])]
    return [address for address in found if address]


def _attached(interface: dict[str, Any]) -> bool:
    return bool(interface.get("Attachment", {}).get("InstanceId"))


def _instance_id(interface: dict[str, Any]) -> str | None:
    return interface.get("Attachment", {}).get("InstanceId")


def _source(address: str, interface: dict[str, Any], instance: dict[str, Any]) -> BeaconSource:
    tags = instance.get("Tags") or interface.get("TagSet") or []
    return BeaconSource(
        address=address,
        interface_id=interface.get("NetworkInterfaceId"),
        instance_id=_instance_id(interface),
        subnet_id=interface.get("SubnetId"),
        vpc_id=interface.get("VpcId"),
        availability_zone=interface.get("AvailabilityZone"),
        private_dns_name=interface.get("PrivateDnsName"),
        security_groups={g["GroupId"]: g.get("GroupName", "") for g in interface.get("Groups", [])},
        instance_type=instance.get("InstanceType"),
        image_id=instance.get("ImageId"),
        instance_profile_arn=instance.get("IamInstanceProfile", {}).get("Arn"),
        tags={tag["Key"]: tag.get("Value", "") for tag in tags},
    )


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    """Turn throttling, service and network failures of one AWS call into TransientAwsError."""
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if is_transient(code, status):
            raise TransientAwsError(f"{operation}: {code}") from error
        message = error.response.get("Error", {}).get("Message", "")
        raise BeaconScanError(f"{operation}: {code}: {message}") from error
    except _NETWORK_ERRORS as error:
        raise TransientAwsError(f"{operation}: {error}") from error
