"""The operations HTTP API behind the Function App's ``ops_backfill`` and ``ops_status`` functions.

Free of ``azure.functions`` so it can be tested directly: each endpoint takes the method, raw body
and Content-Type and returns a :class:`Reply`. Both endpoints take POST only, with a JSON body of
at most 4 KB; anything else is answered with RFC 9457 (7807) problem details listing every problem.

A backfill starts as a task on the worker's event loop and the call returns 202 at once: an HTTP
invocation is cut at about 230 s, a backfill may take the whole run budget. It is the CLI's
backfill (``run_audit`` / ``run_messagetrace`` with ``backfill=Window``), so the live checkpoint is
untouched; its own checkpoint makes it resumable: POSTing the same request again continues.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson

from .appinsights import flush
from .audit import AuditStream
from .messagetrace import MessageTraceStream
from .planning import MAX_AGE, Window
from .runner import run_audit, run_messagetrace
from .runtime import Runtime
from .settings import MESSAGETRACE_STREAM, Settings, SettingsError, TenantConfig, is_guid
from .status import status_document
from .tracecursor import MAX_AGE as TRACE_MAX_AGE
from .tracecursor import RWS_MAX_AGE

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4096
MAX_WINDOW = timedelta(days=7)
BACKFILL_FIELDS = ("tenant", "stream", "start", "end")
STATUS_FIELDS = ("tenant", "stream")
STATUS_URL = "/api/ops/status"
PROBLEM_TYPE = "application/problem+json"
_OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any]
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> bytes:
        return orjson.dumps(self.body)


class Problem(Exception):
    """An RFC 9457 problem: ``errors`` names each offending field."""

    def __init__(self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail
        self.errors = errors or []
        self.headers = headers or {}

    def reply(self) -> Reply:
        body: dict[str, Any] = {"type": "about:blank", "title": self.title, "status": self.status,
                                "detail": self.detail}
        if self.errors:
            body["errors"] = self.errors
        return Reply(self.status, body, PROBLEM_TYPE, self.headers)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_json(method: str, body: bytes, content_type: str | None, *, empty_ok: bool = False) -> dict[str, Any]:
    """The request's JSON object, or a Problem (405, 413, 415, 400)."""
    if method.upper() != "POST":
        raise Problem(405, "Method Not Allowed", "Use POST.", headers={"Allow": "POST"})
    if len(body) > MAX_BODY_BYTES:
        raise Problem(413, "Content Too Large", f"The body is {len(body)} bytes; at most {MAX_BODY_BYTES} are read.")
    if not body.strip() and empty_ok:
        return {}
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise Problem(415, "Unsupported Media Type", "Send a JSON object with Content-Type: application/json.")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "Bad Request", f"The body is not valid JSON ({exc}).") from exc
    if not isinstance(doc, dict):
        raise Problem(400, "Bad Request", f"The body must be a JSON object, not a JSON {type(doc).__name__}.")
    return doc


def _streams(settings: Settings) -> list[str]:
    return [*settings.content_types, *([MESSAGETRACE_STREAM] if settings.messagetrace_enabled else [])]


def _check_fields(doc: dict[str, Any], allowed: tuple[str, ...], required: tuple[str, ...],
                  errors: list[dict[str, str]]) -> None:
    for name in sorted(set(doc) - set(allowed)):
        errors.append({"field": name, "detail": f"unknown field; allowed: {', '.join(allowed)}"})
    for name in required:
        if name not in doc:
            errors.append({"field": name, "detail": "required"})
    for name in allowed:
        if name in doc and not isinstance(doc[name], str):
            errors.append({"field": name, "detail": f"expected a string, got {_shown(doc[name])}"})


