"""Where moto answers otherwise than AWS in a way the pipeline would notice, set right locally."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def task_failure_cause() -> Iterator[None]:
    """Keep SendTaskFailure's cause, which moto 5.2 drops before its interpreter sees it.

    Step Functions hands the cause to the failed task's Catch; a denied approval travels in it.
    """
    from moto.core.responses import EmptyResult
    from moto.stepfunctions.responses import StepFunctionResponse

    original = StepFunctionResponse.send_task_failure

    def send_task_failure(self: Any) -> Any:
        backend = self.stepfunction_backend
        arguments = {"error": self._get_param("error")}
        # Only the interpreter's backend (execute_state_machine) takes a cause.
        if "cause" in inspect.signature(backend.send_task_failure).parameters:
            arguments["cause"] = self._get_param("cause")
        backend.send_task_failure(self._get_param("taskToken"), **arguments)
        return EmptyResult()

    StepFunctionResponse.send_task_failure = send_task_failure
    try:
        yield
    finally:
        StepFunctionResponse.send_task_failure = original
