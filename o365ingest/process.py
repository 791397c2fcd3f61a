"""Process-wide tuning, applied once by the entry points (the Functions app and the CLI), never by the library."""

from __future__ import annotations

import gc

# The cyclic collector runs a young-generation pass every ``GC_YOUNG_THRESHOLD`` net allocations of
# container objects. Each event the Event Hubs SDK encodes allocates dozens of short-lived ones, so
# with the default (700) a one-record-per-event run made about 22 passes per 1,000 records, and its
# full passes walked every long-lived object (modules, SDK clients, the checkpoint's seen-blob set).
# Measured with the benchmark's collector (docs/performance.md), per 100,000 records: 1.0 CPU s in
# the collector with the defaults, 0.38 s with these values, peak RSS the same. Higher thresholds
# save a little more but keep garbage cycles, and the blob bodies they reference, alive for longer
# (20,000 cost 60 MB more peak RSS in envelope mode).
GC_YOUNG_THRESHOLD = 5_000
GC_MIDDLE_THRESHOLD = 10
GC_OLD_THRESHOLD = 10


def tune_garbage_collector() -> None:
    """Freeze what start-up allocated (it lives as long as the process) and collect young objects less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, GC_OLD_THRESHOLD)
