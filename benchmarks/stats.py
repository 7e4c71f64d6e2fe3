"""Statistics for the benchmarks: percentiles, medians, latency summaries, ratios."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile, ``q`` in [0, 100]."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds of samples in seconds."""
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50": round(percentile(ms, 50), 4),
        "p90": round(percentile(ms, 90), 4),
        "p99": round(percentile(ms, 99), 4),
        "max": round(max(ms), 4) if ms else float("nan"),
    }


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when ``b`` is zero (a CPU window shorter than one clock tick)."""
    return a / b if b else float("nan")


def pct(a: float, b: float) -> float:
    """How much larger ``a`` is than ``b``, in percent, one decimal."""
    return round((ratio(a, b) - 1) * 100, 1)


def fmt_ms(stats: dict[str, float]) -> str:
    return f"{stats['p50']:.3f} / {stats['p99']:.3f}"
