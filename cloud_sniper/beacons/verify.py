"""Verification of the top pairs: a periodogram gives the period, a permutation test its p-value.

The event times are binned and Fourier-transformed (Welch's averaged periodogram); the peak's
power is compared with the peaks of the same number of events placed at random within the same
active spans (the pauses kept), drawn with a fixed seed so that a scan gives the same answer
every time. A beacon whose jitter is as wide as half its period has no spectral line left (the
intervals' characteristic function vanishes at the period), so the same draws also test the
intervals' regularity (their MAD over their median); the p-value is the smaller of the two,
doubled for testing twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud_sniper.beacons.analysis import GAP_FACTOR
from cloud_sniper.beacons.models import PairScore

PERMUTATIONS = 399
ALPHA = 0.01
MIN_EVENTS = 6
BINS_PER_PERIOD = 16
# Welch's method: the series is cut into segments this many typical intervals long and their
# spectra averaged. A jittered beacon's line is a bump, not a spike: averaging over segments
# keeps its height and flattens the noise around it.
PERIODS_PER_SEGMENT = 16
HARMONICS = 8
HARMONIC_POWER = 0.5
NEAR_PERIOD = 0.5  # intervals within this share of the period are its repetitions
# Regularity alone shows a schedule when fewer than this many of the scan's candidate pairs
# would be as regular by chance (as estimated, so fewer still): a spectral line needs no more.
LOOKALIKES = 1.0
# The permutations are drawn and transformed a block at a time, as many as fill about this many
# bins (some tens of MB of counts and spectra), not one by one: numpy's per-call cost dominated.
DRAW_BLOCK_BINS = 1 << 21


@dataclass(frozen=True)
class Verification:
    """The periodogram's answer for one pair."""

    verified: bool
    p_value: float | None
    period_seconds: float | None
    jitter: float | None
    power: float
    why: str

    @property
    def dismissed(self) -> bool:
        """Tested, and no schedule found: not a beacon (a pair too short to test is not)."""
        return self.p_value is not None and not self.verified


def with_verdict(pair: PairScore, result: Verification) -> PairScore:
    """The pair as its verification found it: the verdict, and the period it measured."""
    changes: dict[str, Any] = {
        "verified": result.verified,
        "p_value": result.p_value,
        "why": f"{pair.why}; {result.why}",
    }
    if result.verified:
        changes["period_seconds"] = result.period_seconds
        changes["jitter"] = result.jitter
    return pair.model_copy(update=changes)


