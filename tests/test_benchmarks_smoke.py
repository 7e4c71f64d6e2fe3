"""A tiny run of every benchmark, so they cannot rot. Benchmarks are not tests: no thresholds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from benchmarks.run import main


@pytest.mark.timeout(120)
def test_every_benchmark_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "smoke", "--out", str(tmp_path)]) == 0

    (report_path,) = tmp_path.glob("*-smoke.json")
    report = json.loads(report_path.read_text())
    results = report["results"]
    assert set(results) == {"latency", "scale", "scale_workers", "throughput", "idle"}
    assert results["latency"]["statuses"] == {"aborted": 4}
    assert set(results["scale"]["levels"]) == {"1", "20"}
    assert results["scale"]["bulk"]["api"]["statuses"] == {"aborted": 20}
    assert results["scale"]["bulk"]["by_name"]["statuses"] == {"aborted": 20}
    assert results["scale"]["memory"]["redis_registry_bytes_per_task"] > 0
    assert set(results["throughput"]) == {"stream", "list"}
    assert "difference_pct_of_core" in results["idle"]
    assert report["machine"]["nproc"] >= 1
    if importlib.util.find_spec("matplotlib") is not None:  # the `bench` extra; not in `dev`
        assert list(tmp_path.glob("*-smoke-latency-cdf.png"))
    out = capsys.readouterr().out
    assert "Abort latency" in out
    assert "Throughput" in out
