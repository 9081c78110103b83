"""Lambda entry point of the approvals API: list, read, approve and deny approvals.

Every route sits behind IAM authorization: the approver is the principal that signed the
request (requestContext.identity.userArn), checked against the approvers here too.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as NoRouteError

from cloud_sniper.domain.errors import TransientAwsError
from services.approvals import access, service
from services.approvals.adapters import build_ports
from services.approvals.service import ApprovalServiceError, Ports, Verdict
from services.approvals.settings import Settings

logger = Logger()
app = APIGatewayRestResolver()


@cache
def _settings() -> Settings:
    return Settings.from_env()


@cache
def _ports() -> Ports:
    # Built at the first request, not at import: the local runtime imports under moto.
    return build_ports(_settings())


def clear_caches() -> None:
    """Forget the settings, the clients and what was read of IAM, as a cold start would."""
    _settings.cache_clear()
    _ports.cache_clear()


@app.get("/approvals")
def list_approvals() -> dict[str, Any]:
    _approver()
    status = app.current_event.get_query_string_value("status")
    return {"approvals": service.list_approvals(_ports(), status)}


@app.get("/approvals/<approval_id>")
def get_approval(approval_id: str) -> dict[str, Any]:
    _approver()
    return service.get_approval(_ports(), approval_id)


@app.post("/approvals/<approval_id>/approve")
def approve(approval_id: str) -> dict[str, Any]:
    return _answer(approval_id, Verdict.APPROVE)


@app.post("/approvals/<approval_id>/deny")
def deny(approval_id: str) -> dict[str, Any]:
    return _answer(approval_id, Verdict.DENY)


def _answer(approval_id: str, verdict: Verdict) -> dict[str, Any]:
    approver = _approver()
    logger.append_keys(approval_id=approval_id)
    body = app.current_event.decoded_body
    approval = service.answer(_ports(), approval_id, verdict, body, approver, datetime.now(UTC))
    logger.info("approval answered", extra={"status": approval.status.value})
    return approval.model_dump(mode="json")


def _approver() -> str:
    """The caller's principal ARN, once it is known to be an approver."""
    context = app.current_event.request_context
    caller = access.caller_of(context.identity.user_arn)
    logger.append_keys(caller=caller.arn)
    settings = _settings()
    access.authorize(
        caller, _ports().directory, context.account_id, settings.approver_role_patterns
    )
    return caller.arn


@app.exception_handler(ApprovalServiceError)
def _refused(error: ApprovalServiceError) -> Response:
    logger.warning("request refused", extra={"status": error.status, "error": str(error)})
    return _json(error.status, str(error))


@app.exception_handler(access.AccessDeniedError)
def _denied(error: access.AccessDeniedError) -> Response:
    logger.warning("caller refused", extra={"error": str(error)})
    return _json(403, str(error))


@app.exception_handler(TransientAwsError)
def _busy(error: TransientAwsError) -> Response:
    logger.warning("aws busy", extra={"error": str(error)})
    return _json(503, f"{error}; try again")


@app.exception_handler(Exception)
def _failed(error: Exception) -> Response:
    # Reached only inside the resolver's own `except`: the traceback is logged with it.
    logger.exception("request failed")
    return _json(500, f"the approvals service failed ({type(error).__name__}); see its logs")


@app.not_found
def _no_route(error: NoRouteError) -> Response:
    event = app.current_event
    return _json(404, f"no such route: {event.http_method} {event.path}")


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Answer one API Gateway (REST, proxy integration) request."""
    return app.resolve(event, context)


def _json(status: int, message: str) -> Response:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=json.dumps({"message": message}),
    )
