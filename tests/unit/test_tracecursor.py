"""The message-trace cursor and window planner: pure values, tested without I/O."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from o365ingest.planning import Window
from o365ingest.tracecursor import (
    MAX_AGE,
    MAX_WINDOW,
    Resume,
    TraceCursor,
    TraceMemory,
    TracePolicy,
    classify,
    plan_trace_windows,
    reread_from,
    row_key,
)

NOW = datetime(2026, 11, 25, 12, 0, 30, 500_000, tzinfo=UTC)
POLICY = TracePolicy(lookback=timedelta(hours=24), overlap=timedelta(hours=2), min_age=timedelta(minutes=10))


def tiles(windows, start, end):
    """Windows cover [start, end] in order, each sharing its start with the previous end."""
    assert windows[0].start == start and windows[-1].end == end
    assert all(a.end == b.start for a, b in itertools.pairwise(windows))
    assert all(w.start < w.end <= w.start + MAX_WINDOW for w in windows)


def test_first_run_reads_the_lookback_up_to_now_minus_the_minimum_age():
    plan = plan_trace_windows(None, NOW, POLICY)
    tiles(plan.windows, datetime(2026, 11, 24, 12, 0, 30, tzinfo=UTC), datetime(2026, 11, 25, 11, 50, 30, tzinfo=UTC))
    assert len(plan.windows) == 1 and plan.lost is None and plan.resume is None


def test_later_runs_read_again_from_the_watermark_minus_the_overlap():
    watermark = datetime(2026, 11, 25, 11, 40, tzinfo=UTC)
    plan = plan_trace_windows(watermark, NOW, POLICY)
    tiles(plan.windows, watermark - timedelta(hours=2), datetime(2026, 11, 25, 11, 50, 30, tzinfo=UTC))


def test_a_long_backlog_is_split_into_windows_of_at_most_ten_days():
    watermark = NOW - timedelta(days=33)
    plan = plan_trace_windows(watermark, NOW, POLICY)
    assert len(plan.windows) == 4
    tiles(plan.windows, (watermark - timedelta(hours=2)).replace(microsecond=0),
          (NOW - timedelta(minutes=10)).replace(microsecond=0))


def test_nothing_is_planned_more_than_90_days_back_and_the_gap_is_reported():
    watermark = NOW - timedelta(days=120)
    plan = plan_trace_windows(watermark, NOW, POLICY)
    earliest = (NOW - MAX_AGE).replace(microsecond=0) + timedelta(seconds=1)
    assert plan.windows[0].start == earliest
    assert plan.lost == Window(watermark, earliest)
    # a first run with a long lookback is clamped too, but nothing was "lost"
    first = plan_trace_windows(None, NOW, TracePolicy(timedelta(days=200), timedelta(0), timedelta(0)))
    assert first.windows[0].start == earliest and first.lost is None


def test_nothing_to_read_while_the_watermark_is_within_the_minimum_age():
    plan = plan_trace_windows(NOW, NOW, TracePolicy(timedelta(hours=1), timedelta(0), timedelta(minutes=10)))
    assert plan.windows == ()


def test_a_run_that_stopped_mid_window_continues_that_window_from_its_next_page():
    window = Window(NOW - timedelta(days=12), NOW - timedelta(days=2))
    resume = Resume(window, "https://graph.microsoft.com/v1.0/admin/exchange/tracing/messageTraces?$skiptoken=x")
    plan = plan_trace_windows(NOW - timedelta(days=12), NOW, POLICY, resume)
    assert plan.resume == resume and plan.windows[0] == window
    tiles(plan.windows, window.start, (NOW - timedelta(minutes=10)).replace(microsecond=0))
    stale = Resume(Window(NOW - timedelta(days=95), NOW - timedelta(days=85)), "https://x/y")
    assert plan_trace_windows(NOW - timedelta(days=95), NOW, POLICY, stale).resume is None


def test_rows_are_identified_by_id_and_recipient_regardless_of_case():
    assert row_key("ABC-1", "Megan@Contoso.com") == row_key("abc-1", "megan@contoso.com")
    assert row_key("abc-1", "a@x") != row_key("abc-1", "b@x")
    assert row_key("abc-1", "a@x") != row_key("abc-2", "a@x")


def test_new_rows_and_status_changes_are_published_unchanged_repeats_are_not():
    memory = TraceMemory()
    key = row_key("t1", "a@x")
    assert classify(key, "pending", {}, memory) == "new"
    memory.remember(key, "pending", NOW)
    assert classify(key, "pending", {}, memory) == "unchanged"
    assert classify(key, "delivered", {}, memory) == "update"
    # what this run already sent wins over the saved memory
    assert classify(key, "delivered", {key: "delivered"}, memory) == "unchanged"
    # a backfill also consults the live stream's memory
    live = TraceMemory()
    live.remember(row_key("t2", "b@x"), "failed", NOW)
    assert classify(row_key("t2", "b@x"), "failed", {}, TraceMemory(), live) == "unchanged"


def test_the_memory_forgets_rows_older_than_what_is_read_again_and_is_capped():
    memory = TraceMemory()
    for minute in range(10):
        memory.remember(row_key(f"t{minute}", "a@x"), "delivered", NOW - timedelta(minutes=minute))
    assert memory.prune(NOW - timedelta(minutes=4, seconds=30)) == 5
    assert len(memory) == 5 and memory.status(row_key("t4", "a@x")) == "delivered"
    assert memory.status(row_key("t5", "a@x")) is None
    assert memory.prune(NOW - timedelta(hours=1), limit=2) == 3
    assert {k for k in memory.rows} == {row_key("t0", "a@x"), row_key("t1", "a@x")}  # the newest stay


def test_rows_are_forgotten_only_before_what_this_or_a_later_run_reads_again():
    watermark = NOW - timedelta(hours=1)
    overlap = timedelta(hours=2)
    # resuming a short window saved mid-way: it starts after watermark - overlap, which the next run reads
    short = Window(watermark, NOW - timedelta(minutes=10))
    assert reread_from(watermark, overlap, (short,)) == watermark - overlap
    # a normal run's first window starts at watermark - overlap (whole seconds): the earlier of the two
    normal = Window((watermark - overlap).replace(microsecond=0), short.end)
    assert reread_from(watermark, overlap, (normal,)) == normal.start
    assert reread_from(watermark, overlap, ()) == watermark - overlap  # nothing to read now, still bounded
    assert reread_from(None, overlap, (normal,)) == normal.start  # a first run
    assert reread_from(None, overlap, ()) is None


def test_after_a_resumed_short_window_the_next_run_still_knows_every_row_it_reads():
    """Plan, prune and plan again as three runs would: nothing the last run reads was forgotten."""
    policy = TracePolicy(lookback=timedelta(days=10, hours=1), overlap=timedelta(hours=2), min_age=timedelta(0))
    first = plan_trace_windows(None, NOW, policy)
    long_window, short_window = first.windows
    assert short_window.end - short_window.start == timedelta(hours=1)
    cursor = TraceCursor(watermark=long_window.end, resume=Resume(short_window, "https://graph/next"))
    for minutes in range(0, 240, 5):
        cursor.memory.remember(row_key(f"t{minutes}", "a@x"), "delivered", NOW - timedelta(minutes=minutes))
    resumed = plan_trace_windows(cursor.watermark, NOW, policy, cursor.resume)
    assert resumed.resume is not None
    cursor.memory.prune(reread_from(cursor.watermark, policy.overlap, resumed.windows))
    cursor.advance(short_window.end)
    later = plan_trace_windows(cursor.watermark, NOW + timedelta(minutes=5), policy)
    read_again = [k for k, (_, received) in cursor.memory.rows.items() if received >= later.windows[0].start.timestamp()]
    expected = [m for m in range(0, 240, 5) if NOW - timedelta(minutes=m) >= later.windows[0].start]
    assert len(read_again) == len(expected) > 12  # rows from before the short window are still known


def test_cursor_round_trips_through_json():
    cursor = TraceCursor(watermark=NOW.replace(microsecond=0))
    cursor.memory.remember(row_key("t1", "a@x"), "gettingStatus", NOW)
    cursor.resume = Resume(Window(NOW - timedelta(days=1), NOW), "https://graph.microsoft.com/v1.0/x?$skiptoken=abc")
    cursor.quota_log = [1_764_000_000.1234567, 1_764_000_001.5]  # request times are kept exactly
    cursor.delivered_records, cursor.updates, cursor.lost_ranges = 10, 3, 1
    cursor.last_run, cursor.last_error = {"pages": 2}, "boom"
    again = TraceCursor.from_json(cursor.to_json())
    assert again == cursor


def test_an_unknown_checkpoint_version_is_refused():
    with pytest.raises(ValueError):
        TraceCursor.from_json(b'{"version": 99}')
