"""Process lifecycle: TLS, listening, ``sim.json`` + READY line, clean shutdown on signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from m365sim.app import build_app
from m365sim.config import SimConfig
from m365sim.defaults import default_config
from m365sim.pki import TlsFiles, ensure_tls
from m365sim.state import SimState

READY_PREFIX = "M365SIM READY "


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 0
    state_dir: Path = Path(".sim")
    config_file: Path | None = None
    seed: int | None = None


def load_config(options: ServerOptions) -> SimConfig:
    if options.config_file is None:
        config = default_config(options.state_dir)
    else:
        config = SimConfig.from_dict(json.loads(options.config_file.read_text()))
    if options.seed is not None:
        config.seed = options.seed
    return config


def url_host(host: str) -> str:
    """Host part of the advertised URL (wildcard binds are reached via loopback)."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.server_cert, files.server_key)
    return context


def ready_info(state: SimState, files: TlsFiles) -> dict[str, Any]:
    return {
        "url": state.base_url,
        "ca_bundle": str(files.ca_bundle.resolve()),
        "pid": os.getpid(),
        "tenants": [t.tenant_id for t in state.config.tenants],
        "keyvault_url": state.base_url,
        "identity_endpoint": f"{state.base_url}/msi/token",
        "identity_header": state.managed_identity.header,
    }


async def serve(options: ServerOptions) -> None:
    state_dir = options.state_dir.resolve()
    options = ServerOptions(options.host, options.port, state_dir, options.config_file, options.seed)
    files = ensure_tls(state_dir)
    state = SimState(load_config(options), state_dir)
    runner = web.AppRunner(build_app(state), access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, options.host, options.port, ssl_context=tls_context(files), backlog=4096)
    await site.start()
    port = runner.addresses[0][1]
    state.base_url = f"https://{url_host(options.host)}:{port}"
    info = ready_info(state, files)
    tmp = state_dir / "sim.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(state_dir / "sim.json")
    print(READY_PREFIX + json.dumps(info), flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
