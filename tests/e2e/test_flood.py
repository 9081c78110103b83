"""A flood of findings through the local pipeline: every address blocked, few WAF writes, a budget.

Ten port probes of a hundred addresses each bring 1,000 distinct attacker addresses. The
automatic blocks past the hour's budget are asked of a person; once approved, every address
ends in the WAF IP set, none lost, with no more IP-set writes than the WAF writer's batches.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest

from cloud_sniper.approvals import local_api
from cloud_sniper.domain import naming
from cloud_sniper.local import pipeline
from services.decide import adapters as decide_adapters
from services.decide import handler as decide_handler
from services.mitigate import handler as mitigate_handler
from services.mitigate.adapters import waf

pytestmark = pytest.mark.e2e

FINDINGS = 10
ADDRESSES_PER_FINDING = 100
FLOODED = FINDINGS * ADDRESSES_PER_FINDING


def flood_policy(blocks_per_hour: int) -> dict[str, Any]:
    return {
        "version": 1,
        "safeguards": {"hourly_budget": {"blocks": blocks_per_hour, "disruptions": 10}},
        "rules": [
            {
                "name": "probes",
                "match": {"types": ["Recon:EC2/PortProbeUnprotectedPort"]},
                "mode": "auto",
                "actions": ["waf_block"],
            },
            {"name": "rest", "mode": "notify"},
        ],
    }


@pytest.fixture(autouse=True)
def cold_decide() -> Any:
    """Forget the flood's policy after the test: decide runs in this process for later tests."""
    yield
    _forget_policy()


def _forget_policy() -> None:
    decide_adapters.clear_caches()
    decide_handler._decide_settings.cache_clear()
    decide_handler._parameter_policy.cache_clear()


def deploy_policy(clients: Any, policy: dict[str, Any]) -> None:
    """Put a policy in the deployed parameter, and make decide read it now, not in 5 minutes.

    The budget starts afresh too, as at the turn of a clock hour.
    """
    budget = clients("dynamodb")
    for item in budget.scan(TableName=naming.BUDGET_TABLE)["Items"]:
        budget.delete_item(TableName=naming.BUDGET_TABLE, Key={"window": item["window"]})
    clients("ssm").put_parameter(
        Name=naming.POLICY_PARAMETER, Value=json.dumps(policy), Type="String", Overwrite=True
    )
    _forget_policy()


def probes(template: dict[str, Any], first: int) -> list[dict[str, Any]]:
    """Port probes of the demo's instance, each from a hundred addresses no other names."""
    findings = []
    for number in range(FINDINGS):
        finding = copy.deepcopy(template)
        detail = finding["detail"]
        detail["id"] = uuid.uuid4().hex
        (probe, *_) = detail["service"]["action"]["portProbeAction"]["portProbeDetails"]
        details = []
        for offset in range(ADDRESSES_PER_FINDING):
            index = first + number * ADDRESSES_PER_FINDING + offset
            item = copy.deepcopy(probe)
            item["remoteIpDetails"]["ipAddressV4"] = f"5.188.{index // 250}.{index % 250 + 1}"
            details.append(item)
        detail["service"]["action"]["portProbeAction"]["portProbeDetails"] = details
        findings.append(finding)
    return findings


@pytest.fixture
def writes(monkeypatch) -> dict[str, int]:
    """How many WAF writer batches ran, and how many IP-set updates they made."""
    counts = {"batches": 0, "updates": 0}
    write_changes = mitigate_handler.write_changes
    put = waf.WafIpSets._put

    def counted_batch(*args: Any, **kwargs: Any) -> Any:
        counts["batches"] += 1
        return write_changes(*args, **kwargs)

    def counted_put(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["updates"] += 1
        return put(self, *args, **kwargs)

    monkeypatch.setattr(mitigate_handler, "write_changes", counted_batch)
    monkeypatch.setattr(waf.WafIpSets, "_put", counted_put)
    return counts


def ipv4_set(clients: Any) -> set[str]:
    wafv2 = clients("wafv2")
    summary = next(
        s
        for s in wafv2.list_ip_sets(Scope="REGIONAL")["IPSets"]
        if s["Name"] == naming.WAF_IPV4_SET
    )
    ip_set = wafv2.get_ip_set(Name=naming.WAF_IPV4_SET, Scope="REGIONAL", Id=summary["Id"])
    return set(ip_set["IPSet"]["Addresses"])


def flood(clients: Any, findings: list[dict[str, Any]]) -> list[pipeline.Result]:
    documents = [(f"flood#{n}", finding) for n, finding in enumerate(findings)]
    submissions, rejections = pipeline.submit(clients, documents, dry_run=False)
    assert not rejections
    results = pipeline.wait(clients, submissions, timeout=600)
    # A thousand changes take the writer a few of its 2 s batches beyond the usual wait.
    assert pipeline.wait_for_waf_writer(clients, timeout=180), "the WAF writer did not drain"
    return results


def test_a_flood_of_1000_addresses_is_blocked_in_few_writes_within_its_budget(
    clients, demo, writes
):
    # Given an hourly budget of 500 automatic blocks, and 1,000 distinct attacker addresses in
    # ten port probes of a hundred addresses each
    deploy_policy(clients, flood_policy(blocks_per_hour=500))
    findings = probes(demo["02-port-probe.json"], first=0)
    before = ipv4_set(clients)

    # When the ten findings go through the local pipeline at once
    results = flood(clients, findings)

    # Then five are blocked at once, and the five past the budget wait for a person, saying why
    modes = sorted(result.decision["mode"] for result in results)
    assert modes == ["approval"] * 5 + ["auto"] * 5
    asked = [result for result in results if result.approval_id]
    assert len(asked) == 5
    assert all(
        "hourly budget of automatic blocks (500 an hour) is spent" in result.decision["reason"]
        for result in asked
    )

    # When a person approves them
    api = local_api(clients)
    for result in asked:
        api.approve(result.approval_id, reason="flood")
    pipeline.wait(clients, [result.submission for result in asked], timeout=600)
    assert pipeline.wait_for_waf_writer(clients, timeout=180), "the WAF writer did not drain"

    # Then every address is in the IP set, none lost
    flooded = {f"5.188.{i // 250}.{i % 250 + 1}/32" for i in range(FLOODED)}
    missing = flooded - ipv4_set(clients)
    assert not missing, f"{len(missing)} addresses not blocked, e.g. {sorted(missing)[:3]}"
    assert len(ipv4_set(clients) - before) == FLOODED
    # And the IP set was written no more often than the writer took a batch
    assert 0 < writes["updates"] <= writes["batches"]
    print(f"\nflood: {FLOODED} addresses, {writes['batches']} batches, {writes['updates']} updates")
