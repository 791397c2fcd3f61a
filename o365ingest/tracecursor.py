"""The message-trace stream's cursor and window planning: pure values, no I/O.

Message traces are eventually consistent and a row's ``status`` changes after it is first seen
(``pending`` -> ``delivered``), so the stream does not read each window once: every run reads again
from ``watermark - overlap`` to ``now - min_age``. What it already published is remembered per row,
``(id, recipientAddress) -> status``; a row is published when it is new or its status differs from
the remembered one, and never again while it stays the same. Rows older than ``watermark - overlap``
are not read again, so their memory is dropped, which keeps the checkpoint bounded.

- ``watermark``: every window before it was read to its last page and each row's status at that
  read reached the sink.
- ``resume``: the window being read and the link to its next unread page, when a run ran out of
  quota or time mid-window; the next run continues from there (after a crash it reads it again).
- ``quota_log``: times of recent requests, so a new process honours the quota a previous one used.
  Saved exactly (not rounded), so merging a log the same process saved adds nothing.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from .cursor import parse_time
from .planning import Window, truncate_to_second

FORMAT_VERSION = 1
MAX_WINDOW = timedelta(days=10)  # Graph: at most 10 days per query
# Graph keeps 90 days; a margin keeps a planned start valid when the request reaches the API.
MAX_AGE = timedelta(days=90) - timedelta(minutes=10)
RWS_MAX_AGE = timedelta(days=30) - timedelta(minutes=10)  # the legacy report keeps 30 days
# A safety bound on the memory: past it the oldest rows are forgotten, which can only cause a repeat.
MAX_REMEMBERED = 500_000

Change = Literal["new", "update", "unchanged"]


@dataclass(frozen=True)
class TracePolicy:
    lookback: timedelta
    overlap: timedelta
    min_age: timedelta
    max_window: timedelta = MAX_WINDOW
    max_age: timedelta = MAX_AGE


@dataclass(frozen=True)
class Resume:
    """A window read up to a page: ``next_url`` is the first page not yet handled."""

    window: Window
    next_url: str


@dataclass(frozen=True)
class TracePlan:
    windows: tuple[Window, ...]
    resume: Resume | None  # continues ``windows[0]`` from a page, when set
    lost: Window | None  # older than the API keeps: reported, never skipped quietly


def plan_trace_windows(watermark: datetime | None, now: datetime, policy: TracePolicy,
                       resume: Resume | None = None) -> TracePlan:
    """Windows to read, oldest first, each at most ``max_window``, covering up to ``now - min_age``.

    Bounds are inclusive (``receivedDateTime ge start and le end``), so neighbours share their
    boundary second: a row there is read twice and published once.
    """
    end_limit = truncate_to_second(now - policy.min_age)
    earliest = truncate_to_second(now - policy.max_age) + timedelta(seconds=1)
    lost = Window(watermark, earliest) if watermark is not None and watermark < earliest else None
    windows: list[Window] = []
    if resume is not None and resume.window.start >= earliest:
        windows.append(resume.window)
        start = resume.window.end
    else:
        resume = None
        start = truncate_to_second(now - policy.lookback if watermark is None else watermark - policy.overlap)
        start = max(start, earliest)
    while start < end_limit:
        end = min(start + policy.max_window, end_limit)
        windows.append(Window(start, end))
        start = end
    return TracePlan(tuple(windows), resume, lost)


def reread_from(watermark: datetime | None, overlap: timedelta, windows: Sequence[Window]) -> datetime | None:
    """The earliest receive time this run or a later one reads again; rows before it can be forgotten.

    Later runs read from ``watermark - overlap`` (the watermark never moves back). This run reads
    from its first window, which starts after that when it resumes a window saved mid-way: pruning
    at that window would forget rows the next normal run reads again and republishes as new.
    """
    starts = [windows[0].start] if windows else []
    if watermark is not None:
        starts.append(watermark - overlap)
    return min(starts) if starts else None


def row_key(trace_id: str, recipient: str) -> str:
    """96-bit digest of (id, recipient): a row's identity, case-insensitive like the service."""
    text = f"{trace_id.strip().lower()}\x1f{recipient.strip().lower()}"
    return base64.urlsafe_b64encode(hashlib.blake2b(text.encode(), digest_size=12).digest()).decode()


