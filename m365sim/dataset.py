"""Deterministic audit content (blobs and records) for one simulated tenant.

The simulator must serve up to about a million audit records without keeping them in memory, and
tests must know exactly which records exist. So the layout of the blobs (content type, time, size,
which records repeat) is computed once from a seed, and each blob body is rebuilt on demand from a
per-blob key: the same (seed, tenant, config, anchor) always gives the same bytes.

Records are copies of the public samples in ``m365sim/samples/audit`` (see ``SOURCES.md`` there)
with a new ``Id``, ``CreationTime`` and ``OrganizationId``. DLP records are synthetic: no sample
with a redistributable licence exists, so they are built in the shape of Microsoft's DLP schema.
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import json
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import orjson

CONTENT_TYPES = (
    "Audit.AzureActiveDirectory",
    "Audit.Exchange",
    "Audit.SharePoint",
    "Audit.General",
    "DLP.All",
)

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

# RecordType -> content type; every other RecordType belongs to Audit.General.
_CONTENT_TYPE_BY_RECORD_TYPE: dict[int, str] = {
    8: "Audit.AzureActiveDirectory",
    9: "Audit.AzureActiveDirectory",
    15: "Audit.AzureActiveDirectory",
    2: "Audit.Exchange",
    28: "Audit.Exchange",
    50: "Audit.Exchange",
    4: "Audit.SharePoint",
    6: "Audit.SharePoint",
    14: "Audit.SharePoint",
    11: "DLP.All",
    13: "DLP.All",
}

# Share of the tenant's records per content type (normalised over the configured types).
_CONTENT_TYPE_WEIGHTS: dict[str, float] = {
    "Audit.AzureActiveDirectory": 0.30,
    "Audit.Exchange": 0.25,
    "Audit.SharePoint": 0.25,
    "Audit.General": 0.15,
    "DLP.All": 0.05,
}

RETENTION = timedelta(days=7)
_MAX_EVENT_LAG_SECONDS = 90 * 60  # CreationTime is 0-90 minutes before the blob's contentCreated
_BYTES_PER_RECORD = 48  # 16 for the Id, 32 for the record's other random choices
_BODY_CACHE_SIZE = 64

_USER_NAMES = (
    "adele.vance", "alex.wilber", "diego.siciliani", "grady.archie", "isaiah.langer", "johanna.lorenz",
    "lee.gu", "lidia.holloway", "megan.bowen", "miriam.graham", "nestor.wilke", "patti.fernandez",
)  # fmt: skip
# Documentation address ranges (RFC 5737 / RFC 3849): realistic shape, never a real host.
_CLIENT_IPS = (
    "203.0.113.17", "198.51.100.42", "192.0.2.101", "203.0.113.200",
    "198.51.100.7", "2001:db8:4f2a::1c", "2001:db8:85a3::8a2e:370:7334", "192.0.2.55",
)  # fmt: skip
_REGIONS = ("emea", "nam", "apac")
_HEX_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def content_type_for(record_type: int) -> str:
    """Content type Microsoft files a record of this RecordType under."""
    return _CONTENT_TYPE_BY_RECORD_TYPE.get(record_type, "Audit.General")


def tenant_domain(tenant_id: str) -> str:
    """Initial ``*.onmicrosoft.com`` domain of the simulated tenant (stable per tenant id)."""
    return f"sim{tenant_id.replace('-', '')[:8].lower()}.onmicrosoft.com"


def format_listing_time(dt: datetime) -> str:
    """Listing/truth timestamp form: ``2015-05-23T17:35:00.000Z`` (UTC, milliseconds)."""
    dt = as_utc(dt)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def as_utc(dt: datetime) -> datetime:
    """Treat naive datetimes as UTC so callers can pass either form."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _stable_bytes(*parts: object) -> bytes:
    """Hash independent of PYTHONHASHSEED, so runs and processes agree."""
    return hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=16).digest()


def _stable_int(*parts: object) -> int:
    return int.from_bytes(_stable_bytes(*parts), "big")


