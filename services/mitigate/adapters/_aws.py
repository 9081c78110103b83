"""Translation of AWS SDK errors into the errors the actions and the state machine know."""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from cloud_sniper.domain.errors import TransientAwsError, is_transient
from services.mitigate.actions import MitigationError


def error_code(exc: ClientError) -> str:
    """The AWS error code of a failed call."""
    return exc.response.get("Error", {}).get("Code", "")


def aws_error(exc: ClientError | BotoCoreError, doing: str) -> Exception:
    """The error to raise for a failed call: transient ones are retried by the state machine."""
    if isinstance(exc, BotoCoreError):
        # Connection failures and timeouts never reached a decision on AWS's side.
        return TransientAwsError(f"{doing}: {exc}")
    code = error_code(exc)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = exc.response.get("Error", {}).get("Message", "")
    if is_transient(code, status):
        return TransientAwsError(f"{doing}: {code}: {message}")
    return MitigationError(f"{doing}: {code}: {message}")


def catalogue_error(exc: ClientError | BotoCoreError, doing: str) -> Exception:
    """The error a catalogue action raises for a failed call: transient, or the action failed.

    Transient errors stay TransientAwsError for the state machine to retry; the rest are
    permanent failures of the action, as the catalogue names them.
    """
    # Imported here: the catalogue's action modules import these adapters.
    from services.mitigate.catalogue import ActionFailedError

    error = aws_error(exc, doing)
    return error if isinstance(error, TransientAwsError) else ActionFailedError(str(error))
