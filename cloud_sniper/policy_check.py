"""Policy as code: validate a policy file, test it on findings, explain how it decides one.

`cloud-sniper policy validate | test | explain` print what these functions return.

Expectations, for `policy test`, sit next to the findings they are about, as a detection rule's
tests sit next to the rule:

- `<name>.expect.yaml` (or `.expect.yml`) beside `<name>.json`, `<name>.jsonl` or
  `<name>.jsonl.gz`: one expectation when the file holds one finding; a list of expectations,
  each naming its `finding_id`, when it holds several.
- `expectations.yaml` (or `.yml`) in a folder: a mapping from finding id to expectation, for the
  findings of the files directly in that folder.

An expectation checks only the keys it gives, and must give at least one:

    mode: auto                        # auto, approval, notify or ignore
    rule: brute-force-inbound         # the rule that decided; null when none did
    actions: [nacl_block, waf_block]  # the action kinds planned, in any order; [] for none
    targets: [45.155.205.233/32]      # the addresses planned, in any order
    refusals: 2                       # how many actions the safety rules refused

An unknown key, an expectation for a finding the files do not hold, an expectation file with no
findings file beside it and two expectations for one finding are errors naming the expectation
file. Findings are decided with an empty enrichment and no estate addresses (the Elastic IPs and
NAT gateways the pipeline finds at run time), so an address that only those would refuse is
planned here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from cloud_sniper.domain import naming, safety
from cloud_sniper.domain.errors import InvalidFindingError
from cloud_sniper.domain.models import (
    ActionKind,
    Decision,
    Direction,
    Enrichment,
    Finding,
    Mode,
    Model,
)
from cloud_sniper.domain.normalize import iter_findings, normalize
from cloud_sniper.domain.policy import (
    NOT_A_MAPPING,
    Cidr,
    ConditionCheck,
    Match,
    Policy,
    PolicyProblem,
    Rule,
    evaluate,
    explain_match,
    field_path,
    finding_directions,
    load_policy,
    matches,
    policy_problems,
)

DEFAULT_POLICY_FILE = Path(__file__).parent / "data" / "default-policy.yaml"
POLICY_SUFFIXES = (".yaml", ".yml", ".json")
FINDING_SUFFIXES = (".jsonl.gz", ".jsonl", ".json")
EXPECT_SUFFIXES = (".expect.yaml", ".expect.yml")
FOLDER_EXPECTATIONS = ("expectations.yaml", "expectations.yml")
CONTEXT = "enrichment empty, estate addresses empty"
CHECKED = ("mode", "rule", "actions", "targets", "refusals")
# The conditions of a Match that covers() reads: all of them, or a dead rule may be reported.
COVERED_CONDITIONS = (
    "types",
    "min_severity",
    "max_severity",
    "resource_kinds",
    "resource_tags",
    "products",
    "directions",
)
_GLOB_CHARACTERS = "*?["


class UnreadableFileError(ValueError):
    """A file named on the command line is missing, unreadable or of an unknown kind."""


class Problem(Model):
    """A problem or a warning in a policy file, at a line and column when they are known."""

    message: str
    path: str = ""
    line: int | None = None
    column: int | None = None

    def text(self, file: str) -> str:
        """The problem as one line: file:line:column: path: message."""
        where = f"{file}:{self.line}:{self.column}" if self.line else f"{file} (line unknown)"
        return ": ".join(part for part in (where, self.path, self.message) if part)


class PolicyReport(Model):
    """What validating a policy file found: problems, warnings and, when valid, its shape."""

    file: str
    problems: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    rules: int | None = None
    modes: list[Mode] = Field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


class Rejection(Model):
    """An input that could not be used, with the reason."""

    source: str
    error: str


class Expectation(Model):
    """What the policy should decide about one finding; only the keys given are checked."""

    finding_id: Annotated[str, Field(min_length=1)] | None = None
    mode: Mode | None = None
    rule: str | None = None
    actions: list[ActionKind] | None = None
    targets: list[Cidr] | None = None
    refusals: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _checks_something(self) -> Expectation:
        given = self.model_fields_set & set(CHECKED)
        if not given:
            raise ValueError(f"an expectation checks nothing: give one of {', '.join(CHECKED)}")
        for name in sorted(given - {"rule"}):
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        if self.actions is not None and len(set(self.actions)) != len(self.actions):
            raise ValueError("an action kind is listed twice")
        return self


class FindingResult(Model):
    """One finding decided by the policy, and its expectation checked when it has one."""

    source: str
    finding: Finding
    decision: Decision
    expectation: Expectation | None = None
    expectation_file: str | None = None
    failures: list[str] = Field(default_factory=list)


class PolicyTestRun(Model):
    """A policy decided on a set of findings, each against its expectation."""

    policy: str
    results: list[FindingResult] = Field(default_factory=list)
    rejected: list[Rejection] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.rejected and not any(result.failures for result in self.results)

    def summary(self) -> dict[str, int]:
        """Counts: findings, expectations, passed, failed, rejected."""
        expected = [result for result in self.results if result.expectation is not None]
        failed = sum(1 for result in expected if result.failures)
        return {
            "findings": len(self.results),
            "expectations": len(expected),
            "passed": len(expected) - failed,
            "failed": failed,
            "rejected": len(self.rejected),
        }


class SafetyCheck(Model):
    """A safety rule that holds whatever the policy says: whether it refuses, and why."""

    check: Literal["finding", "resource"]
    refused: bool
    text: str


class RuleExplanation(Model):
    """One rule against one finding: each condition, and whether the rule decides."""

    index: int
    name: str
    mode: Mode
    matched: bool
    status: Literal["decides", "no match", "not considered"]
    checks: list[ConditionCheck]


class FindingExplanation(Model):
    """How a policy decides one finding: the safety rules, every rule in order, the decision."""

    source: str
    finding: Finding
    safety: list[SafetyCheck]
    rules: list[RuleExplanation]
    decision: Decision


# --- validate ---------------------------------------------------------------------------------


def validate_policy_file(path: str | Path) -> PolicyReport:
    """Validate a policy file: every problem with its line, and warnings about dead rules."""
    path = Path(path)
    text = _read_text(path, POLICY_SUFFIXES, "policy")
    if path.suffix.lower() == ".json":
        document, root, problems = _parse_json(text)
    else:
        document, root, problems = _parse_yaml(text)
    report = PolicyReport(file=str(path), problems=problems)
    if problems:
        return report

    policy, invalid = policy_problems(document)
    names = _repeated_rule_names(document)
    said = {problem.reason for problem in names}
    # The policy's own check of repeated names only runs once every rule is valid, and names
    # the list: ours always runs and names the rule, so the policy's is dropped.
    invalid = [p for p in invalid if not (p.loc == ("rules",) and p.reason in said)]
    located = [_located(problem, root) for problem in [*invalid, *names]]
    report.problems = sorted(located, key=lambda problem: (problem.line or 0, problem.column or 0))
    if policy is None or report.problems:
        return report

    report.rules = len(policy.rules)
    report.modes = list(dict.fromkeys(rule.mode for rule in policy.rules))
    warnings = [_located(warning, root) for warning in policy_warnings(policy)]
    report.warnings = _repeated_keys(root, document) + warnings
    return report


def policy_warnings(policy: Policy) -> list[PolicyProblem]:
    """Rules that can never match, and a policy with no rule that matches every finding."""
    warnings = []
    for index, rule in enumerate(policy.rules):
        path = f"rules[{index}] ({rule.name})"
        empty = next(
            (name for name in ("resource_kinds", "directions") if _empty(rule, name)), None
        )
        if empty:
            warnings.append(
                PolicyProblem(
                    loc=("rules", index, "match", empty),
                    path=f"{path}.match.{empty}",
                    reason=f"can never match: {empty} is empty",
                )
            )
            continue
        earlier = next(
            (
                (number, other)
                for number, other in enumerate(policy.rules[:index])
                if covers(other.match, rule.match)
            ),
            None,
        )
        if earlier:
            number, other = earlier
            warnings.append(
                PolicyProblem(
                    loc=("rules", index),
                    path=path,
                    reason=f"can never match: rule {other.name!r} (rules[{number}]) comes first "
                    "and matches every finding this one would",
                )
            )
    if not any(covers(rule.match, Match()) for rule in policy.rules):
        warnings.append(
            PolicyProblem(
                loc=("rules",),
                path="rules",
                reason='no final catch-all rule (types ["*"] and no other condition): '
                "a finding no rule matches is notified about",
            )
        )
    return warnings


def covers(earlier: Match, later: Match) -> bool:
    """Tell whether the earlier match meets every finding the later one meets (sure, not all)."""
    if not all(any(_glob_covers(wide, narrow) for wide in earlier.types) for narrow in later.types):
        return False
    if _low(later) < _low(earlier) or _high(later) > _high(earlier):
        return False
    if not _within(later.resource_kinds, earlier.resource_kinds, None):
        return False
    if any(later.resource_tags.get(key) != value for key, value in earlier.resource_tags.items()):
        return False
    if earlier.products is not None and not (
        later.products is not None
        and all(any(_glob_covers(w, n) for w in earlier.products) for n in later.products)
    ):
        return False
    return _within(later.directions, earlier.directions, set(Direction))


def _glob_covers(wide: str, narrow: str) -> bool:
    if not any(character in narrow for character in _GLOB_CHARACTERS):
        return fnmatchcase(narrow, wide)
    if wide == narrow:
        return True
    # A wide pattern that is a literal prefix and one star meets every type that starts so.
    prefix = wide.removesuffix("*")
    if prefix == wide or any(character in prefix for character in _GLOB_CHARACTERS):
        return False
    literal = narrow
    for character in _GLOB_CHARACTERS:
        literal = literal.split(character, 1)[0]
    return literal.startswith(prefix)


def _low(match: Match) -> float:
    return match.min_severity if match.min_severity is not None else 0.0


def _high(match: Match) -> float:
    return match.max_severity if match.max_severity is not None else 10.0


def _within(narrow: list | None, wide: list | None, everything: set | None) -> bool:
    if wide is None or (everything is not None and everything <= set(wide)):
        return True
    return narrow is not None and set(narrow) <= set(wide)


def _empty(rule: Rule, condition: str) -> bool:
    value = getattr(rule.match, condition)
    return value is not None and not value


def _repeated_rule_names(document: Any) -> list[PolicyProblem]:
    rules = document.get("rules") if isinstance(document, dict) else None
    if not isinstance(rules, list):
        return []
    seen: set[str] = set()
    problems = []
    for index, rule in enumerate(rules):
        name = rule.get("name") if isinstance(rule, dict) else None
        if not isinstance(name, str):
            continue
        if name in seen:
            loc = ("rules", index, "name")
            problems.append(
                PolicyProblem(
                    loc=loc,
                    path=field_path(loc, document),
                    reason=f"two rules are named {name!r}",
                )
            )
        seen.add(name)
    return problems


def _repeated_keys(root: yaml.Node | None, document: Any) -> list[Problem]:
    """Keys given twice in one YAML mapping: the loader keeps the last and drops the others."""
    warnings = []
    for loc, key in _repeated_key_nodes(root, (), set()):
        warnings.append(
            Problem(
                path=field_path(loc, document),
                message=f"{key.value!r} is given twice in this mapping: only the last one is read",
                **_mark(key),
            )
        )
    return warnings


def _repeated_key_nodes(
    node: yaml.Node | None, loc: tuple[Any, ...], visited: set[int]
) -> Iterator[tuple[tuple[Any, ...], yaml.Node]]:
    # Aliases share nodes and may even loop: each node is walked once.
    if node is None or id(node) in visited:
        return
    visited.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            if name is not None and name in seen:
                yield (*loc, name), key
            if name is not None:
                seen.add(name)
            yield from _repeated_key_nodes(value, (*loc, name), visited)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _repeated_key_nodes(item, (*loc, index), visited)


def _parse_json(text: str) -> tuple[Any, None, list[Problem]]:
    try:
        return json.loads(text), None, []
    except json.JSONDecodeError as exc:
        problem = Problem(message=f"not valid JSON: {exc.msg}", line=exc.lineno, column=exc.colno)
        return None, None, [problem]


class _TextKeyLoader(yaml.SafeLoader):
    """A safe loader that reads mapping keys as written: an id of digits stays a string."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        self.flatten_mapping(node)
        mapping = {}
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else self.construct_object(key)
            mapping[name] = self.construct_object(value, deep=deep)
        return mapping


