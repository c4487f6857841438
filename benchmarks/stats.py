"""Small statistics: percentiles of latencies, and figures as the median of repeats with range."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

# Quantiles kept per measurement for the CDF plots (results.json stays small).
CDF_POINTS = (*(i / 100 for i in range(1, 100)), 0.995, 0.999)
DASH = "\u2013"  # between min and max


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def quantiles(values: Sequence[float], points: Sequence[float] = CDF_POINTS) -> list[float]:
    ordered = sorted(values)
    if not ordered:
        return []
    out = []
    for q in points:
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        out.append(ordered[low] + (ordered[high] - ordered[low]) * (position - low))
    return out


def figure(values: Sequence[float]) -> dict[str, Any]:
    """{median, min, max, values}: how every figure in the report is given."""
    clean = [v for v in values if v == v]  # drop NaN
    if not clean:
        return {"median": None, "min": None, "max": None, "values": list(values)}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "values": list(values),
    }


def fmt(fig: dict[str, Any] | None, digits: int = 0, unit: str = "") -> str:
    """'123 (118-130)' (with an en dash) or an em dash when there is no figure."""
    if not fig or fig.get("median") is None:
        return "—"
    spec = f"{{:,.{digits}f}}"
    median, low, high = (spec.format(fig[k]) for k in ("median", "min", "max"))
    if len(fig.get("values", ())) <= 1 or low == high:
        return f"{median}{unit}"
    return f"{median}{unit} ({low}{DASH}{high})"
