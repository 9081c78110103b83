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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cloud_sniper.beacons.analysis import GAP_FACTOR

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


@dataclass(frozen=True)
class Verification:
    """The periodogram's answer for one pair."""

    verified: bool
    p_value: float | None
    period_seconds: float | None
    jitter: float | None
    power: float
    why: str


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

    def counts(self, times: np.ndarray) -> np.ndarray:
        index = ((times - self.origin) / self.width).astype(np.int64)
        size = self.segments * self.segment_bins
        index = index[index < size]
        return np.bincount(index, minlength=size).reshape(self.segments, self.segment_bins)

    def frequencies(self) -> np.ndarray:
        return np.fft.rfftfreq(self.segment_bins, d=self.width)


def active_spans(times: np.ndarray) -> list[tuple[float, float, int]]:
    """The spans between pauses (a delta over GAP_FACTOR medians): start, end, events."""
    deltas = np.diff(times)
    median = float(np.median(deltas))
    cuts = np.flatnonzero(deltas > GAP_FACTOR * median) + 1
    return [(float(part[0]), float(part[-1]), len(part)) for part in np.split(times, cuts)]


def _spectrum(counts: np.ndarray) -> np.ndarray:
    """The segments' averaged power, normalised so that random arrivals give about 1."""
    events = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    centred = counts - counts.mean(axis=1, keepdims=True)
    return (np.abs(np.fft.rfft(centred, axis=1)) ** 2 / events).mean(axis=0)


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
) -> Verification:
    """The period of the events and how unlikely its peak is for events at random times."""
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
    louder = more_regular = 0
    for _ in range(permutations):
        shuffled = _random_times(spans, rng)
        if float(_spectrum(grid.counts(shuffled)[keep])[band].max()) >= observed:
            louder += 1
        if _regularity(np.sort(shuffled)) <= regularity:
            more_regular += 1
    p_peak = (louder + 1) / (permutations + 1)
    p_regular = (more_regular + 1) / (permutations + 1)
    p_value = round(min(1.0, 2 * min(p_peak, p_regular)), 4)
    verified = p_value <= alpha
    draws = f"p = {p_value:g} against {permutations} draws of the event times at random"
    if not verified:
        why = (
            f"no significant period: strongest peak at {period:.1f} s (power {observed:.1f}, "
            f"1 for random arrivals), intervals' MAD {regularity:.2f} of their median (0.69 for "
            f"random), {draws}"
        )
    elif p_peak <= p_regular:
        why = f"periodogram peak at {period:.1f} s (power {observed:.1f}, 1 for random), {draws}"
    else:
        period, jitter = _period(t, float(np.median(np.diff(t))))
        why = (
            f"no spectral line, but intervals of {period:.1f} s far more regular than random "
            f"arrivals' (MAD {regularity:.2f} of the median, 0.69 for random), {draws}"
        )
    return Verification(verified, p_value, round(period, 3), jitter, round(observed, 3), why)


def _regularity(t: np.ndarray) -> float:
    """The intervals' median absolute deviation over their median, pauses left out."""
    deltas = np.diff(t)
    median = float(np.median(deltas))
    deltas = deltas[deltas <= GAP_FACTOR * median]
    median = float(np.median(deltas))
    if median <= 0:
        return 1.0
    return float(np.median(np.abs(deltas - median))) / median


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


def _random_times(spans: list[tuple[float, float, int]], rng: np.random.Generator) -> np.ndarray:
    parts = [
        np.array([start]) if count == 1 else rng.uniform(start, end, count)
        for start, end, count in spans
    ]
    return np.concatenate(parts)