def _parse_yaml(
    text: str,
    loader_class: type[yaml.SafeLoader] = yaml.SafeLoader,
    what: str = NOT_A_MAPPING,
) -> tuple[Any, yaml.Node | None, list[Problem]]:
    """Read YAML keeping its node tree, whose marks give each key's and item's line."""
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None, [Problem(message=f"the file is empty: {what}", line=1)]
        return loader.construct_document(root), root, []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = "not valid YAML: " + ", ".join(filter(None, (exc.context, exc.problem)))
        position = {"line": mark.line + 1, "column": mark.column + 1} if mark else {}
        return None, None, [Problem(message=message, **position)]
    except yaml.YAMLError as exc:
        return None, None, [Problem(message=f"not valid YAML: {exc}")]
    finally:
        loader.dispose()


def _located(problem: PolicyProblem, root: yaml.Node | None) -> Problem:
    position = _mark(node_at(root, problem.loc)) if root is not None else {}
    return Problem(path=problem.path, message=problem.reason, **position)


def node_at(root: yaml.Node, loc: Sequence[Any]) -> yaml.Node:
    """The YAML node a validation location names: the key or list item, else its closest parent."""
    found, container = root, root
    for part in loc:
        if isinstance(container, yaml.MappingNode):
            pairs = [
                (key, value)
                for key, value in container.value
                if isinstance(key, yaml.ScalarNode) and key.value == str(part)
            ]
            if not pairs:
                break
            # The last of a repeated key: it is the one the loader kept.
            found, container = pairs[-1]
        elif (
            isinstance(container, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(container.value)
        ):
            found = container = container.value[part]
        else:
            break
    return found


def _mark(node: yaml.Node) -> dict[str, int]:
    return {"line": node.start_mark.line + 1, "column": node.start_mark.column + 1}


def _read_text(path: Path, suffixes: Sequence[str], what: str) -> str:
    if not path.name.lower().endswith(tuple(suffixes)):
        raise UnreadableFileError(
            f"{path}: unknown {what} file kind, expected {', '.join(suffixes)}"
        )
    if not path.is_file():
        raise UnreadableFileError(f"{path}: no such {what} file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadableFileError(f"{path}: cannot read the {what} file: {exc}") from exc


def read_policy(path: str | Path) -> Policy:
    """Load a policy named on the command line; UnreadableFileError when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableFileError(f"{path}: no such policy file")
    return load_policy(path)


# --- test -------------------------------------------------------------------------------------


def run_policy_tests(
    policy: Policy, policy_file: str, paths: Sequence[str | Path]
) -> PolicyTestRun:
    """Decide every finding in the paths with the policy and check each against its expectation."""
    run = PolicyTestRun(policy=policy_file)
    files, folders = finding_files(paths)
    expectations = _ExpectationIndex(run.rejected)

    for file in files:
        findings = _read_findings(file, run.rejected)
        expected = expectations.for_file(file, [finding for _, finding in findings])
        for locator, finding in findings:
            decision = evaluate(policy, finding, Enrichment(), [])
            result = FindingResult(source=locator, finding=finding, decision=decision)
            if finding.id in expected:
                result.expectation_file, result.expectation = expected[finding.id]
                result.failures = check_expectation(result.expectation, decision)
            run.results.append(result)

    expectations.report_unused(folders)
    return run


def finding_files(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """The findings files the paths name, folders walked; and the folders walked."""
    files: list[Path] = []
    folders: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            folders.append(path)
            files += [item for item in _walk(path) if is_findings_file(item)]
        elif path.is_file():
            files.append(path)
        else:
            raise UnreadableFileError(f"{path}: no such file or folder")
    return list(dict.fromkeys(files)), folders


def _walk(folder: Path) -> list[Path]:
    """The files under a folder, in order, leaving out hidden files and folders."""
    return sorted(
        item
        for item in folder.rglob("*")
        if item.is_file()
        and not any(part.startswith(".") for part in item.relative_to(folder).parts)
    )


def is_findings_file(path: Path) -> bool:
    """Tell a findings file (.json, .jsonl, .jsonl.gz) by its name; expectations are YAML."""
    return path.name.lower().endswith(FINDING_SUFFIXES)


def check_expectation(expectation: Expectation, decision: Decision) -> list[str]:
    """Each way the decision differs from the expectation: `mode: expected auto, got notify`."""
    got = {
        "mode": str(decision.mode),
        "rule": decision.rule,
        "actions": sorted({str(action.kind) for action in decision.actions}),
        "targets": sorted({action.target for action in decision.actions}),
        "refusals": len(decision.refusals),
    }
    wanted = {
        "mode": str(expectation.mode),
        "rule": expectation.rule,
        "actions": sorted({str(kind) for kind in expectation.actions or []}),
        "targets": sorted(set(expectation.targets or [])),
        "refusals": expectation.refusals,
    }
    return [
        f"{name}: expected {_shown(wanted[name])}, got {_shown(got[name])}"
        for name in CHECKED
        if name in expectation.model_fields_set and wanted[name] != got[name]
    ]


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    return str(value)


def _read_findings(file: Path, rejected: list[Rejection]) -> list[tuple[str, Finding]]:
    try:
        content = file.read_bytes()
    except OSError as exc:
        rejected.append(Rejection(source=str(file), error=f"cannot read: {exc.strerror}"))
        return []
    findings = []
    for locator, item in iter_findings(content, str(file)):
        if isinstance(item, InvalidFindingError):
            rejected.append(Rejection(source=locator, error=str(item)))
            continue
        try:
            findings.append((locator, normalize(item)))
        except InvalidFindingError as exc:
            rejected.append(Rejection(source=locator, error=str(exc)))
    return findings


class _ExpectationIndex:
    """Expectation files, each read once, and which of their expectations were used."""

    def __init__(self, rejected: list[Rejection]) -> None:
        self._rejected = rejected
        self._folders: dict[Path, tuple[str, dict[str, Expectation]] | None] = {}
        self._used: set[tuple[str, str]] = set()
        self._beside: set[Path] = set()

    def for_file(self, file: Path, findings: list[Finding]) -> dict[str, tuple[str, Expectation]]:
        """The expectations for the findings of one file, by finding id, with their file."""
        expected: dict[str, tuple[str, Expectation]] = {}
        folder = self._folder(file.parent)
        if folder is not None:
            source, by_id = folder
            for finding in findings:
                if finding.id in by_id:
                    expected[finding.id] = (source, by_id[finding.id])
                    self._used.add((source, finding.id))

        beside = _beside(file)
        if beside is None:
            return expected
        self._beside.add(beside)
        for finding_id, expectation in self._file_expectations(beside, file, findings).items():
            if finding_id in expected:
                self._reject(
                    beside,
                    f"finding {finding_id} also has an expectation in {expected[finding_id][0]}: "
                    "keep one",
                )
            expected[finding_id] = (str(beside), expectation)
        return expected

    def report_unused(self, folders: list[Path]) -> None:
        """Reject what the walked folders expect but do not hold."""
        for folder in folders:
            for item in _walk(folder):
                name = item.name.lower()
                if name.endswith(EXPECT_SUFFIXES) and item not in self._beside:
                    stem = item.name[: -len(next(s for s in EXPECT_SUFFIXES if name.endswith(s)))]
                    self._reject(
                        item,
                        f"no findings file beside it ({stem}.json, {stem}.jsonl or "
                        f"{stem}.jsonl.gz)",
                    )
                elif name in FOLDER_EXPECTATIONS:
                    if item.parent not in self._folders:
                        self._reject(item, "no findings file in its folder")
                    loaded = self._folders.get(item.parent)
                    if loaded is None:
                        continue  # unread, or already rejected as unreadable
                    source, by_id = loaded
                    for finding_id in by_id:
                        if (source, finding_id) not in self._used:
                            self._reject(
                                item,
                                f"expects finding {finding_id}, which no findings file in "
                                f"{item.parent} holds",
                            )

    def _folder(self, folder: Path) -> tuple[str, dict[str, Expectation]] | None:
        if folder not in self._folders:
            self._folders[folder] = self._read_folder(folder)
        return self._folders[folder]

    def _read_folder(self, folder: Path) -> tuple[str, dict[str, Expectation]] | None:
        file = next((folder / n for n in FOLDER_EXPECTATIONS if (folder / n).is_file()), None)
        if file is None:
            return None
        document, root = self._load(file)
        if document is None:
            return None
        if not isinstance(document, dict):
            self._reject(file, "expectations.yaml is a mapping from finding id to expectation")
            return None
        by_id = {}
        for finding_id, entry in document.items():
            expectation = self._expectation(file, root, (str(finding_id),), entry)
            if expectation is None:
                continue
            if expectation.finding_id not in (None, str(finding_id)):
                self._reject(
                    file,
                    f"{finding_id}: finding_id {expectation.finding_id} is not the key it is under",
                )
                continue
            by_id[str(finding_id)] = expectation
        return str(file), by_id

    def _file_expectations(
        self, file: Path, findings_file: Path, findings: list[Finding]
    ) -> dict[str, Expectation]:
        document, root = self._load(file)
        if document is None:
            return {}
        ids = list(dict.fromkeys(finding.id for finding in findings))
        if isinstance(document, dict):
            expectation = self._expectation(file, root, (), document)
            if expectation is None:
                return {}
            if expectation.finding_id is None:
                if not ids:
                    return {}  # the file's records were rejected: nothing to hold it against
                if len(ids) != 1:
                    self._reject(
                        file,
                        f"{findings_file} holds {len(ids)} findings: write a list of "
                        "expectations, each with its finding_id",
                    )
                    return {}
                return {ids[0]: expectation}
            entries = [(expectation, ())]
        elif isinstance(document, list):
            entries = [
                (self._expectation(file, root, (index,), entry), (index,))
                for index, entry in enumerate(document)
            ]
        else:
            self._reject(file, "an expectation file holds a mapping or a list of mappings")
            return {}

        expected: dict[str, Expectation] = {}
        for expectation, loc in entries:
            if expectation is None:
                continue
            where = self._where(root, loc)
            if expectation.finding_id is None:
                self._reject(file, f"{where}finding_id: required in a list of expectations")
            elif expectation.finding_id in expected:
                self._reject(file, f"{where}two expectations for finding {expectation.finding_id}")
            elif expectation.finding_id not in ids:
                self._reject(
                    file,
                    f"{where}expects finding {expectation.finding_id}, which {findings_file} "
                    "does not hold",
                )
            else:
                expected[expectation.finding_id] = expectation
        return expected

    def _load(self, file: Path) -> tuple[Any, yaml.Node | None]:
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self._reject(file, f"cannot read: {exc}")
            return None, None
        what = "an expectation is a mapping, or a list or mapping of them by finding id"
        document, root, problems = _parse_yaml(text, _TextKeyLoader, what)
        for problem in problems:
            self._reject(file, _position_text(problem.line, problem.column) + problem.message)
        return document, root

    def _expectation(
        self, file: Path, root: yaml.Node | None, loc: tuple[Any, ...], entry: Any
    ) -> Expectation | None:
        if not isinstance(entry, dict):
            self._reject(file, f"{self._where(root, loc)}an expectation is a mapping")
            return None
        try:
            return Expectation.model_validate(entry)
        except ValidationError as exc:
            for error in exc.errors():
                at = (*loc, *error["loc"])
                self._reject(file, f"{self._where(root, at)}{_expectation_error(error)}")
            return None

    @staticmethod
    def _where(root: yaml.Node | None, loc: tuple[Any, ...]) -> str:
        position = ""
        if root is not None:
            mark = _mark(node_at(root, loc))
            position = _position_text(mark["line"], mark["column"])
        return position + (f"{_dotted(loc)}: " if loc else "")

    def _reject(self, file: Path, error: str) -> None:
        self._rejected.append(Rejection(source=str(file), error=error))


def _beside(file: Path) -> Path | None:
    name = file.name
    suffix = next(s for s in FINDING_SUFFIXES if name.lower().endswith(s))
    stem = name[: -len(suffix)]
    return next(
        (
            file.parent / f"{stem}{s}"
            for s in EXPECT_SUFFIXES
            if (file.parent / f"{stem}{s}").is_file()
        ),
        None,
    )


def _position_text(line: int | None, column: int | None) -> str:
    return f"line {line}, column {column}: " if line else ""


def _expectation_error(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown key: an expectation takes {', '.join(Expectation.model_fields)}"
    return error["msg"].removeprefix("Value error, ")


def _dotted(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


# --- explain ----------------------------------------------------------------------------------


def explain_finding(policy: Policy, finding: Finding, source: str) -> FindingExplanation:
    """Show how the policy decides a finding: safety rules, each rule's conditions, decision."""
    refused = safety.refuse_finding(finding)
    exempt = safety.refuse_resource(finding.resource)
    checks = [
        SafetyCheck(
            check="finding",
            refused=refused is not None,
            text=f"{refused}: no rule is considered"
            if refused
            else f"sample {_yes(finding.sample)}, archived {_yes(finding.archived)}: "
            "the rules decide",
        ),
        SafetyCheck(
            check="resource",
            refused=exempt is not None,
            text=f"{exempt}: a rule asking for auto or approval only notifies"
            if exempt
            else f"not tagged {naming.EXEMPT_TAG}=true",
        ),
    ]

    matched = [matches(rule.match, finding) for rule in policy.rules]
    first = None if refused or True not in matched else matched.index(True)
    rules = []
    for index, rule in enumerate(policy.rules):
        if index == first:
            status = "decides"
        elif refused or (first is not None and index > first):
            status = "not considered"
        else:
            status = "no match"
        rules.append(
            RuleExplanation(
                index=index,
                name=rule.name,
                mode=rule.mode,
                matched=matched[index],
                status=status,
                checks=explain_match(rule.match, finding),
            )
        )
    decision = evaluate(policy, finding, Enrichment(), [])
    return FindingExplanation(
        source=source, finding=finding, safety=checks, rules=rules, decision=decision
    )


def explain_file(
    policy: Policy, path: str | Path
) -> tuple[list[FindingExplanation], list[Rejection]]:
    """Explain every finding of one file; the records that are not findings are rejected."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableFileError(f"{path}: no such findings file")
    rejected: list[Rejection] = []
    findings = _read_findings(path, rejected)
    return [explain_finding(policy, finding, locator) for locator, finding in findings], rejected


def _yes(value: bool) -> str:
    return "yes" if value else "no"


# --- documents and text -----------------------------------------------------------------------


def report_document(report: PolicyReport) -> dict[str, Any]:
    """A validation report as the JSON `policy validate --json` prints."""
    return {"valid": report.valid, **report.model_dump(mode="json")}


def report_lines(report: PolicyReport) -> list[str]:
    """A validation report as text: the problems, or a one-line summary, then the warnings."""
    lines = [problem.text(report.file) for problem in report.problems]
    if report.valid:
        modes = ", ".join(str(mode) for mode in report.modes) or "none"
        lines.append(f"{report.file}: valid, {report.rules} rule(s), modes: {modes}")
    else:
        lines.append(f"{report.file}: invalid, {len(report.problems)} problem(s)")
    lines += [f"{w.text(report.file)} (warning)" for w in report.warnings]
    return lines


def run_document(run: PolicyTestRun) -> dict[str, Any]:
    """A test run as the JSON `policy test --json` prints."""
    results = []
    for result in run.results:
        expectation = None
        if result.expectation is not None:
            expectation = {
                "passed": not result.failures,
                "failures": result.failures,
                "file": result.expectation_file,
            }
        results.append(
            {
                "source": result.source,
                **_finding_fields(result.finding),
                "decision": _decision_fields(result.decision),
                "actions": [
                    {"kind": str(a.kind), "target": a.target} for a in result.decision.actions
                ],
                "refusals": [r.model_dump(mode="json") for r in result.decision.refusals],
                "unavailable": [
                    {"kind": str(a.kind), "target": a.target} for a in result.decision.unavailable
                ],
                "expectation": expectation,
            }
        )
    return {
        "policy": run.policy,
        "context": CONTEXT,
        "results": results,
        "rejected": [rejection.model_dump() for rejection in run.rejected],
        "summary": run.summary(),
    }


def run_lines(run: PolicyTestRun) -> list[str]:
    """A test run as text: a header, one row per finding, the failures, then a summary."""
    lines = [f"policy {run.policy} ({CONTEXT})", ""]
    rows = []
    for result in run.results:
        decision = result.decision
        status = "-" if result.expectation is None else ("FAIL" if result.failures else "pass")
        rows.append(
            (
                result.finding.id[:12],
                result.finding.type,
                f"{result.finding.severity:.1f}",
                str(decision.mode),
                decision.rule or "-",
                _actions_cell(decision),
                str(len(decision.refusals)),
                status,
            )
        )
    headers = ("finding", "type", "severity", "mode", "rule", "actions", "refusals", "expected")
    lines += _table(headers, rows)

    failed = [result for result in run.results if result.failures]
    if failed or run.rejected:
        lines.append("")
    for result in failed:
        lines.append(
            f"FAIL {result.source} {result.finding.id[:12]} (expectation in "
            f"{result.expectation_file})"
        )
        lines += [f"  {failure}" for failure in result.failures]
    lines += [f"rejected {r.source}: {r.error}" for r in run.rejected]

    summary = run.summary()
    lines += [
        "",
        f"{summary['findings']} finding(s), {summary['expectations']} expectation(s): "
        f"{summary['passed']} passed, {summary['failed']} failed; {summary['rejected']} rejected",
    ]
    return lines


def explanations_document(
    policy_file: str, explanations: list[FindingExplanation], rejected: list[Rejection]
) -> dict[str, Any]:
    """Explanations as the JSON `policy explain --json` prints."""
    return {
        "policy": policy_file,
        "context": CONTEXT,
        "findings": [
            {
                "source": item.source,
                **_finding_fields(item.finding),
                "directions": sorted(str(d) for d in finding_directions(item.finding)),
                "safety": [check.model_dump(mode="json") for check in item.safety],
                "rules": [rule.model_dump(mode="json") for rule in item.rules],
                "decision": item.decision.model_dump(mode="json"),
            }
            for item in explanations
        ],
        "rejected": [rejection.model_dump() for rejection in rejected],
    }


def explanation_lines(policy_file: str, explanation: FindingExplanation) -> list[str]:
    """One finding's explanation as text."""
    finding, decision = explanation.finding, explanation.decision
    directions = ", ".join(sorted(finding_directions(finding)))
    lines = [
        f"finding {finding.id} ({explanation.source})",
        f"  type {finding.type}, severity {finding.severity} ({finding.severity_label}), "
        f"resource {finding.resource.kind}, directions {{{directions}}}",
        f"policy {policy_file} ({CONTEXT})",
        "safety rules, first",
    ]
    lines += [
        f"  {'REFUSES' if check.refused else 'passes':<8} {check.check}: {check.text}"
        for check in explanation.safety
    ]
    lines.append("rules, in order: the first that matches decides")
    for rule in explanation.rules:
        if rule.status == "decides":
            status = "DECIDES"
        elif rule.status == "not considered":
            status = f"not considered (would {'' if rule.matched else 'not '}match)"
        else:
            status = "no match"
        lines.append(f"  {rule.index + 1}. {rule.name} ({rule.mode}): {status}")
        lines += [
            f"       {'held' if check.held else 'FAILED':<7} {check.text}" for check in rule.checks
        ]
    by = f" by rule {decision.rule}" if decision.rule else ""
    lines.append(f"decision: {decision.mode}{by}: {decision.reason}")
    lines += [f"  plans {action.kind} {action.target}" for action in decision.actions]
    lines += [
        f"  plans {action.kind} {action.target}, not yet available: reported, never run"
        for action in decision.unavailable
    ]
    lines += [f"  refused {r.kind} {r.target}: {r.reason}" for r in decision.refusals]
    return lines


def _actions_cell(decision: Decision) -> str:
    planned = [f"{a.kind} {a.target}" for a in decision.actions]
    planned += [f"{a.kind} {a.target} (not yet available)" for a in decision.unavailable]
    return ", ".join(planned) or "-"


def _finding_fields(finding: Finding) -> dict[str, Any]:
    return {"finding_id": finding.id, "type": finding.type, "severity": finding.severity}


def _decision_fields(decision: Decision) -> dict[str, Any]:
    return {"mode": str(decision.mode), "rule": decision.rule, "reason": decision.reason}


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(headers), line(["-" * width for width in widths]), *(line(r) for r in rows)]