@dataclass(frozen=True)
class _Grid:
    """How a pair's events are binned and cut into segments."""

    origin: float
    width: float
    segment_bins: int
    segments: int

    @classmethod
    def of(cls, t: np.ndarray) -> _Grid:
        median = float(np.median(np.diff(t)))
        width = max(1.0, median / BINS_PER_PERIOD)
        total = int((t[-1] - t[0]) // width) + 1
        segment_bins = BINS_PER_PERIOD * PERIODS_PER_SEGMENT
        if total < 2 * segment_bins:
            # Too short to average: one segment, the plain periodogram.
            return cls(float(t[0]), width, total, 1)
        return cls(float(t[0]), width, segment_bins, total // segment_bins)

    @property
    def size(self) -> int:
        return self.segments * self.segment_bins

    def counts(self, times: np.ndarray) -> np.ndarray:
        index = ((times - self.origin) / self.width).astype(np.int64)
        index = index[index < self.size]
        return np.bincount(index, minlength=self.size).reshape(self.segments, self.segment_bins)

    def counts_of_draws(self, draws: np.ndarray) -> np.ndarray:
        """The counts of each row of draws: (draws, segments, segment bins)."""
        index = ((draws - self.origin) / self.width).astype(np.int64)
        rows = np.broadcast_to(np.arange(len(draws))[:, None], index.shape)
        inside = index < self.size
        flat = rows[inside] * self.size + index[inside]  # each draw its own block of bins
        counts = np.bincount(flat, minlength=len(draws) * self.size)
        return counts.reshape(len(draws), self.segments, self.segment_bins)

    def frequencies(self) -> np.ndarray:
        return np.fft.rfftfreq(self.segment_bins, d=self.width)


def active_spans(times: np.ndarray) -> list[tuple[float, float, int]]:
    """The spans between pauses (a delta over GAP_FACTOR medians): start, end, events."""
    deltas = np.diff(times)
    median = float(np.median(deltas))
    cuts = np.flatnonzero(deltas > GAP_FACTOR * median) + 1
    return [(float(part[0]), float(part[-1]), len(part)) for part in np.split(times, cuts)]


def _spectrum(counts: np.ndarray) -> np.ndarray:
    """The segments' averaged power, normalised so that random arrivals give about 1.

    Counts are (segments, bins), or (draws, segments, bins) for a spectrum per draw.
    """
    events = np.maximum(counts.sum(axis=-1, keepdims=True), 1)
    spectrum = np.fft.rfft(counts, axis=-1)
    spectrum[..., 0] = 0  # the mean's term: the same as centring the counts first
    return ((spectrum.real**2 + spectrum.imag**2) / events).mean(axis=-2)


def periodogram(times: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies (Hz) and averaged power of the binned event series."""
    t = np.unique(np.asarray(times, dtype=np.float64))
    grid = _Grid.of(t)
    return grid.frequencies(), _spectrum(grid.counts(t))


def verify(
    times: Sequence[float],
    seed: int,
    permutations: int = PERMUTATIONS,
    alpha: float = ALPHA,
    candidates: int = 1,
) -> Verification:
    """The period of the events and how unlikely its peak is for events at random times.

    candidates is how many pairs the scan examined: regularity alone must also be beyond what
    that many random pairs would show by chance (see _chance_lookalikes).
    """
    t = np.unique(np.asarray(times, dtype=np.float64))
    if len(t) < MIN_EVENTS:
        return Verification(False, None, None, None, 0.0, f"only {len(t)} distinct event times")

    grid = _Grid.of(t)
    counts = grid.counts(t)
    keep = counts.sum(axis=1) >= 2
    freqs = grid.frequencies()
    # At least two cycles in a segment, at most the resolution of the bins.
    band = (freqs >= 2.0 / (grid.segment_bins * grid.width)) & (freqs <= 0.5 / grid.width)
    if not band.any() or not keep.any():
        return Verification(False, None, None, None, 0.0, "too short to show a period")

    power = _spectrum(counts[keep])
    peak = _fundamental(power, band)
    observed = float(power[peak])
    period, jitter = _period(t, 1.0 / _refine(freqs, power, peak))

    spans = active_spans(t)
    regularity = _regularity(t)
    rng = np.random.default_rng(seed)
    louder = 0
    drawn = []
    for draws in _draw_blocks(spans, len(t), grid, permutations, rng):
        peaks = _spectrum(grid.counts_of_draws(draws)[:, keep])[:, band].max(axis=1)
        louder += int(np.count_nonzero(peaks >= observed))
        drawn.append(_regularities(np.sort(draws)))
    regularities = np.concatenate(drawn)
    p_peak = (louder + 1) / (permutations + 1)
    p_regular = (int(np.count_nonzero(regularities <= regularity)) + 1) / (permutations + 1)
    p_value = round(min(1.0, 2 * min(p_peak, p_regular)), 4)
    by_line = 2 * p_peak <= alpha
    chance = _chance_lookalikes(regularity, regularities, candidates)
    by_regularity = 2 * p_regular <= alpha and chance < LOOKALIKES
    draws = f"p = {p_value:g} against {permutations} draws of the event times at random"
    regular = f"MAD {regularity:.2f} of the median, 0.69 for random"
    if by_line and (p_peak <= p_regular or not by_regularity):
        why = f"periodogram peak at {period:.1f} s (power {observed:.1f}, 1 for random), {draws}"
    elif by_regularity:
        period, jitter = _period(t, float(np.median(np.diff(t))))
        why = (
            f"no spectral line, but intervals of {period:.1f} s far more regular than random "
            f"arrivals' ({regular}), {draws}"
        )
    elif 2 * p_regular <= alpha:
        p_value = round(min(1.0, chance), 4)
        why = (
            f"no spectral line, and intervals more regular than random arrivals' ({regular}, "
            f"{draws}) but not beyond chance among the scan's {candidates:,} candidate pairs: "
            f"about {chance:.2g} of them would be as regular"
        )
    else:
        why = (
            f"no significant period: strongest peak at {period:.1f} s (power {observed:.1f}, "
            f"1 for random arrivals), intervals' {regular}, {draws}"
        )
    verified = by_line or by_regularity
    return Verification(verified, p_value, round(period, 3), jitter, round(observed, 3), why)


def _chance_lookalikes(regularity: float, drawn: np.ndarray, candidates: int) -> float:
    """How many of `candidates` random pairs would be as regular: the look-elsewhere effect.

    Among tens of thousands of pairs, a few of those with 15 to 25 calls are, by chance, far
    more regular than random arrivals: alone, each passes the permutation test. Their share is
    below what the draws can count, so it is read off a normal fit of the draws' regularities,
    whose tail is heavier than theirs: the estimate errs toward more look-alikes, never fewer.
    """
    spread = float(np.std(drawn))
    if spread == 0:
        return 0.0 if regularity < float(np.mean(drawn)) else float(candidates)
    z = (regularity - float(np.mean(drawn))) / spread
    return candidates * 0.5 * math.erfc(-z / math.sqrt(2))


def _regularity(t: np.ndarray) -> float:
    """The intervals' median absolute deviation over their median, pauses left out."""
    return float(_regularities(t[None, :])[0])


def _regularities(rows: np.ndarray) -> np.ndarray:
    """_regularity of each row of sorted times, by sorting the intervals once per step.

    Each row's intervals sorted, the pauses are a suffix and the medians are read at an index
    per row: numpy's nanmedian would loop over the rows.
    """
    deltas = np.sort(np.diff(rows, axis=1), axis=1)
    every = np.arange(len(deltas))
    median = _sorted_median(deltas, every, np.full(len(deltas), deltas.shape[1]))
    active = np.count_nonzero(deltas <= GAP_FACTOR * median[:, None], axis=1)
    median = _sorted_median(deltas, every, active)
    deviations = np.abs(deltas - median[:, None])
    deviations[np.arange(deltas.shape[1]) >= active[:, None]] = np.inf  # pauses left out
    mad = _sorted_median(np.sort(deviations, axis=1), every, active)
    ratio = np.divide(mad, median, out=np.ones_like(mad), where=median > 0)
    return np.where(median > 0, ratio, 1.0)


def _sorted_median(values: np.ndarray, rows: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The median of the first counts[i] values of each sorted row i."""
    return (values[rows, (counts - 1) // 2] + values[rows, counts // 2]) / 2


def _fundamental(power: np.ndarray, band: np.ndarray) -> int:
    """The peak, moved down to its fundamental: a train of pulses is as loud at its harmonics."""
    masked = np.where(band, power, 0.0)
    peak = int(np.argmax(masked))
    best = peak
    for m in range(2, HARMONICS + 1):
        k = round(peak / m)
        if k < 1 or not band[k]:
            break
        low, high = max(k - 1, 0), min(k + 2, len(power))
        local = low + int(np.argmax(masked[low:high]))
        if masked[local] >= HARMONIC_POWER * masked[peak]:
            best = local
    return best


def _refine(freqs: np.ndarray, power: np.ndarray, k: int) -> float:
    """The peak's frequency between bins, by a parabola through it and its neighbours."""
    if 0 < k < len(power) - 1:
        a, b, c = power[k - 1], power[k], power[k + 1]
        denominator = a - 2 * b + c
        if denominator < 0:
            offset = 0.5 * (a - c) / denominator
            return float(freqs[k] + offset * (freqs[1] - freqs[0]))
    return float(freqs[k])


def _period(t: np.ndarray, rough: float) -> tuple[float, float]:
    """The period from the intervals near the periodogram's, and their jitter as a share of it."""
    deltas = np.diff(t)
    near = deltas[np.abs(deltas - rough) <= NEAR_PERIOD * rough]
    if len(near) == 0:
        return rough, 1.0
    period = float(np.median(near))
    return period, round(float(np.median(np.abs(near - period))) / period, 4)


def _draw_blocks(
    spans: list[tuple[float, float, int]],
    events: int,
    grid: _Grid,
    permutations: int,
    rng: np.random.Generator,
) -> Iterator[np.ndarray]:
    """The permutations' event times, drawn at random within the spans, a block of rows at a time.

    Each row holds as many events as the pair, each span as many as it had; a block holds as
    many rows as keep its bins near DRAW_BLOCK_BINS, so a long series stays within memory.
    """
    rows_per_block = max(1, min(permutations, DRAW_BLOCK_BINS // max(grid.size, events)))
    left = permutations
    while left:
        rows = min(rows_per_block, left)
        parts = [
            np.full((rows, 1), start) if count == 1 else rng.uniform(start, end, (rows, count))
            for start, end, count in spans
        ]
        yield np.concatenate(parts, axis=1)
        left -= rows
