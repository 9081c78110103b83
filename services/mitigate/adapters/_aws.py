"""Translation of AWS SDK errors into the errors the actions and the state machine know."""

from __future__ import annotations

from typing import Any

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


CONDITION_FAILED = "ConditionalCheckFailedException"


def conditional(doing: str, write: Any, **request: Any) -> bool:
    """Make a conditional DynamoDB write; False when its condition does not hold."""
    try:
        write(**request)
    except ClientError as exc:
        if error_code(exc) == CONDITION_FAILED:
            return False
        raise aws_error(exc, doing) from exc
    except BotoCoreError as exc:
        raise aws_error(exc, doing) from exc
    return True


def put_unless_active(table: Any, key: str, item: dict[str, Any], active: str) -> bool:
    """Put an item unless one with its key is recorded with status `active`; False then."""
    return conditional(
        f"PutItem {item[key]}",
        table.put_item,
        Item=item,
        ConditionExpression=f"attribute_not_exists({key}) OR #status <> :active",
        ExpressionAttributeNames={"#status": "status"},
        ExpressionAttributeValues={":active": active},
    )


def get_item(table: Any, key: str, value: str) -> dict[str, Any] | None:
    """The item with that key (a consistent read), or None."""
    try:
        response = table.get_item(Key={key: value}, ConsistentRead=True)
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, f"GetItem {value}") from exc
    return response.get("Item")


def all_items(table: Any, operation: str, params: dict[str, Any], doing: str) -> list[dict]:
    """Every item a Scan or Query returns, over all its pages."""
    items: list[dict] = []
    while True:
        try:
            page = getattr(table, operation)(**params)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, doing) from exc
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        params = {**params, "ExclusiveStartKey": page["LastEvaluatedKey"]}
