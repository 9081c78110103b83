"""Cold import time of each Lambda handler module, read from `python -X importtime`."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass

from bench import ROOT
from bench.report import median, number, print_table, progress

HANDLERS = (
    "services.ingest.handler",
    "services.enrich.handler",
    "services.decide.handler",
    "services.mitigate.handler",
    "services.report.handler",
)
RUNS = 3
TOP = 5
# A cold start that imports for longer than this leaves little of Lambda's init phase for work.
TARGET_US = 1_500_000

# "import time:       995 |     113999 |   services.decide.adapters": self µs, cumulative µs, and
# the module name indented two spaces per level of nesting.
_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


class ImportTimeError(RuntimeError):
    """The importtime output does not show the module being imported."""


@dataclass(frozen=True)
class ImportLine:
    """One line of importtime's report."""

    module: str
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> list[ImportLine]:
    """Read importtime's stderr into its lines, in the order it printed them."""
    lines = []
    for text in stderr.splitlines():
        match = _LINE.match(text)
        if match:
            self_us, cumulative_us, indent, module = match.groups()
            # One space follows the bar; every further two spaces are one level deeper.
            depth = (len(indent) - 1) // 2
            lines.append(ImportLine(module, int(self_us), int(cumulative_us), depth))
    return lines


def module_cost(lines: list[ImportLine], module: str) -> tuple[int, list[ImportLine]]:
    """The cumulative µs of a top-level import, and the imports made directly under it.

    importtime prints a module after everything it imported, so the module's subtree is the run
    of deeper lines just before its own.
    """
    for index in range(len(lines) - 1, -1, -1):
        line = lines[index]
        if line.module == module and line.depth == 0:
            break
    else:
        raise ImportTimeError(f"{module} is not a top-level import in the importtime output")

    children = []
    for child in reversed(lines[:index]):
        if child.depth == 0:
            break
        if child.depth == 1:
            children.append(child)
    return line.cumulative_us, children


def measure(module: str, runs: int = RUNS) -> dict:
    """Import a module in `runs` fresh interpreters; the median run and its slowest imports."""
    samples = []
    for _ in range(runs):
        completed = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", f"import {module}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            tail = completed.stderr.strip().splitlines()[-1:]
            raise ImportTimeError(f"importing {module} failed: {' '.join(tail)}")
        samples.append(module_cost(parse_importtime(completed.stderr), module))

    totals = [total for total, _ in samples]
    middle = median(totals)
    # The breakdown shown is the median run's own, so its parts add up to the figure shown.
    _, children = min(samples, key=lambda sample: abs(sample[0] - middle))
    slowest = sorted(children, key=lambda line: line.cumulative_us, reverse=True)[:TOP]
    return {
        "module": module,
        "median_us": int(middle),
        "runs_us": totals,
        "target_us": TARGET_US,
        "status": "PASS" if middle < TARGET_US else "OVER",
        "slowest": [
            {"module": line.module, "cumulative_us": line.cumulative_us} for line in slowest
        ],
    }


def run() -> dict:
    """Measure every handler module."""
    progress(f"imports: {len(HANDLERS)} handler modules, {RUNS} fresh interpreters each")
    return {
        "runs": RUNS,
        "target_us": TARGET_US,
        "handlers": [measure(module) for module in HANDLERS],
    }


def show(result: dict) -> None:
    """Print the handlers' import times, then what each handler's import spends its time on."""
    target = f"{number(result['target_us'])} µs"
    rows = [
        (
            item["module"],
            number(item["median_us"]),
            " / ".join(number(total) for total in item["runs_us"]),
            item["status"],
        )
        for item in result["handlers"]
    ]
    print_table(
        f"Cold import of the Lambda handlers (median of {result['runs']} runs; target < {target})",
        ("module", "median µs", "runs µs", "vs target"),
        rows,
    )

    rows = [
        (item["module"].removesuffix(".handler"), slow["module"], number(slow["cumulative_us"]))
        for item in result["handlers"]
        for slow in item["slowest"]
    ]
    print_table(
        f"Slowest {TOP} imports made directly by each handler (median run, cumulative)",
        ("handler", "import", "µs"),
        rows,
    )
