from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from o365ingest.planning import MAX_AGE, MAX_WINDOW, WindowPolicy, format_api_time, plan_windows

NOW = datetime(2026, 11, 25, 12, 0, 30, 123456, tzinfo=UTC)
POLICY = WindowPolicy(lookback=timedelta(hours=24), overlap=timedelta(minutes=60), safety_lag=timedelta(minutes=1))


def test_first_run_starts_at_lookback_and_ends_before_now():
    plan = plan_windows(None, NOW, POLICY)
    assert plan.lost is None
    assert plan.windows[0].start == (NOW - timedelta(hours=24)).replace(microsecond=0)
    assert plan.windows[-1].end == (NOW - timedelta(minutes=1)).replace(microsecond=0)


def test_rerun_starts_one_overlap_before_the_watermark():
    watermark = datetime(2026, 11, 25, 11, 0, 0, tzinfo=UTC)
    plan = plan_windows(watermark, NOW, POLICY)
    assert [w.start for w in plan.windows] == [datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)]


def test_backlog_is_cut_into_24h_windows_that_tile_without_gaps():
    watermark = NOW - timedelta(days=3, hours=5)
    plan = plan_windows(watermark, NOW, POLICY)
    assert len(plan.windows) == 4
    for a, b in zip(plan.windows, plan.windows[1:], strict=False):
        assert a.end == b.start
        assert a.end - a.start == MAX_WINDOW


def test_a_stream_behind_the_7_day_edge_reports_the_lost_range_and_clamps():
    watermark = NOW - timedelta(days=9)
    plan = plan_windows(watermark, NOW, POLICY)
    assert plan.lost is not None
    assert plan.lost.start == watermark
    assert plan.windows[0].start == plan.lost.end
    assert NOW - plan.windows[0].start < timedelta(days=7)


def test_first_run_with_lookback_past_the_edge_is_not_a_loss():
    plan = plan_windows(None, NOW, WindowPolicy(timedelta(days=8), timedelta(0), timedelta(0)))
    assert plan.lost is None
    assert NOW - plan.windows[0].start <= MAX_AGE


def test_nothing_to_do_when_the_watermark_is_at_the_safety_lag():
    watermark = NOW - timedelta(minutes=1)
    assert plan_windows(watermark, NOW, WindowPolicy(timedelta(hours=1), timedelta(0), timedelta(minutes=1))).windows == ()


def test_api_time_format():
    assert format_api_time(datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC)) == "2026-01-02T03:04:05"


@given(
    watermark_age=st.one_of(st.none(), st.integers(min_value=0, max_value=12 * 24 * 3600)),
    overlap=st.integers(min_value=0, max_value=24 * 3600),
    lag=st.integers(min_value=0, max_value=3600),
)
def test_every_window_obeys_the_api_rules(watermark_age, overlap, lag):
    """The API refuses windows over 24 h, starting more than 7 days back, or with start >= end."""
    watermark = None if watermark_age is None else NOW - timedelta(seconds=watermark_age)
    plan = plan_windows(watermark, NOW, WindowPolicy(timedelta(hours=24), timedelta(seconds=overlap),
                                                     timedelta(seconds=lag)))
    for window in plan.windows:
        assert window.start < window.end
        assert window.end - window.start <= timedelta(hours=24)
        assert NOW - window.start < timedelta(days=7)
        assert window.end <= NOW - timedelta(seconds=lag)
    for a, b in zip(plan.windows, plan.windows[1:], strict=False):
        assert a.end == b.start
