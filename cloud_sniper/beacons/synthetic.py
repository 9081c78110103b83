"""Seeded synthetic VPC Flow Logs: an estate's traffic, planted beacons and benign look-alikes.

generate() writes what an estate's flow logs hold over a window (a day by default), in any
format the scan reads, one file per delivery interval: numpy makes each file's columns and
DuckDB formats and writes them, so 100 million records never sit in memory. It returns the
ground truth: the planted beacons, and the benign traffic built to fool a naive detector (one
long connection split by the capture window, NTP and DNS to popular servers, an agent every host
runs, backups, retries a security group rejects).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import duckdb
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from cloud_sniper.beacons.formats import DEFAULT_FIELDS

ACCOUNT_ID = "123456789012"
REGION = "us-east-1"
DEFAULT_START = datetime(2026, 12, 3, tzinfo=UTC)
DEFAULT_SEED = 20261203
DEFAULT_BEACONS = 16
TRUTH_FILE = "truth.json"
# The records land under OUT/AWSLogs, as VPC Flow Logs deliver them to a bucket: scan that.
DATA_DIR = "AWSLogs"

FlowFormat = Literal["v2", "v2-noheader", "v5", "v2-gz", "v5-gz", "parquet"]
FORMATS: tuple[str, ...] = ("v2", "v2-noheader", "v5", "v2-gz", "v5-gz", "parquet")
DEFAULT_FORMAT: FlowFormat = "v2-gz"

# The default format's fields (version 2), and a custom format's, in the order it declares them.
# AWS's header names the fields with hyphens; the scan reads them with underscores.
V2_FIELDS = tuple(field.replace("_", "-") for field in DEFAULT_FIELDS)
V5_FIELDS = (
    "version",
    "vpc-id",
    "subnet-id",
    "instance-id",
    "interface-id",
    "account-id",
    "type",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "pkt-srcaddr",
    "pkt-dstaddr",
    "protocol",
    "bytes",
    "packets",
    "start",
    "end",
    "action",
    "tcp-flags",
    "log-status",
    "region",
    "az-id",
    "flow-direction",
    "traffic-path",
)


def _ip_sql(column: str) -> str:
    octets = " || '.' || ".join(
        f"(({column} >> {shift}) & 255)::VARCHAR" for shift in (24, 16, 8, 0)
    )
    return f"CASE WHEN status = 0 THEN {octets} END"


def _record_sql(expression: str) -> str:
    """A field a NODATA or SKIPDATA record leaves empty ("-")."""
    return f"CASE WHEN status = 0 THEN {expression} END"


def _id_sql(prefix: str, column: str) -> str:
    return f"'{prefix}-' || lpad(lower(to_hex({column})), 17, '0')"


# Each field as SQL over a chunk's columns, and its Parquet type (the types AWS documents).
_FIELDS: dict[str, tuple[str, str]] = {
    "version": ("{version}", "INTEGER"),
    "account-id": (f"'{ACCOUNT_ID}'", "VARCHAR"),
    "interface-id": (_id_sql("eni", "eni"), "VARCHAR"),
    "srcaddr": (_ip_sql("src"), "VARCHAR"),
    "dstaddr": (_ip_sql("dst"), "VARCHAR"),
    "srcport": (_record_sql("srcport"), "INTEGER"),
    "dstport": (_record_sql("dstport"), "INTEGER"),
    "protocol": (_record_sql("protocol"), "INTEGER"),
    "packets": (_record_sql("packets"), "BIGINT"),
    "bytes": (_record_sql("bytes"), "BIGINT"),
    "start": ("start", "BIGINT"),
    "end": ("stop", "BIGINT"),
    "action": (_record_sql("CASE WHEN rejected THEN 'REJECT' ELSE 'ACCEPT' END"), "VARCHAR"),
    "log-status": (
        "CASE status WHEN 0 THEN 'OK' WHEN 1 THEN 'NODATA' ELSE 'SKIPDATA' END",
        "VARCHAR",
    ),
    "vpc-id": (_id_sql("vpc", "{vpc}"), "VARCHAR"),
    "subnet-id": (_id_sql("subnet", "subnet"), "VARCHAR"),
    "instance-id": (f"CASE WHEN instance > 0 THEN {_id_sql('i', 'instance')} END", "VARCHAR"),
    "tcp-flags": (_record_sql("CASE WHEN protocol = 6 THEN flags END"), "INTEGER"),
    "type": (_record_sql("'IPv4'"), "VARCHAR"),
    "pkt-srcaddr": (_ip_sql("src"), "VARCHAR"),
    "pkt-dstaddr": (_ip_sql("dst"), "VARCHAR"),
    "region": (f"'{REGION}'", "VARCHAR"),
    "az-id": ("'use1-az' || (az + 1)::VARCHAR", "VARCHAR"),
    "flow-direction": (
        _record_sql("CASE WHEN egress THEN 'egress' ELSE 'ingress' END"),
        "VARCHAR",
    ),
    # 1: through the VPC, 8: through the internet gateway; only egress has a path.
    "traffic-path": (
        _record_sql("CASE WHEN egress THEN CASE WHEN (dst >> 24) = 10 THEN 1 ELSE 8 END END"),
        "INTEGER",
    ),
}

_EPHEMERAL = (32768, 61000)
# A web host sits behind a load balancer with a node in each of two zones; both check it.
_CHECKERS = 2
_MINUTE, _HOUR, _DAY = 60, 3600, 86400
# VPC Flow Logs deliver a file every 5 minutes; small sets use longer files, so they stay few.
_FILE_SECONDS = (300, 900, 1800, 3600)
_RECORDS_PER_FILE = 200_000
# Records per internal host per day: sets the estate's size from the records asked for.
_RECORDS_PER_HOST_DAY = 10_000
_BAD_LINE_RATE = 1e-5
_NODATA_RATE = 1e-3
_SKIPDATA_RATE = 2e-4
# Addresses no flow to the internet uses (RFC 6890 and friends): never drawn as a remote.
_SPECIAL_NETWORKS = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/3",
    )
)
# Popular servers most of the estate talks to: a detector must not report them.
NTP_SERVERS = ("162.159.200.1", "162.159.200.123")
DNS_RESOLVERS = ("8.8.8.8", "1.1.1.1")
_SCANNED_PORTS = np.array([22, 23, 80, 443, 445, 1433, 3306, 3389, 5432, 5900, 6379, 8080, 9200])
_WEB_PORTS = np.array([443, 443, 443, 443, 443, 443, 443, 80, 80, 8443, 22, 993, 587, 9418])
_BEACON_PORTS = ((443, 6), (443, 6), (443, 6), (80, 6), (8443, 6), (8080, 6), (53, 17), (4444, 6))


class SyntheticError(ValueError):
    """The generator was asked for something it cannot make; the message names the argument."""


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlantedBeacon(_Frozen):
    """A host calling home on a schedule, planted in the records: what a scan must report."""

    src: str
    dst: str
    dst_port: int
    protocol: int
    period_seconds: float
    jitter: float  # each sleep is the period less up to this share of it, as C2 implants do
    size_variation: float  # the relative spread of the bytes sent
    sleep_gaps: int  # pauses of an hour or more
    connections: int
    first_seen: datetime
    last_seen: datetime
    interface_id: str
    instance_id: str


ConfounderKind = Literal[
    "long_connection", "ntp", "dns", "popular_service", "backup", "rejected_retry"
]


class Confounder(_Frozen):
    """Benign traffic that looks periodic; src None: most of the estate talks to the destination."""

    kind: ConfounderKind
    src: str | None
    dst: str
    dst_port: int
    protocol: int


class GroundTruth(_Frozen):
    """What a generated set holds: its size, where it is, the beacons and the look-alikes."""

    seed: int
    format: FlowFormat
    records: int  # lines or rows, bad lines and NODATA/SKIPDATA included
    files: int
    hosts: int
    start: datetime
    end: datetime
    bad_lines: int
    nodata: int
    skipdata: int
    data_dir: str  # relative to the truth file
    beacons: list[PlantedBeacon]
    confounders: list[Confounder] = Field(default_factory=list)

    def beacon_keys(self) -> set[tuple[str, str, int, int]]:
        """The planted pairs as (src, dst, dst_port, protocol)."""
        return {(b.src, b.dst, b.dst_port, b.protocol) for b in self.beacons}


def load_truth(out: Path | str) -> GroundTruth:
    """Read the ground truth a generate() run wrote into OUT."""
    path = Path(out) / TRUTH_FILE
    try:
        return GroundTruth.model_validate_json(path.read_text())
    except FileNotFoundError as exc:
        raise SyntheticError(f"{path}: no ground truth (not made by generate?)") from exc


def generate(
    out: Path | str,
    *,
    records: int,
    seed: int = DEFAULT_SEED,
    format: FlowFormat = DEFAULT_FORMAT,
    start: datetime = DEFAULT_START,
    hours: int = 24,
    beacons: int = DEFAULT_BEACONS,
    beacon_sources: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
    threads: int = 2,
) -> GroundTruth:
    """Write about `records` flow-log records into OUT/AWSLogs and the ground truth into OUT.

    The same arguments give the same records. beacon_sources, private IPv4 addresses, are the
    sources of the first planted beacons (to plant one on a known host). progress is called
    with (files written, files in all) after each file.
    """
    out = Path(out)
    plan = _plan(records, seed, format, start, hours, beacons, beacon_sources)
    data = out / DATA_DIR
    if data.exists() and any(data.iterdir()):
        raise SyntheticError(f"out: {data} already holds files; choose an empty folder")
    data.mkdir(parents=True, exist_ok=True)

    counts = np.zeros(4, dtype=np.int64)  # records, bad lines, NODATA, SKIPDATA
    done = 0
    # Files are written side by side (DuckDB compresses one file on one thread), while the next
    # file's columns are made; at most `threads` files wait, so memory stays that of a few files.
    with _Writer(data, plan, threads) as writer, ThreadPoolExecutor(threads) as pool:
        pending: deque[Future[np.ndarray]] = deque()
        for number in range(plan.files):
            pending.append(pool.submit(writer.write, number, _chunk(plan, number)))
            while pending and (len(pending) > threads or number == plan.files - 1):
                counts += pending.popleft().result()
                done += 1
                if progress is not None:
                    progress(done, plan.files)

    truth = GroundTruth(
        seed=seed,
        format=format,
        records=int(counts[0]),
        files=plan.files,
        hosts=plan.estate.hosts,
        start=start,
        end=start + timedelta(hours=hours),
        bad_lines=int(counts[1]),
        nodata=int(counts[2]),
        skipdata=int(counts[3]),
        data_dir=DATA_DIR,
        beacons=plan.truth_beacons,
        confounders=plan.confounders,
    )
    (out / TRUTH_FILE).write_text(truth.model_dump_json(indent=2) + "\n")
    return truth


# --- the estate ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Estate:
    """Internal hosts (one ENI each) and load balancer nodes, and the internet they talk to."""

    hosts: int
    ip: np.ndarray  # uint32, hosts then load balancer nodes
    eni: np.ndarray  # uint64 ids
    instance: np.ndarray  # uint64 ids, 0 for a load balancer node
    subnet: np.ndarray  # uint64 ids
    az: np.ndarray  # int8
    window: np.ndarray  # each ENI's aggregation interval: 60 or 600 s
    phase: np.ndarray  # where each ENI's capture windows start
    weight: np.ndarray  # how busy each host is (sums to 1)
    remotes: np.ndarray  # uint32 public addresses the background talks to
    scanners: np.ndarray  # uint32 addresses that scan the estate
    lb_nodes: np.ndarray  # indices
    web: np.ndarray  # hosts behind the load balancers (health checks, inbound clients)
    db: np.ndarray  # hosts others query inside the estate
    workstations: np.ndarray  # hosts that browse
    vpc: int


def _estate(rng: np.random.Generator, hosts: int, reserved: set[int]) -> _Estate:
    lb_count = max(2, hosts // 400)
    total = hosts + lb_count
    subnets = (total + 199) // 200
    subnet_of = np.minimum(np.arange(total) // 200, subnets - 1)
    slot = np.arange(total) - subnet_of * 200
    # 10.<n>.<m>.<4..>: AWS keeps the first four addresses of a subnet.
    ip = (10 << 24) | ((subnet_of + 1) << 8) | (slot + 4)
    subnet_ids = rng.integers(1, 2**63, subnets, dtype=np.uint64)

    remotes = _public_addresses(rng, max(2000, hosts * 40), reserved)
    scanners = _public_addresses(rng, 500, reserved | set(remotes.tolist()))
    order = rng.permutation(hosts)
    # A fifth of the hosts serve behind the load balancers, a twentieth are databases, another
    # twentieth workstations that browse.
    web_count, db_count = max(2, hosts // 5), max(1, hosts // 20)
    web = np.sort(order[:web_count])
    db = np.sort(order[web_count : web_count + db_count])
    workstations = np.sort(order[-max(1, hosts // 20) :])
    weight = rng.lognormal(0.0, 0.8, hosts)
    return _Estate(
        hosts=hosts,
        ip=ip.astype(np.uint32),
        eni=rng.integers(1, 2**63, total, dtype=np.uint64),
        instance=np.concatenate(
            [rng.integers(1, 2**63, hosts, dtype=np.uint64), np.zeros(lb_count, np.uint64)]
        ),
        subnet=subnet_ids[subnet_of],
        az=(subnet_of % 3).astype(np.int8),
        window=np.where(rng.random(total) < 0.2, _MINUTE, 10 * _MINUTE).astype(np.int64),
        phase=rng.integers(0, 10 * _MINUTE, total),
        weight=weight / weight.sum(),
        remotes=remotes,
        scanners=scanners,
        lb_nodes=np.arange(hosts, total),
        web=web,
        db=db,
        workstations=workstations,
        vpc=int(rng.integers(1, 2**63, dtype=np.uint64)),
    )


def _public_addresses(rng: np.random.Generator, count: int, exclude: set[int]) -> np.ndarray:
    """Distinct public unicast IPv4 addresses (as uint32), none of `exclude`."""
    found = np.empty(0, dtype=np.uint32)
    while found.size < count:
        drawn = rng.integers(1 << 24, 224 << 24, 2 * count, dtype=np.uint64).astype(np.uint32)
        keep = np.ones(drawn.size, dtype=bool)
        for net in _SPECIAL_NETWORKS:
            mask = np.uint32((0xFFFFFFFF << (32 - net.prefixlen)) & 0xFFFFFFFF)
            keep &= (drawn & mask) != np.uint32(int(net.network_address))
        drawn = drawn[keep]
        drawn = drawn[~np.isin(drawn, np.fromiter(exclude, np.uint32, len(exclude)))]
        found = np.unique(np.concatenate([found, drawn]))
    return rng.permutation(found)[:count]


def _ip(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def _text_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(int(value)))


def _eni_text(value: int) -> str:
    return f"eni-{int(value):017x}"


def _instance_text(value: int) -> str:
    return f"i-{int(value):017x}"


# --- flows --------------------------------------------------------------------------------------


@dataclass
class _Flows:
    """Connections seen on one ENI each: who opened it, its ports, sizes and times."""

    eni: np.ndarray  # index into the estate's ENIs
    peer: np.ndarray  # uint32: the other end
    local_port: np.ndarray
    remote_port: np.ndarray
    protocol: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    bytes_out: np.ndarray  # from the opener
    bytes_back: np.ndarray
    opened_here: np.ndarray  # bool: the ENI's host opened it (egress first)
    rejected: np.ndarray  # bool: no answer, one record
    flags_out: np.ndarray
    flags_back: np.ndarray

    @classmethod
    def empty(cls) -> _Flows:
        return cls(
            **{name: np.empty(0, dtype=_FLOW_TYPES.get(name, np.int64)) for name in _names()}
        )

    @classmethod
    def concat(cls, parts: Sequence[_Flows]) -> _Flows:
        if not parts:
            return cls.empty()
        return cls(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in _names()})

    def __len__(self) -> int:
        return int(self.start.size)

    def take(self, index: np.ndarray | slice) -> _Flows:
        return _Flows(**{name: getattr(self, name)[index] for name in _names()})


_FLOW_TYPES = {"peer": np.uint32, "opened_here": np.bool_, "rejected": np.bool_}


def _names() -> tuple[str, ...]:
    return tuple(_Flows.__dataclass_fields__)


def _flows(
    rng: np.random.Generator,
    *,
    eni: np.ndarray,
    peer: np.ndarray | int,
    port: np.ndarray | int,
    protocol: int,
    start: np.ndarray,
    duration: np.ndarray | int,
    sent: np.ndarray | float,
    back: np.ndarray | float,
    opened_here: bool = True,
    rejected: bool = False,
    local_port: np.ndarray | None = None,
    flags: tuple[np.ndarray | int, np.ndarray | int] | None = None,
) -> _Flows:
    """Connections on the ENIs `eni` to `peer`:`port`; the opener sends `sent` bytes."""
    n = start.size
    if flags is None:
        # A short TCP connection opens and closes inside one capture window: SYN|FIN each way.
        flags = (3, 19) if protocol == 6 else (0, 0)
    if local_port is None:
        local_port = rng.integers(*_EPHEMERAL, n)
    return _Flows(
        eni=np.broadcast_to(eni, n).astype(np.int64),
        peer=np.broadcast_to(peer, n).astype(np.uint32),
        local_port=np.broadcast_to(local_port, n).astype(np.int64),
        remote_port=np.broadcast_to(port, n).astype(np.int64),
        protocol=np.full(n, protocol, dtype=np.int64),
        start=np.asarray(start, dtype=np.int64),
        stop=np.asarray(start + duration, dtype=np.int64),
        bytes_out=np.maximum(40, np.broadcast_to(sent, n)).astype(np.int64),
        bytes_back=np.maximum(40, np.broadcast_to(back, n)).astype(np.int64),
        opened_here=np.broadcast_to(opened_here, n).astype(bool),
        rejected=np.broadcast_to(rejected, n).astype(bool),
        flags_out=np.broadcast_to(flags[0], n).astype(np.int64),
        flags_back=np.broadcast_to(flags[1], n).astype(np.int64),
    )


def _periodic(
    members: np.ndarray, phase: np.ndarray, period: np.ndarray, t0: int, t1: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each member's ticks phase + k * period in [t0, t1): (member index, tick time)."""
    first = np.ceil((t0 - phase) / period).astype(np.int64)
    last = np.ceil((t1 - phase) / period).astype(np.int64) - 1
    counts = np.maximum(0, last - first + 1)
    member = np.repeat(np.arange(members.size), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ticks = phase[member] + (first[member] + offsets) * period[member]
    return member, ticks


def _windows(
    eni: np.ndarray, a: np.ndarray, b: np.ndarray, estate: _Estate
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut connections [a, b) on their ENIs' capture windows: (connection, start, stop, index)."""
    window = estate.window[eni]
    phase = estate.phase[eni] % window
    first = np.floor((a - phase) / window).astype(np.int64)
    last = np.floor((b - 1 - phase) / window).astype(np.int64)
    counts = last - first + 1
    conn = np.repeat(np.arange(eni.size), counts)
    index = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    begin = phase[conn] + (first[conn] + index) * window[conn]
    start = np.maximum(a[conn], begin)
    stop = np.minimum(b[conn], begin + window[conn]) - 1
    return conn, start, np.maximum(start, stop), index


# --- the plan: what every file's records come from ---------------------------------------------


@dataclass(frozen=True)
class _Plan:
    seed: int
    format: str
    t0: int
    seconds: int
    files: int
    file_seconds: int
    estate: _Estate
    fixed: _Flows  # precomputed connections (beacons, long ones, backups, retries), by start
    rates: dict[str, float]  # background connections per second, by kind
    ntp_hosts: np.ndarray
    dns_hosts: np.ndarray
    agent_hosts: np.ndarray
    popular: dict[str, int]  # uint32 addresses of the popular servers
    bad_files: np.ndarray  # the file of each bad line
    truth_beacons: list[PlantedBeacon]
    confounders: list[Confounder]


def _plan(
    records: int,
    seed: int,
    format: str,
    start: datetime,
    hours: int,
    beacons: int,
    beacon_sources: Sequence[str],
) -> _Plan:
    if format not in FORMATS:
        raise SyntheticError(f"format: {format!r} is not one of {', '.join(FORMATS)}")
    if not 10_000 <= records <= 2_000_000_000:
        raise SyntheticError(f"records: {records} is not from 10,000 to 2,000,000,000")
    if not 1 <= hours <= 24 * 31:
        raise SyntheticError(f"hours: {hours} is not from 1 to 744")
    if not 0 <= beacons <= 200:
        raise SyntheticError(f"beacons: {beacons} is not from 0 to 200")
    if start.tzinfo is None:
        raise SyntheticError("start: give a time zone (UTC)")
    if len(beacon_sources) > beacons:
        raise SyntheticError(f"beacon_sources: {len(beacon_sources)} for {beacons} beacons")
    sources = [_private_source(address) for address in beacon_sources]

    rng = np.random.default_rng([seed, 0])
    seconds = hours * _HOUR
    hosts = int(np.clip(round(records / (_RECORDS_PER_HOST_DAY * hours / 24)), 10, 100_000))
    hosts = max(hosts, 2 * beacons + 4)
    popular = {
        "ntp-a": _ip(NTP_SERVERS[0]),
        "ntp-b": _ip(NTP_SERVERS[1]),
        "dns-a": _ip(DNS_RESOLVERS[0]),
        "dns-b": _ip(DNS_RESOLVERS[1]),
    }
    picked = _public_addresses(rng, 2 + beacons + 64, set(popular.values()))
    popular["agent"] = int(picked[0])
    popular["backup"] = int(picked[1])
    estate = _estate(rng, hosts, set(popular.values()) | set(picked.tolist()))
    estate = _with_sources(estate, sources)
    spare = picked[2 + beacons :]

    t0 = int(start.timestamp())
    file_seconds = next(
        (s for s in _FILE_SECONDS if records * s / seconds >= _RECORDS_PER_FILE), _FILE_SECONDS[-1]
    )
    file_seconds = min(file_seconds, seconds)
    files = math.ceil(seconds / file_seconds)

    n_hosts = np.arange(hosts)
    ntp_hosts = n_hosts[rng.random(hosts) < 0.95]
    dns_hosts = n_hosts[rng.random(hosts) < 0.8]
    agent_hosts = n_hosts[rng.random(hosts) < 0.9]

    beacon_hosts = _beacon_hosts(rng, estate, beacons, len(sources))
    planted, beacon_flows = _beacons(
        rng, estate, beacon_hosts, picked[2 : 2 + beacons], t0, seconds
    )
    long_flows, long_truth = _long_connections(rng, estate, spare, t0, seconds)
    backup_flows, backup_truth = _backups(rng, estate, popular["backup"], t0, seconds)
    retry_flows, retry_truth = _rejected_retries(rng, estate, spare, t0, seconds, beacon_hosts)
    fixed = _Flows.concat([beacon_flows, long_flows, backup_flows, retry_flows])
    fixed = fixed.take(np.argsort(fixed.start, kind="stable"))

    structured = _records_of(fixed) + _periodic_records(estate, seconds, ntp_hosts, dns_hosts)
    structured += 2 * agent_hosts.size * seconds / 300
    if structured > 0.9 * records:
        raise SyntheticError(
            f"records: {records:,} leaves no room for background traffic: the estate's periodic "
            f"traffic and {beacons} beacons alone make about {structured:,.0f}; ask for more "
            "records or fewer beacons"
        )
    background = records * (1 - _NODATA_RATE - _SKIPDATA_RATE) - structured
    # Background records: out and in of the estate two records per connection, scans one.
    rates = {
        "outbound": 0.5 * background / 2 / seconds,
        "inbound": 0.15 * background / 2 / seconds,
        "internal": 0.2 * background / 2 / seconds,
        "scan": 0.15 * background / seconds,
    }
    bad = max(3, round(records * _BAD_LINE_RATE)) if format != "parquet" else 0
    bad_files = np.sort(rng.integers(0, files, bad))

    confounders = [
        *(Confounder(kind="ntp", src=None, dst=a, dst_port=123, protocol=17) for a in NTP_SERVERS),
        *(Confounder(kind="dns", src=None, dst=a, dst_port=53, protocol=17) for a in DNS_RESOLVERS),
        Confounder(
            kind="popular_service",
            src=None,
            dst=_text_ip(popular["agent"]),
            dst_port=443,
            protocol=6,
        ),
        *long_truth,
        *backup_truth,
        *retry_truth,
    ]
    return _Plan(
        seed=seed,
        format=format,
        t0=t0,
        seconds=seconds,
        files=files,
        file_seconds=file_seconds,
        estate=estate,
        fixed=fixed,
        rates=rates,
        ntp_hosts=ntp_hosts,
        dns_hosts=dns_hosts,
        agent_hosts=agent_hosts,
        popular=popular,
        bad_files=bad_files,
        truth_beacons=planted,
        confounders=confounders,
    )


def _private_source(address: str) -> int:
    try:
        parsed = ipaddress.IPv4Address(address)
    except ValueError as exc:
        raise SyntheticError(f"beacon_sources: {address!r} is not an IPv4 address") from exc
    if not parsed.is_private:
        raise SyntheticError(f"beacon_sources: {address} is not a private address")
    return int(parsed)


def _with_sources(estate: _Estate, sources: list[int]) -> _Estate:
    """Give the first hosts the addresses asked for (the beacon hosts draw from them first)."""
    if not sources:
        return estate
    ip = estate.ip.copy()
    for number, address in enumerate(sources):
        clash = np.flatnonzero(ip == address)
        ip[clash] = ip[number]  # a generated host that had the address takes the other's
        ip[number] = address
    return _Estate(**{**estate.__dict__, "ip": ip})


def _beacon_hosts(rng: np.random.Generator, estate: _Estate, count: int, given: int) -> np.ndarray:
    others = np.setdiff1d(np.arange(given, estate.hosts), estate.web[:1])
    drawn = rng.choice(others, count - given, replace=False)
    return np.concatenate([np.arange(given), drawn]).astype(np.int64)


def _strata(rng: np.random.Generator, count: int, low: float, high: float) -> np.ndarray:
    """count values spread over [low, high): one drawn in each of count equal strata, shuffled."""
    edges = np.linspace(low, high, count + 1)
    return rng.permutation(rng.uniform(edges[:-1], edges[1:])) if count else np.empty(0)


def _beacons(
    rng: np.random.Generator,
    estate: _Estate,
    hosts: np.ndarray,
    destinations: np.ndarray,
    t0: int,
    seconds: int,
) -> tuple[list[PlantedBeacon], _Flows]:
    count = hosts.size
    # Periods log-uniform from 10 s to an hour, never so long the window holds under 12 calls.
    longest = min(_HOUR, seconds / 12)
    periods = np.exp(_strata(rng, count, math.log(10), math.log(longest)))
    jitters = _strata(rng, count, 0.0, 0.4)
    variations = _strata(rng, count, 0.0, 0.3)
    truth, parts = [], []
    for number in range(count):
        period, jitter = float(periods[number]), float(jitters[number])
        port, protocol = _BEACON_PORTS[number % len(_BEACON_PORTS)]
        # Implanted at some point of the first quarter, some go on to the end, others stop.
        begin = t0 + rng.uniform(0, 0.25) * seconds
        end = t0 + seconds if rng.random() < 0.6 else t0 + rng.uniform(0.75, 1.0) * seconds
        n = int((end - begin) / (period * (1 - jitter / 2))) + 2
        sleeps = period * (1 - rng.uniform(0, jitter, n))
        times = begin + np.cumsum(sleeps)
        times = times[times < end]
        gaps = 1 if number % 3 == 2 else 0
        for _ in range(gaps):
            # The operator puts the implant to sleep for a few hours, then it calls again.
            pause = rng.uniform(1, min(4, seconds / _HOUR / 4)) * _HOUR
            at = rng.uniform(times[0], times[-1] - pause) if times[-1] - times[0] > pause else 0
            times = times[(times < at) | (times >= at + pause)]
        times = np.floor(times).astype(np.int64)
        size = float(rng.uniform(200, 2500))
        variation = float(variations[number])
        sent = size * (1 + variation * rng.standard_normal(times.size))
        back = rng.uniform(150, 900) * (1 + variation * rng.standard_normal(times.size))
        tasking = rng.random(times.size) < 0.03
        back = np.where(tasking, back * rng.uniform(5, 50, times.size), back)
        host = int(hosts[number])
        dst = int(destinations[number])
        parts.append(
            _flows(
                rng,
                eni=host,
                peer=dst,
                port=port,
                protocol=protocol,
                start=times,
                duration=rng.integers(0, 3, times.size),
                sent=sent,
                back=back,
            )
        )
        truth.append(
            PlantedBeacon(
                src=_text_ip(estate.ip[host]),
                dst=_text_ip(dst),
                dst_port=port,
                protocol=protocol,
                period_seconds=round(period, 3),
                jitter=round(jitter, 4),
                size_variation=round(variation, 4),
                sleep_gaps=gaps,
                connections=int(times.size),
                first_seen=datetime.fromtimestamp(int(times[0]), UTC),
                last_seen=datetime.fromtimestamp(int(times[-1]), UTC),
                interface_id=_eni_text(estate.eni[host]),
                instance_id=_instance_text(estate.instance[host]),
            )
        )
    return truth, _Flows.concat(parts)


def _long_connections(
    rng: np.random.Generator, estate: _Estate, spare: np.ndarray, t0: int, seconds: int
) -> tuple[_Flows, list[Confounder]]:
    """Long-lived connections (replication, tunnels, streams): a record per capture window."""
    count = max(4, estate.hosts // 50)
    hosts = rng.choice(estate.hosts, count, replace=False)
    # A few share a destination (a managed database, a tunnel endpoint); the rest have their own.
    dst = np.where(
        rng.random(count) < 0.5,
        spare[rng.integers(0, 8, count)],
        estate.remotes[rng.integers(0, estate.remotes.size, count)],
    )
    ports = rng.choice(np.array([443, 443, 5432, 22, 8883, 3306]), count)
    parts, truth = [], []
    for number in range(count):
        # One to three sessions: a dropped connection comes back from a new source port.
        sessions = int(rng.integers(1, 4))
        cuts = np.sort(rng.uniform(0, seconds, sessions * 2))
        if number % 2 == 0:  # half of them last the whole window, reconnecting now and then
            cuts = np.concatenate([[0], np.sort(rng.uniform(0, seconds, sessions - 1)), [seconds]])
            spans = np.stack([cuts[:-1], cuts[1:]], axis=1)
        else:
            spans = cuts.reshape(-1, 2)
        spans = spans[spans[:, 1] - spans[:, 0] > 2 * _HOUR]
        if spans.size == 0:
            spans = np.array([[0.0, seconds]])
        a = (t0 + spans[:, 0]).astype(np.int64)
        b = (t0 + spans[:, 1]).astype(np.int64)
        eni = np.full(a.size, hosts[number])
        conn, start, stop, index = _windows(eni, a, b, estate)
        pieces = np.bincount(conn, minlength=a.size)
        last = index == pieces[conn] - 1
        # SYN in the window it opens, FIN in the one it closes, nothing in between.
        flags_out = np.where(index == 0, 2, 0) | np.where(last, 1, 0)
        flags_back = np.where(index == 0, 18, 0) | np.where(last, 1, 0)
        steady = number % 3 != 0
        spread = 0.05 if steady else 1.0
        rate = rng.uniform(2_000, 200_000)
        length = (stop - start + 1).astype(float)
        sent = rate * length * rng.lognormal(0, spread, start.size)
        back = sent * rng.uniform(0.05, 0.5)
        port_of = rng.integers(*_EPHEMERAL, a.size)
        parts.append(
            _flows(
                rng,
                eni=eni[conn],
                peer=dst[number],
                port=int(ports[number]),
                protocol=6,
                start=start,
                duration=stop - start,
                sent=sent,
                back=back,
                local_port=port_of[conn],
                flags=(flags_out, flags_back),
            )
        )
        truth.append(
            Confounder(
                kind="long_connection",
                src=_text_ip(estate.ip[hosts[number]]),
                dst=_text_ip(dst[number]),
                dst_port=int(ports[number]),
                protocol=6,
            )
        )
    return _Flows.concat(parts), truth


def _backups(
    rng: np.random.Generator, estate: _Estate, service: int, t0: int, seconds: int
) -> tuple[_Flows, list[Confounder]]:
    """Nightly backups: at 02:00, a burst of parallel uploads, each lasting tens of minutes."""
    hosts = rng.choice(estate.hosts, max(1, estate.hosts // 10), replace=False)
    parts, truth = [], []
    for day in range(math.ceil(seconds / _DAY)):
        at = t0 + day * _DAY + 2 * _HOUR
        for host in hosts:
            streams = int(rng.integers(8, 25))
            a = (at + rng.uniform(0, 600) + rng.uniform(0, 5, streams)).astype(np.int64)
            b = a + rng.uniform(20, 90, streams).astype(np.int64) * _MINUTE
            keep = b <= t0 + seconds
            if not keep.any():
                continue
            a, b = a[keep], b[keep]
            conn, start, stop, index = _windows(np.full(a.size, host), a, b, estate)
            sent = rng.uniform(5e6, 5e7, start.size) * (stop - start + 1) / 600
            port_of = rng.integers(*_EPHEMERAL, a.size)
            parts.append(
                _flows(
                    rng,
                    eni=host,
                    peer=service,
                    port=443,
                    protocol=6,
                    start=start,
                    duration=stop - start,
                    sent=sent,
                    back=sent * 0.01,
                    local_port=port_of[conn],
                    flags=(np.where(index == 0, 2, 0), np.where(index == 0, 18, 0)),
                )
            )
    truth = [
        Confounder(
            kind="backup",
            src=_text_ip(estate.ip[host]),
            dst=_text_ip(service),
            dst_port=443,
            protocol=6,
        )
        for host in hosts
    ]
    return _Flows.concat(parts), truth


def _rejected_retries(
    rng: np.random.Generator,
    estate: _Estate,
    spare: np.ndarray,
    t0: int,
    seconds: int,
    beacon_hosts: np.ndarray,
) -> tuple[_Flows, list[Confounder]]:
    """An agent retrying every 30 s a destination the security group rejects: periodic, REJECT."""
    hosts = rng.choice(np.setdiff1d(np.arange(estate.hosts), beacon_hosts), 2, replace=False)
    parts, truth = [], []
    for number, host in enumerate(hosts):
        dst = int(spare[8 + number])
        times = t0 + np.arange(rng.uniform(0, 30), seconds, 30) + rng.uniform(0, 2, 1)
        times = (times + rng.normal(0, 0.5, times.size)).astype(np.int64)
        parts.append(
            _flows(
                rng,
                eni=host,
                peer=dst,
                port=8443,
                protocol=6,
                start=times,
                duration=3,
                sent=180,
                back=0,
                rejected=True,
                flags=(2, 0),
            )
        )
        truth.append(
            Confounder(
                kind="rejected_retry",
                src=_text_ip(estate.ip[host]),
                dst=_text_ip(dst),
                dst_port=8443,
                protocol=6,
            )
        )
    return _Flows.concat(parts), truth


def _records_of(flows: _Flows) -> float:
    return float(2 * len(flows) - int(flows.rejected.sum()))


def _periodic_records(
    estate: _Estate, seconds: int, ntp_hosts: np.ndarray, dns_hosts: np.ndarray
) -> float:
    ntp = 2 * 2 * ntp_hosts.size * seconds / 1024
    dns = 2 * dns_hosts.size * seconds / 600 * 3
    health = 2 * _CHECKERS * estate.web.size * seconds / 30
    return ntp + dns + health


# --- one file's records ------------------------------------------------------------------------


def _chunk(plan: _Plan, number: int) -> dict[str, np.ndarray]:
    """The records of the number-th file: its time slice of every kind of traffic, by start."""
    rng = np.random.default_rng([plan.seed, 1, number])
    estate = plan.estate
    t0 = plan.t0 + number * plan.file_seconds
    t1 = min(plan.t0 + plan.seconds, t0 + plan.file_seconds)

    lo, hi = np.searchsorted(plan.fixed.start, [t0, t1])
    parts = [
        plan.fixed.take(slice(lo, hi)),
        _ntp(rng, plan, t0, t1),
        _dns(rng, plan, t0, t1),
        _agent(rng, plan, t0, t1),
        _health_checks(rng, estate, t0, t1),
        _outbound(rng, plan, t0, t1),
        _browsing(rng, plan, t0, t1),
        _inbound(rng, plan, t0, t1),
        _internal(rng, plan, t0, t1),
        _scans(rng, plan, t0, t1),
    ]
    columns = _records(_Flows.concat(parts), estate)
    columns = _with_idle(rng, columns, estate, t0, t1)
    order = np.argsort(columns["start"], kind="stable")
    columns = {name: values[order] for name, values in columns.items()}

    bad = np.zeros(order.size, dtype=np.int8)
    wanted = int(np.count_nonzero(plan.bad_files == number))
    if wanted and order.size:
        where = rng.choice(order.size, min(wanted, order.size), replace=False)
        # Each kind in turn, so that even three bad lines show all three.
        first = int(np.count_nonzero(plan.bad_files < number))
        bad[where] = 1 + (first + np.arange(where.size)) % 3
    columns["bad"] = bad
    return columns


def _ntp(rng: np.random.Generator, plan: _Plan, t0: int, t1: int) -> _Flows:
    hosts = plan.ntp_hosts
    parts = []
    for server, salt in ((plan.popular["ntp-a"], 0), (plan.popular["ntp-b"], 7)):
        # chrony's steady poll of 1024 s, each host at its own phase (fixed by the seed).
        phase = (hosts * 7919 + salt * 104729) % 1024
        member, ticks = _periodic(hosts, phase, np.full(hosts.size, 1024), t0, t1)
        ticks = ticks + rng.integers(0, 2, ticks.size)
        parts.append(
            _flows(
                rng,
                eni=hosts[member],
                peer=server,
                port=123,
                protocol=17,
                start=ticks,
                duration=0,
                sent=76,
                back=76,
            )
        )
    return _Flows.concat(parts)


def _dns(rng: np.random.Generator, plan: _Plan, t0: int, t1: int) -> _Flows:
    """Bursts of lookups to public resolvers: a few names at once, now and then."""
    hosts = plan.dns_hosts
    bursts = rng.poisson(hosts.size * (t1 - t0) / 600)
    host = hosts[rng.integers(0, hosts.size, bursts)]
    at = rng.integers(t0, t1, bursts)
    size = 1 + rng.poisson(2, bursts)
    host, at = np.repeat(host, size), np.repeat(at, size) + rng.integers(0, 3, size.sum())
    at = np.minimum(at, t1 - 1)
    resolver = np.where(rng.random(at.size) < 0.5, plan.popular["dns-a"], plan.popular["dns-b"])
    return _flows(
        rng,
        eni=host,
        peer=resolver,
        port=53,
        protocol=17,
        start=at,
        duration=0,
        sent=rng.integers(60, 90, at.size),
        back=rng.integers(90, 400, at.size),
    )


def _agent(rng: np.random.Generator, plan: _Plan, t0: int, t1: int) -> _Flows:
    """The monitoring agent nearly every host runs: a report every 5 minutes, to one service."""
    hosts = plan.agent_hosts
    phase = (hosts * 15485863) % 300
    member, ticks = _periodic(hosts, phase, np.full(hosts.size, 300), t0, t1)
    ticks = ticks + rng.integers(0, 2, ticks.size)
    n = ticks.size
    return _flows(
        rng,
        eni=hosts[member],
        peer=plan.popular["agent"],
        port=443,
        protocol=6,
        start=ticks,
        duration=rng.integers(0, 2, n),
        sent=rng.normal(1800, 60, n),
        back=rng.normal(420, 10, n),
    )


def _health_checks(rng: np.random.Generator, estate: _Estate, t0: int, t1: int) -> _Flows:
    """Two load balancer nodes check each web host every 30 s: periodic, inside the estate."""
    host = np.repeat(estate.web, _CHECKERS)
    checker = host + np.tile(np.arange(_CHECKERS), estate.web.size)
    node = estate.lb_nodes[checker % estate.lb_nodes.size]
    phase = (node * 31 + host * 17) % 30
    member, ticks = _periodic(host, phase, np.full(host.size, 30), t0, t1)
    n = ticks.size
    return _flows(
        rng,
        eni=host[member],
        peer=estate.ip[node[member]],
        port=rng.integers(*_EPHEMERAL, n),
        protocol=6,
        start=ticks,
        duration=0,
        sent=320,
        back=rng.integers(400, 460, n),
        opened_here=False,
        local_port=80,
    )


def _outbound(rng: np.random.Generator, plan: _Plan, t0: int, t1: int) -> _Flows:
    """Hosts reaching the internet at random times, each mostly to its own favourite places."""
    estate = plan.estate
    n = rng.poisson(plan.rates["outbound"] * (t1 - t0))
    host = rng.choice(estate.hosts, n, p=estate.weight)
    rank = np.minimum(rng.zipf(1.4, n), 5000)
    dst = estate.remotes[(host * 7907 + rank * 104723) % estate.remotes.size]
    port = _WEB_PORTS[(rank + host) % _WEB_PORTS.size]
    start = rng.integers(t0, t1, n)
    return _flows(
        rng,
        eni=host,
        peer=dst,
        port=port,
        protocol=6,
        start=start,
        duration=rng.integers(0, 20, n),
        sent=rng.lognormal(7, 1.2, n),
        back=rng.lognormal(9, 1.5, n),
    )


def _browsing(rng: np.random.Generator, plan: _Plan, t0: int, t1: int) -> _Flows:
    """Workstations in working hours: bursts of tens of connections to a handful of sites."""
    estate = plan.estate
    hour = (t0 // _HOUR) % 24
    if not 8 <= hour < 18:
        return _Flows.empty()
    bursts = rng.poisson(estate.workstations.size * (t1 - t0) / 1200)
    host = estate.workstations[rng.integers(0, estate.workstations.size, bursts)]
    at = rng.integers(t0, t1, bursts)
    size = rng.integers(10, 60, bursts)
    sites = rng.integers(3, 20, bursts)
    host, at, sites = np.repeat(host, size), np.repeat(at, size), np.repeat(sites, size)
    site = rng.integers(0, 1 << 30, host.size) % sites + np.repeat(
        rng.integers(0, 1 << 20, bursts), size
    )  # noqa: E501
    dst = estate.remotes[site % estate.remotes.size]
    start = np.minimum(at + rng.integers(0, 30, at.size), t1 - 1)
    return _flows(
        rng,
        eni=host,
        peer=dst,
        port=443,
        protocol=6,
        start=start,
        duration=rng.integers(0, 10, at.size),
        sent=rng.lognormal(7, 1, at.size),
        back=rng.lognormal(10, 1.5, at.size),
    )


def _inbound(rng: np.random.Generator, plan: _Plan, t0: int, t1: int) -> _Flows:
    """Clients on the internet reaching the web hosts."""
    estate = plan.estate
    n = rng.poisson(plan.rates["inbound"] * (t1 - t0))
    host = estate.web[rng.integers(0, estate.web.size, n)]
    client = estate.remotes[rng.integers(0, estate.remotes.size, n)]
    return _flows(
        rng,
        eni=host,
        peer=client,
        port=rng.integers(*_EPHEMERAL, n),
        protocol=6,
        start=rng.integers(t0, t1, n),
        duration=rng.integers(0, 30, n),
        sent=rng.lognormal(7, 1, n),
        back=rng.lognormal(10, 1.5, n),
        opened_here=False,
        local_port=443,
    )


def _internal(rng: np.random.Generator, plan: _Plan, t0: int, t1: int) -> _Flows:
    """Hosts querying the databases and caches inside the estate."""
    estate = plan.estate
    n = rng.poisson(plan.rates["internal"] * (t1 - t0))
    host = rng.choice(estate.hosts, n, p=estate.weight)
    db = estate.db[rng.integers(0, estate.db.size, n)]
    port = np.where(rng.random(n) < 0.7, 5432, 6379)
    return _flows(
        rng,
        eni=host,
        peer=estate.ip[db],
        port=port,
        protocol=6,
        start=rng.integers(t0, t1, n),
        duration=rng.integers(0, 5, n),
        sent=rng.lognormal(6, 1, n),
        back=rng.lognormal(8, 1.5, n),
    )


def _scans(rng: np.random.Generator, plan: _Plan, t0: int, t1: int) -> _Flows:
    """The internet's background of probes, rejected by the security groups."""
    estate = plan.estate
    n = rng.poisson(plan.rates["scan"] * (t1 - t0))
    host = rng.integers(0, estate.hosts, n)
    scanner = estate.scanners[rng.zipf(1.5, n) % estate.scanners.size]
    port = np.where(
        rng.random(n) < 0.7,
        _SCANNED_PORTS[rng.integers(0, _SCANNED_PORTS.size, n)],
        rng.integers(1, 65536, n),
    )
    return _flows(
        rng,
        eni=host,
        peer=scanner,
        port=rng.integers(*_EPHEMERAL, n),
        protocol=6,
        start=rng.integers(t0, t1, n),
        duration=0,
        sent=rng.integers(40, 61, n),
        back=0,
        opened_here=False,
        rejected=True,
        local_port=port,
        flags=(2, 0),
    )


def _records(flows: _Flows, estate: _Estate) -> dict[str, np.ndarray]:
    """Each connection as its ENI logs it: the opener's record, then the answer's (if any)."""
    host_ip = estate.ip[flows.eni]
    here = flows.opened_here
    answered = ~flows.rejected
    first = {
        "e": flows.eni,
        "src": np.where(here, host_ip, flows.peer),
        "dst": np.where(here, flows.peer, host_ip),
        "srcport": np.where(here, flows.local_port, flows.remote_port),
        "dstport": np.where(here, flows.remote_port, flows.local_port),
        "bytes": flows.bytes_out,
        "flags": flows.flags_out,
        "egress": here,
        "rejected": flows.rejected,
    }
    back = {
        "e": flows.eni[answered],
        "src": first["dst"][answered],
        "dst": first["src"][answered],
        "srcport": first["dstport"][answered],
        "dstport": first["srcport"][answered],
        "bytes": flows.bytes_back[answered],
        "flags": flows.flags_back[answered],
        "egress": ~here[answered],
        "rejected": flows.rejected[answered],
    }
    columns = {name: np.concatenate([first[name], back[name]]) for name in first}
    for name, values in (
        ("protocol", flows.protocol),
        ("start", flows.start),
        ("stop", flows.stop),
    ):
        columns[name] = np.concatenate([values, values[answered]])
    # Ethernet-sized packets for bulk, small ones for chatter.
    columns["packets"] = np.maximum(
        1, columns["bytes"] // np.where(columns["bytes"] > 5000, 1300, 180)
    )
    columns["status"] = np.zeros(columns["start"].size, dtype=np.int8)
    return columns


def _with_idle(
    rng: np.random.Generator, columns: dict[str, np.ndarray], estate: _Estate, t0: int, t1: int
) -> dict[str, np.ndarray]:
    """Add NODATA (an idle ENI's window) and SKIPDATA (records lost to capacity) records."""
    n = columns["start"].size
    nodata, skipdata = rng.poisson(n * _NODATA_RATE), rng.poisson(n * _SKIPDATA_RATE)
    count = nodata + skipdata
    eni = rng.integers(0, estate.eni.size, count)
    start = rng.integers(t0, t1, count)
    idle = {
        "e": eni,
        "src": np.zeros(count, np.uint32),
        "dst": np.zeros(count, np.uint32),
        "srcport": np.zeros(count, np.int64),
        "dstport": np.zeros(count, np.int64),
        "bytes": np.zeros(count, np.int64),
        "flags": np.zeros(count, np.int64),
        "egress": np.zeros(count, bool),
        "rejected": np.zeros(count, bool),
        "protocol": np.zeros(count, np.int64),
        "start": start,
        "stop": start + estate.window[eni] - 1,
        "packets": np.zeros(count, np.int64),
        "status": np.concatenate([np.ones(nodata, np.int8), np.full(skipdata, 2, np.int8)]),
    }
    return {name: np.concatenate([columns[name], idle[name]]) for name in columns}


# --- writing ------------------------------------------------------------------------------------


class _Writer:
    """Write each file's columns with DuckDB: text lines (plain or gzip) or Parquet partitions."""

    def __init__(self, data: Path, plan: _Plan, threads: int) -> None:
        self.data, self.plan = data, plan
        self.connection = duckdb.connect(config={"threads": threads})
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self.flow_log_id = hashlib.sha256(f"fl|{plan.seed}".encode()).hexdigest()[:17]
        fields = (
            V5_FIELDS if plan.format.startswith("v5") or plan.format == "parquet" else V2_FIELDS
        )
        self.fields = fields
        self.version = 5 if fields is V5_FIELDS else 2

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *_: object) -> None:
        for cursor in self._cursors:
            cursor.close()
        self.connection.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor: each writing thread registers its own file's columns."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._lock:
                cursor = self._local.cursor = self.connection.cursor()
                self._cursors.append(cursor)
        return cursor

    def write(self, number: int, chunk: dict[str, np.ndarray]) -> np.ndarray:
        """Write one file; return its counts: records, bad lines, NODATA, SKIPDATA."""
        estate = self.plan.estate
        e = chunk.pop("e")
        table = {
            **chunk,
            "src": chunk["src"].astype(np.uint32),
            "dst": chunk["dst"].astype(np.uint32),
            "eni": estate.eni[e],
            "instance": estate.instance[e],
            "subnet": estate.subnet[e],
            "az": estate.az[e],
        }
        cursor = self._cursor()
        cursor.register("chunk", table)
        try:
            if self.plan.format == "parquet":
                self._parquet(cursor, number)
            else:
                self._text(cursor, number)
        finally:
            cursor.unregister("chunk")
        status = chunk["status"]
        return np.array(
            [
                status.size,
                int(np.count_nonzero(chunk["bad"])),
                int(np.count_nonzero(status == 1)),
                int(np.count_nonzero(status == 2)),
            ]
        )

    def _expression(self, field: str) -> str:
        return _FIELDS[field][0].format(version=self.version, vpc=self.plan.estate.vpc)

    def _line(self, fields: Sequence[str], override: dict[str, str] | None = None) -> str:
        override = override or {}
        parts = [
            override.get(f) or f"coalesce(({self._expression(f)})::VARCHAR, '-')" for f in fields
        ]
        return "concat_ws(' ', " + ", ".join(parts) + ")"

    def _text(self, cursor: duckdb.DuckDBPyConnection, number: int) -> None:
        at = datetime.fromtimestamp(self.plan.t0 + number * self.plan.file_seconds, UTC)
        folder = self.data / ACCOUNT_ID / "vpcflowlogs" / REGION / at.strftime("%Y/%m/%d")
        folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(f"{self.plan.seed}|{number}".encode()).hexdigest()[:8]
        gzip = self.plan.format.endswith("-gz")
        name = (
            f"{ACCOUNT_ID}_vpcflowlogs_{REGION}_fl-{self.flow_log_id}_"
            f"{at.strftime('%Y%m%dT%H%MZ')}_{digest}.log{'.gz' if gzip else ''}"
        )
        # Three kinds of damage a reader meets: a cut line, a word for a number, a field too many
        # in the middle (every field after it shifts).
        address = f"coalesce({self._expression('srcaddr')}, '-')"
        cut = self._line(self.fields[:4])
        word = self._line(self.fields, {"srcport": "'http'"})
        extra = self._line(self.fields, {"srcaddr": f"{address} || ' ' || {address}"})
        bad = (
            f"CASE bad WHEN 0 THEN {self._line(self.fields)} WHEN 1 THEN {cut} "
            f"WHEN 2 THEN {word} ELSE {extra} END"
        )
        header = self.plan.format != "v2-noheader"
        column = " ".join(self.fields) if header else "line"
        options = f"FORMAT csv, HEADER {str(header).lower()}, DELIMITER '\t', QUOTE ''"
        if gzip:
            options += ", COMPRESSION gzip"
        path = folder / name
        cursor.execute(
            f"COPY (SELECT {bad} AS \"{column}\" FROM chunk) TO '{_sql_path(path)}' ({options})"
        )

    def _parquet(self, cursor: duckdb.DuckDBPyConnection, number: int) -> None:
        at = datetime.fromtimestamp(self.plan.t0 + number * self.plan.file_seconds, UTC)
        columns = [
            f'CAST({self._expression(f)} AS {_FIELDS[f][1]}) AS "{f.replace("-", "_")}"'
            for f in self.fields
        ]
        partitions = {
            "aws-account-id": ACCOUNT_ID,
            "aws-service": "vpcflowlogs",
            "aws-region": REGION,
            "year": at.strftime("%Y"),
            "month": at.strftime("%m"),
            "day": at.strftime("%d"),
            "hour": at.strftime("%H"),
        }
        columns += [f"'{value}' AS \"{key}\"" for key, value in partitions.items()]
        keys = ", ".join(f'"{key}"' for key in partitions)
        pattern = (
            f"{ACCOUNT_ID}_vpcflowlogs_{REGION}_fl-{self.flow_log_id}_"
            f"{at.strftime('%Y%m%dT%H%MZ')}_{number:05d}_{{i}}"
        )
        # Made here, not by DuckDB: two threads may write into one hour's folder at once.
        self.data.joinpath(*(f"{key}={value}" for key, value in partitions.items())).mkdir(
            parents=True, exist_ok=True
        )
        cursor.execute(
            f"COPY (SELECT {', '.join(columns)} FROM chunk) TO '{_sql_path(self.data)}' "
            f"(FORMAT parquet, COMPRESSION gzip, PARTITION_BY ({keys}), "
            f"FILENAME_PATTERN '{pattern}', OVERWRITE_OR_IGNORE)"
        )


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def describe(truth: GroundTruth) -> str:
    """A few lines on a generated set, for the command line."""
    kinds: dict[str, int] = {}
    for item in truth.confounders:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    return "\n".join(
        [
            f"{truth.records:,} records in {truth.files} files ({truth.format}), "
            f"{truth.hosts} hosts, {truth.start:%Y-%m-%d %H:%M} to {truth.end:%Y-%m-%d %H:%M} UTC",
            f"{len(truth.beacons)} beacons planted; look-alikes: "
            + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())),
            f"{truth.bad_lines} bad lines, {truth.nodata} NODATA, {truth.skipdata} SKIPDATA",
        ]
    )


def truth_json(truth: GroundTruth) -> str:
    """The ground truth as JSON, for --json."""
    return json.dumps(truth.model_dump(mode="json"), indent=2)
