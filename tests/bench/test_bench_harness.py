"""The benchmark harness itself, at a tiny scale: it must keep running and its bookkeeping must add up.

Figures are not asserted (timing belongs in ``make bench``); what is asserted is that every measured
run delivered exactly the backlog's unique records, that ratios are taken against the raw limit of
the same run, and that the latency run's request accounting comes from the simulator's ledger.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main as bench_main
from bench.harness import run_bench
from bench.workloads import PARTS, TENANT_BUDGET_PER_MINUTE, TINY
from m365sim.testing import most_in_any_span


def test_most_in_any_span_counts_the_busiest_span() -> None:
    assert most_in_any_span([], 60.0) == 0
    assert most_in_any_span([0.0, 1.0, 59.9, 60.0, 61.0], 60.0) == 3  # a span is open at its end: 0.0 and 60.0 never count together
    assert most_in_any_span([0.0, 30.0, 60.5, 61.0, 89.0], 60.0) == 4  # [30, 89]


def test_tiny_bench_runs_every_part_and_its_counts_add_up(tmp_path: Path) -> None:
    result = run_bench(TINY, PARTS, workdir=tmp_path, log=lambda line: None)

    names = {run["name"] for run in result["runs"]}
    assert {"cpu/record/eventhub", "cpu/envelope/eventhub", "cpu/record/file", "latency/record/eventhub"} <= names
    for run in result["runs"]:
        counts = run["counts"]
        assert counts["ok"], run["name"]
        assert counts["records_out"] == counts["records_published"]
        if counts["complete"]:
            assert counts["records_out"] == counts["expected_unique"]
    cpu_runs = [r for r in result["runs"] if r["name"].startswith("cpu/")]
    for run in cpu_runs:
        assert run["counts"]["complete"], run["name"]
        assert run["counts"]["records_out"] == TINY.cpu_records

    # Ratios are the run's own figures over the raw limit measured in this same result.
    raw = result["raw_limit"]["modes"]
    record = next(r for r in cpu_runs if r["name"] == "cpu/record/eventhub")
    assert record["ratios"]["records_per_s"] == pytest.approx(
        record["figures"]["records_per_s"] / raw["record"]["records_per_s"])
    envelope = next(r for r in cpu_runs if r["name"] == "cpu/envelope/eventhub")
    assert envelope["figures"]["events"] * 10 <= record["figures"]["events"]

    latency = result["latency"]
    assert latency["requests"] > 0 and latency["throttled"] == 0
    assert 0 < latency["max_in_any_60s"] <= TENANT_BUDGET_PER_MINUTE
    assert [m["records"] for m in result["memory"]] == list(TINY.memory_record_sizes)
    assert {p["concurrency"] for p in result["sweep"]} == set(TINY.sweep_concurrency)
    assert {t["name"] for t in result["targets"]} >= {"cpu-bound record mode vs raw limit",
                                                       "records in == records out (every run)"}
    json.dumps(result)  # the results document is plain JSON


def test_cli_rejects_unknown_parts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bench_main(["--only", "cpu,warp"])
    assert exc.value.code == 2
    assert "warp" in capsys.readouterr().err