def _to_ms(dt: datetime) -> datetime:
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def _uuid_at(hexstream: str, offset: int) -> str:
    """Format 16 random bytes (32 hex chars at ``offset``) as a version-4 UUID string."""
    h = hexstream[offset : offset + 32]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_HEX_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def _ids_from_stream(stream: bytes, count: int) -> list[str]:
    """Record Ids of a blob's unique records, straight from its random stream (no record built)."""
    hexstream = stream.hex()
    step = _BYTES_PER_RECORD * 2
    return [_uuid_at(hexstream, i * step) for i in range(count)]


def _creation_time(epoch_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch_seconds))


@dataclass(frozen=True)
class AuditConfig:
    """Shape of a tenant's audit content; every field changes the generated data."""

    records: int = 5000
    days: float = 3.0
    content_types: tuple[str, ...] = CONTENT_TYPES
    records_per_blob: tuple[int, int] = (1, 200)
    late_blob_fraction: float = 0.02
    late_delay_seconds: tuple[float, float] = (2.0, 20.0)
    duplicate_fraction: float = 0.01
    large_records: int = 1
    large_record_bytes: int = 1_500_000
    near_expiry_blobs: int = 0


@dataclass(frozen=True)
class BlobMeta:
    """One content blob as the listing shows it, plus when it becomes listable."""

    content_id: str
    content_type: str
    content_created: datetime
    content_expiration: datetime
    visible_at: datetime
    record_count: int
    index: int


@dataclass(frozen=True)
class _Template:
    """A sample record prepared once, so building a record is a shallow copy plus a few keys."""

    data: dict[str, Any]
    vary_user: bool
    ip_keys: tuple[str, ...]
    dlp_meta_key: str | None  # "SharePointMetaData" / "ExchangeMetaData" for DLP records


@dataclass(frozen=True)
class _Injected:
    body: bytes
    ids: tuple[str, ...]


@dataclass(frozen=True)
class _TypeIndex:
    """Per content type: blobs sorted by contentCreated and the keys bisect needs."""

    blobs: list[BlobMeta]
    created: list[datetime]
    max_visible: datetime | None


