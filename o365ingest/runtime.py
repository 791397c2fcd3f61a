"""Long-lived parts of a process: HTTP client, token cache, per-tenant pacing, sink and stores.

The Function App keeps one ``Runtime`` for the life of a warm instance, so tokens, connections and
Event Hubs links are reused across timer runs. The CLI opens one per command.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType

import httpx

from .http import RateLimiter, make_http_client
from .management import ManagementClient
from .quota import QUOTA_PERIOD, QuotaLimiter, share_limit
from .settings import Settings, TenantConfig
from .sinks import ProducerFactory, Sink, make_sink
from .stores import CheckpointStore, DeadLetterStore, make_stores
from .telemetry import Instruments
from .tokens import TokenRegistry


def utcnow() -> datetime:
    return datetime.now(UTC)


_METRIC_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,39}$")


def metric_code(code: str | None) -> str:
    """An error code as a metric dimension: codes come from response bodies, so anything that is not
    a short identifier (a message, a correlation ID) becomes "other" to keep cardinality bounded."""
    if not code:
        return ""
    return code if _METRIC_CODE.match(code) else "other"


class ApiMetrics:
    """One client's requests (by operation, status and error code), throttled answers and retries."""

    def __init__(self, instruments: Instruments, attributes: dict[str, str]) -> None:
        self.instruments = instruments
        self.attributes = attributes

    def request(self, op: str, status: int, code: str | None) -> None:
        self.instruments.api_requests.add(1, {**self.attributes, "operation": op, "status": str(status),
                                              "code": metric_code(code)})
        if status == 429 or code == "AF429":  # the Management API also throttles with 403 AF429
            self.instruments.throttled.add(1, self.attributes)

    def retry(self, op: str) -> None:
        self.instruments.retries.add(1, {**self.attributes, "operation": op})


@dataclass
class TenantPacing:
    """Shared by every stream of one tenant: Microsoft's budgets are per tenant."""

    limiter: RateLimiter
    fetch_slots: asyncio.Semaphore
    graph_limiter: QuotaLimiter  # the message-trace quota: Graph list and detail calls


@dataclass
class Runtime:
    settings: Settings
    sink: Sink
    checkpoints: CheckpointStore
    deadletters: DeadLetterStore
    http: httpx.AsyncClient
    tokens: TokenRegistry
    instruments: Instruments
    clock: Callable[[], datetime] = utcnow
    graph_quota_period: float = QUOTA_PERIOD  # Microsoft's 5 minutes; tests shorten it with the simulator's
    _pacing: dict[str, TenantPacing] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings, *, sink: Sink | None = None, producer_factory: ProducerFactory | None = None,
               stores: tuple[CheckpointStore, DeadLetterStore] | None = None,
               instruments: Instruments | None = None, clock: Callable[[], datetime] = utcnow,
               graph_quota_period: float = QUOTA_PERIOD) -> Runtime:
        checkpoints, deadletters = stores or make_stores(settings)
        streams_per_tenant = len(settings.content_types) + 1
        return cls(
            settings=settings,
            sink=sink or make_sink(settings, producer_factory),
            checkpoints=checkpoints,
            deadletters=deadletters,
            http=make_http_client(settings, max_connections=settings.fetch_concurrency + 2 * streams_per_tenant),
            tokens=TokenRegistry(settings),
            instruments=instruments or Instruments.create(),
            clock=clock,
            graph_quota_period=graph_quota_period,
        )

    def pacing(self, tenant: TenantConfig) -> TenantPacing:
        pacing = self._pacing.get(tenant.tenant_id)
        if pacing is None:
            s = self.settings
            pacing = TenantPacing(
                limiter=RateLimiter(s.requests_per_minute, 60.0),
                fetch_slots=asyncio.Semaphore(s.fetch_concurrency),
                graph_limiter=QuotaLimiter(share_limit(s.messagetrace_quota_share), self.graph_quota_period),
            )
            self._pacing[tenant.tenant_id] = pacing
        return pacing

    async def management(self, tenant: TenantConfig, deadline: Callable[[], float] | None = None,
                         stream: str = "") -> ManagementClient:
        metrics = ApiMetrics(self.instruments, {"tenant": tenant.tenant_id, "stream": stream})
        return ManagementClient(
            self.http, self.settings.endpoints.management_url, tenant, await self.tokens.for_tenant(tenant),
            self.settings.endpoints.management_resource, self.pacing(tenant).limiter,
            max_attempts=self.settings.max_attempts, deadline=deadline, on_request=metrics.request,
            on_retry=metrics.retry)

    async def close(self) -> None:
        await self.sink.close()
        await self.checkpoints.close()
        await self.deadletters.close()
        await self.http.aclose()

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
