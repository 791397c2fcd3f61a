"""Deterministic Exchange message traces for one simulated tenant.

Message trace rows are "eventually consistent": a row can show ``gettingStatus`` or ``pending``
first and its final status later. Collectors must re-query a look-back window to catch that, so
each row here carries a timeline, and some rows change status a few seconds after the simulator
starts. Rows use the Graph ``exchangeMessageTrace`` shape; :func:`rws_row` renders the legacy
Reporting Web Service shape of the same row.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from m365sim.dataset import as_utc, format_listing_time, tenant_domain

STATUSES = ("gettingStatus", "pending", "failed", "delivered", "expanded", "quarantined", "filteredAsSpam")

# Final statuses of rows, with weights (most mail is delivered).
_FINAL_WEIGHTS = (
    ("delivered", 0.86),
    ("filteredAsSpam", 0.04),
    ("failed", 0.04),
    ("expanded", 0.03),
    ("quarantined", 0.03),
)
_TWICE_CHANGING_SHARE = 0.15  # of changing rows: gettingStatus -> pending -> delivered
_GROUP_SHARE = 0.05  # of inbound/internal messages: one recipient is a distribution group

RWS_BASE = "https://reports.office365.com/ecp/ReportingWebService/Reporting.svc"

_INTERNAL_NAMES = (
    "adele.vance", "alex.wilber", "diego.siciliani", "grady.archie", "isaiah.langer", "johanna.lorenz",
    "lee.gu", "lidia.holloway", "megan.bowen", "miriam.graham", "nestor.wilke", "patti.fernandez",
)  # fmt: skip
_GROUP_NAMES = ("all-staff", "sales-team", "it-support")
_EXTERNAL_SENDERS = (
    ("azure-noreply@microsoft.com", "az.uksouth.production.microsoft.com"),
    ("no-reply@sharepointonline.com", "sharepointonline.com"),
    ("billing@fabrikam.example", "fabrikam.example"),
    ("newsletter@tailspintoys.example", "mail.tailspintoys.example"),
    ("j.smith@northwindtraders.example", "northwindtraders.example"),
)
_EXTERNAL_RECIPIENTS = (
    "orders@fabrikam.example",
    "support@wingtiptoys.example",
    "k.lee@northwindtraders.example",
)
_SUBJECTS = (
    "Quarterly Report",
    "Daily report",
    "Monthly report",
    "Weekly digest: updates for your team",
    "Re: project timeline",
    "Invoice for your order",
    "Meeting notes",
    "Your password expires soon",
    "Azure AD Identity Protection Weekly Digest",
    "Action required: review shared document",
)
# Documentation address ranges (RFC 5737), never real hosts.
_EXTERNAL_IPS = ("203.0.113.10", "203.0.113.25", "198.51.100.61", "198.51.100.140")
_INTERNAL_IPS = ("192.0.2.14", "192.0.2.77")
_OUTBOUND_IPS = ("198.51.100.23", "203.0.113.88")


def _iso_seconds(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _guid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _stable_seed(*parts: object) -> int:
    """Seed independent of PYTHONHASHSEED, so runs and processes agree."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class TraceConfig:
    """Shape of a tenant's message traces; every field changes the generated data."""

    messages: int = 2000
    days: float = 7.0
    changing_fraction: float = 0.2
    change_delay_seconds: tuple[float, float] = (2.0, 30.0)


@dataclass(frozen=True)
class _Row:
    received: datetime
    data: dict[str, Any]  # Graph row without "status"
    timeline: tuple[tuple[datetime, str], ...]

    def status_at(self, now: datetime) -> str:
        """Status in force at ``now``; before the row's first entry, its first status."""
        status = self.timeline[0][1]
        for when, value in self.timeline[1:]:
            if when > now:
                break
            status = value
        return status


