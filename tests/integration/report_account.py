"""An emulated account holding what the report handler writes to, and its environment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from cloud_sniper.domain import naming
from services.report import handler as report_handler
from tests.project_tables import create_table

BUCKET = "cloud-sniper-reports-111122223333-us-east-1"


@dataclass
class Context:
    """The Lambda context the handler's logger reads."""

    function_name: str = "cloud-sniper-report"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:111122223333:function:cloud-sniper-report"
    aws_request_id: str = "00000000-0000-0000-0000-000000000000"


@contextmanager
def report_account(monkeypatch: pytest.MonkeyPatch, **environment: str) -> Iterator[Any]:
    """Moto with the report's tables, bucket and bus, the handler's environment set; yields S3."""
    variables = {
        "INCIDENTS_TABLE": naming.INCIDENTS_TABLE,
        "APPROVALS_TABLE": naming.APPROVALS_TABLE,
        "BLOCKS_TABLE": naming.BLOCKS_TABLE,
        "REPORTS_BUCKET": BUCKET,
        "EVENT_BUS_NAME": naming.EVENT_BUS,
        "POWERTOOLS_SERVICE_NAME": "report",
        **environment,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    report_handler._dependencies.cache_clear()
    try:
        with mock_aws():
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket=BUCKET)
            dynamodb = boto3.resource("dynamodb")
            for table in (naming.INCIDENTS_TABLE, naming.APPROVALS_TABLE, naming.BLOCKS_TABLE):
                create_table(dynamodb, table)
            boto3.client("events").create_event_bus(Name=naming.EVENT_BUS)
            yield s3
    finally:
        report_handler._dependencies.cache_clear()