def _tenant_and_stream(doc: dict[str, Any], settings: Settings, errors: list[dict[str, str]]) -> None:
    tenant = doc.get("tenant")
    if isinstance(tenant, str):
        configured = [t.tenant_id for t in settings.tenants]
        if not is_guid(tenant):
            errors.append({"field": "tenant", "detail": f"{_shown(tenant)} is not a tenant GUID"})
        elif tenant.lower() not in configured:
            errors.append({"field": "tenant", "detail": f"{tenant} is not one of the tenants in O365_TENANTS"})
    stream = doc.get("stream")
    if isinstance(stream, str) and stream not in _streams(settings):
        errors.append({"field": "stream", "detail": f"{_shown(stream)} is not a configured stream; expected one of "
                                                    f"{', '.join(_streams(settings))}"})


def _time(doc: dict[str, Any], name: str, errors: list[dict[str, str]]) -> datetime | None:
    value = doc.get(name)
    if not isinstance(value, str):
        return None
    try:
        if len(value) > 40 or not _OFFSET.search(value):
            raise ValueError
        moment = datetime.fromisoformat(value)
    except ValueError:
        errors.append({"field": name, "detail": f"{_shown(value)} is not an ISO 8601 time with an offset, "
                                                "e.g. 2026-11-20T00:00:00Z"})
        return None
    if moment.microsecond:
        errors.append({"field": name, "detail": "use whole seconds (the API lists by the second)"})
        return None
    return moment


def backfill_reach(stream: object, settings: Settings) -> tuple[timedelta, str]:
    """How far back a stream's API can read (each limit less a 10-minute margin), and why."""
    if stream != MESSAGETRACE_STREAM:
        return MAX_AGE, "7 days back: the Management Activity API cannot list it"
    if settings.messagetrace_source == "rws":
        return RWS_MAX_AGE, "30 days back: the Reporting Web Service keeps 30 days of traces"
    return TRACE_MAX_AGE, "90 days back: message traces are kept 90 days"


@dataclass(frozen=True)
class BackfillRequest:
    tenant: str
    stream: str
    window: Window


def parse_backfill(doc: dict[str, Any], settings: Settings, now: datetime) -> BackfillRequest:
    errors: list[dict[str, str]] = []
    _check_fields(doc, BACKFILL_FIELDS, BACKFILL_FIELDS, errors)
    _tenant_and_stream(doc, settings, errors)
    start, end = _time(doc, "start", errors), _time(doc, "end", errors)
    if start is not None and end is not None:
        if start >= end:
            errors.append({"field": "end", "detail": "must be after start"})
        elif end - start > MAX_WINDOW:
            errors.append({"field": "end", "detail": "the window may span at most 7 days"})
        if end > now:
            errors.append({"field": "end", "detail": f"is in the future (now is {now.isoformat(timespec='seconds')})"})
        max_age, why = backfill_reach(doc.get("stream"), settings)
        if start < now - max_age:
            errors.append({"field": "start", "detail": f"is more than {why}"})
    if errors:
        raise Problem(400, "Bad Request", "The backfill request is not valid; see errors.", errors)
    assert start is not None and end is not None
    return BackfillRequest(str(doc["tenant"]).lower(), str(doc["stream"]), Window(start, end))


def parse_status(doc: dict[str, Any], settings: Settings) -> tuple[str | None, str | None]:
    errors: list[dict[str, str]] = []
    _check_fields(doc, STATUS_FIELDS, (), errors)
    _tenant_and_stream(doc, settings, errors)
    if errors:
        raise Problem(400, "Bad Request", "The status request is not valid; see errors.", errors)
    tenant = doc.get("tenant")
    return (tenant.lower() if isinstance(tenant, str) else None), doc.get("stream")