class TraceDataset:
    """All message trace rows of one tenant, one row per (message id, recipient)."""

    def __init__(
        self,
        tenant_id: str,
        config: TraceConfig,
        seed: int,
        anchor: datetime,
        started_at: datetime | None = None,
    ) -> None:
        if config.messages < 0 or config.days <= 0 or not 0 <= config.changing_fraction <= 1:
            raise ValueError("messages must be >= 0, days > 0 and changing_fraction in [0, 1]")
        lo, hi = config.change_delay_seconds
        if not 0 <= lo <= hi:
            raise ValueError("change_delay_seconds must satisfy 0 <= min <= max")
        self.tenant_id = tenant_id
        self.config = config
        self.seed = seed
        self.anchor = as_utc(anchor).replace(microsecond=0)
        self.started_at = as_utc(started_at) if started_at is not None else self.anchor
        self.organization = tenant_domain(tenant_id)
        self._rows = self._generate()
        self._received = [row.received for row in self._rows]
        self._by_key = {(row.data["id"], row.data["recipientAddress"].lower()): row for row in self._rows}

    def _generate(self) -> list[_Row]:
        cfg = self.config
        rng = random.Random(_stable_seed("message-trace", self.seed, self.tenant_id))
        domain = self.organization
        internal = [f"{name}@{domain}" for name in _INTERNAL_NAMES]
        groups = [f"{name}@{domain}" for name in _GROUP_NAMES]
        host = f"{domain.split('.', 1)[0].upper()}.namprd05.prod.outlook.com"
        first = self.anchor - timedelta(days=cfg.days)
        span = max(0, int((self.anchor - timedelta(minutes=1) - first).total_seconds()))

        drafts: list[tuple[datetime, dict[str, Any], str]] = []
        finals = [status for status, _w in _FINAL_WEIGHTS]
        weights = [w for _status, w in _FINAL_WEIGHTS]
        for _ in range(cfg.messages):
            received = first + timedelta(seconds=rng.randint(0, span))
            trace_id = _guid(rng)
            direction = rng.choices(("inbound", "outbound", "internal"), weights=(0.55, 0.2, 0.25))[0]
            n_recipients = rng.randint(1, 3)
            if direction == "inbound":
                sender, sender_host = rng.choice(_EXTERNAL_SENDERS)
                recipients = rng.sample(internal, n_recipients)
                from_ip, to_ip = rng.choice(_EXTERNAL_IPS), ""
            elif direction == "outbound":
                sender, sender_host = rng.choice(internal), host
                recipients = rng.sample(_EXTERNAL_RECIPIENTS, n_recipients)
                from_ip, to_ip = rng.choice(_INTERNAL_IPS), rng.choice(_OUTBOUND_IPS)
            else:
                sender, sender_host = rng.choice(internal), host
                recipients = rng.sample([a for a in internal if a != sender], n_recipients)
                from_ip, to_ip = rng.choice(_INTERNAL_IPS), ""
            if direction != "outbound" and rng.random() < _GROUP_SHARE:
                recipients[0] = rng.choice(groups)  # a distribution group: its row ends "expanded"
            message_id = f"<{_guid(rng)}@{sender_host}>"
            subject = rng.choice(_SUBJECTS)
            size = min(25_000_000, max(1_200, int(rng.lognormvariate(10.3, 1.1))))
            for recipient in recipients:
                final = "expanded" if recipient in groups else rng.choices(finals, weights=weights)[0]
                row: dict[str, Any] = {
                    "id": trace_id,
                    "senderAddress": sender,
                    "recipientAddress": recipient,
                    "messageId": message_id,
                    "receivedDateTime": _iso_seconds(received),
                    "subject": subject,
                    "size": size,
                    "fromIP": from_ip,
                    "toIP": to_ip,
                }
                drafts.append((received, row, final))
        drafts.sort(key=lambda d: (d[0], d[1]["id"], d[1]["recipientAddress"]))

        n_changing = round(len(drafts) * cfg.changing_fraction)
        changing = set(rng.sample(range(len(drafts)), n_changing))
        lo, hi = cfg.change_delay_seconds
        rows = []
        for i, (received, data, final) in enumerate(drafts):
            timeline: tuple[tuple[datetime, str], ...]
            if i not in changing:
                timeline = ((received, final),)
            else:
                delays = sorted(rng.uniform(lo, hi) for _ in range(2))
                at = [self._change_time(received, d) for d in delays]
                if rng.random() < _TWICE_CHANGING_SHARE and at[0] < at[1]:
                    timeline = ((received, "gettingStatus"), (at[0], "pending"), (at[1], "delivered"))
                else:
                    initial = rng.choice(("gettingStatus", "pending"))
                    timeline = ((received, initial), (at[1], final))
            rows.append(_Row(received=received, data=data, timeline=timeline))
        return rows

    def _change_time(self, received: datetime, delay: float) -> datetime:
        """started_at + delay (ms precision), never before the row was received."""
        when = self.started_at + timedelta(milliseconds=int(delay * 1000))
        return max(when, received + timedelta(seconds=1))

    @property
    def row_count(self) -> int:
        return len(self._rows)

    def query(self, start: datetime, end: datetime, now: datetime) -> list[dict[str, Any]]:
        """Rows with ``start <= receivedDateTime <= end`` in a stable order, status as of ``now``.

        Order is (receivedDateTime, id, recipientAddress); each row is a fresh dict.
        """
        lo = bisect.bisect_left(self._received, as_utc(start))
        hi = bisect.bisect_right(self._received, as_utc(end))
        now = as_utc(now)
        return [{**row.data, "status": row.status_at(now)} for row in self._rows[lo:hi]]

    def status_at(self, trace_id: str, recipient: str, now: datetime) -> str:
        """Status of one row at ``now``; KeyError for an unknown (id, recipient)."""
        return self._by_key[(trace_id, recipient.lower())].status_at(as_utc(now))

    def truth(self) -> dict[str, Any]:
        """Every row with its status timeline, as JSON-able data."""
        return {
            "rows": [
                {
                    "id": row.data["id"],
                    "recipientAddress": row.data["recipientAddress"],
                    "receivedDateTime": row.data["receivedDateTime"],
                    "timeline": [[format_listing_time(when), status] for when, status in row.timeline],
                    "final": row.timeline[-1][1],
                }
                for row in self._rows
            ]
        }