@dataclass
class TraceMemory:
    """What was published per row: key -> (status, receivedDateTime as epoch seconds)."""

    rows: dict[str, tuple[str, int]] = field(default_factory=dict)

    def status(self, key: str) -> str | None:
        entry = self.rows.get(key)
        return entry[0] if entry else None

    def remember(self, key: str, status: str, received: datetime) -> None:
        self.rows[key] = (status, int(received.timestamp()))

    def prune(self, before: datetime, limit: int = MAX_REMEMBERED) -> int:
        """Forget rows received before ``before`` (never read again), then the oldest past ``limit``."""
        cutoff = int(before.timestamp())
        old = [k for k, (_, received) in self.rows.items() if received < cutoff]
        if len(self.rows) - len(old) > limit:
            keep = sorted((v[1], k) for k, v in self.rows.items() if v[1] >= cutoff)
            old += [k for _, k in keep[:len(keep) - limit]]
        for key in old:
            del self.rows[key]
        return len(old)

    def __len__(self) -> int:
        return len(self.rows)


def classify(key: str, status: str, *known: TraceMemory | dict[str, str]) -> Change:
    """new: never published; update: published with another status; unchanged: same status."""
    for memory in known:
        seen = memory.status(key) if isinstance(memory, TraceMemory) else memory.get(key)
        if seen is not None:
            return "unchanged" if seen == status else "update"
    return "new"


@dataclass
class TraceCursor:
    watermark: datetime | None = None
    memory: TraceMemory = field(default_factory=TraceMemory)
    resume: Resume | None = None
    quota_log: list[float] = field(default_factory=list)
    delivered_records: int = 0
    updates: int = 0
    lost_ranges: int = 0
    last_run: dict[str, Any] = field(default_factory=dict)
    last_error: str | None = None

    def advance(self, watermark: datetime) -> None:
        """The watermark never moves back."""
        if self.watermark is None or watermark > self.watermark:
            self.watermark = watermark

    def to_json(self) -> bytes:
        resume = None
        if self.resume is not None:
            resume = {"start": self.resume.window.start.isoformat(), "end": self.resume.window.end.isoformat(),
                      "next": self.resume.next_url}
        return orjson.dumps({
            "version": FORMAT_VERSION,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "published": {k: [status, received] for k, (status, received) in self.memory.rows.items()},
            "resume": resume,
            "quotaLog": self.quota_log,  # exact: the limiter recognises its own times when merging
            "deliveredRecords": self.delivered_records,
            "updates": self.updates,
            "lostRanges": self.lost_ranges,
            "lastRun": self.last_run,
            "lastError": self.last_error,
        })

    @classmethod
    def from_json(cls, data: bytes) -> TraceCursor:
        doc = orjson.loads(data)
        if doc.get("version") != FORMAT_VERSION:
            raise ValueError(f"unsupported message-trace checkpoint version {doc.get('version')!r}")
        raw = doc.get("resume")
        resume = Resume(Window(parse_time(raw["start"]), parse_time(raw["end"])), str(raw["next"])) if raw else None
        return cls(
            watermark=parse_time(doc["watermark"]) if doc.get("watermark") else None,
            memory=TraceMemory({str(k): (str(v[0]), int(v[1])) for k, v in doc.get("published", {}).items()}),
            resume=resume,
            quota_log=[float(t) for t in doc.get("quotaLog", [])],
            delivered_records=int(doc.get("deliveredRecords", 0)),
            updates=int(doc.get("updates", 0)),
            lost_ranges=int(doc.get("lostRanges", 0)),
            last_run=dict(doc.get("lastRun") or {}),
            last_error=doc.get("lastError"),
        )


def format_graph_time(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ssZ``, the form Graph's ``receivedDateTime`` filter documents."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
