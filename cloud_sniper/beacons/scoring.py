"""Beacon scores from a pair's features, after RITA's method, and the long-connection correction.

Timing and sizes are each scored by how symmetric (Bowley skewness) and how tight (median
absolute deviation) their distribution is; the histogram of the pair's records over the
dataset's window by how even its active bins are and how long it covers the window. The
subscores, each in [0, 1], are combined by weights. Pauses are left out of the timing: a beacon
that sleeps is scored over the spans it is awake.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from cloud_sniper.beacons.analysis import PairFeatures
from cloud_sniper.beacons.models import PairScore, ScanOptions

# The MAD of a Poisson process's inter-arrival times is 0.694 of their median: random traffic
# scores 0 on timing dispersion, a clockwork beacon 1.
POISSON_MAD_RATIO = math.asinh(0.5) / math.log(2)
# Bowley skewness means nothing over a spread this small (seconds, bytes): jitter of a second.
MIN_SKEW_SPREAD = 10.0
# RITA's histogram: evenness and duration need this many active bins, and this run of
# consecutive ones is full consistency.
MIN_ACTIVE_BINS = 6
IDEAL_RUN = 12
BIMODAL_MIN_BINS = 11
BIMODAL_BUCKET = 0.05
# The correction: most records continuing their source port's connection, a capture window after
# its last record or abutting it, are connections the flow log split, not a schedule.
LONG_PORT_REUSE = 0.8
LONG_ALIGNED = 0.5
# A handful of intervals can look regular by chance: the timing subscores are trusted in
# proportion to intervals / (intervals + this), 0.56 for 5 intervals, 0.85 for a day of hourly.
CONFIDENCE_INTERVALS = 4
TIMING_SUBSCORES = ("ts_skew", "ts_mad", "ts_hist")


@dataclass(frozen=True)
class Weights:
    """How much each subscore counts; they sum to 1."""

    ts_skew: float = 0.15
    ts_mad: float = 0.35
    ts_hist: float = 0.15
    ts_duration: float = 0.10
    size_skew: float = 0.10
    size_mad: float = 0.15

    def __post_init__(self) -> None:
        total = sum(vars(self).values())
        if abs(total - 1.0) > 1e-9 or any(w < 0 for w in vars(self).values()):
            raise ValueError(f"weights must be non-negative and sum to 1, not {total}")


DEFAULT_WEIGHTS = Weights()


@dataclass(frozen=True)
class Judgement:
    """What the scoring makes of one pair."""

    score: float
    subscores: dict[str, float] = field(default_factory=dict)
    long_connection: bool = False
    period_seconds: float | None = None
    jitter: float | None = None
    why: str = ""


def bowley(q1: float, q2: float, q3: float) -> tuple[float, float]:
    """Bowley's quartile skewness and its score, 1 for a symmetric distribution."""
    spread = q3 - q1
    skew = 0.0
    if spread >= MIN_SKEW_SPREAD and q2 != q1 and q2 != q3:
        skew = (q3 + q1 - 2 * q2) / spread
    return skew, _unit(1.0 - abs(skew))


def timing_mad_score(median: float, mad: float) -> float:
    """1 for intervals all equal, 0 for intervals as dispersed as random arrivals' or more."""
    if median <= 0:
        return 0.0
    return _unit(1.0 - (mad / median) / POISSON_MAD_RATIO)


def size_mad_score(median: float, mad: float) -> float:
    """RITA's: the share of the median size the typical deviation leaves; 0 for empty records."""
    if median < 1:
        return 0.0
    return _unit((median - mad) / median)


