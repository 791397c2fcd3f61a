"""SIGKILL at random moments, then a normal run: nothing is lost.

The collector runs as a real process (`python -m o365ingest run`) with the file sink (written and
fsynced before the checkpoint moves, and outside the killed process, unlike a fake Event Hubs) and
checkpoints either in local files (atomic replace, file lock released by the OS when the process
dies) or in Blob storage through Azurite (lease, ETag). New blobs keep arriving between runs, so
kills land mid-work.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from tests.integration.pipeline_support import blob_env, truth_ids

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def read_sink(directory: Path) -> list[str]:
    """Record Ids in the JSON Lines output. A killed writer can leave one truncated last line in
    its own file; that batch was never acknowledged, so it is replayed by a later run."""
    ids: list[str] = []
    for path in sorted(directory.rglob("*.jsonl")):
        lines = path.read_bytes().split(b"\n")
        for number, line in enumerate(lines):
            if not line:
                continue
            try:
                ids.append(orjson.loads(line)["Id"])
            except orjson.JSONDecodeError:
                assert number == len(lines) - 1, f"{path}: a corrupt line that is not the last one"
    return ids


def kill_rounds(sim, tenant: str, env: dict[str, str], *, kills_wanted: int, seed: int) -> int:
    """Rounds of: new blobs arrive, a run is killed at a random moment, a normal run follows."""
    command = [sys.executable, "-m", "o365ingest", "run"]
    rng = random.Random(seed)
    sim.set_faults({"latency_ms": 40, "jitter_ms": 20, "apply_to": ["blob", "list"]})
    kills = round_number = 0
    try:
        while kills < kills_wanted and round_number < 2 * kills_wanted:
            round_number += 1
            # fresh content keeps arriving, as it does in a real tenant
            for _ in range(70):
                created = datetime.now(UTC) - timedelta(minutes=rng.uniform(1, 90))
                records = [{"Id": str(uuid.uuid4()), "RecordType": 8, "Operation": "Add user.",
                            "CreationTime": created.strftime("%Y-%m-%dT%H:%M:%S"), "Round": round_number}
                           for _ in range(rng.randint(20, 80))]
                sim.add_blob(tenant, rng.choice(["Audit.AzureActiveDirectory", "Audit.General"]), records,
                             content_created=created.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
            victim = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.5, 3.5))
            if victim.poll() is None:
                victim.send_signal(signal.SIGKILL)
                kills += 1
            victim.wait()
            normal = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            assert normal.returncode == 0, normal.stdout[-2000:] + normal.stderr[-2000:]
    finally:
        sim.clear_faults()
    return kills


def assert_nothing_lost(sim, tenant: str, out: Path, kills: int) -> None:
    delivered = set(read_sink(out))
    expected = set().union(*truth_ids(sim, tenant).values())
    missing = expected - delivered
    assert not missing, f"{len(missing)} records lost after {kills} kills"
    assert delivered <= expected


def process_env(settings: dict[str, str]) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("O365_")}, **settings}


def test_twenty_kills_at_random_moments_lose_no_record(sim, tenants, tmp_path):
    tenant = tenants(records=8000, days=2.0, audit={"late_blob_fraction": 0.0, "records_per_blob": [20, 120]})
    out = tmp_path / "out"
    env = process_env(tenants.env(tenant, O365_SINK="file", O365_FILE_SINK_DIR=out, O365_FETCH_CONCURRENCY=2,
                                  O365_OVERLAP_MINUTES=180))
    kills = kill_rounds(sim, tenant, env, kills_wanted=20, seed=20261125)
    assert kills >= 20, "at least 20 runs must be killed mid-work for this test to mean anything"
    assert_nothing_lost(sim, tenant, out, kills)


def test_kills_with_blob_checkpoints_lose_no_record(sim, tenants, tmp_path, azurite):
    """The same with checkpoints in Blob storage (Azurite): a killed run leaves its leases behind; the
    next run waits for them to lapse (15 s), then its ETag-checked writes take over. Fewer rounds,
    as each costs a lease period."""
    tenant = tenants(records=3000, days=1.0, audit={"late_blob_fraction": 0.0, "records_per_blob": [20, 120]})
    out = tmp_path / "out"
    env = process_env(tenants.env(tenant, O365_SINK="file", O365_FILE_SINK_DIR=out, O365_FETCH_CONCURRENCY=2,
                                  O365_OVERLAP_MINUTES=180, **blob_env(azurite)))
    kills = kill_rounds(sim, tenant, env, kills_wanted=5, seed=20261202)
    assert kills >= 5
    assert_nothing_lost(sim, tenant, out, kills)
