from datetime import UTC, datetime, timedelta

import pytest

from o365ingest.cursor import MAX_FAILED_RUNS, AuditCursor, WatermarkTracker, content_digest, parse_time

T0 = datetime(2026, 11, 20, tzinfo=UTC)


def test_parse_time_accepts_the_api_forms():
    assert parse_time("2026-11-20T00:00:00.000Z") == T0
    assert parse_time("2026-11-20T00:00:00") == T0
    assert parse_time("2026-11-20T01:00:00+01:00") == T0


def test_seen_blobs_survive_a_round_trip_and_expire_with_their_content():
    cursor = AuditCursor(watermark=T0)
    cursor.mark_handled("blob-a", T0 + timedelta(days=7))
    cursor.mark_handled("blob-b", T0 + timedelta(days=1))
    restored = AuditCursor.from_json(cursor.to_json())
    assert restored.is_seen("blob-a") and restored.is_seen("blob-b")
    assert restored.watermark == T0
    assert restored.prune(T0 + timedelta(days=2)) == 1
    assert restored.is_seen("blob-a") and not restored.is_seen("blob-b")


def test_watermark_never_moves_back():
    cursor = AuditCursor(watermark=T0)
    cursor.advance(T0 - timedelta(hours=1))
    assert cursor.watermark == T0
    cursor.advance(T0 + timedelta(hours=1))
    assert cursor.watermark == T0 + timedelta(hours=1)


def test_failures_count_runs_and_handling_clears_them():
    cursor = AuditCursor()
    for run in range(1, MAX_FAILED_RUNS + 1):
        assert cursor.note_failure("blob", "HTTP 500").failed_runs == run
    cursor.mark_handled("blob", T0)
    assert "blob" not in cursor.retries


def test_unknown_checkpoint_version_is_refused():
    with pytest.raises(ValueError, match="version"):
        AuditCursor.from_json(b'{"version": 99}')


def test_digest_is_stable_and_short():
    assert content_digest("x") == content_digest("x") != content_digest("y")
    assert len(content_digest("x" * 500)) == 16


def test_tracker_holds_the_watermark_at_the_oldest_open_blob():
    tracker = WatermarkTracker(T0)
    tracker.listed("a", T0 + timedelta(minutes=1))
    tracker.listed("b", T0 + timedelta(minutes=2))
    tracker.listed("c", T0 + timedelta(minutes=3))
    tracker.listed_through(T0 + timedelta(hours=1))
    assert tracker.watermark() == T0 + timedelta(minutes=1)
    tracker.completed("b")  # out of order: "a" still open
    assert tracker.watermark() == T0 + timedelta(minutes=1)
    tracker.completed("a")
    assert tracker.watermark() == T0 + timedelta(minutes=3)
    tracker.completed("c")
    assert tracker.watermark() == T0 + timedelta(hours=1)
    assert tracker.outstanding == 0


def test_tracker_without_progress_keeps_the_old_watermark():
    tracker = WatermarkTracker(T0)
    assert tracker.watermark() == T0
    tracker.listed("late", T0 - timedelta(minutes=30))  # a late blob found in the overlap
    tracker.listed_through(T0 + timedelta(hours=1))
    assert tracker.watermark() == T0
