"""The bench's own logic: reading importtime, generating findings, percentiles, the command line."""

from __future__ import annotations

import importlib
import ipaddress

import pytest

from cloud_sniper.domain import safety
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import Enrichment, Mode
from cloud_sniper.domain.normalize import iter_findings, normalize
from cloud_sniper.domain.policy import evaluate, load_policy

# bench/ is a tool run from the project root (pytest puts the root on the path: pyproject.toml).
cli = importlib.import_module("bench.__main__")
domain = importlib.import_module("bench.domain")
imports = importlib.import_module("bench.imports")
pipeline = importlib.import_module("bench.pipeline")
report = importlib.import_module("bench.report")

IMPORTTIME = """\
import time: self [us] | cumulative | imported package
import time:       100 |        100 |   _io
import time:      1600 |      20109 | site
import time:       300 |        300 |     services
import time:       307 |        607 |   services.decide
import time:       264 |     112596 |     boto3
import time:       995 |     113999 |   services.decide.adapters
import time:     29976 |     126214 |   cloud_sniper.domain.models
import time:      1262 |     242082 | services.decide.handler
"""

ESTATE = {
    "vpc": "vpc-0123456789abcdef0",
    "web_subnet": "subnet-0123456789abcdef0",
    "web_instance": "i-0123456789abcdef0",
    "web_public_ip": "54.210.1.10",
}


def test_importtime_gives_the_module_total_and_its_direct_imports():
    # Given importtime's report of `import services.decide.handler` after the interpreter's start
    lines = imports.parse_importtime(IMPORTTIME)

    # When the handler's cost is read
    total, children = imports.module_cost(lines, "services.decide.handler")

    # Then the total is the handler's cumulative time and the children are its direct imports,
    # without the nested ones nor what the interpreter imported before
    assert total == 242082
    assert [child.module for child in children] == [
        "cloud_sniper.domain.models",
        "services.decide.adapters",
        "services.decide",
    ]
    assert {line.module: line.depth for line in lines}["boto3"] == 2


def test_importtime_without_the_module_is_an_error():
    # Given a report where the module is only a nested import
    lines = imports.parse_importtime(IMPORTTIME)

    # When / Then asking for it as a top-level import fails, naming it
    with pytest.raises(imports.ImportTimeError, match="services.decide.adapters"):
        imports.module_cost(lines, "services.decide.adapters")


def test_percentile_is_an_observed_value_by_nearest_rank():
    # Given twenty latencies
    values = [float(n) for n in range(20, 0, -1)]

    # When / Then the p95 is the 19th smallest, the median the middle, and no value gives None
    assert report.percentile(values, 0.95) == 19.0
    assert report.percentile(values, 1.0) == 20.0
    assert report.median(values) == 10.5
    assert report.percentile([], 0.95) is None
    assert report.median([]) is None


def test_attacker_addresses_are_distinct_public_and_never_refused():
    # Given the first and the last attacker indexes
    indexes = [*range(300), pipeline.MAX_FINDINGS - 1]

    # When their addresses are made
    addresses = [pipeline.attacker_address(index) for index in indexes]

    # Then each is distinct, no safety rule refuses it, and no octet is 0 or 255
    assert len(set(addresses)) == len(addresses)
    for text in addresses:
        assert safety.refuse_special(ipaddress.ip_address(text)) is None
        assert not {"0", "255"} & set(text.split(".")[2:])
    with pytest.raises(ValueError, match="outside"):
        pipeline.attacker_address(pipeline.MAX_FINDINGS)


def test_generated_findings_are_distinct_attacks_the_default_policy_blocks():
    # Given the seeded estate's identifiers
    # When three findings are generated
    documents = pipeline.brute_force_findings(ESTATE, 3)

    # Then each normalizes, with its own id and attacker, against the web instance
    findings = [normalize(document) for _, document in documents]
    assert len({finding.id for finding in findings}) == 3
    attackers = [[i.value for i in finding.indicators] for finding in findings]
    assert attackers == [[pipeline.attacker_address(n)] for n in range(3)]
    assert all(finding.resource.instance_id == ESTATE["web_instance"] for finding in findings)
    assert pipeline.TEMPLATE_ADDRESS not in str(documents)
    assert "{{" not in str(documents)

    # And the default policy decides to block each attacker at once
    policy = load_policy(domain.POLICY_FILE)
    estate = {ESTATE["web_public_ip"]}
    for finding in findings:
        decision = evaluate(policy, finding, Enrichment(), estate)
        assert decision.mode is Mode.AUTO
        assert {action.target for action in decision.actions} == {
            f"{finding.indicators[0].value}/32"
        }


def test_samples_are_the_eventbridge_events_that_normalize():
    # Given the sample events under tests/events
    # When the bench picks its samples
    samples = dict(domain.sample_events())

    # Then it keeps the GuardDuty events and leaves out requests, bare findings and invalid input
    assert "guardduty-ssh-brute-force.json" in samples
    assert "s3-export-bitcoin-tool.json" not in samples
    assert not [name for name in samples if name.startswith(("invalid-", "decide-"))]
    assert all(document.get("detail-type") for document in samples.values())


def test_json_lines_batch_reads_back_as_distinct_findings():
    # Given a batch of 40 deliveries made from the samples
    text = domain.json_lines(domain.sample_events(), 40)

    # When it is read back as a file would be
    read = [item for _, item in iter_findings(text, "batch.jsonl")]

    # Then every line is a delivery of its own finding
    assert not [item for item in read if isinstance(item, InvalidFindingError)]
    assert len({normalize(item).id for item in read}) == 40


def test_command_line_sections_run_in_order_and_unknown_ones_are_refused(capsys):
    # Given sections named out of order
    # When the command line is read
    args = cli.parse_args(["--only", "pipeline,imports", "--findings", "5"])

    # Then they run in the documented order, with the number of findings asked for
    assert args.only == ("imports", "pipeline")
    assert args.findings == 5

    # And an unknown section or a number of findings out of range is refused
    for argv in (["--only", "imports,speed"], ["--findings", "0"], ["--findings", "x"]):
        with pytest.raises(SystemExit):
            cli.parse_args(argv)
    assert "choose from imports,normalize,policy,pipeline" in capsys.readouterr().err
