"""Start Azurite (the Blob storage emulator, installed by `make test` from npm) for the tests."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BINARY = ROOT / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Azurite:
    def __init__(self) -> None:
        if not BINARY.exists():
            raise RuntimeError(f"{BINARY} is missing: run `make test` (it installs Azurite 3.35.0 with npm)")
        self.process = subprocess.Popen(
            [str(BINARY), "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
             "--blobHost", "127.0.0.1", "--blobPort", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        assert self.process.stdout is not None
        self.url = ""
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line and self.process.poll() is not None:
                raise RuntimeError(f"Azurite exited with {self.process.returncode}")
            match = re.search(r"listens on (http://127\.0\.0\.1:\d+)", line)
            if match:
                self.url = match.group(1)
                break
        if not self.url:
            self.stop()
            raise RuntimeError("Azurite did not start within 60 s")

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
                f"BlobEndpoint={self.url}/devstoreaccount1;")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
