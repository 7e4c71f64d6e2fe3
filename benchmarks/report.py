"""The report: machine and load, the JSON with every number, the latency CDF plot."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.procs import ROOT
from benchmarks.stats import percentile

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import version

    return {
        "nproc": os.cpu_count(),
        "arch": platform.machine(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": {
            p: version(p) for p in ("taskiq", "taskiq-redis", "redis", "taskiq-abort", "anyio")
        },
    }


def git_commit() -> str:
    """The commit measured (``BENCH_COMMIT`` when run from an exported tree)."""
    if os.environ.get("BENCH_COMMIT"):
        return os.environ["BENCH_COMMIT"]
    out = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "taskiq_abort", "benchmarks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return (out.stdout.strip() or "?") + (" (with uncommitted changes)" if dirty else "")


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def load_snapshot() -> dict[str, Any]:
    top = subprocess.run(
        ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.splitlines()[:5]
    return {"loadavg": loadavg(), "top": [t.strip() for t in top]}


def plot(results: dict[str, Any], path: Path) -> bool:
    """The latency CDF of benchmark 1; False without matplotlib (the ``bench`` extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    samples = results["latency"]["samples_ms"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, label in (
        ("floor", "pub/sub alone: PUBLISH → subscriber (other process)"),
        ("floor_a", "floor (a): PUBLISH → Task.cancel() → body's except"),
        ("to_finally", "abort() → body's except"),
        ("floor_b", "floor (b): (a), then SET + PUBLISH reply → caller"),
        ("to_return", "abort() → returns 'aborted'"),
    ):
        xs = sorted(samples[key])
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=f"{label} (p50 {percentile(xs, 50):.2f} ms)")
    ax.set_xscale("log")
    ticks = [
        t
        for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50)
        if t <= max(max(v) for v in samples.values()) * 2
    ]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of aborts")
    ax.set_title(f"taskiq-abort: abort latency CDF, {len(samples['to_finally'])} aborts")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
