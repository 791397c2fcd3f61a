"""Test helper: run the simulator as a real subprocess and drive its control API.

The product's tests talk to the simulator over real HTTPS with real MSAL/Azure SDK
clients, and kill/restart tests need it to be an independent process, so it is never
run in-process.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from m365sim.pki import make_app_certificate, pem_bundle
from m365sim.server import READY_PREFIX

__all__ = ["Simulator", "SimulatorError", "make_app_certificate", "pem_bundle"]

READY_TIMEOUT = 30.0


class SimulatorError(RuntimeError):
    """The simulator process failed to start or a control call failed."""


class Simulator:
    """``python -m m365sim`` in a subprocess, with a config dict and its own state dir.

    Usable as a context manager or via :meth:`start`/:meth:`stop` from fixtures.
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        *,
        state_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.seed = seed
        self.env = env
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="m365sim-")
            state_dir = self._tmp.name
        self.state_dir = Path(state_dir)
        self.process: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self._control: httpx.Client | None = None
        self._stderr_path = self.state_dir / "simulator.stderr"

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Simulator:
        if self.process is not None and self.process.poll() is None:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "m365sim", "--host", self.host, "--port", str(self.port)]
        cmd += ["--state-dir", str(self.state_dir)]
        if self.config is not None:
            config_path = self.state_dir / "config.json"
            config_path.write_text(json.dumps(self.config))
            cmd += ["--config", str(config_path)]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        env = dict(os.environ)
        env.update(self.env or {})
        project_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
        stderr = self._stderr_path.open("w")
        try:
            self.process = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=project_root
            )
        finally:
            stderr.close()
        self.info = self._wait_ready()
        self._control = httpx.Client(base_url=self.url, verify=self.ssl_context(), timeout=60.0)
        return self

    def _wait_ready(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        found: list[dict[str, Any]] = []
        stdout = self.process.stdout

        def reader() -> None:
            for line in stdout:
                if line.startswith(READY_PREFIX) and not found:
                    found.append(json.loads(line[len(READY_PREFIX) :]))

        threading.Thread(target=reader, daemon=True, name="m365sim-stdout").start()
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if found:
                return found[0]
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        detail = self._stderr_tail()
        self.stop()
        raise SimulatorError(f"simulator did not become ready (exit={self.process.returncode}):\n{detail}")

    def _stderr_tail(self, limit: int = 4000) -> str:
        try:
            return self._stderr_path.read_text()[-limit:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in ``timeout`` seconds."""
        if self._control is not None:
            self._control.close()
            self._control = None
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL without cleanup (crash tests)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ connection details

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def ca_bundle(self) -> str:
        return str(self.info["ca_bundle"])

    @property
    def keyvault_url(self) -> str:
        return str(self.info["keyvault_url"])

    @property
    def identity_endpoint(self) -> str:
        return str(self.info["identity_endpoint"])

    @property
    def identity_header(self) -> str:
        return str(self.info["identity_header"])

    @property
    def tenants(self) -> list[str]:
        return list(self.info["tenants"])

    def ssl_context(self) -> ssl.SSLContext:
        """Client TLS context that trusts the simulator's CA (verification stays on)."""
        return ssl.create_default_context(cafile=self.ca_bundle)

    @property
    def control(self) -> httpx.Client:
        if self._control is None:
            raise SimulatorError("simulator is not running")
        return self._control

    def authority(self, tenant: str) -> str:
        """MSAL authority for ``tenant`` (use with ``instance_discovery=False``)."""
        return f"{self.url}/{tenant}"

    # ------------------------------------------------------------------ control API

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.control.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise SimulatorError(f"{method} {path} -> {response.status_code}: {response.text}")
        return response.json() if response.content else None

    def ledger(self, since: int = 0, service: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"since": since}
        if service is not None:
            params["service"] = service
        entries: list[dict[str, Any]] = self._call("GET", "/_sim/ledger", params=params)["entries"]
        return entries

    def last_seq(self) -> int:
        return int(self._call("GET", "/_sim/ledger", params={"since": 1 << 62})["last_seq"])

    def clear_ledger(self) -> None:
        self._call("DELETE", "/_sim/ledger")

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sim/state")
        return result

    def truth(self, tenant: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/_sim/truth/{tenant}")
        return result

    def set_faults(self, faults: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PUT", "/_sim/faults", json=faults)
        return result

    def clear_faults(self) -> None:
        self.set_faults({"rates": {}, "latency_ms": 0, "jitter_ms": 0})

    def script_fault(self, kind: str, count: int = 1, status: int | None = None, **match: str) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": kind, "count": count, "match": match}
        if status is not None:
            body["status"] = status
        result: dict[str, Any] = self._call("POST", "/_sim/faults/next", json=body)
        return result

    def patch_tenant(self, tenant: str, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/_sim/tenants/{tenant}", json=changes)
        return result

    def add_tenant(self, config: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/_sim/tenants", json=config)
        return result

    def add_blob(
        self,
        tenant: str,
        content_type: str,
        records: list[dict[str, Any]],
        *,
        content_created: str | None = None,
        visible_at: str | None = None,
        content_uri_base: str | None = None,
    ) -> str:
        body: dict[str, Any] = {"contentType": content_type, "records": records}
        if content_created is not None:
            body["contentCreated"] = content_created
        if visible_at is not None:
            body["visibleAt"] = visible_at
        if content_uri_base is not None:
            body["contentUriBase"] = content_uri_base
        return str(self._call("POST", f"/_sim/tenants/{tenant}/blobs", json=body)["contentId"])

    def expire(self, tenant: str, content_id: str) -> None:
        self._call("POST", f"/_sim/tenants/{tenant}/expire", json={"contentId": content_id})

    def put_secret(self, name: str, value: str, content_type: str | None = None) -> str:
        body: dict[str, Any] = {"value": value}
        if content_type is not None:
            body["contentType"] = content_type
        return str(self._call("PUT", f"/_sim/keyvault/secrets/{name}", json=body)["version"])

    def set_keyvault_readers(self, readers: list[str] | None) -> None:
        self._call("PATCH", "/_sim/keyvault", json={"readers": readers})

    def mint_token(
        self,
        tenant: str,
        resource: str,
        *,
        client_id: str | None = None,
        roles: list[str] | None = None,
        lifetime_seconds: int | None = None,
    ) -> str:
        """An access token signed by the simulator for arbitrary claims (negative tests)."""
        body: dict[str, Any] = {"tenant_id": tenant, "resource": resource, "roles": roles}
        if client_id is not None:
            body["client_id"] = client_id
        if lifetime_seconds is not None:
            body["lifetime_seconds"] = lifetime_seconds
        return str(self._call("POST", "/_sim/tokens", json=body)["access_token"])


def most_in_any_span(moments: list[float], span: float) -> int:
    """The most ledger entries (by timestamp) inside any half-open interval of ``span`` seconds:
    how budgets and quotas are judged, e.g. "at most 2,000 requests in any 60 s"."""
    moments = sorted(moments)
    best = start = 0
    for end, moment in enumerate(moments):
        while moment - moments[start] >= span:
            start += 1
        best = max(best, end - start + 1)
    return best
