"""Throughput of the normalizer and of policy evaluation, and the normalizer's peak memory."""

from __future__ import annotations

import copy
import gc
import json
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench import ROOT
from bench.report import number, print_table, progress
from cloud_sniper.domain import asff
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import Enrichment
from cloud_sniper.domain.normalize import iter_findings, normalize, unwrap
from cloud_sniper.domain.policy import evaluate, load_policy

EVENTS_DIR = ROOT / "tests" / "events"
POLICY_FILE = ROOT / "cloud_sniper" / "data" / "default-policy.yaml"
MIN_SECONDS = 2.0
MEMORY_FINDINGS = 10_000


def sample_events() -> list[tuple[str, dict[str, Any]]]:
    """The EventBridge events under tests/events that normalize without error, by file name."""
    samples = []
    for path in sorted(EVENTS_DIR.glob("*.json")):
        document = json.loads(path.read_text())
        if not isinstance(document, dict) or "detail-type" not in document:
            continue
        # GuardDuty's normalizer is what is measured; Security Hub's events have their own.
        if asff.is_event(document):
            continue
        try:
            normalize(document)
        except InvalidFindingError:
            continue
        samples.append((path.name, document))
    return samples


def repeat_for(work: Callable[[], int], min_seconds: float = MIN_SECONDS) -> tuple[int, float]:
    """Run `work` (it returns how many items it handled) until min_seconds have passed."""
    work()  # warm-up: caches filled and code paths taken once before the clock starts
    handled = 0
    started = time.perf_counter()
    elapsed = 0.0
    while elapsed < min_seconds:
        handled += work()
        elapsed = time.perf_counter() - started
    return handled, elapsed


def json_lines(samples: list[tuple[str, dict[str, Any]]], count: int) -> str:
    """`count` deliveries as JSON lines, cycling through the samples, each finding its own id."""
    lines = []
    for index in range(count):
        document = copy.deepcopy(samples[index % len(samples)][1])
        finding, _ = unwrap(document)
        finding["id"] = f"bench{index:027x}"
        lines.append(json.dumps(document))
    return "\n".join(lines) + "\n"


def normalize_memory(text: str) -> tuple[int, int]:
    """Read and normalize every line of `text`, keeping the findings; (findings, peak bytes)."""
    gc.collect()
    tracemalloc.start()
    try:
        findings = [
            normalize(document)
            for _, document in iter_findings(text, "bench.jsonl")
            if not isinstance(document, InvalidFindingError)
        ]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return len(findings), peak


def run_normalize() -> dict:
    """Findings normalized per second over the samples, and the peak memory of a 10,000 batch."""
    samples = sample_events()
    documents = [document for _, document in samples]
    progress(f"normalize: {len(samples)} sample events for at least {MIN_SECONDS:g} s")

    def work() -> int:
        for document in documents:
            normalize(document)
        return len(documents)

    handled, seconds = repeat_for(work)

    progress(f"normalize: peak memory of {MEMORY_FINDINGS:,} findings read as JSON lines")
    text = json_lines(samples, MEMORY_FINDINGS)
    normalized, peak = normalize_memory(text)
    return {
        "samples": [name for name, _ in samples],
        "findings": handled,
        "seconds": round(seconds, 3),
        "findings_per_second": round(handled / seconds, 1),
        "us_per_finding": round(seconds / handled * 1e6, 2),
        "memory": {
            "findings": normalized,
            "input_bytes": len(text.encode()),
            "peak_bytes": peak,
        },
    }


def run_policy() -> dict:
    """Decisions per second with the default policy over the normalized samples."""
    samples = sample_events()
    findings = [normalize(document) for _, document in samples]
    policy = load_policy(POLICY_FILE)
    enrichment = Enrichment()
    estate: frozenset[str] = frozenset()
    progress(f"policy: {len(findings)} findings for at least {MIN_SECONDS:g} s")

    def work() -> int:
        for finding in findings:
            evaluate(policy, finding, enrichment, estate)
        return len(findings)

    handled, seconds = repeat_for(work)
    # The mix of decisions says which code paths the figure covers.
    modes = Counter(evaluate(policy, f, enrichment, estate).mode.value for f in findings)
    return {
        "policy": str(POLICY_FILE.relative_to(ROOT)),
        "findings": handled,
        "seconds": round(seconds, 3),
        "decisions_per_second": round(handled / seconds, 1),
        "us_per_decision": round(seconds / handled * 1e6, 2),
        "modes": dict(sorted(modes.items())),
    }


def show_normalize(result: dict) -> None:
    """Print the normalizer's figures."""
    memory = result["memory"]
    rows = [
        ("sample events", number(len(result["samples"]))),
        ("findings normalized", number(result["findings"])),
        ("seconds", number(result["seconds"], 2)),
        ("findings / s", number(result["findings_per_second"])),
        ("µs / finding", number(result["us_per_finding"], 1)),
        ("batch: findings read from JSON lines", number(memory["findings"])),
        ("batch: input, MiB", _mib(memory["input_bytes"])),
        ("batch: peak traced memory, MiB", _mib(memory["peak_bytes"])),
    ]
    print_table("Normalizer (cloud_sniper.domain.normalize)", ("figure", "value"), rows)


def show_policy(result: dict) -> None:
    """Print the policy evaluation's figures."""
    modes = ", ".join(f"{mode} {count}" for mode, count in result["modes"].items())
    rows = [
        ("findings evaluated", number(result["findings"])),
        ("seconds", number(result["seconds"], 2)),
        ("decisions / s", number(result["decisions_per_second"])),
        ("µs / decision", number(result["us_per_decision"], 1)),
    ]
    print_table(f"Policy evaluation ({result['policy']})", ("figure", "value"), rows)
    print(f"decisions in one pass over the samples: {modes}")


def _mib(size: int) -> str:
    return number(size / 2**20, 1)