def _parse_graph_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _msdate(dt: datetime) -> str:
    return f"/Date({int(as_utc(dt).timestamp() * 1000)})/"


def _iso7(dt: datetime, zulu: bool) -> str:
    """ISO with 7 fractional digits, as the RWS JSON-light samples show."""
    dt = as_utc(dt)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond:06d}0" + ("Z" if zulu else "")


def _organization_of(row: dict[str, Any]) -> str:
    """The tenant domain of a row: the ``*.onmicrosoft.com`` side of sender/recipient."""
    for key in ("recipientAddress", "senderAddress"):
        domain = str(row[key]).rpartition("@")[2]
        if domain.endswith(".onmicrosoft.com"):
            return domain
    return str(row["recipientAddress"]).rpartition("@")[2]


def rws_row(
    row: dict[str, Any],
    date_style: str,
    *,
    index: int = 0,
    organization: str | None = None,
    start_date: datetime | None = None,
    end_date: datetime | None = None,
    metadata: bool = True,
) -> dict[str, Any]:
    """Render a Graph row in the legacy Reporting Web Service ``MessageTrace`` shape.

    ``date_style="msdate"`` gives ``/Date(ms)/`` values (the OData v2 ``{"d": {"results": [...]}}``
    sample); ``date_style="iso"`` gives ISO strings as the OData v3 ``{"value": [...]}`` sample has
    them: ``Received`` with 7 fractional digits and no zone, ``StartDate``/``EndDate`` with ``Z``.
    Both styles have been seen inside ``d.results``, so ``__metadata`` is added for either; pass
    ``metadata=False`` for the JSON-light flavour, whose items have none. ``StartDate``/``EndDate``
    echo the query window and default to the row's receive time. ``Organization`` defaults to the
    tenant's ``*.onmicrosoft.com`` domain found in the row.
    """
    if date_style not in ("msdate", "iso"):
        raise ValueError(f"date_style must be 'msdate' or 'iso', got {date_style!r}")
    received = _parse_graph_time(row["receivedDateTime"])
    start = start_date if start_date is not None else received
    end = end_date if end_date is not None else received
    status = str(row["status"])
    out: dict[str, Any] = {}
    if metadata:
        uri = f"{RWS_BASE}/MessageTrace({index})"
        out["__metadata"] = {"id": uri, "uri": uri, "type": "TenantReporting.MessageTrace"}
    out.update(
        {
            "Organization": organization if organization is not None else _organization_of(row),
            "MessageId": row["messageId"],
            "Received": _msdate(received) if date_style == "msdate" else _iso7(received, zulu=False),
            "SenderAddress": row["senderAddress"],
            "RecipientAddress": row["recipientAddress"],
            "Subject": row["subject"],
            "Status": status[:1].upper() + status[1:],
            "ToIP": row["toIP"] or None,
            "FromIP": row["fromIP"] or None,
            "Size": row["size"],
            "MessageTraceId": row["id"],
            "StartDate": _msdate(start) if date_style == "msdate" else _iso7(start, zulu=True),
            "EndDate": _msdate(end) if date_style == "msdate" else _iso7(end, zulu=True),
            "Index": index,
        }
    )
    return out
