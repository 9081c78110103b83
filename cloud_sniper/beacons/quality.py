"""How well the scan finds what a generated set planted: precision, recall and each beacon's rank.

The scan runs with no threshold, so every candidate has a rank; precision and recall are then
read at the threshold asked for (the default's). A reported pair no beacon explains is named
after the look-alike it is (a long connection, the popular agent...) or "background".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from cloud_sniper.beacons.models import PairScore, ScanOptions, ScanResult
from cloud_sniper.beacons.synthetic import GroundTruth, PlantedBeacon, load_truth

Key = tuple[str, str, int, int]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BeaconRank(_Frozen):
    """Where one planted beacon came out: its rank among all candidates, its score, its period."""

    beacon: PlantedBeacon
    rank: int | None = None  # 1 is the best score; None: not even a candidate
    score: float | None = None
    reported: bool = False
    period_seconds: float | None = None
    why: str = ""


class FalsePositive(_Frozen):
    """A reported pair no planted beacon explains, and what the generator made it as."""

    kind: str  # a look-alike's kind, or "background"
    pair: PairScore


class Quality(_Frozen):
    """The scan's precision and recall on one generated set at one threshold."""

    threshold: float
    records: int
    candidates: int
    reported: int
    found: int
    precision: float
    recall: float
    seconds: float
    beacons: list[BeaconRank]
    false_positives: list[FalsePositive]

    def meets(self, precision: float = 0.9, recall: float = 0.9) -> bool:
        """Whether both reach their targets."""
        return self.precision >= precision and self.recall >= recall


def measure(
    out: Path | str,
    options: ScanOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Quality:
    """Scan the set generate() wrote into OUT and judge the result against its ground truth."""
    from cloud_sniper.beacons import engine

    truth = load_truth(out)
    options = options or ScanOptions()
    everything = options.model_copy(update={"min_score": 0.0})
    result = engine.scan([Path(out) / truth.data_dir], everything, progress)
    return evaluate(truth, result, options.min_score)


def evaluate(truth: GroundTruth, result: ScanResult, threshold: float) -> Quality:
    """Judge a scan's pairs (all candidates, best first) against the ground truth; a pair the
    verification dismissed keeps its rank but is not reported."""
    ranked = sorted(result.pairs + result.dismissed, key=lambda pair: -pair.score)
    position = {_key(pair): (rank, pair) for rank, pair in enumerate(ranked, start=1)}
    planted = {_beacon_key(beacon): beacon for beacon in truth.beacons}
    dismissed = {_key(pair) for pair in result.dismissed}
    reported = [p for p in ranked if p.score >= threshold and _key(p) not in dismissed]

    beacons = []
    for key, beacon in planted.items():
        rank, pair = position.get(key, (None, None))
        beacons.append(
            BeaconRank(
                beacon=beacon,
                rank=rank,
                score=pair.score if pair else None,
                reported=pair is not None and pair.score >= threshold and key not in dismissed,
                period_seconds=pair.period_seconds if pair else None,
                why=pair.why if pair else "not a candidate",
            )
        )
    found = sum(1 for item in beacons if item.reported)
    false_positives = [
        FalsePositive(kind=_kind(truth, pair), pair=pair)
        for pair in reported
        if _key(pair) not in planted
    ]
    return Quality(
        threshold=threshold,
        records=result.stats.records,
        candidates=result.candidates,
        reported=len(reported),
        found=found,
        precision=round(found / len(reported), 4) if reported else 1.0,
        recall=round(found / len(planted), 4) if planted else 1.0,
        seconds=result.seconds,
        beacons=sorted(beacons, key=lambda item: (item.rank is None, item.rank or 0)),
        false_positives=false_positives,
    )


def describe(quality: Quality) -> str:
    """The figures, each beacon's rank and the false positives, as text for a person."""
    lines = [
        f"threshold {quality.threshold}: precision {quality.precision:.3f} "
        f"({quality.found} of {quality.reported} reported), recall {quality.recall:.3f} "
        f"({quality.found} of {len(quality.beacons)} planted); {quality.candidates} candidates "
        f"in {quality.records:,} records, {quality.seconds:.1f} s",
        "",
        "rank  score  period   found    jitter  sleeps  conns  beacon",
    ]
    for item in quality.beacons:
        beacon = item.beacon
        lines.append(
            f"{_text(item.rank):>4}  {_number(item.score, 3):>5}  "
            f"{_number(beacon.period_seconds, 0):>6}s  {_number(item.period_seconds, 0):>6}s  "
            f"{beacon.jitter:>6.0%}  {beacon.sleep_gaps:>6}  {beacon.connections:>5}  "
            f"{beacon.src} -> {beacon.dst}:{beacon.dst_port}/{beacon.protocol}"
            + ("" if item.reported else "  MISSED")
        )
    if quality.false_positives:
        lines += ["", "false positives:", "score  kind              conns  pair  why"]
        for item in quality.false_positives:
            pair = item.pair
            lines.append(
                f"{pair.score:.3f}  {item.kind:<16}  {pair.connections:>5}  "
                f"{pair.src} -> {pair.dst}:{pair.dst_port}/{pair.protocol}  {pair.why}"
            )
    return "\n".join(lines)


def _kind(truth: GroundTruth, pair: PairScore) -> str:
    for item in truth.confounders:
        same_destination = (item.dst, item.dst_port, item.protocol) == (
            pair.dst,
            pair.dst_port,
            pair.protocol,
        )
        if same_destination and item.src in (None, pair.src):
            return item.kind
    return "background"


def _key(pair: PairScore) -> Key:
    return (pair.src, pair.dst, pair.dst_port, pair.protocol)


def _beacon_key(beacon: PlantedBeacon) -> Key:
    return (beacon.src, beacon.dst, beacon.dst_port, beacon.protocol)


def _text(value: int | None) -> str:
    return "-" if value is None else str(value)


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
