"""Tenant, stream and run id on every log record written during a run.

The values live in a context variable, so each stream's task (and the tasks it starts) carries its
own. A wrapped log-record factory copies them onto each record as the attributes ``tenant``,
``stream`` and ``run_id``; the OpenTelemetry log handler turns record attributes into
``customDimensions`` in Application Insights, and the CLI's format can show them. Only these
identifiers are added: never tokens, secrets or record data.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import Any

FIELDS = ("tenant", "stream", "run_id")

_context: ContextVar[Mapping[str, str] | None] = ContextVar("o365ingest_log_context", default=None)
_installed = False


@contextlib.contextmanager
def log_context(**values: str) -> Iterator[None]:
    """Add identifiers (only the names in ``FIELDS``) to every record logged inside the block."""
    unknown = set(values) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    token = _context.set({**current(), **values})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> Mapping[str, str]:
    return _context.get() or {}


def install() -> None:
    """Once per process: records created inside ``log_context`` get its values as attributes.

    A record factory (rather than a handler filter) reaches every handler, including ones added
    later such as the Azure Monitor handler or a test's capture handler.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        for key, value in current().items():
            record.__dict__.setdefault(key, value)
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
