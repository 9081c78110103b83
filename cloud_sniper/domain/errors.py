"""Errors the state machine tells apart by name: its Retry and Catch match these class names."""

from __future__ import annotations

# AWS error codes worth a retry: throttling and the service's own failures.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "SlowDown",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "WAFInternalErrorException",
        "WAFUnavailableEntityException",
    }
)


class TransientAwsError(Exception):
    """An AWS call failed in a way that may pass on retry (throttling, service error)."""


class InvalidFindingError(ValueError):
    """The input is not a finding this pipeline can read; the message names the field."""


def is_transient(error_code: str, http_status: int | None = None) -> bool:
    """Tell whether an AWS error code (and HTTP status) is worth retrying."""
    return error_code in TRANSIENT_ERROR_CODES or (http_status is not None and http_status >= 500)
