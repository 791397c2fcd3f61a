"""Checkpoint, lock and dead-letter storage: Azure Blob storage, or a local folder for the CLI.

Both stores give the same guarantees: a checkpoint write is conditional on the version that was
read (a conflict is reported, never overwritten), and one lock per stream keeps two runs (the
timer and a manual run) off the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

from .errors import CheckpointConflict, StreamBusy
from .settings import Settings

log = logging.getLogger(__name__)

LEASE_SECONDS = 15  # the shortest lease Blob storage allows: a killed run frees its streams fastest
LOCK_WAIT_SECONDS = 20.0  # long enough to outlast the lease of a run that was killed


class StreamLock:
    """Held while a run works on a stream; ``lost`` is set if the lock could not be kept."""

    def __init__(self) -> None:
        self.lost = asyncio.Event()


class CheckpointStore(Protocol):
    async def load(self, key: str) -> tuple[bytes | None, str | None]: ...
    async def save(self, key: str, data: bytes, etag: str | None) -> str: ...
    def lock(self, key: str, wait: float = LOCK_WAIT_SECONDS) -> contextlib.AbstractAsyncContextManager[StreamLock]:
        ...
    async def keys(self, prefix: str) -> list[str]: ...
    async def close(self) -> None: ...


class DeadLetterStore(Protocol):
    async def put(self, key: str, name: str, payload: bytes, reason: Mapping[str, Any]) -> str: ...
    async def close(self) -> None: ...


_SAFE = re.compile(r"[^A-Za-z0-9._/-]")


def safe_name(value: str) -> str:
    return _SAFE.sub("_", value)


# --- local folder
class LocalCheckpointStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str, suffix: str) -> Path:
        return self.directory / f"{safe_name(key)}{suffix}"

    @staticmethod
    def _etag(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:32]

    async def load(self, key: str) -> tuple[bytes | None, str | None]:
        path = self._path(key, ".json")
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            return None, None
        return data, self._etag(data)

    def _replace(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_suffix(f".tmp{os.getpid()}")
        with open(temp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    async def save(self, key: str, data: bytes, etag: str | None) -> str:
        path = self._path(key, ".json")
        _, current_etag = await self.load(key)
        if current_etag != etag and current_etag != self._etag(data):  # the latter: this very write, already done
            raise CheckpointConflict(f"checkpoint {key} changed since it was read (another run wrote it)")
        await asyncio.to_thread(self._replace, path, data)
        return self._etag(data)

    @contextlib.asynccontextmanager
    async def lock(self, key: str, wait: float = LOCK_WAIT_SECONDS) -> AsyncIterator[StreamLock]:
        path = self._path(key, ".lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the OS if the process dies
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                        raise StreamBusy(f"stream {key} is being processed by another run") from exc
                    await asyncio.sleep(0.2)
            yield StreamLock()
        finally:
            os.close(fd)

    async def keys(self, prefix: str) -> list[str]:
        base = self.directory
        found = await asyncio.to_thread(lambda: sorted(base.glob(f"{safe_name(prefix)}**/*.json")))
        return [str(p.relative_to(base).with_suffix("")) for p in found]

    async def close(self) -> None:
        return None


class LocalDeadLetterStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _write(self, path: Path, payload: bytes, reason: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        for target, data in ((path, payload), (path.with_name(path.name + ".reason.json"), orjson.dumps(reason))):
            with open(target, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())

    async def put(self, key: str, name: str, payload: bytes, reason: Mapping[str, Any]) -> str:
        path = self.directory / safe_name(key) / safe_name(name)
        await asyncio.to_thread(self._write, path, payload, reason)
        return str(path)

    async def close(self) -> None:
        return None


# --- Azure Blob storage
def _blob_service(settings: Settings) -> tuple[Any, Any]:
    from azure.storage.blob.aio import BlobServiceClient

    options: dict[str, Any] = {}
    if settings.ca_bundle is not None:
        options["connection_verify"] = str(settings.ca_bundle)
    if settings.storage_connection_string:
        return BlobServiceClient.from_connection_string(settings.storage_connection_string, **options), None
    from azure.identity.aio import DefaultAzureCredential

    credential = DefaultAzureCredential()
    return BlobServiceClient(str(settings.storage_account_url), credential=credential, **options), credential


class _Container:
    """A container client that creates its container once, on first use."""

    def __init__(self, service: Any, name: str) -> None:
        self.client = service.get_container_client(name)
        self._ready = False
        self._lock = asyncio.Lock()

    async def ready(self) -> Any:
        if not self._ready:
            from azure.core.exceptions import ResourceExistsError

            async with self._lock:
                if not self._ready:
                    with contextlib.suppress(ResourceExistsError):
                        await self.client.create_container()
                    self._ready = True
        return self.client


class BlobCheckpointStore:
    def __init__(self, settings: Settings, service: Any = None, credential: Any = None) -> None:
        if service is None:
            service, credential = _blob_service(settings)
        self.service = service
        self._credential = credential
        self.container = _Container(service, settings.checkpoint_container)

    async def load(self, key: str) -> tuple[bytes | None, str | None]:
        from azure.core.exceptions import ResourceNotFoundError

        blob = (await self.container.ready()).get_blob_client(f"{key}.json")
        try:
            downloader = await blob.download_blob()
            data = await downloader.readall()
        except ResourceNotFoundError:
            return None, None
        return bytes(data), str(downloader.properties.etag)

    async def save(self, key: str, data: bytes, etag: str | None) -> str:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        blob = (await self.container.ready()).get_blob_client(f"{key}.json")
        try:
            if etag is None:
                result = await blob.upload_blob(data, overwrite=False)
            else:
                result = await blob.upload_blob(data, overwrite=True, etag=etag,
                                                match_condition=MatchConditions.IfNotModified)
        except (ResourceExistsError, ResourceModifiedError) as exc:
            # The SDK retries an upload whose answer was lost; when the first attempt had landed, the
            # retry meets this run's own write, which is not a conflict.
            current, current_etag = await self.load(key)
            if current == data and current_etag is not None:
                return current_etag
            raise CheckpointConflict(f"checkpoint {key} changed since it was read (another run wrote it)") from exc
        return str(result["etag"])

    @contextlib.asynccontextmanager
    async def lock(self, key: str, wait: float = LOCK_WAIT_SECONDS) -> AsyncIterator[StreamLock]:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        blob = (await self.container.ready()).get_blob_client(f"locks/{key}.lock")
        with contextlib.suppress(ResourceExistsError):
            await blob.upload_blob(b"", overwrite=False)
        deadline = time.monotonic() + wait
        while True:
            try:
                lease = await blob.acquire_lease(lease_duration=LEASE_SECONDS)
                break
            except HttpResponseError as exc:
                if exc.status_code != 409 or time.monotonic() >= deadline:
                    raise StreamBusy(f"stream {key} is being processed by another run") from exc
                await asyncio.sleep(1.0)
        held = StreamLock()

        async def keep() -> None:
            while True:
                await asyncio.sleep(LEASE_SECONDS / 3)
                try:
                    await lease.renew()
                except HttpResponseError as exc:
                    log.error("stream %s: lost its lock (%s); stopping", key, exc.reason)
                    held.lost.set()
                    return

        renewer = asyncio.create_task(keep())
        try:
            yield held
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(HttpResponseError):
                await lease.release()

    async def keys(self, prefix: str) -> list[str]:
        container = await self.container.ready()
        return [b.name[:-5] async for b in container.list_blobs(name_starts_with=prefix) if b.name.endswith(".json")]

    async def close(self) -> None:
        await self.service.close()
        if self._credential is not None:
            await self._credential.close()


class BlobDeadLetterStore:
    def __init__(self, settings: Settings, service: Any) -> None:
        self.container = _Container(service, settings.deadletter_container)

    async def put(self, key: str, name: str, payload: bytes, reason: Mapping[str, Any]) -> str:
        container = await self.container.ready()
        blob_name = f"{safe_name(key)}/{safe_name(name)}"
        metadata = {k: str(v).encode("ascii", "replace").decode()[:1024] for k, v in reason.items()}
        await container.get_blob_client(blob_name).upload_blob(payload, overwrite=True, metadata=metadata)
        return f"{container.container_name}/{blob_name}"

    async def close(self) -> None:
        return None


def make_stores(settings: Settings) -> tuple[CheckpointStore, DeadLetterStore]:
    if settings.checkpoint_store == "local":
        return (LocalCheckpointStore(settings.checkpoint_dir),
                LocalDeadLetterStore(settings.checkpoint_dir / "deadletter"))
    checkpoints = BlobCheckpointStore(settings)
    return checkpoints, BlobDeadLetterStore(settings, checkpoints.service)
