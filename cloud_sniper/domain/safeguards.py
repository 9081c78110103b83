"""Safeguards on automatic actions: the blast radius of each, and an hourly budget for them all.

An automatic action that would disrupt more than the policy allows (an instance others depend
on, a bucket serving a website, a resource tagged critical) is asked of a person instead; and
once the automatic actions of an hour reach their budget, the next ones are asked too, so a
flood of findings cannot lock the SOC out of its own estate.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from cloud_sniper.domain.models import ActionKind, Decision, Mode, Model, PlannedAction

# What each action disrupts beyond the attacker: the resource it changes.
DISRUPTIVE = frozenset(
    {ActionKind.ISOLATE_INSTANCE, ActionKind.REVOKE_CREDENTIALS, ActionKind.BLOCK_PUBLIC_ACCESS}
)
# The budget each action kind draws on.
BLOCKS = "blocks"
DISRUPTIONS = "disruptions"


def budget_of(kind: ActionKind) -> str:
    """The hourly budget an action kind counts against."""
    return DISRUPTIONS if kind in DISRUPTIVE else BLOCKS


class HourlyBudget(Model):
    """How many automatic actions of each budget one clock hour allows, all findings together."""

    blocks: Annotated[int, Field(ge=0)] = 500
    disruptions: Annotated[int, Field(ge=0)] = 10


class Safeguards(Model):
    """The policy's limits on automatic actions."""

    # A resource carrying this tag with the value "true" is critical: one dependent by itself.
    critical_tag: Annotated[str, Field(min_length=1)] = "cloud-sniper:critical"
    # An automatic disruptive action on a target with more dependents than this is asked first.
    max_dependents: Annotated[int, Field(ge=0)] = 0
    hourly_budget: HourlyBudget = Field(default_factory=HourlyBudget)


def disruptive_actions(decision: Decision) -> list[PlannedAction]:
    """The actions of an automatic decision whose blast radius must be counted first."""
    if decision.mode != Mode.AUTO:
        return []
    return [action for action in decision.actions if action.kind in DISRUPTIVE]


def limit_blast_radius(
    decision: Decision,
    dependents: dict[str, list[str]],
    safeguards: Safeguards,
    approval_timeout_seconds: int,
) -> Decision:
    """Turn an automatic decision into an approval when an action's target has too many dependents.

    `dependents` maps an action id to what depends on its target, in words ("Auto Scaling group
    web", "serves a website").
    """
    over = {
        action_id: found
        for action_id, found in dependents.items()
        if len(found) > safeguards.max_dependents
    }
    if decision.mode != Mode.AUTO or not over:
        return decision
    details = "; ".join(
        f"{action_id} has {len(found)} dependent(s): {', '.join(found)}"
        for action_id, found in sorted(over.items())
    )
    reason = (
        f"{decision.reason}; asked first, the blast radius is over the policy's "
        f"{safeguards.max_dependents}: {details}"
    )
    return _ask(decision, reason, approval_timeout_seconds)


def budget_counts(decision: Decision) -> dict[str, int]:
    """How many actions of each budget an automatic decision would use."""
    counts: dict[str, int] = {}
    if decision.mode != Mode.AUTO:
        return counts
    for action in decision.actions:
        counts[budget_of(action.kind)] = counts.get(budget_of(action.kind), 0) + 1
    return counts


def over_budget(
    decision: Decision, exceeded: list[str], safeguards: Safeguards, approval_timeout_seconds: int
) -> Decision:
    """Turn an automatic decision into an approval when one of its budgets is spent this hour."""
    if decision.mode != Mode.AUTO or not exceeded:
        return decision
    limits = ", ".join(
        f"{name} ({getattr(safeguards.hourly_budget, name)} an hour)" for name in sorted(exceeded)
    )
    reason = f"{decision.reason}; asked first, the hourly budget of automatic {limits} is spent"
    return _ask(decision, reason, approval_timeout_seconds)


def _ask(decision: Decision, reason: str, approval_timeout_seconds: int) -> Decision:
    return decision.model_copy(
        update={
            "mode": Mode.APPROVAL,
            "reason": reason,
            "approval_timeout_seconds": approval_timeout_seconds,
        }
    )
