"""Azure Functions entry point (Python v2 programming model).

The function bodies are thin: all logic lives in ``o365ingest`` and is shared with the CLI.
One ``Runtime`` per warm instance keeps tokens, connections and Event Hubs links across runs.
Settings are validated at the first invocation, and a bad configuration fails that invocation
with one message naming every wrong setting (failing at import would hide the functions).
"""

from __future__ import annotations

import logging
import os

import azure.functions as func

from o365ingest.runner import run_audit
from o365ingest.runtime import Runtime
from o365ingest.settings import load_settings

app = func.FunctionApp()
log = logging.getLogger("o365ingest.function")

_runtime: Runtime | None = None


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
    results = await run_audit(runtime())
    failed = [r for r in results if r.status == "failed"]
    if failed:
        # Fail the invocation so it shows as failed in Application Insights; the streams that
        # worked have already committed their progress.
        raise RuntimeError(f"{len(failed)} of {len(results)} stream(s) failed: "
                           + "; ".join(f"{r.stream}: {r.error}" for r in failed))
