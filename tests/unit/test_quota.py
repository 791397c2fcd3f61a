"""The message-trace quota limiter, with short real periods."""

import asyncio
import time

import pytest

from m365sim.testing import most_in_any_span
from o365ingest.quota import QuotaExhausted, QuotaLimiter, share_limit, union_times
from o365ingest.tracecursor import TraceCursor


def test_share_of_the_tenant_quota():
    assert share_limit(0.5) == 50 and share_limit(1.0) == 100 and share_limit(0.29) == 29
    assert share_limit(0.001) == 1


async def test_never_more_than_the_limit_in_any_period_counting_from_the_answer():
    limiter = QuotaLimiter(3, 0.3)
    sent, answered = [], []
    started = time.monotonic()
    for _ in range(7):
        async with limiter.slot():
            sent.append(time.time())
            await asyncio.sleep(0.02)  # the answer takes a while: the slot is held until it arrives
        answered.append(time.time())
    assert most_in_any_span(sent, 0.3) <= 3
    assert time.monotonic() - started >= 0.6  # two full periods of waiting for 7 requests at 3 per period
    assert most_in_any_span(sent, 0.05) >= 3  # and the limit is really used (a burst of 3)


async def test_requests_in_flight_hold_their_slot_until_answered():
    limiter = QuotaLimiter(2, 0.2)
    release = asyncio.Event()
    entered: list[float] = []

    async def slow() -> None:
        async with limiter.slot():
            entered.append(time.monotonic())
            await release.wait()

    tasks = [asyncio.create_task(slow()) for _ in range(3)]
    await asyncio.sleep(0.3)
    assert len(entered) == 2  # the third waits although the period has passed: two are still in flight
    release.set()
    await asyncio.gather(*tasks)
    assert entered[2] - entered[1] >= 0.5


async def test_a_new_limiter_honours_the_history_of_a_previous_process():
    previous = QuotaLimiter(3, 0.4)
    for _ in range(3):
        async with previous.slot():
            pass
    successor = QuotaLimiter(3, 0.4)
    successor.merge(previous.history())
    successor.merge(previous.history())  # merging twice changes nothing
    assert len(successor.history()) == 3
    started = time.monotonic()
    async with successor.slot():
        pass
    assert time.monotonic() - started >= 0.3


async def test_a_wait_past_the_deadline_raises_at_once():
    limiter = QuotaLimiter(1, 60.0)
    async with limiter.slot():
        pass
    started = time.monotonic()
    with pytest.raises(QuotaExhausted):
        async with limiter.slot(deadline=time.monotonic() + 5):
            pass
    with pytest.raises(QuotaExhausted):
        async with QuotaLimiter(5, 1.0).slot(deadline=time.monotonic() - 1):
            pass
    assert time.monotonic() - started < 0.5


async def test_retry_after_holds_every_request_of_the_tenant():
    limiter = QuotaLimiter(100, 60.0)
    limiter.defer(0.3)
    started = time.monotonic()
    async with limiter.slot():
        pass
    assert time.monotonic() - started >= 0.25


def test_history_keeps_only_the_last_period_and_never_the_future():
    limiter = QuotaLimiter(10, 5.0)
    now = time.time()
    limiter.merge([now - 10, now - 1, now + 100])
    assert limiter.history() == pytest.approx([now - 1, now], abs=0.05)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_saving_reloading_and_merging_the_log_again_counts_each_request_once():
    """A warm instance merges the checkpoint it saved itself at every run: nothing may double."""
    clock = Clock(1_764_000_000.1234567)
    limiter = QuotaLimiter(10, 300.0, clock=clock)
    for _ in range(3):
        clock.now += 0.0101013
        async with limiter.slot():
            pass
    saved = TraceCursor(quota_log=limiter.history()).to_json()
    reloaded = TraceCursor.from_json(saved).quota_log
    limiter.merge(reloaded)
    limiter.merge(reloaded)
    assert limiter.history() == reloaded and len(reloaded) == 3
    # a log a previous version saved rounded to microseconds is recognised as well
    limiter.merge([round(t, 6) for t in reloaded])
    assert len(limiter.history()) == 3
    # and a new process starts with exactly these three requests
    successor = QuotaLimiter(10, 300.0, clock=clock)
    successor.merge(reloaded)
    assert successor.history() == reloaded


def test_two_requests_answered_at_the_same_clock_reading_both_count():
    limiter = QuotaLimiter(10, 300.0, clock=Clock(1000.0))
    limiter.merge([999.5, 999.5, 999.7])
    assert limiter.history() == [999.5, 999.5, 999.7]
    limiter.merge([999.5, 999.5, 999.7])
    assert len(limiter.history()) == 3


def test_union_of_logs_keeps_each_request_once():
    assert union_times([1.0, 2.0, 3.0], [2.0000004, 4.0]) == [1.0, 2.0, 3.0, 4.0]
    assert union_times([1.0, 1.0], [1.0]) == [1.0, 1.0]
    assert union_times([], [1.0, 1.0]) == [1.0, 1.0]
    assert union_times([1.0, 2.0], [1.5]) == [1.0, 1.5, 2.0]
