"""The benchmark's workloads and their sizes (full and ``--quick``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Microsoft's documented per-tenant baseline for the Management Activity API.
TENANT_BUDGET_PER_MINUTE = 2000
# Budget for the CPU-bound workloads: high enough that requests never limit them.
UNLIMITED_BUDGET_PER_MINUTE = 1_000_000
UNLIMITED_CLIENT_RATE = 60_000  # the largest O365_REQUESTS_PER_MINUTE the settings accept

# 150 ms +- 50 ms per request: the simulator adds latency_ms + uniform(0, jitter_ms).
REALISTIC_FAULTS: dict[str, Any] = {"latency_ms": 100, "jitter_ms": 100, "apply_to": ["blob", "list"]}
NO_FAULTS: dict[str, Any] = {"rates": {}, "latency_ms": 0, "jitter_ms": 0}


@dataclass(frozen=True)
class Scale:
    """How big each part of the benchmark is."""

    cpu_records: int = 200_000  # CPU-bound backlog, run to completion in each sink mode
    raw_records: int = 100_000  # records the raw-limit loop processes (a prefix of the same blobs)
    raw_repeat: int = 2  # best of N passes of the raw loop
    latency_seconds: float = 90.0  # run budget of the latency-bound run (>= 60 s: one budget window)
    latency_records: int = 600_000  # backlog of the latency-bound run (never drained in that time)
    memory_record_sizes: tuple[int, ...] = (100_000, 300_000, 1_000_000)
    memory_envelope_sizes: tuple[int, ...] = (100_000, 1_000_000)
    sweep_concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    sweep_seconds: float = 8.0
    sweep_records: int = 400_000
    records_per_blob: tuple[int, int] = (50, 250)
    latency_records_per_blob: tuple[int, int] = (1, 200)


FULL = Scale()
QUICK = Scale(
    cpu_records=20_000,
    raw_records=20_000,
    raw_repeat=1,
    latency_seconds=15.0,
    latency_records=100_000,
    memory_record_sizes=(20_000, 100_000),
    memory_envelope_sizes=(),
    sweep_concurrency=(1, 4, 16),
    sweep_seconds=3.0,
    sweep_records=100_000,
)
TINY = Scale(  # for the unit test: seconds, not minutes
    cpu_records=600,
    raw_records=600,
    raw_repeat=1,
    latency_seconds=2.0,
    latency_records=2_000,
    memory_record_sizes=(300,),
    memory_envelope_sizes=(),
    sweep_concurrency=(2,),
    sweep_seconds=1.0,
    sweep_records=2_000,
    records_per_blob=(20, 60),
    latency_records_per_blob=(1, 40),
)

PARTS = ("cpu", "latency", "memory", "sweep")


@dataclass(frozen=True)
class Workload:
    """A simulated tenant's audit backlog and how the collector is pointed at it."""

    name: str
    records: int
    records_per_blob: tuple[int, int]
    days: float = 1.0
    budget_per_minute: int = UNLIMITED_BUDGET_PER_MINUTE
    faults: dict[str, Any] = field(default_factory=lambda: dict(NO_FAULTS))

    def audit_config(self) -> dict[str, Any]:
        # Every blob listable at once (no late or near-expiry blobs), no oversize records: the
        # backlog is exactly ``records`` unique records plus the dataset's own ~1 % repeats.
        return {"records": self.records, "days": self.days, "records_per_blob": list(self.records_per_blob),
                "late_blob_fraction": 0.0, "near_expiry_blobs": 0, "large_records": 0}