def histogram_scores(features: PairFeatures) -> tuple[float, float]:
    """The histogram's evenness over its active bins, and its duration over the window."""
    counts = [count for count in features.hist_counts if count > 0]
    bins_total = int((features.window_end - features.window_start) // features.bin_seconds) + 1
    if len(counts) < min(MIN_ACTIVE_BINS, bins_total):
        # A burst within an hour or two is even in its one bin and says nothing of a schedule.
        return 0.0, 0.0
    # The first and last active bins are cut by the start and end of the activity.
    inner = counts[1:-1] if len(counts) >= 4 else counts
    mean = sum(inner) / len(inner)
    deviation = math.sqrt(sum((c - mean) ** 2 for c in inner) / len(inner))
    evenness = _unit(1.0 - deviation / mean)
    bimodal = _bimodal_fit(counts)
    hist = max(evenness, bimodal)

    window = max(features.window_end - features.window_start, 1)
    coverage = _unit((features.last_seen - features.first_seen) / window)
    run = _longest_run(features.hist_bins, bins_total)
    consistency = _unit(run / min(IDEAL_RUN, bins_total))
    duration = max(coverage, consistency)
    return round(hist, 3), round(duration, 3)


def _bimodal_fit(counts: list[int]) -> float:
    """Share of the active bins in the two commonest heights: a beacon alternating two rates."""
    if len(counts) < BIMODAL_MIN_BINS:
        return 0.0
    bucket = max(1, math.ceil(max(counts) * BIMODAL_BUCKET))
    heights = Counter(count // bucket for count in counts)
    top = sum(n for _, n in heights.most_common(2))
    return _unit(top / max(len(counts) - 1, 1))


def _longest_run(bins: list[int], bins_total: int) -> int:
    """The longest run of consecutive active bins, wrapping from the window's end to its start."""
    active = sorted({b for b in bins if 0 <= b < bins_total})
    if not active:
        return 0
    if len(active) == bins_total:
        return bins_total
    runs = [1]
    for previous, current in zip(active, active[1:], strict=False):
        if current == previous + 1:
            runs[-1] += 1
        else:
            runs.append(1)
    if len(runs) > 1 and active[0] == 0 and active[-1] == bins_total - 1:
        runs[0] += runs.pop()  # the last run goes on into the first
    return max(runs)


def is_long_connection(features: PairFeatures) -> bool:
    """One connection the capture window split: same source port, records a window apart."""
    return (
        features.deltas >= 2
        and features.port_reuse >= LONG_PORT_REUSE
        and max(features.window_share, features.contiguous_share) >= LONG_ALIGNED
    )


def judge(features: PairFeatures, weights: Weights = DEFAULT_WEIGHTS) -> Judgement:
    """Score one pair: subscores, their weighted sum, and whether it is a long connection."""
    hist, duration = histogram_scores(features)
    subscores = _subscores(features, hist, duration)
    confidence = _confidence(features)
    score = _weighted(subscores, confidence, weights)
    subscores["confidence"] = round(confidence, 3)
    period = features.ts_median if features.ts_median > 0 else None
    jitter = round(features.ts_mad / features.ts_median, 4) if period else None
    long_connection = is_long_connection(features)
    return Judgement(
        score=score,
        subscores=subscores,
        long_connection=long_connection,
        period_seconds=period,
        jitter=jitter,
        why=_why(features, long_connection, hist, duration),
    )


def reported(
    features: Iterable[PairFeatures], options: ScanOptions
) -> list[tuple[PairFeatures, Judgement]]:
    """The pairs scoring the threshold or more, long connections left out, best first."""
    judged = ((item, judge(item)) for item in features if ceiling(item) >= options.min_score)
    kept = [
        (item, judgement)
        for item, judgement in judged
        if not judgement.long_connection and judgement.score >= options.min_score
    ]
    return sorted(kept, key=lambda pair: (-pair[1].score, pair[0].pair_id))


# What ceiling() reads of a pair's features: its quartiles, deviations and intervals.
MOMENT_FIELDS = (
    "active_deltas",
    "ts_q1",
    "ts_median",
    "ts_q3",
    "ts_mad",
    "ds_q1",
    "ds_median",
    "ds_q3",
    "ds_mad",
)


class Moments(Protocol):
    """The features ceiling() reads: PairFeatures, or a row of those fields alone."""

    active_deltas: int
    ts_q1: float
    ts_median: float
    ts_q3: float
    ts_mad: float
    ds_q1: float
    ds_median: float
    ds_q3: float
    ds_mad: float


def ceiling(features: Moments, weights: Weights = DEFAULT_WEIGHTS) -> float:
    """The most judge() can score the pair: its histogram taken as perfect, the rest as scored.

    The histogram is the costly part of a judgement; a pair whose ceiling is below the
    threshold need not be judged at all, as most of a large scan's candidates.
    """
    return _weighted(_subscores(features, 1.0, 1.0), _confidence(features), weights)


def _subscores(features: Moments, hist: float, duration: float) -> dict[str, float]:
    """Every subscore, given the histogram's two."""
    _, ts_skew_score = bowley(features.ts_q1, features.ts_median, features.ts_q3)
    _, size_skew_score = bowley(features.ds_q1, features.ds_median, features.ds_q3)
    subscores = {
        "ts_skew": round(ts_skew_score, 3),
        "ts_mad": round(timing_mad_score(features.ts_median, features.ts_mad), 3),
        "ts_hist": hist,
        "ts_duration": duration,
        "size_skew": round(size_skew_score, 3),
        "size_mad": round(size_mad_score(features.ds_median, features.ds_mad), 3),
    }
    if features.active_deltas < 3:
        # Two intervals say nothing about a schedule.
        subscores["ts_skew"] = subscores["ts_mad"] = 0.0
    return subscores


def _confidence(features: Moments) -> float:
    return features.active_deltas / (features.active_deltas + CONFIDENCE_INTERVALS)


def _weighted(subscores: dict[str, float], confidence: float, weights: Weights) -> float:
    total = sum(
        getattr(weights, k) * v * (confidence if k in TIMING_SUBSCORES else 1.0)
        for k, v in subscores.items()
    )
    return round(_unit(total), 3)


def _why(features: PairFeatures, long_connection: bool, hist: float, duration: float) -> str:
    if long_connection:
        return (
            f"long connection(s) split by the capture window: {features.port_reuse:.0%} of the "
            f"records continue their source port's connection, "
            f"{max(features.window_share, features.contiguous_share):.0%} a window later or "
            "abutting"
        )
    parts = [
        f"every {_seconds(features.ts_median)} (middle half {_seconds(features.ts_q1)}"
        f"-{_seconds(features.ts_q3)})"
    ]
    if features.ds_mad == 0:
        parts.append(f"always {int(features.ds_median)} B")
    else:
        parts.append(f"{int(features.ds_median)} B ±{int(features.ds_mad)}")
    active_bins = sum(1 for c in features.hist_counts if c > 0)
    bins_total = int((features.window_end - features.window_start) // features.bin_seconds) + 1
    parts.append(f"active in {active_bins} of {bins_total} bins")
    if features.gaps:
        parts.append(f"{features.gaps} pause(s) left out")
    return ", ".join(parts)


def _seconds(value: float) -> str:
    if value >= 3600 and value % 60 == 0:
        return f"{value / 3600:g} h" if value % 3600 == 0 else f"{value / 60:g} min"
    return f"{value:g} s"


def _unit(value: float) -> float:
    if math.isnan(value):
        return 0.0
    return min(1.0, max(0.0, value))


def pair_score(item: PairFeatures, judgement: Judgement) -> PairScore:
    """A scored pair as the scan reports it."""
    return PairScore(
        src=item.src,
        dst=item.dst,
        dst_port=item.dst_port,
        protocol=item.protocol,
        score=judgement.score,
        period_seconds=judgement.period_seconds,
        jitter=judgement.jitter,
        connections=item.connections,
        bytes=item.bytes,
        first_seen=datetime.fromtimestamp(item.first_seen, tz=UTC),
        last_seen=datetime.fromtimestamp(item.last_seen, tz=UTC),
        subscores=judgement.subscores,
        long_connection=judgement.long_connection,
        why=judgement.why,
    )
