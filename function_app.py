"""Azure Functions entry point (Python v2 programming model).

The function bodies are thin: all logic lives in ``o365ingest`` and is shared with the CLI.
One ``Runtime`` per warm instance keeps tokens, connections and Event Hubs links across runs.
Settings are validated at the first invocation, and a bad configuration fails that invocation
with one message naming every wrong setting (failing at import would hide the functions).
"""

from __future__ import annotations

import asyncio
import logging
import os

import azure.functions as func

from o365ingest.appinsights import configure_telemetry, flush
from o365ingest.doctor import first_run_doctor
from o365ingest.ops import Backfills, Reply, backfill_endpoint, status_endpoint
from o365ingest.process import tune_garbage_collector
from o365ingest.runner import run_audit, run_messagetrace
from o365ingest.runtime import Runtime
from o365ingest.settings import load_settings

app = func.FunctionApp()
log = logging.getLogger("o365ingest.function")
# Once per process, before any meter or logger is used; a no-op without a connection string.
configure_telemetry(os.environ)
tune_garbage_collector()

_runtime: Runtime | None = None
_doctor_started = False
_backfills = Backfills()
DOCTOR_SECONDS = 45.0


def runtime() -> Runtime:
    """The instance's runtime, created on first use inside the worker's event loop."""
    global _runtime
    if _runtime is None:
        settings = load_settings(os.environ)
        logging.getLogger("o365ingest").setLevel(settings.log_level)
        _runtime = Runtime.create(settings)
    return _runtime


@app.timer_trigger(arg_name="timer", schedule="%O365_AUDIT_SCHEDULE%", run_on_startup=False, use_monitor=True)
async def audit_timer(timer: func.TimerRequest) -> None:
    """Collect every audit stream of every tenant once; the checkpoint makes each run resumable."""
    if timer.past_due:
        log.info("audit_timer is past due; running now")
    rt = runtime()
    doctor = _first_run_doctor(rt)
    try:
        results = await run_audit(rt)
        failed = [r for r in results if r.status == "failed"]
        if failed:
            # Fail the invocation so it shows as failed in Application Insights; the streams that
            # worked have already committed their progress.
            raise RuntimeError(f"{len(failed)} of {len(results)} stream(s) failed: "
                               + "; ".join(f"{r.stream}: {r.error}" + (f" Remedy: {r.remedy}" if r.remedy else "")
                                       for r in failed))
    finally:
        if doctor is not None:
            await doctor
        await asyncio.to_thread(flush)


@app.timer_trigger(arg_name="timer", schedule="%O365_MESSAGETRACE_SCHEDULE%", run_on_startup=False,
                   use_monitor=True)
async def messagetrace_timer(timer: func.TimerRequest) -> None:
    """Collect each tenant's Exchange message traces once; only a log line while they are turned off."""
    rt = runtime()
    if not rt.settings.messagetrace_enabled:
        log.info("messagetrace_timer: message traces are off (O365_MESSAGETRACE_ENABLED=false); nothing to do")
        return
    if timer.past_due:
        log.info("messagetrace_timer is past due; running now")
    try:
        results = await run_messagetrace(rt)
        failed = [r for r in results if r.status == "failed"]
        if failed:  # fail the invocation so it shows in Application Insights; progress is already committed
            raise RuntimeError(f"{len(failed)} of {len(results)} message-trace stream(s) failed: "
                               + "; ".join(f"{r.stream}: {r.error}" + (f" Remedy: {r.remedy}" if r.remedy else "")
                                           for r in failed))
    finally:
        await asyncio.to_thread(flush)


def _first_run_doctor(rt: Runtime) -> asyncio.Task[None] | None:
    """The compact self-test, once per instance, beside the first run (bounded, never raises)."""
    global _doctor_started
    if _doctor_started:
        return None
    _doctor_started = True
    return asyncio.get_running_loop().create_task(first_run_doctor(rt, DOCTOR_SECONDS))


def _http(reply: Reply) -> func.HttpResponse:
    return func.HttpResponse(reply.json(), status_code=reply.status, headers=reply.headers,
                             mimetype=reply.content_type)


# Operations API (docs/operations.md). Function keys; POST only; JSON in and out, problem details on
# errors. Not under "admin": the host reserves that prefix for its own API and refuses such routes.
@app.route(route="ops/backfill", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def ops_backfill(req: func.HttpRequest) -> func.HttpResponse:
    """Start a backfill of one tenant's stream for a window; 202 with its id and status."""
    return _http(await backfill_endpoint(runtime, _backfills, req.method, req.get_body(),
                                         req.headers.get("Content-Type")))


@app.route(route="ops/status", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def ops_status(req: func.HttpRequest) -> func.HttpResponse:
    """Every stream's and backfill's status, the same document as `python -m o365ingest status --json`."""
    return _http(await status_endpoint(runtime, _backfills, req.method, req.get_body(),
                                       req.headers.get("Content-Type")))
