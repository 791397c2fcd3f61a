"""``StreamPublisher.add_bodies`` (the hot path's one call per blob) and envelope batch numbers."""

import asyncio

import orjson
import pytest

from o365ingest.http import Backoff
from o365ingest.publisher import StreamPublisher
from o365ingest.sinks import EventHubSink, StreamKey
from tests.fakes import EventHubRecorder
from tests.helpers import TENANT, settings

KEY = StreamKey(TENANT, "Audit.General")
FAST = Backoff(base=0.001, cap=0.002)


def body(i: int, size: int) -> bytes:
    return orjson.dumps({"Id": f"id-{i}", "Pad": "x" * size})


def publisher_for(recorder: EventHubRecorder, envelope: bool, oversize: list[bytes]) -> StreamPublisher:
    async def on_oversize(data, props):
        oversize.append(props["Id"])

    return StreamPublisher(EventHubSink(settings(), recorder.factory), KEY, envelope=envelope,
                           on_oversize=on_oversize, backoff=FAST)


async def test_envelope_record_that_closes_an_envelope_is_numbered_with_the_batch_that_holds_it():
    """A blob is checkpointed once its last record's batch is acknowledged: that number must not be early."""
    recorder = EventHubRecorder()
    publisher = publisher_for(recorder, True, [])
    seqs = [await publisher.add(body(i, 300_000), {"Id": f"id-{i}"}) for i in range(7)]
    await asyncio.sleep(0.05)  # every submitted batch is acknowledged by now
    sent = set(recorder.record_ids())
    for i, seq in enumerate(seqs):
        if seq <= publisher.acked_through:
            assert f"id-{i}" in sent, f"id-{i} reported in acknowledged batch {seq} but not sent"
    await publisher.drain()
    assert recorder.record_ids() == [f"id-{i}" for i in range(7)]
    assert publisher.acked_through == max(seqs)


@pytest.mark.parametrize("envelope", [True, False])
async def test_add_bodies_matches_add_one_by_one(envelope):
    sizes = [500, 2_000, 1_500_000, 700, 300_000, 300_000, 300_000, 100, 1_200_000, 50]
    blobs = [[body(i, size) for i, size in enumerate(sizes[:5])],
             [body(i, size) for i, size in enumerate(sizes[5:], start=5)]]

    one_by_one, oversize_a = EventHubRecorder(), []
    a = publisher_for(one_by_one, envelope, oversize_a)
    last_a = []
    for blob in blobs:
        for data in blob:
            await a.add(data, {"Id": orjson.loads(data)["Id"]})
        last_a.append(a.last_seq)
    await a.drain()

    bulk, oversize_b = EventHubRecorder(), []
    b = publisher_for(bulk, envelope, oversize_b)
    asked: list[int] = []
    last_b, counts = [], []

    def properties(blob):
        def of(i):
            asked.append(i)
            return {"Id": orjson.loads(blob[i])["Id"]}
        return of

    for blob in blobs:
        counts.append(await b.add_bodies(blob, properties(blob)))
        last_b.append(b.last_seq)
    await b.drain()

    assert [e.body for e in bulk.events] == [e.body for e in one_by_one.events]
    assert [e.properties.get("recordCount") for e in bulk.events] == \
        [e.properties.get("recordCount") for e in one_by_one.events]
    assert oversize_b == oversize_a == ["id-2", "id-8"]
    assert last_b == last_a and b.acked_through == a.acked_through
    kept = [[len(d) for d in blob if len(d) < 1_000_000] for blob in blobs]
    assert counts == [(len(k), sum(k)) for k in kept]
    if envelope:
        assert sorted(set(asked)) == [2, 3]  # properties are built only for the records dead-lettered
