"""How much of everything to run: ``full`` (the default), ``quick`` and ``smoke`` (the test)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    """How much of everything to run."""

    name: str
    latency_aborts: int  # 1. aborts (and as many pub/sub floor samples, interleaved)
    scale_levels: tuple[int, ...]  # 4. tasks running in one worker
    scale_probes: int  # aborts measured per level
    worker_counts: tuple[int, ...]  # 4. worker processes listening
    worker_probes: int
    bulk: int  # 5. tasks aborted at once (also 6., memory)
    tp_tasks: int  # 2. no-op tasks per burst throughput run
    tp_rounds: int  # alternating (without, with) pairs per broker
    idle_seconds: float  # 3.
    trickle_tasks: int = 3000  # 2b. no-op tasks per trickle run, one after another
    trickle_rounds: int = 4
    fleet_sizes: tuple[int, ...] = (1, 10, 100, 1000)  # 7. registered worker processes
    fleet_probes: int = 200  # aborts measured per fleet size
    fleet_helpers: int = 4  # processes holding the simulated workers
    fleet_idle_seconds: float = 3.0  # Redis CPU of the idle fleet, measured before the aborts
    warmup: int = 5
    limit_samples: int = 200  # 8. tasks stopped by their hard time limit, async and sync each


PROFILES = {
    "full": Profile("full", 1000, (1, 1_000, 10_000), 200, (1, 4, 8), 100, 10_000, 5_000, 7, 10.0),
    "quick": Profile(
        "quick",
        40,
        (1, 500),
        20,
        (1, 2),
        10,
        500,
        500,
        1,
        2.0,
        trickle_tasks=300,
        trickle_rounds=1,
        fleet_sizes=(1, 10, 100),
        fleet_probes=50,
        fleet_idle_seconds=1.0,
        limit_samples=30,
    ),
    "smoke": Profile(
        "smoke",
        4,
        (1, 20),
        3,
        (1, 2),
        3,
        20,
        40,
        1,
        0.5,
        trickle_tasks=10,
        trickle_rounds=1,
        fleet_sizes=(1, 3),
        fleet_probes=3,
        fleet_helpers=2,
        fleet_idle_seconds=0.2,
        warmup=1,
        limit_samples=3,
    ),
}