@cache
def _load_samples() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, record) for every audit sample, in file-name order."""
    out = []
    for path in sorted((SAMPLES_DIR / "audit").glob("*.json")):
        # json (not orjson) because one sample repeats a key: json keeps the last value, like most parsers.
        out.append((path.name, json.loads(path.read_text(encoding="utf-8"))))
    return tuple(out)


def _is_ip(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _guid(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return _uuid_at(h, 0)


def _dlp_samples(tenant_id: str) -> list[dict[str, Any]]:
    """Synthetic DLP records (RecordType 11 and 13) in the shape of Microsoft's DLP schema.

    No DLP record with a redistributable licence was found, so these two are built here; their
    structure follows the schema page (PolicyDetails -> Rules -> ConditionsMatched ->
    SensitiveInformation, SharePointMetaData / ExchangeMetaData) and the sensitive type ids are
    Microsoft's built-in ones (Credit Card Number, U.S. Social Security Number).
    """
    domain = tenant_domain(tenant_id)
    site = domain.split(".", 1)[0]
    rng = random.Random(_stable_int("dlp-templates", tenant_id))
    owner = f"megan.bowen@{domain}"
    msg_id = f"<{rng.getrandbits(64):016X}@CY5PR05MB9143.namprd05.prod.outlook.com>"
    site_url = f"https://{site}.sharepoint.com/sites/Finance"
    file_url = f"{site_url}/Shared Documents/Payroll/Q3 card payments.xlsx"

    def levels(count: int, matched: int) -> list[dict[str, Any]]:
        return [{"Confidence": c, "Count": count, "IsMatch": c == matched} for c in (65, 75, 85)]

    sharepoint = {
        "CreationTime": "",
        "Id": "",
        "Operation": "DlpRuleMatch",
        "OrganizationId": tenant_id,
        "RecordType": 11,
        "UserKey": "DlpAgent",
        "UserType": 4,
        "Version": 1,
        "Workload": "SharePoint",
        "ObjectId": file_url,
        "UserId": owner,
        "IncidentId": "",
        "PolicyDetails": [
            {
                "PolicyId": _guid(rng),
                "PolicyName": "U.S. Financial Data",
                "Rules": [
                    {
                        "ActionParameters": [],
                        "Actions": ["NotifyUser", "GenerateAlert"],
                        "ConditionsMatched": {
                            "ConditionMatchedInNewScheme": True,
                            "SensitiveInformation": [
                                {
                                    "ClassifierType": "Content",
                                    "Confidence": 85,
                                    "Count": 4,
                                    "Location": "",
                                    "SensitiveInformationDetailedClassificationAttributes": levels(4, 85),
                                    "SensitiveInformationTypeName": "Credit Card Number",
                                    "SensitiveType": "50842eb7-edc8-4019-85dd-5a5c1f2bb085",
                                    "UniqueCount": 4,
                                }
                            ],
                        },
                        "ManagementRuleId": _guid(rng),
                        "RuleId": _guid(rng),
                        "RuleMode": "Enable",
                        "RuleName": "Low volume of content detected U.S. Financial",
                        "Severity": "Low",
                    }
                ],
            }
        ],
        "SensitiveInfoDetectionIsIncluded": False,
        "SharePointMetaData": {
            "From": owner,
            "itemCreationTime": "",
            "SiteCollectionGuid": _guid(rng),
            "SiteCollectionUrl": site_url,
            "FileName": "Q3 card payments.xlsx",
            "FileOwner": owner,
            "FilePathUrl": file_url,
            "DocumentLastModifier": owner,
            "DocumentSharer": owner,
            "UniqueId": _guid(rng),
            "LastModifiedTime": "",
            "IsViewableByExternalUsers": False,
        },
    }
    exchange = {
        "CreationTime": "",
        "Id": "",
        "Operation": "DlpRuleMatch",
        "OrganizationId": tenant_id,
        "RecordType": 13,
        "UserKey": "DlpAgent",
        "UserType": 4,
        "Version": 1,
        "Workload": "Exchange",
        "ObjectId": msg_id,
        "UserId": owner,
        "IncidentId": "",
        "PolicyDetails": [
            {
                "PolicyId": _guid(rng),
                "PolicyName": "U.S. Personally Identifiable Information (PII) Data",
                "Rules": [
                    {
                        "ActionParameters": [],
                        "Actions": ["NotifyUser", "GenerateIncidentReport"],
                        "ConditionsMatched": {
                            "ConditionMatchedInNewScheme": True,
                            "SensitiveInformation": [
                                {
                                    "ClassifierType": "Content",
                                    "Confidence": 75,
                                    "Count": 1,
                                    "Location": "Message Body",
                                    "SensitiveInformationDetailedClassificationAttributes": levels(1, 75),
                                    "SensitiveInformationTypeName": "U.S. Social Security Number (SSN)",
                                    "SensitiveType": "a44669fe-0d48-453d-a9b1-2cc83f2cba77",
                                    "UniqueCount": 1,
                                }
                            ],
                        },
                        "ManagementRuleId": _guid(rng),
                        "RuleId": _guid(rng),
                        "RuleMode": "Enable",
                        "RuleName": "Low volume of content detected U.S. PII",
                        "Severity": "Medium",
                    }
                ],
            }
        ],
        "SensitiveInfoDetectionIsIncluded": False,
        "ExchangeMetaData": {
            "BCC": [],
            "CC": [f"lee.gu@{domain}"],
            "FileSize": 17579,
            "From": owner,
            "MessageID": msg_id,
            "RecipientCount": 2,
            "Sent": "",
            "Subject": "Employee onboarding form",
            "To": ["hr-onboarding@fabrikam.example"],
            "UniqueID": _guid(rng),
        },
    }
    return [sharepoint, exchange]


def _templates(tenant_id: str, content_type: str) -> list[_Template]:
    """Prepared templates of one content type, sample key order preserved."""
    if content_type == "DLP.All":
        records = _dlp_samples(tenant_id)
    else:
        records = [rec for _name, rec in _load_samples() if content_type_for(int(rec["RecordType"])) == content_type]
    out = []
    for rec in records:
        data = dict(rec)
        data["OrganizationId"] = tenant_id
        user = data.get("UserId")
        vary_user = isinstance(user, str) and "@" in user
        # Odd sample values ("", "ClientIP", " 52.159.112.221", "ffff:10.11.0.229") are kept on purpose.
        ip_keys = tuple(k for k in ("ClientIP", "ClientIPAddress") if _is_ip(data.get(k)))
        meta_key = next((k for k in ("SharePointMetaData", "ExchangeMetaData") if k in data), None)
        out.append(_Template(data=data, vary_user=vary_user, ip_keys=ip_keys, dlp_meta_key=meta_key))
    if not out:
        raise ValueError(f"no sample records for content type {content_type!r}")
    return out


def _split(total: int, weights: Sequence[float]) -> list[int]:
    """Largest-remainder split of ``total`` by ``weights`` (exact sum, deterministic)."""
    wsum = sum(weights)
    raw = [total * w / wsum for w in weights]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


class AuditDataset:
    """All audit blobs of one tenant: listing metadata in memory, bodies rebuilt on demand."""

    def __init__(
        self,
        tenant_id: str,
        config: AuditConfig,
        seed: int,
        anchor: datetime,
        started_at: datetime | None = None,
    ) -> None:
        self._validate(config)
        self.tenant_id = tenant_id
        self.config = config
        self.seed = seed
        self.anchor = _to_ms(as_utc(anchor))
        self.started_at = as_utc(started_at) if started_at is not None else self.anchor
        self.domain = tenant_domain(tenant_id)
        self._users = tuple(f"{name}@{self.domain}" for name in _USER_NAMES)
        self._region = _REGIONS[_stable_int("region", tenant_id) % len(_REGIONS)]
        self._templates = {ct: _templates(tenant_id, ct) for ct in config.content_types}
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, bytes] = OrderedDict()

        # Per blob, indexed by BlobMeta.index.
        self._meta: list[BlobMeta] = []
        self._unique: list[int] = []
        self._created_s: list[int] = []
        self._dups: dict[int, dict[int, tuple[int, int]]] = {}  # index -> {position: (src index, src k)}
        self._large: dict[int, frozenset[int]] = {}  # index -> unique positions k that are large
        self._injected: dict[int, _Injected] = {}
        self._by_id: dict[str, BlobMeta] = {}
        self._by_ct: dict[str, _TypeIndex] = {}
        self.blobs: list[BlobMeta] = []
        self._generate()

    # ------------------------------------------------------------------ generation

    @staticmethod
    def _validate(config: AuditConfig) -> None:
        lo, hi = config.records_per_blob
        if not 1 <= lo <= hi:
            raise ValueError(f"records_per_blob must satisfy 1 <= min <= max, got {config.records_per_blob}")
        if config.records < 0 or config.large_records < 0 or config.near_expiry_blobs < 0:
            raise ValueError("records, large_records and near_expiry_blobs must be >= 0")
        unknown = set(config.content_types) - set(CONTENT_TYPES)
        if unknown:
            raise ValueError(f"unknown content types: {sorted(unknown)}")
        if config.days <= 0:
            raise ValueError("days must be > 0")
        if not 0 <= config.late_blob_fraction <= 1 or not 0 <= config.duplicate_fraction < 1:
            raise ValueError("late_blob_fraction must be in [0, 1] and duplicate_fraction in [0, 1)")

    def _generate(self) -> None:
        cfg = self.config
        rng = random.Random(_stable_int("audit-layout", self.seed, self.tenant_id))
        cts = list(cfg.content_types)
        per_ct = _split(cfg.records, [_CONTENT_TYPE_WEIGHTS[ct] for ct in cts]) if cts else []

        # 1. Blob sizes per content type.
        slots: list[tuple[str, int]] = []  # (content type, unique records)
        for ct, total in zip(cts, per_ct, strict=True):
            lo, hi = cfg.records_per_blob
            remaining = total
            while remaining > 0:
                n = min(rng.randint(lo, hi), remaining)
                slots.append((ct, n))
                remaining -= n

        # 2. Which blobs are near-expiry or late (disjoint, exact counts).
        n_slots = len(slots)
        n_near = min(cfg.near_expiry_blobs, n_slots)
        n_late = round(n_slots * cfg.late_blob_fraction)
        if cfg.late_blob_fraction > 0 and n_slots - n_near > 0:
            n_late = max(1, n_late)  # a small tenant still gets one late blob to exercise the path
        n_late = min(n_late, n_slots - n_near)
        picked = rng.sample(range(n_slots), n_near + n_late)
        near = set(picked[:n_near])
        late = set(picked[n_near:])

        # 3. contentCreated: normal blobs spread over [anchor - days, anchor - 5 min] with random gaps.
        span_start = self.anchor - timedelta(days=cfg.days)
        span_end = self.anchor - timedelta(minutes=5)
        span_ms = max(0, int((span_end - span_start).total_seconds() * 1000))
        created: list[datetime] = [self.anchor] * n_slots
        for ct in cts:
            normal = [i for i in range(n_slots) if slots[i][0] == ct and i not in near and i not in late]
            gaps = [0.5 + rng.random() for _ in range(len(normal) + 1)]
            total_gap = sum(gaps)
            acc = 0.0
            for i, gap in zip(normal, gaps, strict=False):
                acc += gap
                created[i] = span_start + timedelta(milliseconds=int(span_ms * acc / total_gap))
        for i in sorted(late):
            created[i] = self.anchor - timedelta(milliseconds=rng.randint(5 * 60_000, 60 * 60_000))
        expiry_base = self.anchor - RETENTION
        for i in sorted(near):
            created[i] = expiry_base + timedelta(milliseconds=rng.randint(2 * 60_000, 10 * 60_000))

        # 4. Global order = contentCreated order; BlobMeta.index is the position in it.
        ct_rank = {ct: r for r, ct in enumerate(CONTENT_TYPES)}
        order = sorted(range(n_slots), key=lambda i: (created[i], ct_rank[slots[i][0]], i))
        is_late = [False] * n_slots
        for new, old in enumerate(order):
            is_late[new] = old in late
        slots = [slots[i] for i in order]
        created = [created[i] for i in order]

        # 5. Large records: unique positions spread over the tenant, never in near-expiry blobs.
        self._unique = [n for _ct, n in slots]
        near_new = {new for new, old in enumerate(order) if old in near}
        cumulative = list(_accumulate(self._unique))
        total_unique = cumulative[-1] if cumulative else 0
        large: dict[int, set[int]] = {}
        eligible = total_unique - sum(self._unique[i] for i in near_new)
        for _ in range(min(cfg.large_records, eligible)):
            while True:
                flat = rng.randrange(total_unique)
                idx = bisect.bisect_right(cumulative, flat)
                k = flat - (cumulative[idx - 1] if idx else 0)
                if idx not in near_new and k not in large.get(idx, set()):
                    large.setdefault(idx, set()).add(k)
                    break
        self._large = {i: frozenset(ks) for i, ks in large.items()}

        # 6. Duplicates: a unique record repeated in a strictly later blob of the same content type.
        pending: dict[int, list[tuple[int, int]]] = {}
        n_large = sum(len(ks) for ks in self._large.values())
        for ct in cts:
            members = [i for i in range(n_slots) if slots[i][0] == ct]
            if len(members) < 2:
                continue
            times = [created[i] for i in members]
            counts = [self._unique[i] for i in members]
            cum = list(_accumulate(counts))
            u_ct = cum[-1]
            wanted = round(u_ct * cfg.duplicate_fraction)
            # Sources come from blobs that have a strictly later blob.
            last_time = times[-1]
            n_src_blobs = bisect.bisect_left(times, last_time)
            limit = cum[n_src_blobs - 1] if n_src_blobs else 0
            chosen = 0
            for flat in rng.sample(range(limit), min(limit, wanted + n_large)):
                if chosen == wanted:
                    break
                pos = bisect.bisect_right(cum, flat)
                k = flat - (cum[pos - 1] if pos else 0)
                src = members[pos]
                if k in self._large.get(src, ()):
                    continue
                first_later = bisect.bisect_right(times, times[pos])
                target = members[rng.randrange(first_later, len(members))]
                pending.setdefault(target, []).append((src, k))
                chosen += 1
        for target in sorted(pending):
            sources = pending[target]
            total = self._unique[target] + len(sources)
            positions = sorted(rng.sample(range(total), len(sources)))
            self._dups[target] = dict(zip(positions, sources, strict=True))

        # 7. visible_at, content ids, metadata.
        started = self.started_at
        lo_d, hi_d = cfg.late_delay_seconds
        for idx, ((ct, n_unique), when) in enumerate(zip(slots, created, strict=True)):
            if is_late[idx]:
                visible = started + timedelta(milliseconds=int(rng.uniform(lo_d, hi_d) * 1000))
            else:
                visible = min(when + timedelta(milliseconds=rng.randint(0, 180_000)), started)
            count = n_unique + len(self._dups.get(idx, ()))
            self._append_meta(ct, when, visible, count)
        self._rebuild_indexes()

    def _append_meta(self, content_type: str, created: datetime, visible: datetime, count: int) -> BlobMeta:
        idx = len(self._meta)
        salt = _stable_int("content-id", self.seed, self.tenant_id, idx) % 1_000_000
        stamp = created.strftime("%Y%m%d%H%M%S") + f"{created.microsecond // 1000:03d}{salt:06d}"
        canonical = content_type.replace(".", "_")
        content_id = f"{stamp}${stamp}${canonical.lower()}${canonical}${self._region}{idx:04d}"
        meta = BlobMeta(
            content_id=content_id,
            content_type=content_type,
            content_created=created,
            content_expiration=created + RETENTION,
            visible_at=visible,
            record_count=count,
            index=idx,
        )
        self._meta.append(meta)
        self._created_s.append(int(created.timestamp()))
        self._by_id[content_id] = meta
        return meta

    def _rebuild_indexes(self) -> None:
        """Recompute sorted views; new objects are swapped in whole, so readers never see half a list."""
        ordered = sorted(self._meta, key=lambda b: (b.content_created, b.index))
        by_ct: dict[str, _TypeIndex] = {}
        for ct in {b.content_type for b in ordered}:
            blobs = [b for b in ordered if b.content_type == ct]
            by_ct[ct] = _TypeIndex(
                blobs=blobs,
                created=[b.content_created for b in blobs],
                max_visible=max((b.visible_at for b in blobs), default=None),
            )
        self._by_ct = by_ct
        self.blobs = ordered

    # ------------------------------------------------------------------ listing

    def blobs_for(self, content_type: str) -> list[BlobMeta]:
        """Blobs of one content type sorted by contentCreated (shared list: do not mutate)."""
        entry = self._by_ct.get(content_type)
        return entry.blobs if entry is not None else []

    def list_content(self, content_type: str, start: datetime, end: datetime, now: datetime) -> list[BlobMeta]:
        """Blobs with ``start <= contentCreated < end`` that are listable at wall-clock ``now``."""
        entry = self._by_ct.get(content_type)
        if entry is None:
            return []
        lo = bisect.bisect_left(entry.created, as_utc(start))
        hi = bisect.bisect_left(entry.created, as_utc(end))
        if lo >= hi:
            return []
        now = as_utc(now)
        if entry.max_visible is not None and now >= entry.max_visible:
            return entry.blobs[lo:hi]
        return [b for b in entry.blobs[lo:hi] if b.visible_at <= now]

    def blob(self, content_id: str) -> BlobMeta | None:
        return self._by_id.get(content_id)

    # ------------------------------------------------------------------ records

    def _key(self, idx: int) -> bytes:
        return _stable_bytes("audit-blob", self.seed, self.tenant_id, idx)

    def _stream(self, idx: int, count: int) -> bytes:
        """Random bytes of a blob's unique records; a prefix of the same stream for fewer records."""
        return hashlib.shake_128(self._key(idx)).digest(_BYTES_PER_RECORD * count)

    def _unique_ids(self, idx: int) -> list[str]:
        injected = self._injected.get(idx)
        if injected is not None:
            return list(injected.ids)
        n = self._unique[idx]
        return _ids_from_stream(self._stream(idx, n), n)

    def blob_record_ids(self, content_id: str) -> list[str]:
        """Record Ids of one blob in body order (duplicates included), without building the body."""
        meta = self._require(content_id)
        idx = meta.index
        uniques = self._unique_ids(idx)
        dups = self._dups.get(idx)
        if not dups:
            return uniques
        out: list[str] = []
        it = iter(uniques)
        for pos in range(meta.record_count):
            src = dups.get(pos)
            if src is None:
                out.append(next(it))
            else:
                src_idx, k = src
                stream = self._stream(src_idx, k + 1)
                out.append(_uuid_at(stream.hex(), k * _BYTES_PER_RECORD * 2))
        return out

    def _record(self, idx: int, k: int, stream: bytes, hexstream: str) -> dict[str, Any]:
        """Unique record ``k`` of generated blob ``idx``; depends only on (idx, k), so repeats match."""
        off = k * _BYTES_PER_RECORD
        b = stream[off : off + _BYTES_PER_RECORD]
        meta = self._meta[idx]
        templates = self._templates[meta.content_type]
        tpl = templates[int.from_bytes(b[16:18], "little") % len(templates)]
        lag = int.from_bytes(b[18:22], "little") % (_MAX_EVENT_LAG_SECONDS + 1)
        when = _creation_time(self._created_s[idx] - lag)
        rec = dict(tpl.data)
        rec["Id"] = _uuid_at(hexstream, off * 2)
        rec["CreationTime"] = when
        user = self._users[b[22] % len(self._users)]
        if tpl.vary_user:
            rec["UserId"] = user
        for key in tpl.ip_keys:
            rec[key] = _CLIENT_IPS[b[23] % len(_CLIENT_IPS)]
        if tpl.dlp_meta_key is not None:
            rec["IncidentId"] = _uuid_at(hexstream, (off + 32) * 2)
            meta_doc = dict(rec[tpl.dlp_meta_key])
            meta_doc["From"] = user
            if tpl.dlp_meta_key == "SharePointMetaData":
                meta_doc["itemCreationTime"] = when
                meta_doc["LastModifiedTime"] = when
            else:
                meta_doc["Sent"] = when
            rec[tpl.dlp_meta_key] = meta_doc
        if k in self._large.get(idx, ()):
            self._pad(rec)
        return rec

    def _pad(self, rec: dict[str, Any]) -> None:
        """Grow a record to about ``large_record_bytes`` serialised, via an ExtendedProperties entry."""
        props = list(rec.get("ExtendedProperties") or [])
        entry = {"Name": "Padding", "Value": ""}
        props.append(entry)
        rec["ExtendedProperties"] = props
        missing = self.config.large_record_bytes - len(orjson.dumps(rec))
        entry["Value"] = "x" * max(0, missing)

    def _build_body(self, idx: int) -> bytes:
        injected = self._injected.get(idx)
        if injected is not None:
            return injected.body
        n = self._unique[idx]
        stream = self._stream(idx, n)
        hexstream = stream.hex()
        uniques = [self._record(idx, k, stream, hexstream) for k in range(n)]
        dups = self._dups.get(idx)
        if not dups:
            return orjson.dumps(uniques)
        records: list[dict[str, Any]] = []
        it = iter(uniques)
        for pos in range(self._meta[idx].record_count):
            src = dups.get(pos)
            if src is None:
                records.append(next(it))
            else:
                src_idx, k = src
                src_stream = self._stream(src_idx, k + 1)
                records.append(self._record(src_idx, k, src_stream, src_stream.hex()))
        return orjson.dumps(records)

    def _require(self, content_id: str) -> BlobMeta:
        meta = self._by_id.get(content_id)
        if meta is None:
            raise KeyError(content_id)
        return meta

    def body(self, content_id: str) -> bytes:
        """The blob as served: a compact JSON array of records (same bytes on every call).

        Raises KeyError for an unknown content id. The last few bodies are cached, never all of them.
        """
        idx = self._require(content_id).index
        with self._lock:
            cached = self._cache.get(idx)
            if cached is not None:
                self._cache.move_to_end(idx)
                return cached
        data = self._build_body(idx)
        with self._lock:
            self._cache[idx] = data
            self._cache.move_to_end(idx)
            while len(self._cache) > _BODY_CACHE_SIZE:
                self._cache.popitem(last=False)
        return data

    def records(self, content_id: str) -> list[dict[str, Any]]:
        """Parsed body, for tests."""
        parsed: list[dict[str, Any]] = orjson.loads(self.body(content_id))
        return parsed

    def record_ids(self, content_type: str | None = None) -> set[str]:
        """Ground truth: every unique record Id (of one content type, or all), no body built."""
        blobs = self.blobs if content_type is None else self.blobs_for(content_type)
        out: set[str] = set()
        for meta in blobs:
            out.update(self._unique_ids(meta.index))
        return out

    # ------------------------------------------------------------------ scenarios

    def add_blob(
        self,
        content_type: str,
        records: list[dict[str, Any]],
        content_created: datetime,
        visible_at: datetime | None = None,
    ) -> BlobMeta:
        """Inject a blob with exactly these records (for scenario tests); listable from ``visible_at``.

        ``visible_at`` defaults to ``content_created``. Records are serialised now, so later changes
        to the caller's dicts do not leak into the body.
        """
        if content_type not in CONTENT_TYPES:
            raise ValueError(f"unknown content type {content_type!r}")
        ids = []
        for rec in records:
            rid = rec.get("Id")
            if not isinstance(rid, str):
                raise ValueError("every injected record needs a string 'Id'")
            ids.append(rid)
        created = _to_ms(as_utc(content_created))
        visible = as_utc(visible_at) if visible_at is not None else created
        with self._lock:
            meta = self._append_meta(content_type, created, visible, len(records))
            self._unique.append(len(records))
            self._injected[meta.index] = _Injected(body=orjson.dumps(records), ids=tuple(ids))
            self._rebuild_indexes()
        return meta

    def truth(self) -> dict[str, Any]:
        """What a perfect collector must end up with, as JSON-able data."""
        content_types: dict[str, Any] = {}
        seen: dict[str, list[str]] = {}
        large_ids: list[str] = []
        for ct in sorted(self._by_ct):
            blobs_out = []
            ct_ids: set[str] = set()
            for meta in self._by_ct[ct].blobs:
                ids = self.blob_record_ids(meta.content_id)
                ct_ids.update(ids)
                for rid in ids:
                    seen.setdefault(rid, []).append(meta.content_id)
                uniques = self._unique_ids(meta.index)
                large_ids.extend(uniques[k] for k in sorted(self._large.get(meta.index, ())))
                blobs_out.append(
                    {
                        "contentId": meta.content_id,
                        "contentCreated": format_listing_time(meta.content_created),
                        "visibleAt": format_listing_time(meta.visible_at),
                        "contentExpiration": format_listing_time(meta.content_expiration),
                        "recordIds": ids,
                    }
                )
            content_types[ct] = {"record_ids": sorted(ct_ids), "blobs": blobs_out}
        duplicates = [{"id": rid, "contentIds": cids} for rid, cids in sorted(seen.items()) if len(cids) > 1]
        return {
            "content_types": content_types,
            "duplicates": duplicates,
            "large_record_ids": sorted(large_ids),
        }


def _accumulate(values: Iterable[int]) -> Iterable[int]:
    total = 0
    for v in values:
        total += v
        yield total
