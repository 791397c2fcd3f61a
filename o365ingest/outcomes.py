"""A stream's publisher callbacks: metrics for what the sink took, dead letters for what it cannot take.

The same for every stream (audit content types and message traces), so it is written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .runtime import Runtime


class PublishOutcomes:
    def __init__(self, rt: Runtime, attributes: Mapping[str, str], folder: str) -> None:
        self.rt = rt
        self.attributes = dict(attributes)
        self.folder = folder  # dead-letter folder of the stream's records

    def sent(self, events: int, size: int) -> None:
        """A batch Event Hubs (or the file sink) acknowledged."""
        instruments = self.rt.instruments
        instruments.eventhub_batches.add(1, self.attributes)
        instruments.eventhub_events.add(events, self.attributes)
        instruments.bytes_published.add(size, self.attributes)

    def send_failed(self, will_retry: bool) -> None:
        """A send that was not acknowledged; retried unless the publisher gave up."""
        self.rt.instruments.eventhub_send_failures.add(1, self.attributes)
        if will_retry:
            self.rt.instruments.retries.add(1, {**self.attributes, "operation": "EventHubSend"})

    async def dead_letter_record(self, name: str, body: bytes, metadata: Mapping[str, Any], reason: str) -> str:
        """Keep a record that cannot be published, whole, and count it by reason; returns where it went."""
        location = await self.rt.deadletters.put(self.folder, name, body, metadata)
        self.rt.instruments.records_dead_lettered.add(1, {**self.attributes, "reason": reason})
        return location
