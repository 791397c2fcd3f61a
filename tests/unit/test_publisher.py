import asyncio

import orjson
import pytest

from o365ingest.errors import SinkError
from o365ingest.http import Backoff
from o365ingest.publisher import StreamPublisher
from o365ingest.sinks import EventHubSink, StreamKey
from tests.fakes import EventHubRecorder, failing_sends
from tests.helpers import TENANT, settings

KEY = StreamKey(TENANT, "Audit.General")
FAST = Backoff(base=0.001, cap=0.002)


def record(i: int, size: int = 1000) -> bytes:
    return orjson.dumps({"Id": f"id-{i}", "Pad": "x" * size})


async def collect(publisher: StreamPublisher, n: int, size: int = 1000) -> list[int]:
    return [await publisher.add(record(i, size), {"Id": f"id-{i}"}) for i in range(n)]


async def test_batches_fill_to_the_real_size_limit_and_ack_in_order():
    recorder = EventHubRecorder()
    oversize: list[bytes] = []

    async def on_oversize(body, props):
        oversize.append(body)

    sink = EventHubSink(settings(), recorder.factory)
    publisher = StreamPublisher(sink, KEY, envelope=False, on_oversize=on_oversize, backoff=FAST)
    seqs = await collect(publisher, 3000)
    await publisher.drain()
    assert recorder.record_ids() == [f"id-{i}" for i in range(3000)]
    assert recorder.batches >= 3  # 3000 x ~1 KB does not fit one 1 MiB batch
    assert publisher.acked_through == max(seqs)
    assert seqs == sorted(seqs)
    assert not oversize


async def test_a_record_over_the_event_limit_goes_to_the_oversize_handler_and_nothing_else_is_lost():
    recorder = EventHubRecorder()
    oversize: list[bytes] = []

    async def on_oversize(body, props):
        oversize.append(body)

    publisher = StreamPublisher(EventHubSink(settings(), recorder.factory), KEY, envelope=False,
                                on_oversize=on_oversize, backoff=FAST)
    await publisher.add(record(1), {"Id": "id-1"})
    assert await publisher.add(record(2, 1_500_000), {"Id": "id-2"}) == 0
    await publisher.add(record(3), {"Id": "id-3"})
    await publisher.drain()
    assert recorder.record_ids() == ["id-1", "id-3"]
    assert len(oversize) == 1 and orjson.loads(oversize[0])["Id"] == "id-2"


async def test_a_failed_send_is_retried_and_then_acknowledged():
    recorder = EventHubRecorder(fail=failing_sends(1, 2))
    publisher = StreamPublisher(EventHubSink(settings(), recorder.factory), KEY, envelope=False,
                                on_oversize=None, backoff=FAST)  # type: ignore[arg-type]
    seq = await publisher.add(record(1), {})
    await publisher.drain()
    assert publisher.error is None
    assert recorder.attempts == 3
    assert publisher.acked_through == seq


async def test_a_send_that_keeps_failing_is_never_acknowledged():
    recorder = EventHubRecorder(fail=lambda attempt: (_ for _ in ()).throw(RuntimeError("down")))
    publisher = StreamPublisher(EventHubSink(settings(), recorder.factory), KEY, envelope=False,
                                on_oversize=None, max_attempts=3, backoff=FAST)  # type: ignore[arg-type]
    seq = await publisher.add(record(1), {})
    await publisher.drain()
    assert isinstance(publisher.error, SinkError)
    assert publisher.acked_through < seq
    assert recorder.events == []
    with pytest.raises(SinkError):
        await publisher.add(record(2), {})


async def test_acknowledged_prefix_waits_for_an_earlier_slow_batch():
    recorder = EventHubRecorder()
    gate = asyncio.Event()

    class SlowFirst(EventHubSink):
        calls = 0

        async def send(self, stream, batch):
            SlowFirst.calls += 1
            if SlowFirst.calls == 1:
                await gate.wait()
            await super().send(stream, batch)

    publisher = StreamPublisher(SlowFirst(settings(), recorder.factory), KEY, envelope=False,
                                on_oversize=None, max_in_flight=2, backoff=FAST)  # type: ignore[arg-type]
    seqs = await collect(publisher, 1500)  # two batches
    await publisher.flush()
    await asyncio.sleep(0.05)
    assert publisher.acked_through == 0  # batch 2 may be done, but batch 1 is not
    gate.set()
    await publisher.drain()
    assert publisher.acked_through == max(seqs)


async def test_envelope_mode_packs_many_records_per_event_within_the_limit():
    recorder = EventHubRecorder()
    publisher = StreamPublisher(EventHubSink(settings(), recorder.factory), KEY, envelope=True,
                                on_oversize=None, backoff=FAST)  # type: ignore[arg-type]
    seqs = await collect(publisher, 3000)
    await publisher.drain()
    assert [r["Id"] for r in recorder.records()] == [f"id-{i}" for i in range(3000)]
    assert len(recorder.events) <= 4  # ~3 MB of records in ~1 MB envelopes
    assert all(len(e.body) < 1024 * 1024 for e in recorder.events)
    assert recorder.events[0].properties["recordCount"] > 900
    assert publisher.acked_through == max(seqs)
