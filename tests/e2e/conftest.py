"""One emulated account with the synthesized app deployed, shared by a module's end-to-end tests."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_sniper.local.account import seed_estate
from cloud_sniper.local.demo import demo_findings
from cloud_sniper.local.faults import set_faults
from cloud_sniper.local.runtime import LOCAL_CONTEXT, LocalCloud


@pytest.fixture(scope="session")
def assembly_dir() -> Path:
    """The app synthesized as the local account runs it, once per session (kept in .build).

    The local context shortens the WAF writer's interval, as `cloud-sniper demo` does; the
    infrastructure tests read the app synthesized with the deployed defaults instead.
    """
    from cloud_sniper import synth

    with pytest.MonkeyPatch.context() as patch:
        for name in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION"):
            patch.delenv(name, raising=False)
        return synth.synthesize(synth.ROOT / ".build" / "e2e-assembly", context=LOCAL_CONTEXT)


# Module scope: the emulated account is process-wide while it runs, and the integration tests'
# own moto mocks must start from an empty one after these modules end.
@pytest.fixture(scope="module")
def cloud(assembly_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCloud]:
    log_file = tmp_path_factory.mktemp("functions") / "functions.log"
    with LocalCloud(assembly_dir, log_file=log_file) as running:
        yield running


@pytest.fixture(scope="module")
def estate(cloud: LocalCloud) -> dict[str, str]:
    return seed_estate(cloud.clients)


@pytest.fixture
def clients(cloud: LocalCloud) -> Iterator[Any]:
    """The emulated account's clients; fault rules set by a test end with it."""
    yield cloud.clients
    set_faults(cloud.clients("ssm"), [])


@pytest.fixture(scope="module")
def demo(estate: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The demo findings about the seeded estate, by file name."""
    return {locator.split("/")[-1]: document for locator, document in demo_findings(estate)}


@pytest.fixture(scope="session")
def variant() -> Any:
    return make_variant


def make_variant(document: dict[str, Any], attacker: str | None = None) -> dict[str, Any]:
    """A copy of a demo finding with a new id (and attacker address), so tests stay apart."""
    copied = copy.deepcopy(document)
    detail = copied["detail"]
    old_id = detail["id"]
    detail["id"] = uuid.uuid4().hex
    text = json.dumps(copied).replace(old_id, detail["id"])
    if attacker is not None:
        action = detail["service"]["action"]
        remote = action["networkConnectionAction"]["remoteIpDetails"]["ipAddressV4"]
        text = text.replace(remote, attacker)
    return json.loads(text)
