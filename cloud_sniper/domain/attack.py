"""MITRE ATT&CK tactics and techniques of each GuardDuty finding type, from the shipped data."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from pydantic import ValidationError

from cloud_sniper.domain.models import (
    TACTIC_ID,
    TECHNIQUE_ID,
    AttackMapping,
    AttackTactic,
    AttackTechnique,
)

# The Lambda bundles keep cloud_sniper/domain next to cloud_sniper/data, as the source tree does.
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
MAPPING_FILE = "attack-mapping.tsv"
NAMES_FILE = "attack-names.tsv"
VERSION_FILE = "attack-mapping.md"

MAPPING_HEADER = ("type", "tactics", "techniques", "reason")
NAMES_HEADER = ("id", "name")
_TACTIC = re.compile(TACTIC_ID)
_TECHNIQUE = re.compile(TECHNIQUE_ID)
_VERSION_LINE = re.compile(r"^ATT&CK Enterprise version: (\d+(?:\.\d+)*)$", re.MULTILINE)


class AttackDataError(ValueError):
    """A shipped ATT&CK data file is malformed; the message names the file, line and reason."""


def mapping_for(finding_type: str) -> AttackMapping | None:
    """The ATT&CK mapping of a finding type, or None for a type the mapping does not know."""
    return _shipped_mappings().get(finding_type)


@cache
def _shipped_mappings() -> dict[str, AttackMapping]:
    return load_mappings(DATA_DIR)


def load_mappings(data_dir: Path) -> dict[str, AttackMapping]:
    """Read the mapping, names and version files of a data folder into one mapping per type."""
    version = _read_version(data_dir / VERSION_FILE)
    names = _read_names(data_dir / NAMES_FILE)

    mappings: dict[str, AttackMapping] = {}
    path = data_dir / MAPPING_FILE
    for number, (finding_type, tactics, techniques, reason) in _rows(path, MAPPING_HEADER):
        where = f"{path.name} line {number}"
        if not finding_type:
            raise AttackDataError(f"{where}: the finding type is empty")
        if finding_type in mappings:
            raise AttackDataError(f"{where}: finding type {finding_type!r} is listed twice")
        try:
            mappings[finding_type] = AttackMapping(
                tactics=[
                    AttackTactic(id=i, name=_name(i, names, where))
                    for i in _ids(tactics, _TACTIC, "tactics", where)
                ],
                techniques=[
                    AttackTechnique(id=i, name=_name(i, names, where))
                    for i in _ids(techniques, _TECHNIQUE, "techniques", where)
                ],
                reason=reason,
                attack_version=version,
            )
        except ValidationError as exc:
            raise AttackDataError(f"{where}: {_first_error(exc)}") from exc
    return mappings


def _read_version(path: Path) -> str:
    found = _VERSION_LINE.findall(_read(path))
    if len(found) != 1:
        raise AttackDataError(
            f"{path.name}: expected exactly one line 'ATT&CK Enterprise version: <version>', "
            f"found {len(found)}"
        )
    return found[0]


def _read_names(path: Path) -> dict[str, str]:
    names: dict[str, str] = {}
    for number, (attack_id, name) in _rows(path, NAMES_HEADER):
        where = f"{path.name} line {number}"
        if not _TACTIC.match(attack_id) and not _TECHNIQUE.match(attack_id):
            raise AttackDataError(f"{where}: {attack_id!r} is not an ATT&CK tactic or technique id")
        if attack_id in names:
            raise AttackDataError(f"{where}: {attack_id} is listed twice")
        if not name:
            raise AttackDataError(f"{where}: {attack_id} has no name")
        names[attack_id] = name
    return names


def _rows(path: Path, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    lines = _read(path).splitlines()
    if not lines or tuple(lines[0].split("\t")) != header:
        raise AttackDataError(f"{path.name} line 1: expected the header {'<tab>'.join(header)}")
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise AttackDataError(
                f"{path.name} line {number}: expected {len(header)} tab-separated fields, "
                f"found {len(fields)}"
            )
        yield number, fields


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AttackDataError(f"{path.name}: cannot read {path}: {exc.strerror}") from exc


def _ids(joined: str, pattern: re.Pattern[str], column: str, where: str) -> list[str]:
    if not joined:
        raise AttackDataError(f"{where}: {column} is empty")
    ids = joined.split("|")
    for attack_id in ids:
        if not pattern.match(attack_id):
            raise AttackDataError(f"{where}: {attack_id!r} in {column} is not a {column[:-1]} id")
    if len(set(ids)) != len(ids):
        raise AttackDataError(f"{where}: {column} lists an id twice")
    return ids


def _name(attack_id: str, names: dict[str, str], where: str) -> str:
    if attack_id not in names:
        raise AttackDataError(f"{where}: {attack_id} has no name in {NAMES_FILE}")
    return names[attack_id]


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    return f"{field}: {error['msg']}"
