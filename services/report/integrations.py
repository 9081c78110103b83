"""The report's deliveries to Security Hub and TheHive: each logged, none failing the report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from cloud_sniper.domain.models import Incident
from services.report import security_hub, thehive
from services.report.settings import Settings

if TYPE_CHECKING:
    from services.report.security_hub_adapter import SecurityHubFindings
    from services.report.thehive_adapter import TheHiveCases

logger = Logger(child=True)


def security_hub_of(settings: Settings) -> SecurityHubFindings | None:
    """Security Hub's findings, when the function updates them."""
    if not settings.security_hub_updates:
        return None
    from services.report import security_hub_adapter

    return security_hub_adapter.SecurityHubFindings(security_hub_adapter.securityhub_client())


def thehive_of(settings: Settings) -> TheHiveCases | None:
    """TheHive's cases, when the function has TheHive's URL and the secret of its API key.

    The key is read on the first report, so a missing secret fails that delivery alone.
    """
    url, secret = settings.thehive_url, settings.thehive_api_key_secret
    if not url or not secret:
        return None
    # Imported here: thehive4py and requests weigh on the cold start of every report otherwise.
    from services.report import thehive_adapter

    def api_key() -> str:
        return thehive_adapter.api_key_from_secret(thehive_adapter.secretsmanager_client(), secret)

    return thehive_adapter.TheHiveCases(url, api_key)


def report_location(bucket: str, key: str) -> str:
    """Where a report is, as the integrations quote it."""
    return f"s3://{bucket}/{key}"


def deliver(
    incident: Incident,
    event: Mapping[str, Any] | None,
    location: str,
    *,
    hub: SecurityHubFindings | None,
    cases: TheHiveCases | None,
) -> dict[str, dict[str, Any]]:
    """Update the finding in Security Hub and the case in TheHive, those configured.

    Returns what each did, by name, for the handler's result. The report is written before:
    a failure here is logged and returned, never raised.
    """
    results: dict[str, dict[str, Any]] = {}
    if hub is not None:
        results["security_hub"] = update_security_hub(hub, incident, event, location)
    if cases is not None:
        results["thehive"] = sync_thehive(cases, incident, location)
    return results


def update_security_hub(
    hub: SecurityHubFindings,
    incident: Incident,
    event: Mapping[str, Any] | None,
    location: str,
) -> dict[str, Any]:
    """Set the finding's workflow status and note in Security Hub."""
    plan = security_hub.plan_update(incident, event, location)
    if isinstance(plan, security_hub.Skipped):
        logger.info("security hub update skipped", extra={"reason": plan.reason})
        return {"status": "skipped", "reason": plan.reason}

    try:
        unprocessed = hub.update(plan)
    except Exception as exc:  # the report stands whatever Security Hub does
        _log_failure("security hub update failed", exc, finding_arn=plan.finding.id)
        return {"status": "failed", "error": _message(exc)}
    if unprocessed:
        errors = [f"{item.error_code}: {item.error_message}" for item in unprocessed]
        logger.warning(
            "security hub finding not updated",
            extra={
                "finding_arn": plan.finding.id,
                "error_codes": [item.error_code for item in unprocessed],
                "errors": errors,
            },
        )
        return {"status": "failed", "error": "; ".join(errors)}

    logger.info(
        "security hub finding updated",
        extra={"finding_arn": plan.finding.id, "workflow": plan.workflow.value},
    )
    return {"status": "updated", "workflow": plan.workflow.value}


def sync_thehive(cases: TheHiveCases, incident: Incident, location: str) -> dict[str, Any]:
    """Create or update the incident's case in TheHive."""
    reason = thehive.skip_reason(incident)
    if reason is not None:
        logger.info("thehive case skipped", extra={"reason": reason})
        return {"status": "skipped", "reason": reason}

    cases.start()
    try:
        result = thehive.sync(incident, location, cases)
    except Exception as exc:  # the report stands whatever TheHive does
        _log_failure("thehive case not synced", exc)
        return {"status": "failed", "error": _message(exc)}

    summary = {
        "status": "created" if result.created else "updated",
        "case_id": result.case_id,
        "case_number": result.case_number,
        "observables_added": result.observables_added,
        "procedures_added": result.procedures_added,
        "tasks_added": result.tasks_added,
        "tasks_closed": result.tasks_closed,
    }
    if result.problems:
        summary["problems"] = result.problems
        logger.warning("thehive case synced with problems", extra=summary)
    else:
        logger.info("thehive case synced", extra=summary)
    return summary


def _log_failure(message: str, exc: Exception, **keys: Any) -> None:
    # A service's refusal is an expected anomaly; anything else is a bug worth its traceback.
    if isinstance(exc, security_hub.SecurityHubError | thehive.TheHiveRequestError):
        logger.warning(message, extra={**keys, "error": _message(exc)})
    else:
        logger.exception(message, extra=keys)


def _message(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
