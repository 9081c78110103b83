"""Each top pair's inter-arrival histogram, as a self-contained SVG (pygal, no external script)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from cloud_sniper.beacons.models import PairScore

BARS = 40


def pair_label(pair: PairScore) -> str:
    """`10.0.1.5 -> 203.0.113.7:443/6`."""
    return f"{pair.src} -> {pair.dst}:{pair.dst_port}/{pair.protocol}"


def file_name(rank: int, pair: PairScore) -> str:
    """A file name for the pair's picture, safe for IPv6 addresses too."""
    label = f"{rank:02d}-{pair.src}-{pair.dst}-{pair.dst_port}-{pair.protocol}"
    return re.sub(r"[^A-Za-z0-9.-]", "_", label) + ".svg"


def histogram_svg(pair: PairScore, deltas: Sequence[float]) -> str:
    """The histogram of the pair's inter-arrival times, the period marked in the title."""
    import pygal

    values = [float(d) for d in deltas if d > 0]
    if not values:
        raise ValueError(f"{pair_label(pair)}: no inter-arrival times to draw")
    low, high = min(values), max(values)
    width = max((high - low) / BARS, 1.0)
    counts = [0] * (int((high - low) // width) + 1)
    for value in values:
        counts[int((value - low) // width)] += 1
    bars = [(count, low + i * width, low + (i + 1) * width) for i, count in enumerate(counts)]

    period = f", period {pair.period_seconds:g} s" if pair.period_seconds else ""
    chart = pygal.Histogram(
        js=[],  # no external script: the picture must open offline and in a report
        show_legend=False,
        title=f"{pair_label(pair)}: score {pair.score:.2f}{period}",
        x_title="seconds between connections",
        y_title="connections",
        width=800,
        height=400,
        explicit_size=True,
    )
    chart.add("inter-arrival", bars)
    return chart.render(is_unicode=True)


def write_pictures(folder: Path, pairs: Sequence[tuple[PairScore, Sequence[float]]]) -> list[Path]:
    """One SVG per pair in the folder (created if need be), best first; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, (pair, deltas) in enumerate(pairs, start=1):
        if not any(not math.isnan(d) and d > 0 for d in deltas):
            continue
        path = folder / file_name(rank, pair)
        path.write_text(histogram_svg(pair, deltas), encoding="utf-8")
        written.append(path)
    return written
