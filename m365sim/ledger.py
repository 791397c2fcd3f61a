"""Request ledger: what every client did, for assertions (never tokens or secrets).

Appending is one dict plus a list append: it sits on the hot path of throughput
benchmarks. Old entries are trimmed in chunks beyond ``max_entries`` so a long benchmark
cannot exhaust memory; sequence numbers keep counting so ``since`` stays monotonic.
"""

from __future__ import annotations

from typing import Any

_SENSITIVE = frozenset(
    {"client_secret", "client_assertion", "access_token", "refresh_token", "code", "password", "sig"}
)


def scrub_query(query: Any) -> dict[str, str]:
    """Query dict with credential-bearing parameters masked."""
    out: dict[str, str] = {}
    for key, value in query.items():
        out[key] = "***" if key.lower() in _SENSITIVE else value
    return out


class Ledger:
    """Append-only list of request records with contiguous ``seq`` numbers."""

    def __init__(self, max_entries: int = 500_000) -> None:
        self._entries: list[dict[str, Any]] = []
        self._next_seq = 1
        self._max = max_entries
        self.trimmed = 0

    def append(self, entry: dict[str, Any]) -> int:
        seq = self._next_seq
        self._next_seq = seq + 1
        entry["seq"] = seq
        self._entries.append(entry)
        if len(self._entries) > self._max:
            drop = len(self._entries) - self._max + self._max // 10
            del self._entries[:drop]
            self.trimmed += drop
        return seq

    def since(self, seq: int = 0, service: str | None = None) -> list[dict[str, Any]]:
        """Entries with ``seq`` greater than the given one, optionally for one service."""
        entries = self._entries
        if entries:
            start = max(0, seq - entries[0]["seq"] + 1)
            entries = entries[start:]
        if service is not None:
            return [e for e in entries if e["service"] == service]
        return list(entries)

    def clear(self) -> None:
        self._entries = []

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    def __len__(self) -> int:
        return len(self._entries)
