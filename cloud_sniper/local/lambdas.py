"""Run Lambda invocations in-process: the emulated account's functions execute the real handlers.

moto stores functions but runs their code only in Docker. Here a botocore handler answers every
`lambda.Invoke` made in this process (by Step Functions, by the event source poller or by hand):
it reads the function's configuration from the emulated account, sets the environment variables
the template gave that function, and calls the handler named in its configuration.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from moto.core.botocore_stubber import MockRawResponse

from cloud_sniper.local.hooks import handler_registered

INVOKE_EVENT = "before-send.lambda.Invoke"
UNSERVED_URL = "http://answered-in-process.invalid/"


@dataclass
class LambdaContext:
    """The parts of the Lambda context object that handlers and Powertools read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    timeout_seconds: int
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = "local"
    _deadline: float = field(default=0.0)

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class Invocation:
    """One record of a handler run, kept for the CLI and the tests."""

    function_name: str
    started: float
    seconds: float
    error: str | None


class InProcessLambda:
    """Answers Lambda Invoke calls by running the configured handler in this process."""

    def __init__(
        self, region: str, endpoint_url: str | None = None, log_file: Path | None = None
    ) -> None:
        self._region = region
        self._endpoint_url = endpoint_url
        self._log = log_file.open("a", buffering=1) if log_file else None
        # One invocation at a time: handlers read os.environ, which is process-wide.
        self._lock = threading.RLock()
        self._client: Any = None
        self._loaded: dict[str, tuple[Any, dict[str, str]]] = {}
        # Each function's staged code, by function name: the handler reads its files there.
        self.task_roots: dict[str, Path] = {}
        self.invocations: list[Invocation] = []

    @contextmanager
    def installed(self) -> Iterator[InProcessLambda]:
        """Register the handler for every botocore client created while the block runs."""
        with handler_registered(INVOKE_EVENT, self._on_invoke):
            yield self

    def _on_invoke(self, request: Any, **_: Any) -> AWSResponse | None:
        name = _function_name_from_url(request.url)
        payload = json.loads(request.body or b"{}") if request.body else {}
        status, headers, body = self.invoke(name, payload)
        # Every before-send handler runs; pointing the request nowhere keeps the emulation's own
        # Lambda from also answering it.
        url, request.url = request.url, UNSERVED_URL
        return AWSResponse(url, status, headers, MockRawResponse(body))

    def invoke(self, name: str, payload: Any) -> tuple[int, dict[str, str], bytes]:
        """Run one invocation and shape the answer as the Lambda API does."""
        configuration = self._configuration(name)
        task_root = self.task_roots.get(configuration["FunctionName"])
        with self._lock, _environment(configuration, self._region, task_root):
            started = time.monotonic()
            handler = self._handler(configuration)
            context = LambdaContext(
                function_name=configuration["FunctionName"],
                invoked_function_arn=configuration["FunctionArn"],
                memory_limit_in_mb=int(configuration.get("MemorySize", 128)),
                timeout_seconds=int(configuration.get("Timeout", 3)),
            )
            try:
                result = handler(payload, context)
            except Exception as exc:  # the Lambda runtime reports any error as the payload
                error = {
                    "errorType": type(exc).__name__,
                    "errorMessage": str(exc),
                    "stackTrace": traceback.format_exception(exc)[-5:],
                }
                self._record(configuration, started, type(exc).__name__)
                headers = {"X-Amz-Function-Error": "Unhandled"}
                return 200, headers, json.dumps(error).encode()
        self._record(configuration, started, None)
        return 200, {"X-Amz-Executed-Version": "$LATEST"}, json.dumps(result).encode()

    def _record(self, configuration: dict, started: float, error: str | None) -> None:
        seconds = time.monotonic() - started
        self.invocations.append(Invocation(configuration["FunctionName"], started, seconds, error))

    def _configuration(self, name: str) -> dict:
        if self._client is None:
            self._client = boto3.client(
                "lambda", region_name=self._region, endpoint_url=self._endpoint_url
            )
        return self._client.get_function_configuration(FunctionName=name)

    def _handler(self, configuration: dict) -> Any:
        """Import the handler's module once per function and configuration, as a cold start does."""
        module_name, _, attribute = configuration["Handler"].rpartition(".")
        environment = configuration.get("Environment", {}).get("Variables", {})
        loaded = self._loaded.get(configuration["FunctionName"])
        if loaded is not None and loaded[1] == environment:
            return loaded[0]

        module = importlib.import_module(module_name)
        if loaded is not None:
            module = importlib.reload(module)
        handler = getattr(module, attribute)
        self._loaded[configuration["FunctionName"]] = (handler, environment)
        if self._log is not None:
            _send_logs_to(self._log)
        return handler


@contextmanager
def _environment(configuration: dict, region: str, task_root: Path | None) -> Iterator[None]:
    """Give the handler its function's environment variables for the length of one call."""
    variables = dict(configuration.get("Environment", {}).get("Variables", {}))
    variables["AWS_REGION"] = variables["AWS_DEFAULT_REGION"] = region
    if task_root is not None:
        variables["LAMBDA_TASK_ROOT"] = str(task_root)
    variables["AWS_LAMBDA_FUNCTION_NAME"] = configuration["FunctionName"]
    variables["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] = str(configuration.get("MemorySize", 128))
    variables["_HANDLER"] = configuration["Handler"]
    saved = {key: os.environ[key] for key in variables if key in os.environ}
    os.environ.update(variables)
    try:
        yield
    finally:
        # Variables are put back but never deleted: other threads (moto's executions, botocore
        # making a client) read os.environ meanwhile, and a key vanishing mid-read breaks them.
        os.environ.update(saved)


def _send_logs_to(stream: Any) -> None:
    """Send the functions' logs to one file, as CloudWatch Logs keeps them, not to the terminal."""
    for logger in logging.root.manager.loggerDict.values():
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                sys.stdout,
                sys.__stdout__,
                sys.stderr,
                sys.__stderr__,
            ):
                handler.setStream(stream)


def _function_name_from_url(url: str) -> str:
    # .../2015-03-31/functions/<name or arn>/invocations
    from urllib.parse import unquote

    return unquote(url.split("/functions/", 1)[1].split("/", 1)[0])
