"""A tiny run of every benchmark, so they cannot rot. Benchmarks are not tests: no thresholds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from benchmarks.__main__ import STEPS, main


@pytest.mark.timeout(600)  # a hang guard: every benchmark, tiny, on a busy machine
def test_every_benchmark_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--profile", "smoke", "--out", str(tmp_path)]) == 0

    (report_path,) = tmp_path.glob("*-smoke.json")
    report = json.loads(report_path.read_text())
    results = report["results"]
    assert set(results) == {step.key for step in STEPS.values()}
    assert set(results) == {
        "latency",
        "scale",
        "scale_workers",
        "throughput",
        "trickle",
        "idle",
        "fleet",
        "limits",
        "labels",
    }
    assert set(report["load_per_benchmark"]) == set(STEPS)
    assert results["latency"]["statuses"] == {"aborted": 4}
    floors = ("floor_a_ms", "floor_b_ms", "floor_b_taskiq_ms", "floor_a_durable_ms")
    for floor in (*floors, "floor_b_durable_ms"):
        assert results["latency"][floor]["n"] == 4
    assert set(results["latency"]["ratio_cancel"]) == {"p50", "p99"}
    assert set(results["latency"]["durable_over_floor"]) == {"a2_over_a", "b2_over_b"}
    assert set(results["scale"]["levels"]) == {"1", "20"}
    assert results["scale"]["bulk"]["api"]["statuses"] == {"aborted": 20}
    assert results["scale"]["bulk"]["by_name"]["statuses"] == {"aborted": 20}
    assert results["scale"]["bulk"]["many"]["statuses"] == {"aborted": 20}
    assert results["scale"]["bulk"]["noop"]["tasks_per_s"] > 0
    assert results["scale"]["memory"]["redis_registry_bytes_per_task"] > 0
    for regime in ("throughput", "trickle"):
        assert set(results[regime]) == {"stream", "list"}
        for summary in results[regime].values():
            assert {len(runs) for runs in summary["cpu_us_per_task"].values()} == {1}
            assert set(summary["cpu_us_per_task"]) == {"without", "with", "floor"}
            assert "paired_cpu_ratio" in summary and "paired_cpu_ratio_to_floor" in summary
    assert results["trickle"]["stream"]["result_wait"] == "keyspace notification"
    assert "difference_pct_of_core" in results["idle"]
    fleet = results["fleet"]
    assert set(fleet) == {"1", "3"}
    assert fleet["3"]["registered_workers"] >= 3
    assert fleet["3"]["helper_processes"] == 2
    assert fleet["3"]["statuses"] == {"aborted": 3}
    assert "redis_cpu_us_per_abort" in fleet["1"]
    limits = results["limits"]
    assert limits["overshoot_async_ms"]["n"] == limits["overshoot_sync_ms"]["n"] == 3
    assert set(limits["stream"]["cpu_us_per_task"]) == {"none", "limits"}
    labels = results["labels"]
    assert set(labels["start_cost"]["cpu_us_per_task"]) == {"none", "index"}
    assert set(labels["rules_in_force_sync_us"]) == {"0", "100"}
    for how in ("where", "many"):
        assert [r["statuses"] for r in labels["bulk"][how]["runs"]] == [{"aborted": 20}] * 2
    assert report["machine"]["nproc"] >= 1
    if importlib.util.find_spec("matplotlib") is not None:  # the `bench` extra; not in `dev`
        assert list(tmp_path.glob("*-smoke-latency-cdf.png"))
    out = capsys.readouterr().out
    assert "Abort latency" in out
    assert "floor (a)" in out and "floor (b')" in out
    assert "Throughput" in out
    assert "| trickle | list |" in out
    assert "Fleet size" in out
    assert "Time limits: overshoot" in out
    assert "Abort by labels" in out
    assert "`abort_many()` for the ids" in out and "no-op throughput, same run" in out


def test_fleet_split() -> None:
    from benchmarks.fleet import split

    assert split(0, 4) == []
    assert split(2, 4) == [1, 1]
    assert split(999, 4) == [250, 250, 250, 249]
