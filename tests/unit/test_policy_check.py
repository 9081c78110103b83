"""Policy as code: a policy file validated line by line, tested on findings, explained."""

from __future__ import annotations

import gzip
import itertools
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from cloud_sniper.domain.models import Direction
from cloud_sniper.domain.normalize import iter_findings, normalize
from cloud_sniper.domain.policy import (
    MATCH_CONDITIONS,
    Match,
    explain_match,
    load_policy,
    matches,
    parse_policy,
)
from cloud_sniper.policy_check import (
    COVERED_CONDITIONS,
    DEFAULT_POLICY_FILE,
    UnreadableFileError,
    covers,
    explain_file,
    explain_finding,
    run_policy_tests,
    validate_policy_file,
)

EVENTS = Path(__file__).parents[1] / "events"
SSH = "guardduty-ssh-brute-force.json"
RDP_V6 = "guardduty-ipv6-rdp-brute-force.json"
PROBE = "guardduty-port-probe.json"
C2 = "guardduty-cc-activity.json"
MANY = "getfindings-response.json"

SMALL_POLICY = """\
version: 1
rules:
  - name: brute-force
    match:
      types: ["UnauthorizedAccess:EC2/*BruteForce"]
      directions: [inbound]
    mode: auto
    actions: [waf_block]
  - name: probes
    match:
      types: ["Recon:*"]
    mode: ignore
  - name: everything-else
    mode: notify
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def copy_event(folder: Path, name: str, as_name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(EVENTS / name, folder / (as_name or name)))


def sample_findings():
    for path in sorted(EVENTS.glob("*.json")):
        for locator, document in iter_findings(path.read_bytes(), path.name):
            if isinstance(document, Exception):
                continue
            try:
                yield locator, normalize(document)
            except ValueError:
                continue  # the invalid samples and the step requests are no findings


def problems_of(tmp_path: Path, text: str, name: str = "policy.yaml"):
    report = validate_policy_file(write(tmp_path, name, text))
    return [(p.line, p.column, p.path, p.message) for p in report.problems]


@pytest.fixture
def small_policy(tmp_path):
    path = write(tmp_path / "policies", "small.yaml", SMALL_POLICY)
    return load_policy(path)


# --- validate ---------------------------------------------------------------------------------


def test_a_wrong_type_in_a_nested_field_names_its_line_column_and_path(tmp_path):
    # Given a rule whose second type pattern is a number
    text = """\
        version: 1
        rules:
          - name: probes
            match:
              types:
                - "Recon:*"
                - 42
            mode: ignore
        """

    # When it is validated
    problems = problems_of(tmp_path, text)

    # Then the problem is on the line of that list item
    assert problems == [
        (7, 11, "rules[0] (probes).match.types[1]", "Input should be a valid string")
    ]


def test_an_unknown_key_is_on_the_line_of_the_key(tmp_path):
    text = """\
        version: 1
        rules:
          - name: probes
            match:
              types: ["Recon:*"]
              severity: 5
            mode: ignore
        """

    assert problems_of(tmp_path, text) == [
        (6, 7, "rules[0] (probes).match.severity", "Extra inputs are not permitted")
    ]


def test_a_missing_mode_is_on_the_line_of_its_rule(tmp_path):
    # Given a second rule without its mode
    text = """\
        version: 1
        rules:
          - name: probes
            mode: ignore

          - name: no-mode
            match:
              types: ["*"]
        """

    # When it is validated
    problems = problems_of(tmp_path, text)

    # Then the closest existing node is the rule itself
    assert problems == [(6, 5, "rules[1] (no-mode).mode", "Field required")]


def test_a_duplicate_rule_name_is_on_the_line_of_the_second_name(tmp_path):
    text = """\
        version: 1
        rules:
          - name: probes
            mode: ignore
          - name: probes
            mode: notify
        """

    assert problems_of(tmp_path, text) == [
        (5, 5, "rules[1] (probes).name", "two rules are named 'probes'")
    ]


def test_a_duplicate_rule_name_is_listed_beside_other_problems(tmp_path):
    # Given a repeated name and, in another rule, a mode that is not one
    text = """\
        version: 1
        rules:
          - name: probes
            mode: ignore
          - name: probes
            mode: notify
          - name: third
            mode: sometimes
        """

    # When it is validated
    problems = problems_of(tmp_path, text)

    # Then both are listed, in the order of their lines
    assert [(line, path) for line, _, path, _ in problems] == [
        (5, "rules[1] (probes).name"),
        (8, "rules[2] (third).mode"),
    ]


def test_bad_yaml_gives_the_line_of_the_syntax_error(tmp_path):
    text = """\
        version: 1
        rules:
          - name: probes
            mode: ignore
           match: {types: ["*"]}
        """

    [(line, column, path, message)] = problems_of(tmp_path, text)

    assert (line, column, path) == (5, 4, "")
    assert message.startswith("not valid YAML: ")


def test_several_problems_are_all_listed_with_their_lines(tmp_path):
    text = """\
        version: 1
        defaults:
          block_ttl: forever
        allowlist:
          - 10.0.0.0/8
          - not-a-network
        rules:
          - name: block
            match:
              min_severity: 7
              max_severity: 4
            mode: auto
        """

    problems = problems_of(tmp_path, text)

    assert [(line, path) for line, _, path, _ in problems] == [
        (3, "defaults.block_ttl"),
        (6, "allowlist[1]"),
        (9, "rules[0] (block).match"),
    ]
    assert problems[2][3] == "min_severity 7.0 is above max_severity 4.0"


def test_a_document_that_is_not_a_mapping_is_rejected_at_its_start(tmp_path):
    assert problems_of(tmp_path, "- version: 1\n") == [
        (1, 1, "policy", "a policy is a mapping with version, defaults and rules")
    ]
    assert problems_of(tmp_path, "") == [
        (1, None, "", "the file is empty: a policy is a mapping with version, defaults and rules")
    ]


def test_a_json_policy_has_no_lines_but_its_syntax_errors_do(tmp_path):
    # Given a JSON policy with a rule missing its mode, and a broken one
    invalid = json.dumps({"version": 1, "rules": [{"name": "x"}]}, indent=2)
    broken = '{"version": 1,\n  "rules": [}\n'

    # When they are validated
    report = validate_policy_file(write(tmp_path, "policy.json", invalid))
    [syntax] = validate_policy_file(write(tmp_path, "broken.json", broken)).problems

    # Then the field is named without a line, and the syntax error has its line
    [problem] = report.problems
    assert (problem.line, problem.path) == (None, "rules[0] (x).mode")
    assert (
        problem.text("policy.json")
        == "policy.json (line unknown): rules[0] (x).mode: Field required"
    )
    assert (syntax.line, syntax.column) == (2, 13)


def test_a_valid_policy_is_summed_up(tmp_path):
    report = validate_policy_file(write(tmp_path, "small.yaml", SMALL_POLICY))

    assert report.valid
    assert report.rules == 3
    assert [str(mode) for mode in report.modes] == ["auto", "ignore", "notify"]
    assert report.warnings == []


def test_the_default_policy_validates():
    report = validate_policy_file(DEFAULT_POLICY_FILE)

    assert report.problems == []
    assert report.rules == len(load_policy(DEFAULT_POLICY_FILE).rules)


def test_rules_after_a_catch_all_are_warned_about_not_failed(tmp_path):
    # Given a catch-all in the middle and a narrower glob after a wider one
    text = """\
        version: 1
        rules:
          - name: recon
            match: {types: ["Recon:*"]}
            mode: ignore
          - name: recon-ec2
            match: {types: ["Recon:EC2/Port*"], min_severity: 4}
            mode: notify
          - name: all
            mode: notify
          - name: late
            match: {types: ["Backdoor:*"]}
            mode: notify
        """

    # When it is validated
    report = validate_policy_file(write(tmp_path, "policy.yaml", text))

    # Then it is valid, with a warning on the line of each rule that can never match
    assert report.valid
    assert [(w.line, w.path, w.message) for w in report.warnings] == [
        (
            6,
            "rules[1] (recon-ec2)",
            "can never match: rule 'recon' (rules[0]) comes first and matches every finding "
            "this one would",
        ),
        (
            11,
            "rules[3] (late)",
            "can never match: rule 'all' (rules[2]) comes first and matches every finding "
            "this one would",
        ),
    ]


def test_a_policy_without_a_catch_all_is_warned_about(tmp_path):
    text = """\
        version: 1
        rules:
          - name: recon
            match: {types: ["Recon:*"]}
            mode: ignore
          - name: empty-kinds
            match: {resource_kinds: []}
            mode: notify
        """

    report = validate_policy_file(write(tmp_path, "policy.yaml", text))

    assert report.valid
    assert [(w.line, w.path) for w in report.warnings] == [
        (7, "rules[1] (empty-kinds).match.resource_kinds"),
        (2, "rules"),
    ]
    assert report.warnings[1].message.startswith("no final catch-all rule")


def test_a_key_given_twice_is_warned_about(tmp_path):
    text = """\
        version: 1
        rules:
          - name: all
            mode: ignore
            mode: notify
        """

    report = validate_policy_file(write(tmp_path, "policy.yaml", text))

    assert report.valid
    [warning] = report.warnings
    assert (warning.line, warning.path) == (5, "rules[0] (all).mode")


def test_a_missing_policy_file_is_a_usage_error(tmp_path):
    with pytest.raises(UnreadableFileError, match="no such policy file"):
        validate_policy_file(tmp_path / "absent.yaml")
    with pytest.raises(UnreadableFileError, match="unknown policy file kind"):
        validate_policy_file(write(tmp_path, "policy.toml", "version = 1"))


@pytest.mark.parametrize(
    ("earlier", "later", "covered"),
    [
        ({"types": ["*"]}, {"types": ["Recon:*"], "min_severity": 4}, True),
        ({"types": ["Recon:*"]}, {"types": ["Recon:EC2/PortProbe*"]}, True),
        ({"types": ["Recon:EC2/*"]}, {"types": ["Recon:*"]}, False),
        ({"types": ["*"], "min_severity": 4}, {"types": ["*"]}, False),
        ({"types": ["*"], "min_severity": 4}, {"types": ["*"], "min_severity": 7}, True),
        ({"directions": ["inbound"]}, {"directions": ["inbound", "outbound"]}, False),
        ({"directions": ["inbound", "outbound", "unknown"]}, {}, True),
        ({"resource_tags": {"env": "prod"}}, {"resource_tags": {"env": "prod", "a": "b"}}, True),
        ({"resource_kinds": ["Instance"]}, {}, False),
        ({"products": ["Guard*"]}, {"products": ["GuardDuty"]}, True),
        ({"products": ["GuardDuty"]}, {}, False),
    ],
)
def test_a_match_covers_another_only_when_it_surely_meets_all_its_findings(earlier, later, covered):
    assert covers(Match(**earlier), Match(**later)) is covered


def test_covering_is_sure_over_the_sample_findings():
    # Given every pair of a few matches, and the sample findings
    samples = [
        Match(types=["*"]),
        Match(types=["Recon:*"]),
        Match(types=["Recon:EC2/PortProbe*"], min_severity=2),
        Match(types=["*BruteForce"], directions=[Direction.INBOUND]),
        Match(max_severity=5, resource_kinds=["Instance"]),
    ]
    findings = [finding for _, finding in sample_findings()]

    # Then when one covers the other, no finding meets the later one only
    for earlier, later in itertools.permutations(samples, 2):
        if covers(earlier, later):
            assert all(matches(earlier, f) for f in findings if matches(later, f))


# --- test -------------------------------------------------------------------------------------


def test_an_expectation_that_holds_passes(tmp_path, small_policy):
    # Given an RDP brute force over IPv6 and what the policy should make of it
    copy_event(tmp_path / "findings", RDP_V6)
    write(
        tmp_path / "findings",
        "guardduty-ipv6-rdp-brute-force.expect.yaml",
        """\
        mode: auto
        rule: brute-force
        actions: [waf_block]
        targets: ["2a05:d018:1::1"]
        refusals: 0
        """,
    )

    # When the policy is tested on the folder
    run = run_policy_tests(small_policy, "small.yaml", [tmp_path / "findings"])

    # Then the expectation is checked and holds
    [result] = run.results
    assert result.expectation is not None
    assert result.failures == []
    assert run.passed
    assert run.summary() == {
        "findings": 1,
        "expectations": 1,
        "passed": 1,
        "failed": 0,
        "rejected": 0,
    }


def test_an_expectation_that_fails_says_what_was_expected_and_what_came(tmp_path, small_policy):
    # Given an SSH brute force whose attacker is a documentation address, expected to be blocked
    folder = tmp_path / "findings"
    copy_event(folder, SSH)
    write(
        folder,
        "guardduty-ssh-brute-force.expect.yaml",
        "{mode: auto, rule: brute-force, actions: [waf_block, nacl_block]}\n",
    )

    # When the policy is tested on the file
    run = run_policy_tests(small_policy, "small.yaml", [folder / SSH])

    # Then the mode and the actions fail, the rule holds
    [result] = run.results
    assert result.failures == [
        "mode: expected auto, got notify",
        "actions: expected [nacl_block, waf_block], got []",
    ]
    assert not run.passed
    assert run.summary()["failed"] == 1


def test_an_unknown_key_in_an_expectation_is_an_error_naming_the_file(tmp_path, small_policy):
    folder = tmp_path / "findings"
    copy_event(folder, PROBE)
    expect = write(folder, "guardduty-port-probe.expect.yaml", "mode: ignore\nrulle: probes\n")

    run = run_policy_tests(small_policy, "small.yaml", [folder])

    [rejection] = run.rejected
    assert rejection.source == str(expect)
    assert rejection.error.startswith("line 2, column 1: rulle: unknown key: an expectation takes")
    assert run.results[0].expectation is None
    assert not run.passed


def test_bad_yaml_in_an_expectation_is_an_error_with_its_line(tmp_path, small_policy):
    folder = tmp_path / "findings"
    copy_event(folder, PROBE)
    expect = write(folder, "guardduty-port-probe.expect.yaml", "mode: ignore\n  rule: [probes\n")

    run = run_policy_tests(small_policy, "small.yaml", [folder])

    [rejection] = run.rejected
    assert rejection.source == str(expect)
    assert rejection.error.startswith("line 2, column 7: not valid YAML: ")


def test_a_file_of_several_findings_takes_a_list_keyed_by_finding_id(tmp_path, small_policy):
    # Given a GetFindings response of four findings and expectations for two of them
    folder = tmp_path / "findings"
    copy_event(folder, MANY)
    write(
        folder,
        "getfindings-response.expect.yaml",
        """\
        - finding_id: a4c6f2e1b3d5978a0c2e4f6a8b0d1c3e
          rule: brute-force
          refusals: 1
        - finding_id: e8a0d6c5f7b9312e4a6c8d0f2b4c5a7d
          mode: ignore
        """,
    )

    # When the policy is tested
    run = run_policy_tests(small_policy, "small.yaml", [folder])

    # Then each expectation is checked against its finding only
    checked = {r.finding.id[:12]: r.failures for r in run.results if r.expectation is not None}
    assert checked == {
        "a4c6f2e1b3d5": [],
        "e8a0d6c5f7b9": ["mode: expected ignore, got notify"],
    }
    assert len(run.results) == 4


def test_a_single_expectation_for_several_findings_is_an_error(tmp_path, small_policy):
    folder = tmp_path / "findings"
    copy_event(folder, MANY)
    write(folder, "getfindings-response.expect.yaml", "mode: notify\n")

    run = run_policy_tests(small_policy, "small.yaml", [folder])

    [rejection] = run.rejected
    assert "holds 4 findings: write a list of expectations" in rejection.error


def test_a_folder_expectations_file_is_keyed_by_finding_id(tmp_path, small_policy):
    # Given two findings, and one expectations.yaml naming both and a finding that is not there
    folder = tmp_path / "findings"
    copy_event(folder, PROBE)
    copy_event(folder, C2)
    expectations = write(
        folder,
        "expectations.yaml",
        """\
        b5d7a3f2c4e6089b1d3f5a7c9e1f2d4a: {mode: ignore, rule: probes, actions: []}
        d7f9c5b4e6a8201d3f5b7c9e1a3b4f6c: {mode: notify, rule: everything-else}
        0000000000000000: {mode: notify}
        """,
    )

    # When the policy is tested on the folder
    run = run_policy_tests(small_policy, "small.yaml", [folder])

    # Then both findings pass, and the stray expectation is an error naming the file
    assert [(r.expectation_file, r.failures) for r in run.results] == [
        (str(expectations), []),
        (str(expectations), []),
    ]
    [rejection] = run.rejected
    assert rejection.source == str(expectations)
    assert rejection.error.startswith("expects finding 0000000000000000")


def test_an_expectation_that_checks_nothing_or_has_no_findings_file_is_an_error(
    tmp_path, small_policy
):
    folder = tmp_path / "findings"
    copy_event(folder, PROBE)
    write(
        folder, "guardduty-port-probe.expect.yaml", "finding_id: b5d7a3f2c4e6089b1d3f5a7c9e1f2d4a\n"
    )
    orphan = write(folder, "gone.expect.yaml", "mode: ignore\n")

    run = run_policy_tests(small_policy, "small.yaml", [folder])

    errors = sorted(rejection.error for rejection in run.rejected)
    assert errors[0] == (
        "line 1, column 1: an expectation checks nothing: give one of mode, rule, actions, "
        "targets, refusals"
    )
    assert errors[1] == "no findings file beside it (gone.json, gone.jsonl or gone.jsonl.gz)"
    assert str(orphan) in [rejection.source for rejection in run.rejected]


def test_folders_are_walked_for_findings_and_invalid_ones_are_rejected(tmp_path, small_policy):
    # Given a folder with JSON lines, gzipped JSON lines, an invalid finding and a text file
    folder = tmp_path / "findings"
    nested = folder / "nested"
    nested.mkdir(parents=True)
    lines = (EVENTS / PROBE).read_text().replace("\n", "") + "\n"
    (folder / "probe.jsonl").write_text(lines)
    (nested / "c2.jsonl.gz").write_bytes(gzip.compress((EVENTS / C2).read_bytes()))
    copy_event(folder, "invalid-missing-severity.json")
    write(folder, "notes.txt", "not a finding")
    write(folder, "probe.expect.yaml", "mode: ignore\n")

    # When the policy is tested on the folder
    run = run_policy_tests(small_policy, "small.yaml", [folder])

    # Then the findings files are read, the expectation beside the JSON lines applies
    assert sorted(r.finding.type for r in run.results) == [
        "Backdoor:EC2/C&CActivity.B",
        "Recon:EC2/PortProbeUnprotectedPort",
    ]
    assert [r.source for r in run.results if r.expectation is not None] == [
        f"{folder / 'probe.jsonl'}#1"
    ]
    [rejection] = run.rejected
    assert rejection.source.endswith("invalid-missing-severity.json#1")
    assert rejection.error == "finding.severity: missing"


def test_a_missing_findings_path_is_a_usage_error(tmp_path, small_policy):
    with pytest.raises(UnreadableFileError, match="no such file or folder"):
        run_policy_tests(small_policy, "small.yaml", [tmp_path / "absent"])


# --- explain ----------------------------------------------------------------------------------


def test_every_condition_of_a_match_is_explained_and_read_for_dead_rules():
    assert set(MATCH_CONDITIONS) == set(Match.model_fields)
    assert set(COVERED_CONDITIONS) == set(Match.model_fields)


def test_explanations_agree_with_matches_on_the_default_policy_and_every_sample():
    # Given every rule of the default policy and every sample finding
    policy = load_policy(DEFAULT_POLICY_FILE)
    findings = list(sample_findings())
    assert len(findings) > 10

    # Then a rule's conditions all hold exactly when the rule matches
    for (locator, finding), rule in itertools.product(findings, policy.rules):
        checks = explain_match(rule.match, finding)
        assert all(check.held for check in checks) == matches(rule.match, finding), (
            locator,
            rule.name,
        )


def test_explanations_agree_with_matches_for_every_kind_of_condition():
    # Given matches using each condition, held and not
    conditions = [
        {"types": ["Recon:*", "UnauthorizedAccess:*"]},
        {"min_severity": 5},
        {"min_severity": 2},
        {"max_severity": 2},
        {"max_severity": 7.5},
        {"resource_kinds": ["Instance", "AccessKey"]},
        {"resource_kinds": []},
        {"resource_tags": {"Environment": "Production"}},
        {"resource_tags": {"Environment": "Production", "Team": "Platform"}},
        {"directions": ["outbound"]},
        {"directions": ["inbound", "unknown"]},
        {"directions": []},
        {"products": ["GuardDuty"]},
        {"products": ["Inspector", "Macie"]},
    ]
    findings = [finding for _, finding in sample_findings()]

    # Then every pair of them, on every sample, explains as it matches
    for first, second in itertools.combinations_with_replacement(conditions, 2):
        try:
            match = Match(**{**first, **second})
        except ValueError:
            continue  # a severity range upside down
        for finding in findings:
            checks = explain_match(match, finding)
            assert all(check.held for check in checks) == matches(match, finding)


def test_a_condition_shows_the_finding_value_beside_the_rule_value(tmp_path):
    # Given a port probe (severity 2.0, inbound) and a match it partly meets
    [(_, finding)] = list(iter_findings((EVENTS / PROBE).read_bytes(), PROBE))
    finding = normalize(finding)
    match = Match(
        types=["Backdoor:*", "Recon:EC2/PortProbe*"],
        min_severity=4,
        max_severity=8,
        resource_kinds=["Instance"],
        resource_tags={"Environment": "Staging"},
        directions=[Direction.OUTBOUND],
    )

    # When it is explained
    checks = explain_match(match, finding)

    # Then each check says what it compared
    assert [(c.condition, c.held, c.text) for c in checks] == [
        (
            "types",
            True,
            "type Recon:EC2/PortProbeUnprotectedPort matches Recon:EC2/PortProbe*",
        ),
        ("min_severity", False, "severity 2.0 < min_severity 4"),
        ("max_severity", True, "severity 2.0 <= max_severity 8"),
        ("resource_kinds", True, "resource kind Instance in [Instance]"),
        (
            "resource_tags",
            False,
            "tag Environment=Staging: the resource has Environment=Production",
        ),
        ("directions", False, "directions: finding has {inbound}, rule wants [outbound]"),
    ]


def test_the_first_matching_rule_decides_and_later_ones_are_not_considered(small_policy):
    explanations, rejected = explain_file(small_policy, EVENTS / PROBE)

    [explanation] = explanations
    assert rejected == []
    assert [(r.name, r.status, r.matched) for r in explanation.rules] == [
        ("brute-force", "no match", False),
        ("probes", "decides", True),
        ("everything-else", "not considered", True),
    ]
    assert [check.refused for check in explanation.safety] == [False, False]
    assert str(explanation.decision.mode) == "ignore"


def test_a_sample_finding_is_refused_before_any_rule(small_policy):
    [(locator, finding)] = [
        item for item in sample_findings() if item[0].startswith("guardduty-sample-tor-client")
    ]

    explanation = explain_finding(small_policy, finding, locator)

    assert explanation.safety[0].refused
    assert explanation.safety[0].text.startswith("GuardDuty sample finding")
    assert {rule.status for rule in explanation.rules} == {"not considered"}
    assert explanation.decision.reason == explanation.safety[0].text.split(": no rule")[0]


def test_an_exempt_resource_is_shown_as_such(small_policy, tmp_path):
    # Given the SSH brute force on a resource tagged exempt
    document = json.loads((EVENTS / SSH).read_text())
    document["detail"]["resource"]["instanceDetails"]["tags"].append(
        {"key": "cloud-sniper:exempt", "value": "true"}
    )
    path = write(tmp_path, "exempt.json", json.dumps(document))

    [explanation], _ = explain_file(small_policy, path)

    assert explanation.safety[1].refused
    assert explanation.safety[1].text.startswith("resource tagged cloud-sniper:exempt=true")
    assert explanation.rules[0].status == "decides"
    assert str(explanation.decision.mode) == "notify"


def test_the_default_policy_parses_as_the_validator_reads_it():
    # The validator reads YAML through the node tree: it must build the same policy.
    from cloud_sniper.policy_check import _parse_yaml

    document, _, problems = _parse_yaml(DEFAULT_POLICY_FILE.read_text())

    assert problems == []
    assert parse_policy(document) == load_policy(DEFAULT_POLICY_FILE)
