"""Test-wide setup: no test reaches a real AWS account."""

import json
import os
from pathlib import Path

import pytest

EVENTS = Path(__file__).parent / "events"

os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    POWERTOOLS_TRACE_DISABLED="1",
    POWERTOOLS_METRICS_NAMESPACE="CloudSniper",
)


def load_event(name: str) -> dict:
    """Load a sample event kept as JSON under tests/events/."""
    return json.loads((EVENTS / name).read_text())


@pytest.fixture
def event():
    return load_event


@pytest.fixture(scope="session")
def assembly_dir() -> Path:
    """The CDK app synthesized once per session, environment-agnostic as on a fresh checkout.

    The assembly is kept in .build/test-assembly and reused while nothing it reads has changed.
    """
    from cloud_sniper import synth

    with pytest.MonkeyPatch.context() as patch:
        for name in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION"):
            patch.delenv(name, raising=False)
        return synth.synthesize(synth.ROOT / ".build" / "test-assembly")
