"""Fault injection for the emulated account: chosen AWS calls fail, to see Retry and Catch work.

Rules live in the emulated account itself (an SSM parameter), so a demo or a test can set them
from any process talking to the local server. A rule names a service and an operation, the
error code to answer with, an optional text the request body must contain, and how many
requests it applies to (0: every one).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.awsrequest import AWSResponse
from moto.core.botocore_stubber import MockRawResponse
from moto.ssm.models import ssm_backends
from pydantic import BaseModel, ConfigDict

from cloud_sniper.local.hooks import handler_registered

FAULTS_PARAMETER = "/cloud-sniper/local/faults"
UNSERVED_URL = "http://answered-in-process.invalid/"


class FaultRule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    service: str  # botocore service id, e.g. "wafv2"
    operation: str  # e.g. "UpdateIPSet"
    error_code: str = "ThrottlingException"
    http_status: int = 400
    body_contains: str | None = None
    times: int = 0


def set_faults(ssm: Any, rules: list[FaultRule]) -> None:
    """Store the fault rules in the emulated account."""
    value = json.dumps([rule.model_dump() for rule in rules])
    ssm.put_parameter(Name=FAULTS_PARAMETER, Value=value, Type="String", Overwrite=True)


def stored_rules(account: str, region: str) -> tuple[int, str] | None:
    """The rules as the emulated account holds them, with the version of their parameter;
    None when none are stored.

    Read from the emulation's own state rather than through the SSM API: the injector looks
    before every request, and an API call for each would cost more than most requests do.
    """
    parameter = ssm_backends[account][region].get_parameter(FAULTS_PARAMETER)
    return (parameter.version, parameter.value) if parameter is not None else None


class FaultInjector:
    """Answers matching requests with an AWS error instead of letting the emulation serve them.

    Each time the rules are stored they start afresh: a rule for a number of requests applies
    to that many after it was stored, whatever the rules before it served.
    """

    def __init__(self, read_rules: Callable[[], tuple[int, str] | None]) -> None:
        self._read_rules = read_rules
        self._version: int | None = None
        self._rules_stored: list[FaultRule] = []
        self._served: dict[int, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def installed(self) -> Iterator[FaultInjector]:
        with handler_registered("before-send", self._on_request, first=True):
            yield self

    def served(self) -> list[int]:
        """How many requests each stored rule has answered with its error, in the rules' order."""
        self._rules()
        with self._lock:
            return [self._served.get(index, 0) for index in range(len(self._rules_stored))]

    def _rules(self) -> list[FaultRule]:
        stored = self._read_rules()
        if stored is None:
            return []
        version, value = stored
        with self._lock:
            if version != self._version:
                self._rules_stored = [FaultRule.model_validate(r) for r in json.loads(value)]
                self._served = {}
                self._version = version
            return self._rules_stored

    def _on_request(self, request: Any, event_name: str, **_: Any) -> AWSResponse | None:
        _, service, operation = event_name.split(".", 2)
        if service == "ssm":
            return None
        body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
        for index, rule in enumerate(self._rules()):
            if (rule.service, rule.operation) != (service, operation):
                continue
            if rule.body_contains and rule.body_contains not in body:
                continue
            with self._lock:
                served = self._served.get(index, 0)
                if rule.times and served >= rule.times:
                    continue
                self._served[index] = served + 1
            response = _error_response(request, rule)
            # Every before-send handler runs; pointing the request nowhere keeps the emulation
            # from also serving it, so a failed call changes nothing, as in AWS.
            request.url = UNSERVED_URL
            return response
        return None


def _error_response(request: Any, rule: FaultRule) -> AWSResponse:
    payload = {"__type": rule.error_code, "message": "injected by the local fault rules"}
    headers = {"x-amzn-ErrorType": rule.error_code, "Content-Type": "application/x-amz-json-1.1"}
    body = MockRawResponse(json.dumps(payload))
    return AWSResponse(request.url, rule.http_status, headers, body)
