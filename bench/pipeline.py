"""The local pipeline end to end: deploy, then SSH brute-force findings from distinct attackers."""

from __future__ import annotations

import functools
import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bench.report import median, number, percentile, print_table, progress

TEMPLATE = "demo/01-ssh-brute-force.json"
TEMPLATE_ADDRESS = "45.155.205.233"
# 89.160.0.0/16 is ordinary RIPE address space: no safety rule refuses to block it.
ATTACKER_PREFIX = "89.160"
MAX_FINDINGS = 254 * 254
DEFAULT_FINDINGS = 20
# Every service submit and wait call on.
_SERVICES = ("events", "stepfunctions", "sts", "dynamodb", "s3")


class PipelineBenchError(RuntimeError):
    """The benchmark could not feed the pipeline; the message says why."""


def attacker_address(index: int) -> str:
    """The index-th attacker, 89.160.x.y with x and y from 1 to 254 (no .0, no .255)."""
    if not 0 <= index < MAX_FINDINGS:
        raise ValueError(f"attacker index {index} is outside 0-{MAX_FINDINGS - 1}")
    return f"{ATTACKER_PREFIX}.{1 + index // 254}.{1 + index % 254}"


def brute_force_findings(estate: dict[str, str], count: int) -> list[tuple[str, dict[str, Any]]]:
    """`count` SSH brute-force events on the web instance, each its own finding and attacker."""
    from cloud_sniper.local.demo import demo_findings

    template = json.dumps(dict(demo_findings(estate))[TEMPLATE])
    documents = []
    for index in range(count):
        document = json.loads(template.replace(TEMPLATE_ADDRESS, attacker_address(index)))
        finding_id = f"bench-ssh-{index:05d}"
        document["id"] = f"00000000-0000-4000-8000-{index:012x}"
        detail = document["detail"]
        detail["id"] = finding_id
        detail["arn"] = f"{detail['arn'].rsplit('/', 1)[0]}/{finding_id}"
        documents.append((f"bench/ssh-{index:05d}", document))
    return documents


def run(count: int = DEFAULT_FINDINGS) -> dict:
    """Deploy the local pipeline, send `count` findings through it and time their executions."""
    from cloud_sniper.local import server
    from cloud_sniper.local.account import seed_estate
    from cloud_sniper.local.runtime import LocalCloud

    progress("pipeline: synthesizing the app (skipped when nothing changed)")
    started = time.perf_counter()
    assembly = server.synthesize_for(None)
    synth_seconds = time.perf_counter() - started

    log_file = server.state_dir() / "bench-functions.log"
    log_file.unlink(missing_ok=True)
    cloud = LocalCloud(assembly, log_file=log_file)
    progress("pipeline: deploying into the emulated account")
    try:
        started = time.perf_counter()
        cloud.start()
        deploy_seconds = time.perf_counter() - started
        started = time.perf_counter()
        estate = seed_estate(cloud.clients)
        seed_seconds = time.perf_counter() - started
        progress(f"pipeline: {count} findings through the pipeline")
        executions = _send(_made_ahead(cloud.clients), brute_force_findings(estate, count))
    finally:
        cloud.stop()

    return {
        "findings": count,
        "synth_seconds": round(synth_seconds, 3),
        "deploy_seconds": round(deploy_seconds, 3),
        "seed_seconds": round(seed_seconds, 3),
        **_figures(executions),
        "functions_log": str(log_file),
    }


def _made_ahead(factory: Callable[[str], Any]) -> Callable[[str], Any]:
    """The factory's clients, each made once, now, before any execution runs.

    The local runtime puts a function's environment into os.environ for each invocation, and
    botocore reads os.environ while it makes a client: a client made on this thread while an
    execution runs can fail with a KeyError.
    """
    clients = functools.cache(factory)
    for service in _SERVICES:
        clients(service)
    return clients


def _send(clients: Any, documents: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Submit the findings one by one, wait for them, and read each execution's dates."""
    from cloud_sniper.local import pipeline

    submissions = []
    submitted_at = {}
    for locator, document in documents:
        at = datetime.now(UTC)
        accepted, rejected = pipeline.submit(clients, [(locator, document)])
        if rejected:
            raise PipelineBenchError(f"{locator} was rejected: {rejected[0].error}")
        submitted_at[accepted[0].execution_name] = at
        submissions += accepted

    # Generous: a slow machine should report slow figures, not give up on the executions.
    results = pipeline.wait(clients, submissions, timeout=60 + 10 * len(submissions))

    sfn = clients("stepfunctions")
    executions = []
    for result in results:
        name = result.submission.execution_name
        described = sfn.describe_execution(executionArn=pipeline.execution_arn(clients, name))
        executions.append(
            {
                "submitted": submitted_at[name],
                "started": described.get("startDate"),
                "stopped": described.get("stopDate"),
                "status": result.status,
                "outcome": (result.incident or {}).get("outcome"),
            }
        )
    return executions


def _figures(executions: list[dict[str, Any]]) -> dict:
    """Throughput, latencies and outcomes of the executions."""
    ended = [item for item in executions if item["stopped"] is not None]
    latencies = [_seconds(item["submitted"], item["stopped"]) for item in ended]
    to_start = [_seconds(item["submitted"], item["started"]) for item in ended]
    running = [_seconds(item["started"], item["stopped"]) for item in ended]
    span = (
        _seconds(min(item["submitted"] for item in executions), max(i["stopped"] for i in ended))
        if ended
        else None
    )
    outcomes = Counter(item["outcome"] or item["status"].lower() for item in executions)
    return {
        "ended": len(ended),
        "seconds": _round(span),
        "findings_per_second": _round(len(ended) / span if span else None),
        "latency_median_seconds": _round(median(latencies)),
        "latency_p95_seconds": _round(percentile(latencies, 0.95)),
        "to_start_median_seconds": _round(median(to_start)),
        "running_median_seconds": _round(median(running)),
        "mitigated": outcomes.get("mitigated", 0),
        "outcomes": dict(sorted(outcomes.items())),
    }


def show(result: dict) -> None:
    """Print the pipeline's figures."""
    outcomes = ", ".join(f"{name} {count}" for name, count in result["outcomes"].items())
    rows = [
        ("synth, s (cached when nothing changed)", number(result["synth_seconds"], 2)),
        ("deploy (LocalCloud.start), s", number(result["deploy_seconds"], 2)),
        ("seed estate, s", number(result["seed_seconds"], 2)),
        ("findings submitted", number(result["findings"])),
        ("executions ended", number(result["ended"])),
        ("first submission to last end, s", number(result["seconds"], 2)),
        ("findings / s", number(result["findings_per_second"], 2)),
        ("submission to end, median s", number(result["latency_median_seconds"], 2)),
        ("submission to end, p95 s", number(result["latency_p95_seconds"], 2)),
        ("submission to start, median s", number(result["to_start_median_seconds"], 2)),
        ("start to end, median s", number(result["running_median_seconds"], 2)),
        ("mitigated", number(result["mitigated"])),
    ]
    print_table("Local pipeline end to end (cloud_sniper.local)", ("figure", "value"), rows)
    print(f"outcomes: {outcomes}; function logs: {result['functions_log']}")


def _seconds(since: datetime, until: datetime) -> float:
    return (until - since).total_seconds()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
