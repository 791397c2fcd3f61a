"""Fill batches for one stream and send them, knowing exactly which records the sink acknowledged.

Batches are numbered in the order they are filled. Several may be in flight, but completion is
reported as the *acknowledged prefix*: the highest number such that it and every batch before it
were acknowledged. A blob is done when the batch holding its last record is in that prefix, which
also covers records skipped as duplicates of records added earlier in the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .errors import SinkError
from .http import Backoff
from .sinks import Batch, Sink, StreamKey

log = logging.getLogger(__name__)

ENVELOPE_HEAD = b'{"records":['
ENVELOPE_TAIL = b"]}"
# Room kept in an envelope event for the event's own AMQP framing and properties.
ENVELOPE_MARGIN = 2048

OversizeHandler = Callable[[bytes, Mapping[str, Any]], Awaitable[None]]


class StreamPublisher:
    def __init__(self, sink: Sink, stream: StreamKey, *, envelope: bool, on_oversize: OversizeHandler,
                 max_in_flight: int = 2, max_attempts: int = 5, backoff: Backoff | None = None,
                 on_sent: Callable[[int, int], None] | None = None,
                 on_failed: Callable[[bool], None] | None = None) -> None:
        self.sink = sink
        self.stream = stream
        self.envelope = envelope
        self.on_oversize = on_oversize
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff(base=0.5, cap=20.0)
        self.on_sent = on_sent or (lambda events, size: None)
        self.on_failed = on_failed or (lambda will_retry: None)  # each send not acknowledged
        self._slots = asyncio.Semaphore(max_in_flight)
        self._batch: Batch | None = None
        self._seq = 0  # number of the batch being filled
        self._acked: set[int] = set()
        self.acked_through = 0  # every batch numbered <= this is acknowledged
        self._tasks: set[asyncio.Task[None]] = set()
        self.error: SinkError | None = None
        # envelope mode: records waiting to become one event
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._envelope_limit = 0
        self.events = 0
        self.batches = 0

    @property
    def last_seq(self) -> int:
        """Number of the batch that holds (or will hold) the most recently added record."""
        return self._seq

    async def _current(self) -> Batch:
        if self._batch is None:
            self._batch = await self.sink.new_batch(self.stream)
            self._seq += 1
            if self.envelope and not self._envelope_limit:
                limit = getattr(getattr(self._batch, "batch", None), "max_size_in_bytes", None)
                self._envelope_limit = int(limit or 1024 * 1024) - ENVELOPE_MARGIN
        return self._batch

    async def add(self, body: bytes, properties: Mapping[str, Any]) -> int:
        """Queue one record; returns the batch number it went into (0: it was dead-lettered)."""
        if self.error is not None:
            raise self.error
        if self.envelope:
            queued, _ = await self.add_bodies([body], lambda i: properties)
            return self._seq if queued else 0
        return await self._add_event(body, properties)

    async def _add_event(self, body: bytes, properties: Mapping[str, Any]) -> int:
        batch = await self._current()
        if batch.try_add(body, properties):
            return self._seq
        if len(batch) == 0:
            await self.on_oversize(body, properties)
            return 0
        await self._submit()
        batch = await self._current()
        if batch.try_add(body, properties):
            return self._seq
        await self.on_oversize(body, properties)
        return 0

    async def add_bodies(self, bodies: list[bytes],
                         properties: Callable[[int], Mapping[str, Any]]) -> tuple[int, int]:
        """Queue many records at once; returns how many were queued (the others were dead-lettered) and
        their bytes.

        The same as ``add`` for each body in turn, without a call per record: envelopes carry no
        per-record properties, so ``properties(i)`` is only called for a record that has to go to
        the oversize handler (or, in one-record-per-event mode, for every record). Afterwards
        ``last_seq`` is the batch holding the last queued record.
        """
        if self.error is not None:
            raise self.error
        queued = queued_bytes = 0
        if not self.envelope:
            for i, body in enumerate(bodies):
                if await self._add_event(body, properties(i)):
                    queued += 1
                    queued_bytes += len(body)
            return queued, queued_bytes
        await self._current()
        limit = self._envelope_limit
        overhead = len(ENVELOPE_HEAD) + len(ENVELOPE_TAIL)
        pending = self._pending
        size = self._pending_size
        for i, body in enumerate(bodies):
            n = len(body)
            if n + overhead > limit:
                self._pending_size = size
                await self.on_oversize(body, properties(i))
                continue
            if pending and size + 1 + n + overhead > limit:
                self._pending_size = size
                await self._close_envelope()
                await self._current()
                pending, size = self._pending, 0
            if pending:
                size += 1
            pending.append(body)
            size += n
            queued += 1
            queued_bytes += n
        self._pending_size = size
        return queued, queued_bytes

    async def _close_envelope(self) -> None:
        if not self._pending:
            return
        event = ENVELOPE_HEAD + b",".join(self._pending) + ENVELOPE_TAIL
        properties = {"tenantId": self.stream.tenant_id, "stream": self.stream.stream,
                      "recordCount": len(self._pending)}
        self._pending, self._pending_size = [], 0
        batch = await self._current()  # always empty here: every envelope is sent on its own
        if not batch.try_add(event, properties):
            raise SinkError(f"an envelope of {len(event)} bytes does not fit an empty batch")
        # One envelope per batch keeps batches near the limit and each record's batch number exact.
        await self._submit()

    async def flush(self) -> None:
        """Send whatever is buffered; returns once it is handed to a sender (not yet acknowledged)."""
        if self.envelope:
            await self._close_envelope()
        if self._batch is not None:
            await self._submit()  # an empty batch is simply acknowledged

    async def _submit(self) -> None:
        batch, seq = self._batch, self._seq
        self._batch = None
        if batch is None or len(batch) == 0:
            if batch is not None:
                self._ack(seq)
            return
        await self._slots.acquire()
        task = asyncio.create_task(self._send(seq, batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, seq: int, batch: Batch) -> None:
        try:
            for attempt in range(1, self.max_attempts + 1):
                try:
                    await self.sink.send(self.stream, batch)
                except SinkError as exc:
                    final = attempt == self.max_attempts or self.error is not None
                    self.on_failed(not final)
                    if final:
                        self.error = exc
                        log.error("stream %s: batch %d not acknowledged after %d attempts: %s", self.stream, seq,
                                  attempt, exc.message)
                        return
                    delay = self.backoff.delay(attempt)
                    log.warning("stream %s: batch %d failed (%s); retrying in %.1fs", self.stream, seq,
                                exc.message, delay)
                    await asyncio.sleep(delay)
                else:
                    self.events += len(batch)
                    self.batches += 1
                    self.on_sent(len(batch), batch.size_in_bytes)
                    self._ack(seq)
                    return
        finally:
            self._slots.release()

    def _ack(self, seq: int) -> None:
        self._acked.add(seq)
        while self.acked_through + 1 in self._acked:
            self.acked_through += 1
            self._acked.discard(self.acked_through)

    async def drain(self) -> None:
        """Flush and wait for every send; afterwards ``acked_through`` is final for this run."""
        if self.error is None:
            try:
                await self.flush()
            except SinkError as exc:
                self.error = exc
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