class Backfills:
    """Backfills this instance started, by checkpoint key: at most one task per key.

    Tasks are kept here until they finish (the event loop holds only weak references to tasks).
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def running(self) -> list[str]:
        return sorted(key for key, task in self._tasks.items() if not task.done())

    def start(self, key: str, work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Start ``work`` unless a backfill with this key is still running here; True when started."""
        task = self._tasks.get(key)
        if task is not None and not task.done():
            return False
        task = asyncio.get_running_loop().create_task(work(), name=f"backfill {key}")
        self._tasks[key] = task

        def forget(done: asyncio.Task[None]) -> None:
            if self._tasks.get(key) is done:
                del self._tasks[key]

        task.add_done_callback(forget)
        return True

    async def wait(self) -> None:
        """For tests and shutdown: wait for every running backfill."""
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)


def _checkpoint_key(runtime: Runtime, tenant: TenantConfig, request: BackfillRequest) -> str:
    if request.stream == MESSAGETRACE_STREAM:
        return MessageTraceStream(runtime, tenant, backfill=request.window).checkpoint_key
    return AuditStream(runtime, tenant, request.stream, backfill=request.window).checkpoint_key


async def _run_backfill(runtime: Runtime, request: BackfillRequest) -> None:
    """The CLI's backfill: run_audit or run_messagetrace with the window, under its own checkpoint."""
    try:
        if request.stream == MESSAGETRACE_STREAM:
            results = await run_messagetrace(runtime, tenant_ids=[request.tenant], backfill=request.window)
        else:
            results = await run_audit(runtime, tenant_ids=[request.tenant], content_types=[request.stream],
                                      backfill=request.window)
        log.info("backfill %s/%s finished: %s", request.tenant, request.stream,
                 "; ".join(r.summary() for r in results))
    except Exception:
        log.exception("backfill %s/%s failed", request.tenant, request.stream)
    finally:
        await asyncio.to_thread(flush)


def _runtime(get_runtime: Callable[[], Runtime]) -> Runtime:
    try:
        return get_runtime()
    except SettingsError as exc:
        raise Problem(500, "Internal Server Error", "The Function App's settings are not valid.",
                      [{"field": "settings", "detail": p} for p in exc.problems]) from exc


async def backfill_endpoint(get_runtime: Callable[[], Runtime], backfills: Backfills, method: str, body: bytes,
                            content_type: str | None) -> Reply:
    """POST {"tenant", "stream", "start", "end"} -> 202 with the backfill's id and current status."""
    try:
        doc = read_json(method, body, content_type)
        runtime = _runtime(get_runtime)
        request = parse_backfill(doc, runtime.settings, runtime.clock())
    except Problem as problem:
        log.warning("ops backfill rejected: %d %s", problem.status, problem.detail)
        return problem.reply()
    tenant = next(t for t in runtime.settings.tenants if t.tenant_id == request.tenant)
    key = _checkpoint_key(runtime, tenant, request)
    started = backfills.start(key, lambda: _run_backfill(runtime, request))
    log.info("ops backfill %s: %s", key, "started" if started else "already running here")
    current = [row for row in (await status_document(runtime, request.tenant, request.stream))["backfills"]
               if row["key"] == key]
    return Reply(202, {
        "id": key, "tenant": request.tenant, "stream": request.stream,
        "start": request.window.start.isoformat(), "end": request.window.end.isoformat(),
        "state": "started" if started else "running",
        "statusUrl": STATUS_URL, "statusRequest": {"tenant": request.tenant, "stream": request.stream},
        "status": current[0] if current else None,
    })


async def status_endpoint(get_runtime: Callable[[], Runtime], backfills: Backfills, method: str, body: bytes,
                          content_type: str | None) -> Reply:
    """POST {} or {"tenant"?, "stream"?} -> 200 with the same document as `status --json`."""
    try:
        doc = read_json(method, body, content_type, empty_ok=True)
        runtime = _runtime(get_runtime)
        tenant, stream = parse_status(doc, runtime.settings)
    except Problem as problem:
        log.warning("ops status rejected: %d %s", problem.status, problem.detail)
        return problem.reply()
    document = await status_document(runtime, tenant, stream)
    running = set(backfills.running())
    for row in document["backfills"]:
        row["runningHere"] = row["key"] in running
    return Reply(200, document)
