"""Event Hubs has no emulator here: only the producer's send is faked, with the SDK's real
``EventDataBatch`` so the service's size limits apply exactly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from azure.eventhub import EventDataBatch
from azure.eventhub.exceptions import EventHubError

MAX_MESSAGE_SIZE = 1024 * 1024  # Standard tier


@dataclass
class SentEvent:
    hub: str
    body: bytes
    properties: dict[str, Any]
    partition_key: str | None


@dataclass
class EventHubRecorder:
    """What the fake service acknowledged, across every hub."""

    events: list[SentEvent] = field(default_factory=list)
    batches: int = 0
    attempts: int = 0
    # called before each send; raise to make that send fail (not acknowledged)
    fail: Callable[[int], None] | None = None

    def factory(self, hub: str) -> FakeProducer:
        return FakeProducer(hub, self)

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in self.events:
            doc = orjson.loads(event.body)
            out.extend(doc["records"] if isinstance(doc, dict) and "records" in doc and len(doc) == 1 else [doc])
        return out

    def record_ids(self) -> list[str]:
        return [r["Id"] for r in self.records()]


class FakeProducer:
    def __init__(self, hub: str, recorder: EventHubRecorder) -> None:
        self.hub = hub
        self.recorder = recorder
        self.closed = False

    async def create_batch(self, *, partition_key: str | None = None, partition_id: str | None = None,
                           max_size_in_bytes: int | None = None) -> EventDataBatch:
        if max_size_in_bytes and max_size_in_bytes > MAX_MESSAGE_SIZE:
            raise ValueError("max_size_in_bytes is larger than the link's maximum message size")
        return EventDataBatch(max_size_in_bytes=max_size_in_bytes or MAX_MESSAGE_SIZE, partition_key=partition_key)

    async def send_batch(self, batch: EventDataBatch, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError("partition options must not be passed again with an EventDataBatch")
        self.recorder.attempts += 1
        if self.recorder.fail is not None:
            self.recorder.fail(self.recorder.attempts)
        await asyncio.sleep(0)
        key = batch._partition_key
        for event in batch._internal_events:
            body = b"".join(event.body) if not isinstance(event.body, bytes) else event.body
            props = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                     for k, v in (event.properties or {}).items()}
            self.recorder.events.append(SentEvent(self.hub, body, props, key))
        self.recorder.batches += 1

    async def close(self) -> None:
        self.closed = True


def failing_sends(*numbers: int) -> Callable[[int], None]:
    """Make the given send attempts (1-based) fail like a service error."""

    def fail(attempt: int) -> None:
        if attempt in numbers:
            raise EventHubError(f"simulated service failure on send {attempt}")

    return fail
