"""Where records go: Azure Event Hubs, or local JSON Lines files. Both acknowledge a batch only
once it is durable (Event Hubs accepted it; the file was written and fsynced)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from .errors import SinkError
from .settings import Settings


@dataclass(frozen=True)
class StreamKey:
    tenant_id: str
    stream: str  # a content type, or "MessageTrace"

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.stream}"


class Batch(Protocol):
    def try_add(self, body: bytes, properties: Mapping[str, Any]) -> bool: ...
    def __len__(self) -> int: ...
    @property
    def size_in_bytes(self) -> int: ...


class Sink(Protocol):
    async def new_batch(self, stream: StreamKey) -> Batch: ...
    async def send(self, stream: StreamKey, batch: Batch) -> None: ...
    async def close(self) -> None: ...


# --- Event Hubs
class EventHubBatch:
    """A real ``EventDataBatch``: its size accounting is the service's, not a guess."""

    def __init__(self, batch: Any) -> None:
        self.batch = batch

    def try_add(self, body: bytes, properties: Mapping[str, Any]) -> bool:
        from azure.eventhub import EventData

        event = EventData(body)
        event.properties = dict(properties)  # type: ignore[assignment]
        event.content_type = "application/json"
        try:
            self.batch.add(event)
        except ValueError:  # "EventDataBatch has reached its size limit"
            return False
        return True

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def size_in_bytes(self) -> int:
        return int(self.batch.size_in_bytes)


ProducerFactory = Callable[[str], Any]


class EventHubSink:
    """One async producer per event hub, created on first use and kept for the process.

    ``producer_factory(hub)`` returns an object with ``create_batch`` / ``send_batch`` / ``close``;
    in Azure it is ``EventHubProducerClient`` with the app's managed identity.
    """

    def __init__(self, settings: Settings, producer_factory: ProducerFactory | None = None) -> None:
        self.settings = settings
        self.factory = producer_factory or self._default_factory
        self._producers: dict[str, Any] = {}
        self._credential: Any = None

    def _default_factory(self, hub: str) -> Any:
        from azure.eventhub.aio import EventHubProducerClient

        retry: dict[str, Any] = {"retry_total": 3, "retry_backoff_factor": 0.8, "retry_backoff_max": 30,
                                 "retry_mode": "exponential"}
        if self.settings.eventhub_connection_string:
            return EventHubProducerClient.from_connection_string(
                self.settings.eventhub_connection_string, eventhub_name=hub, **retry)
        from azure.identity.aio import DefaultAzureCredential

        if self._credential is None:
            self._credential = DefaultAzureCredential()
        return EventHubProducerClient(fully_qualified_namespace=str(self.settings.eventhub_namespace),
                                      eventhub_name=hub, credential=self._credential, **retry)

    def _producer(self, stream: StreamKey) -> Any:
        hub = self.settings.hub_for(stream.stream)
        producer = self._producers.get(hub)
        if producer is None:
            producer = self._producers[hub] = self.factory(hub)
        return producer

    def _partition_key(self, stream: StreamKey) -> str | None:
        policy = self.settings.partition_key
        if policy == "tenant":
            return stream.tenant_id
        if policy == "stream":
            return str(stream)
        return None

    async def new_batch(self, stream: StreamKey) -> Batch:
        key = self._partition_key(stream)
        try:
            batch = await self._producer(stream).create_batch(**({"partition_key": key} if key else {}))
        except Exception as exc:  # the SDK raises its own hierarchy; all mean "not acknowledged"
            raise SinkError(f"Event Hubs create_batch failed for {stream}: {type(exc).__name__}: {exc}") from exc
        return EventHubBatch(batch)

    async def send(self, stream: StreamKey, batch: Batch) -> None:
        assert isinstance(batch, EventHubBatch)
        try:
            await self._producer(stream).send_batch(batch.batch)
        except Exception as exc:
            raise SinkError(f"Event Hubs send failed for {stream}: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        producers, self._producers = self._producers, {}
        for producer in producers.values():
            await producer.close()
        if self._credential is not None:
            await self._credential.close()
            self._credential = None


# --- JSON Lines files
class LinesBatch:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines: list[bytes] = []
        self._size = 0

    def try_add(self, body: bytes, properties: Mapping[str, Any]) -> bool:
        if self.lines and self._size + len(body) + 1 > self.limit:
            return False
        self.lines.append(body)
        self._size += len(body) + 1
        return True

    def __len__(self) -> int:
        return len(self.lines)

    @property
    def size_in_bytes(self) -> int:
        return self._size


class FileSink:
    """JSON Lines per tenant and stream, rotated by size; every batch is fsynced before it counts."""

    BATCH_BYTES = 1024 * 1024

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self._files: dict[StreamKey, tuple[Path, int]] = {}
        self._locks: dict[StreamKey, asyncio.Lock] = {}

    async def new_batch(self, stream: StreamKey) -> Batch:
        return LinesBatch(self.BATCH_BYTES)

    def _target(self, stream: StreamKey, incoming: int) -> Path:
        current = self._files.get(stream)
        if current is None or current[1] + incoming > self.max_bytes:
            folder = self.directory / stream.tenant_id
            folder.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            path = folder / f"{stream.stream}-{stamp}-{os.getpid()}.jsonl"
            current = (path, 0)
        self._files[stream] = (current[0], current[1] + incoming)
        return current[0]

    def _write(self, path: Path, data: bytes) -> None:
        with open(path, "ab") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

    async def send(self, stream: StreamKey, batch: Batch) -> None:
        assert isinstance(batch, LinesBatch)
        data = b"\n".join(batch.lines) + b"\n"
        lock = self._locks.setdefault(stream, asyncio.Lock())
        async with lock:  # keep one stream's lines in order within a file
            path = self._target(stream, len(data))
            try:
                await asyncio.to_thread(self._write, path, data)
            except OSError as exc:
                raise SinkError(f"writing {path} failed: {exc.strerror}") from exc

    async def close(self) -> None:
        self._files.clear()


def make_sink(settings: Settings, producer_factory: ProducerFactory | None = None) -> Sink:
    if settings.sink == "file":
        return FileSink(settings.file_sink_dir, settings.file_sink_max_bytes)
    return EventHubSink(settings, producer_factory)
