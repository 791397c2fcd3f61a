"""Helpers for pipeline tests: run cycles with the Event Hubs fake, read the ground truth."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import datetime
from typing import Any

from m365sim.testing import Simulator
from o365ingest.audit import StreamResult
from o365ingest.runner import run_audit
from o365ingest.runtime import Runtime
from o365ingest.settings import load_settings
from tests.azurite import Azurite
from tests.fakes import EventHubRecorder


def blob_env(azurite: Azurite) -> dict[str, str]:
    """Checkpoints and dead letters in Azurite, in containers of their own."""
    suffix = uuid.uuid4().hex[:12]
    return {"O365_CHECKPOINT_STORE": "blob", "O365_STORAGE_CONNECTION_STRING": azurite.connection_string,
            "O365_CHECKPOINT_CONTAINER": f"ckpt-{suffix}", "O365_DEADLETTER_CONTAINER": f"dlq-{suffix}"}


async def run_once(env: dict[str, str], recorder: EventHubRecorder, **kwargs: Any) -> list[StreamResult]:
    async with Runtime.create(load_settings(env), producer_factory=recorder.factory) as runtime:
        return await run_audit(runtime, **kwargs)


async def run_until_caught_up(env: dict[str, str], recorder: EventHubRecorder, max_runs: int = 8,
                              sim: Simulator | None = None, **kwargs: Any) -> list[list[StreamResult]]:
    """Runs like the timer would, until every stream is current with nothing left open and (given
    the simulator) every late blob has become listable before the last run started."""
    last_visible = 0.0
    if sim is not None:
        tenant = env["O365_TENANTS"]
        blobs = [b for ct in sim.truth(tenant)["audit"]["content_types"].values() for b in ct["blobs"]]
        last_visible = max(datetime.fromisoformat(b["visibleAt"].replace("Z", "+00:00")).timestamp() for b in blobs)
    history = []
    for _ in range(max_runs):
        started = time.time()
        results = await run_once(env, recorder, **kwargs)
        history.append(results)
        if all(r.status == "ok" and r.stats.left_open == 0 for r in results) and started > last_visible:
            break
        await asyncio.sleep(max(0.0, min(5.0, last_visible - time.time() + 0.5)))
    return history


def truth_ids(sim: Simulator, tenant: str) -> dict[str, set[str]]:
    truth = sim.truth(tenant)["audit"]["content_types"]
    return {ct: set(v["record_ids"]) for ct, v in truth.items()}


def expected_duplicates(sim: Simulator, tenant: str) -> set[str]:
    return {d["id"] for d in sim.truth(tenant)["audit"].get("duplicates", [])}


def id_counts(recorder: EventHubRecorder) -> Counter[str]:
    return Counter(recorder.record_ids())
