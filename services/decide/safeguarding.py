"""Weigh a decision's automatic actions: the blast radius of each, the hourly budget of all."""

from __future__ import annotations

from datetime import UTC, datetime

from aws_lambda_powertools import Logger

from cloud_sniper.domain import safeguards
from cloud_sniper.domain.models import Decision, Finding, Mode, PlannedAction
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
    outside AWS) no budget is kept, and the logs say so. The blast radius is counted for a
    decision asking a person too, and kept in the decision, so the approver reads it.
    """
    timeout = policy.defaults.approval_timeout
    guards = policy.safeguards
    dependents = {
        action.id: adapters.dependents(action, finding, guards) for action in _weighed(decision)
    }
    decision = decision.model_copy(update={"dependents": dependents})
    decision = safeguards.limit_blast_radius(decision, dependents, guards, timeout)
    decision = _budgeted(decision, policy, budget_table, execution, dry_run)

    if decision.mode == Mode.APPROVAL and decision.on_approval_timeout is None:
        # An automatic rule turned into an approval: the policy's default says what its
        # timeout comes to.
        decision = decision.model_copy(
            update={"on_approval_timeout": policy.defaults.on_approval_timeout}
        )
    return decision


def _weighed(decision: Decision) -> list[PlannedAction]:
    """The disruptive actions whose blast radius is counted."""
    # An automatic decision's, which may turn into an approval; and those a person is asked to
    # approve, who should know what else they would disrupt.
    if decision.mode == Mode.APPROVAL:
        return [action for action in decision.actions if action.kind in safeguards.DISRUPTIVE]
    return safeguards.disruptive_actions(decision)


def _budgeted(
    decision: Decision,
    policy: Policy,
    budget_table: str | None,
    execution: str,
    dry_run: bool,
) -> Decision:
    guards = policy.safeguards
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
    return safeguards.over_budget(decision, exceeded, guards, policy.defaults.approval_timeout)
