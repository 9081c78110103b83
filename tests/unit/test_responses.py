"""Undoing from the command line: what is listed, what a rollback chooses, what it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud_sniper import responses
from cloud_sniper.domain.models import ActionKind, IndicatorKind
from cloud_sniper.domain.nacl_rules import RuleRange
from cloud_sniper.responses import ResponseError
from services.mitigate.actions import Block, BlockStatus, Ports
from services.mitigate.catalogue import ActionRecord, RecordStatus, record_id

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
INCIDENT = "inc-0123456789abcdef"
OTHER = "inc-fedcba9876543210"
BUCKET = "public-assets"
INSTANCE = "i-0123456789abcdef0"


def record(
    kind: ActionKind = ActionKind.BLOCK_PUBLIC_ACCESS,
    target: str = BUCKET,
    incident_id: str = INCIDENT,
    status: RecordStatus = RecordStatus.ACTIVE,
    minutes: int = 0,
    **fields: Any,
) -> ActionRecord:
    return ActionRecord(
        record_id=record_id(kind, target),
        kind=kind,
        target=target,
        incident_id=incident_id,
        finding_id="f1",
        action_id=f"{kind.value}:{target}",
        status=status,
        applied_at=NOW - timedelta(hours=1) + timedelta(minutes=minutes),
        **fields,
    )


def block(
    kind: ActionKind = ActionKind.WAF_BLOCK,
    cidr: str = "45.155.205.233/32",
    incident_id: str = INCIDENT,
    status: BlockStatus = BlockStatus.ACTIVE,
    nacl_id: str | None = None,
) -> Block:
    where = {"ip_set": "cloud-sniper-blocked-ipv4"} if nacl_id is None else {"nacl_id": nacl_id}
    return Block(
        block_id=f"{kind.value.removesuffix('_block')}#{nacl_id or 'ipv4'}#{cidr}",
        kind=kind,
        target=cidr,
        cidr=cidr,
        ip_version=4,
        rule_number=50 if nacl_id else None,
        incident_id=incident_id,
        finding_id="f1",
        action_id=f"{kind.value}:{cidr}",
        created_at=NOW - timedelta(hours=1),
        expires_at=NOW + timedelta(hours=23),
        status=status,
        **where,
    )


class Records:
    """The actions table, in memory."""

    def __init__(self, *records: ActionRecord) -> None:
        self.items = {item.record_id: item for item in records}
        self.saved: list[ActionRecord] = []

    def get(self, key: str) -> ActionRecord | None:
        return self.items.get(key)

    def put_new(self, item: ActionRecord) -> bool:
        raise AssertionError("an undo never records a new action")

    def save(self, item: ActionRecord) -> None:
        self.items[item.record_id] = item
        self.saved.append(item)

    def by_incident(self, incident_id: str) -> list[ActionRecord]:
        return [item for item in self.all() if item.incident_id == incident_id]

    def all(self) -> list[ActionRecord]:
        return sorted(self.items.values(), key=lambda item: (item.applied_at, item.record_id))


class Blocks:
    """The blocks table, in memory."""

    def __init__(self, *blocks: Block) -> None:
        self.items = {item.block_id: item for item in blocks}

    def active(self, nacl_id: str | None = None) -> list[Block]:
        return [item for item in self.items.values() if item.status is BlockStatus.ACTIVE]

    def all(self) -> list[Block]:
        return list(self.items.values())

    def mark_removed(
        self,
        block_id: str,
        reason: str,
        at: datetime,
        by: str | None = None,
        note: str | None = None,
    ) -> bool:
        item = self.items[block_id]
        if item.status is not BlockStatus.ACTIVE:
            return False
        self.items[block_id] = item.model_copy(
            update={
                "status": BlockStatus.REMOVED,
                "removed_reason": reason,
                "removed_at": at,
                "removed_by": by,
                "removal_note": note,
            }
        )
        return True


class Account:
    """The WAF IP sets, network ACLs, knowledge base and S3 a rollback touches, as calls made."""

    def __init__(self, failing: set[str] = frozenset()) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.failing = failing

    def remove(self, ip_version: int, cidr: str) -> bool:
        self.calls.append(("waf remove", cidr))
        return True

    def delete_deny(self, nacl_id: str, rule_number: int, cidr: str) -> bool:
        self.calls.append(("nacl delete", nacl_id, cidr))
        return True

    def mark_expired(self, kind: IndicatorKind, value: str, at: datetime) -> bool:
        self.calls.append(("knowledge expired", value, at.isoformat()))
        return True

    def delete_public_access_block(self, Bucket: str) -> None:  # noqa: N803 - boto3's name
        if Bucket in self.failing:
            raise RuntimeError(f"S3 refused {Bucket}")
        self.calls.append(("s3 delete public access block", Bucket))


def ports(records: Records, blocks: Blocks, account: Account) -> Ports:
    return Ports(
        ip_sets=account,
        network_acls=account,
        blocks=blocks,
        knowledge=account,
        rule_range=RuleRange(50, 99),
        default_ttl_seconds=86400,
        records=records,
        clients=lambda service_name: account,
    )


def test_the_list_shows_the_actions_in_force_unless_all_are_asked_for():
    # Given an isolation in force, a bucket closure undone and one of another incident
    isolated = record(ActionKind.ISOLATE_INSTANCE, INSTANCE)
    undone = record(status=RecordStatus.UNDONE, minutes=5)
    other = record(ActionKind.REVOKE_CREDENTIALS, "AKIAEXAMPLE123456789", OTHER, minutes=9)
    store = ports(Records(isolated, undone, other), Blocks(), Account())

    # When they are listed, in force only, all, and for one incident
    in_force = responses.list_actions(store)
    everything = responses.list_actions(store, include_all=True)
    of_incident = responses.list_actions(store, include_all=True, incident_id=INCIDENT)

    # Then each list holds what it should, oldest first
    assert in_force == [isolated, other]
    assert everything == [isolated, undone, other]
    assert of_incident == [isolated, undone]


def test_a_row_says_until_when_and_who_undid_it_and_why():
    # Given an isolation in force, verified, and a C2 cut undone by a person
    isolated = record(ActionKind.ISOLATE_INSTANCE, INSTANCE, verified=True)
    cut = record(
        ActionKind.C2_BLOCK,
        "104.21.48.201/32",
        status=RecordStatus.UNDONE,
        expires_at=NOW + timedelta(days=7),
        verified=False,
        undone_at=NOW,
        undone_by="arn:aws:iam::123456789012:user/analyst",
        undo_reason="false positive",
    )
    expired = record(status=RecordStatus.EXPIRED, undone_at=NOW)

    # When they are shown as rows
    rows = [responses.action_row(item) for item in (isolated, cut, expired)]

    # Then the isolation lasts until released, and the undone one says who, when and why
    assert len(rows[0]) == len(responses.ACTION_COLUMNS)
    assert rows[0] == (
        "isolate_instance",
        INSTANCE,
        INCIDENT,
        "2026-12-03 09:00:00",
        "until released",
        "active",
        "yes",
        "-",
    )
    assert rows[1][4:] == (
        "2026-12-10 10:00:00",
        "undone",
        "no",
        "arn:aws:iam::123456789012:user/analyst, 2026-12-03 10:00:00, false positive",
    )
    assert rows[2][5:] == ("expired", "-", "expired, 2026-12-03 10:00:00")


def test_a_rollback_chooses_what_the_incident_has_in_force_newest_first():
    # Given an incident's closure and isolation in force, one undone, its blocks, and another's
    closure = record(minutes=1)
    isolation = record(ActionKind.ISOLATE_INSTANCE, INSTANCE, minutes=2)
    undone = record(ActionKind.REVOKE_CREDENTIALS, "AKIAEXAMPLE123456789", status="undone")
    other = record(target="other-bucket", incident_id=OTHER)
    waf = block()
    nacl = block(ActionKind.NACL_BLOCK, nacl_id="acl-1")
    lifted = block(cidr="193.142.146.35/32", status=BlockStatus.REMOVED)
    foreign = block(cidr="91.240.118.172/32", incident_id=OTHER)

    # When a rollback of the incident chooses
    records, blocks = responses.choose(
        INCIDENT, [closure, isolation, undone, other], [waf, nacl, lifted, foreign]
    )

    # Then it takes the incident's actions and blocks in force, the newest first
    assert records == [isolation, closure]
    assert {item.block_id for item in blocks} == {waf.block_id, nacl.block_id}


@pytest.mark.parametrize(
    "named",
    ["isolate_instance:i-0123456789abcdef0", "isolate_instance#i-0123456789abcdef0"],
)
def test_a_rollback_of_one_action_takes_it_by_action_or_record_id(named):
    isolation = record(ActionKind.ISOLATE_INSTANCE, INSTANCE)

    records, blocks = responses.choose(INCIDENT, [record(), isolation], [block()], named)

    assert (records, blocks) == ([isolation], [])


def test_an_action_id_names_a_waf_block_and_its_network_acl_blocks_together():
    waf = block()
    nacl = block(ActionKind.NACL_BLOCK, nacl_id="acl-1")

    _, by_action = responses.choose(INCIDENT, [], [waf, nacl], "nacl_block:45.155.205.233/32")
    _, by_block = responses.choose(INCIDENT, [], [waf, nacl], waf.block_id)

    assert by_action == [nacl]
    assert by_block == [waf]


def test_an_action_the_incident_does_not_have_is_refused_with_how_to_list_them():
    with pytest.raises(ResponseError) as refused:
        responses.choose(INCIDENT, [record()], [], "isolate_instance:i-0123456789abcdef0")

    assert "has no action 'isolate_instance:i-0123456789abcdef0'" in str(refused.value)
    assert f"actions list --all --incident {INCIDENT}" in str(refused.value)


def test_an_action_named_but_already_undone_leaves_nothing_to_do():
    undone = record(status=RecordStatus.UNDONE)

    assert responses.choose(INCIDENT, [undone], [], undone.record_id) == ([], [])


def test_a_rollback_undoes_the_actions_and_lifts_the_blocks_recording_who_and_why():
    # Given an incident that closed a bucket and blocked an address in WAF and a network ACL
    records = Records(record(state={"previous": None}))
    blocks = Blocks(block(), block(ActionKind.NACL_BLOCK, nacl_id="acl-1"))
    account = Account()

    # When a person rolls it back
    done = responses.rollback(
        INCIDENT,
        ports(records, blocks, account),
        who="arn:aws:iam::123456789012:user/analyst",
        reason="the bucket is public on purpose",
        now=NOW,
        recorded=True,
    )

    # Then the bucket's public access block is removed as before, the address leaves both
    # places, and the knowledge base says it is no longer blocked once both are lifted
    assert done.failed == {}
    assert {(item.kind, item.id) for item in done.undone} == {
        (ActionKind.BLOCK_PUBLIC_ACCESS, "block_public_access#public-assets"),
        (ActionKind.WAF_BLOCK, "waf#ipv4#45.155.205.233/32"),
        (ActionKind.NACL_BLOCK, "nacl#acl-1#45.155.205.233/32"),
    }
    until = (NOW + timedelta(hours=23)).isoformat()
    first, *lifts, last = account.calls
    assert first == ("s3 delete public access block", BUCKET)
    assert set(lifts) == {
        ("nacl delete", "acl-1", "45.155.205.233/32"),
        ("waf remove", "45.155.205.233/32"),
    }
    assert last == ("knowledge expired", "45.155.205.233", until)
    # And the record says who undid it and why; the blocks say they were rolled back
    (saved,) = records.saved
    assert saved.status is RecordStatus.UNDONE
    assert saved.undone_by == "arn:aws:iam::123456789012:user/analyst"
    assert saved.undo_reason == "the bucket is public on purpose"
    assert saved.undone_at == NOW
    assert {item.removed_reason for item in blocks.all()} == {"rolled_back"}
    assert {(item.removed_by, item.removal_note) for item in blocks.all()} == {
        ("arn:aws:iam::123456789012:user/analyst", "the bucket is public on purpose")
    }


def test_a_second_rollback_finds_nothing_in_force():
    records, blocks, account = Records(record(state={"previous": None})), Blocks(block()), Account()
    store = ports(records, blocks, account)
    responses.rollback(INCIDENT, store, "analyst", "done", NOW, recorded=True)
    account.calls.clear()

    again = responses.rollback(INCIDENT, store, "analyst", "again", NOW, recorded=True)

    assert (again.undone, again.failed, account.calls) == ([], {}, [])


def test_one_action_that_cannot_be_undone_stays_in_force_and_the_others_are_undone():
    # Given two closures, S3 refusing one of them
    failing = record(target="locked-bucket", state={"previous": None}, minutes=1)
    records = Records(record(state={"previous": None}), failing)
    account = Account(failing={"locked-bucket"})

    # When the incident is rolled back
    done = responses.rollback(
        INCIDENT, ports(records, Blocks(), account), "analyst", "why", NOW, recorded=True
    )

    # Then the other is undone, and the failing one is reported and stays in force
    assert [item.target for item in done.undone] == [BUCKET]
    assert done.failed == {failing.record_id: "RuntimeError: S3 refused locked-bucket"}
    assert records.get(failing.record_id).status is RecordStatus.ACTIVE


def test_an_incident_nobody_recorded_and_that_applied_nothing_is_unknown():
    store = ports(Records(record(incident_id=OTHER)), Blocks(), Account())

    with pytest.raises(ResponseError) as refused:
        responses.rollback(INCIDENT, store, "analyst", "why", NOW, recorded=False)

    assert f"no incident {INCIDENT}" in str(refused.value)


def test_a_recorded_incident_that_applied_nothing_has_nothing_in_force():
    store = ports(Records(), Blocks(), Account())

    done = responses.rollback(INCIDENT, store, "analyst", "why", NOW, recorded=True)

    assert (done.undone, done.failed) == ([], {})


@pytest.mark.parametrize(
    ("incident_id", "who", "reason", "message"),
    [
        ("INC-123", "analyst", "why", "'INC-123': an incident id is inc- and 16 hex digits"),
        (INCIDENT, "analyst", "  ", "--reason is required"),
        (INCIDENT, "", "why", "the caller's identity is unknown"),
    ],
)
def test_a_rollback_refuses_bad_input_naming_it(incident_id, who, reason, message):
    store = ports(Records(record()), Blocks(), Account())

    with pytest.raises(ResponseError) as refused:
        responses.rollback(incident_id, store, who, reason, NOW, recorded=True)

    assert message in str(refused.value)


def test_releasing_an_instance_never_isolated_says_so():
    store = ports(Records(record()), Blocks(), Account())

    with pytest.raises(ResponseError) as refused:
        responses.release(INSTANCE, store, "analyst", "clean", NOW)

    assert str(refused.value) == (
        f"instance {INSTANCE} is not isolated: Cloud Sniper never isolated it"
    )


def test_releasing_an_instance_released_before_says_when_and_by_whom():
    released = record(
        ActionKind.ISOLATE_INSTANCE,
        INSTANCE,
        status=RecordStatus.UNDONE,
        undone_at=NOW,
        undone_by="analyst",
    )
    store = ports(Records(released), Blocks(), Account())

    with pytest.raises(ResponseError) as refused:
        responses.release(INSTANCE, store, "analyst", "clean", NOW)

    assert "was undone at 2026-12-03 10:00:00 by analyst" in str(refused.value)


def test_releasing_something_that_is_not_an_instance_id_is_refused():
    store = ports(Records(), Blocks(), Account())

    with pytest.raises(ResponseError) as refused:
        responses.release("web-1", store, "analyst", "clean", NOW)

    assert "'web-1': an instance id is i- and 8 or 17 hex digits" in str(refused.value)
