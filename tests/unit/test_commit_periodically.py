import asyncio

from o365ingest.audit import commit_periodically
from o365ingest.errors import CheckpointConflict, O365IngestError


async def test_a_commit_in_flight_when_the_run_ends_completes():
    """Stopping must not cut a save short: the store would have the write and the run a stale ETag."""
    started, finished = asyncio.Event(), []

    async def slow_commit() -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(True)

    done = asyncio.Event()
    task = asyncio.create_task(commit_periodically(slow_commit, done, 0.01, lambda exc: None))
    await started.wait()
    done.set()
    await task
    assert finished == [True]


async def test_commits_repeat_until_done_and_an_error_stops_them():
    calls: list[int] = []
    errors: list[O365IngestError] = []

    async def commit() -> None:
        calls.append(1)
        if len(calls) == 3:
            raise CheckpointConflict("changed since it was read")

    done = asyncio.Event()
    await asyncio.wait_for(commit_periodically(commit, done, 0.01, errors.append), 5)
    assert len(calls) == 3 and [type(e) for e in errors] == [CheckpointConflict]
