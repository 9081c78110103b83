"""The beacon analysis vocabulary: what a scan is asked, each pair's score, the scan's result."""

from __future__ import annotations

import ipaddress
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Frozen(BaseModel):
    """Base of the beacon models: immutable, unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ScanOptions(_Frozen):
    """What a scan is asked."""

    since: datetime | None = None  # only flows starting at or after
    min_score: float = Field(default=0.7, ge=0.0, le=1.0)
    # destinations a larger share of the internal sources talk to are excluded
    prevalence_share: float = Field(default=0.5, gt=0.0, le=1.0)
    allowlist: list[str] = Field(default_factory=list)  # CIDRs never reported
    include_rejected: bool = False
    min_connections: int = Field(default=6, ge=2)
    top: int = Field(default=20, ge=0)  # how many pairs are verified and pictured
    seed: int = 20261204  # the permutation test's seed

    @field_validator("allowlist")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        """Each entry a network (`203.0.113.0/24`, `2001:db8::/32`) or an address, normalised."""
        networks = []
        for entry in value:
            try:
                networks.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError as exc:
                raise ValueError(f"allowlist entry {entry!r} is not a network: {exc}") from exc
        return networks


class PairScore(_Frozen):
    """One candidate pair's result: an internal source calling one outside destination."""

    src: str
    dst: str
    dst_port: int
    protocol: int
    score: float = Field(ge=0.0, le=1.0)
    period_seconds: float | None = None
    jitter: float | None = None  # as a share of the period
    connections: int
    bytes: int
    first_seen: datetime
    last_seen: datetime
    subscores: dict[str, float] = Field(default_factory=dict)
    long_connection: bool = False  # one long connection split by the capture window
    verified: bool | None = None
    p_value: float | None = None
    why: str = ""


class InputStats(_Frozen):
    """What was read: files, records, bad lines with a sample, NODATA and SKIPDATA records."""

    files: int = 0
    records: int = 0
    bad_lines: int = 0
    bad_sample: list[str] = Field(default_factory=list)
    nodata: int = 0
    skipdata: int = 0


class ScanResult(_Frozen):
    """A scan's outcome: reported pairs (score >= min_score), best first."""

    pairs: list[PairScore]
    candidates: int
    # Top pairs scoring the threshold whose verification found no schedule: not beacons.
    dismissed: list[PairScore] = Field(default_factory=list)
    stats: InputStats
    seconds: float
