"""Weigh a decision's automatic actions: the blast radius of each, the hourly budget of all."""

from __future__ import annotations

from datetime import UTC, datetime

from aws_lambda_powertools import Logger

from cloud_sniper.domain import safeguards
from cloud_sniper.domain.models import Decision, Finding
from cloud_sniper.domain.policy import Policy
from services.decide import adapters

logger = Logger(child=True)


def safeguarded(
    decision: Decision,
    finding: Finding,
    policy: Policy,
    *,
    budget_table: str | None,
    execution: str,
    dry_run: bool,
) -> Decision:
    """The decision once its automatic actions are weighed by their blast radius and budget.

    A dry run changes nothing, so it spends no budget; without a budget table (the handler run
    outside AWS) no budget is kept, and the logs say so.
    """
    timeout = policy.defaults.approval_timeout
    guards = policy.safeguards
    dependents = {
        action.id: adapters.dependents(action, finding, guards)
        for action in safeguards.disruptive_actions(decision)
    }
    decision = safeguards.limit_blast_radius(decision, dependents, guards, timeout)

    counts = safeguards.budget_counts(decision)
    if not counts or dry_run:
        return decision
    if budget_table is None:
        logger.warning("no hourly budget kept", extra={"reason": "BUDGET_TABLE unset"})
        return decision
    limits = guards.hourly_budget.model_dump()
    exceeded = adapters.reserve(budget_table, counts, limits, execution, datetime.now(UTC))
    if exceeded:
        logger.warning("hourly budget spent", extra={"budgets": exceeded})
    return safeguards.over_budget(decision, exceeded, guards, timeout)
