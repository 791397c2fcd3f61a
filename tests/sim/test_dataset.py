"""Tests for the simulator's deterministic audit content (m365sim.dataset)."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from m365sim.dataset import (
    CONTENT_TYPES,
    SAMPLES_DIR,
    AuditConfig,
    AuditDataset,
    BlobMeta,
    content_type_for,
)

TENANT = "5b1c3f9e-7a2d-4e8b-9c61-0f2a4d6e8b10"
ANCHOR = datetime(2025, 11, 24, 9, 30, 15, 123000, tzinfo=UTC)
FAR_FUTURE = ANCHOR + timedelta(days=1)
MS = timedelta(milliseconds=1)

CONTENT_ID_RE = re.compile(r"^(\d{23})\$(\d{23})\$([a-z_]+)\$([A-Za-z_]+)\$([a-z]+\d{4,})$")
CREATION_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
UUID4_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
COMMON_FIELDS = ("Id", "RecordType", "CreationTime", "Operation", "OrganizationId", "UserType", "UserKey")


def _parse_creation(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)


@pytest.fixture(scope="module")
def ds() -> AuditDataset:
    return AuditDataset(TENANT, AuditConfig(), seed=42, anchor=ANCHOR)


@pytest.fixture(scope="module")
def bodies(ds: AuditDataset) -> dict[str, list[dict[str, Any]]]:
    return {b.content_id: ds.records(b.content_id) for b in ds.blobs}


@pytest.fixture(scope="module")
def truth(ds: AuditDataset) -> dict[str, Any]:
    return ds.truth()


# ---------------------------------------------------------------------------- samples


def test_samples_travel_with_their_sources_file() -> None:
    sources = (SAMPLES_DIR / "SOURCES.md").read_text(encoding="utf-8")
    audit = sorted(p.name for p in (SAMPLES_DIR / "audit").glob("*.json"))
    traces = sorted(p.name for p in (SAMPLES_DIR / "messagetrace").glob("*.json"))
    assert len(audit) == 26
    assert len(traces) == 8
    for name in [*audit, "rws-sekoia-d-results.json", "rws-sumologic-odata-value.json"]:
        assert f"`{name}`" in sources, name


def test_duplicate_key_sample_is_kept_verbatim() -> None:
    text = (SAMPLES_DIR / "audit" / "96-AipFileDeleted-FileDeleted.json").read_text(encoding="utf-8")
    assert text.count('"UserId"') == 2


# ---------------------------------------------------------------------------- determinism


def test_same_inputs_give_same_layout_bytes_and_ids(ds: AuditDataset) -> None:
    again = AuditDataset(TENANT, AuditConfig(), seed=42, anchor=ANCHOR)
    assert again.blobs == ds.blobs
    for meta in ds.blobs[::5]:
        assert again.body(meta.content_id) == ds.body(meta.content_id)
    assert again.record_ids() == ds.record_ids()
    assert again.truth() == ds.truth()


def test_body_is_identical_after_cache_eviction(ds: AuditDataset) -> None:
    first = ds.blobs[0].content_id
    before = ds.body(first)
    for meta in ds.blobs[1:]:
        ds.body(meta.content_id)
    assert len(ds._cache) <= 64
    assert ds.body(first) == before


@pytest.mark.parametrize(("seed", "tenant"), [(43, TENANT), (42, "0d9e8f7a-6b5c-4d3e-8f21-a0b1c2d3e4f5")])
def test_other_seed_or_tenant_gives_other_content(ds: AuditDataset, seed: int, tenant: str) -> None:
    other = AuditDataset(tenant, AuditConfig(), seed=seed, anchor=ANCHOR)
    assert len(other.record_ids()) == len(ds.record_ids()) == 5000
    assert other.record_ids().isdisjoint(ds.record_ids())
    assert [b.content_id for b in other.blobs] != [b.content_id for b in ds.blobs]


# ---------------------------------------------------------------------------- blob metadata


def test_blob_metadata_shape(ds: AuditDataset) -> None:
    assert ds.blobs == sorted(ds.blobs, key=lambda b: b.content_created)
    assert len({b.content_id for b in ds.blobs}) == len(ds.blobs)
    assert {b.content_type for b in ds.blobs} == set(CONTENT_TYPES)
    for meta in ds.blobs:
        m = CONTENT_ID_RE.match(meta.content_id)
        assert m is not None, meta.content_id
        canonical = meta.content_type.replace(".", "_")
        assert (m[3], m[4]) == (canonical.lower(), canonical)
        assert m[1] == m[2]
        assert m[1].startswith(meta.content_created.strftime("%Y%m%d%H%M%S"))
        assert meta.content_created.tzinfo is not None
        assert meta.content_created.microsecond % 1000 == 0
        assert meta.content_expiration == meta.content_created + timedelta(days=7)
        assert ds.blob(meta.content_id) is meta
    assert ds.blob("nope") is None


def test_contentcreated_spread_and_visibility(ds: AuditDataset) -> None:
    late = [b for b in ds.blobs if b.visible_at > ds.started_at]
    assert len(late) == 1  # max(1, round(58 * 0.02))
    for meta in late:
        assert ANCHOR - timedelta(hours=1) <= meta.content_created <= ANCHOR - timedelta(minutes=5)
        delay = (meta.visible_at - ds.started_at).total_seconds()
        assert 2.0 <= delay <= 20.0
    for meta in ds.blobs:
        if meta in late:
            continue
        assert ANCHOR - timedelta(days=3) <= meta.content_created <= ANCHOR - timedelta(minutes=5)
        assert meta.content_created <= meta.visible_at <= meta.content_created + timedelta(minutes=3)
    span = ds.blobs[-1].content_created - ds.blobs[0].content_created
    assert span > timedelta(days=2.5)


def test_visible_at_is_clamped_to_started_at() -> None:
    started = ANCHOR - timedelta(days=1)
    d = AuditDataset(TENANT, AuditConfig(late_blob_fraction=0), seed=42, anchor=ANCHOR, started_at=started)
    assert all(b.visible_at <= started for b in d.blobs)
    assert any(b.content_created > started for b in d.blobs)


def test_near_expiry_blobs() -> None:
    d = AuditDataset(TENANT, AuditConfig(near_expiry_blobs=3), seed=42, anchor=ANCHOR)
    near = [b for b in d.blobs if b.content_created < ANCHOR - timedelta(days=3)]
    assert len(near) == 3
    for meta in near:
        assert ANCHOR + timedelta(minutes=2) <= meta.content_expiration <= ANCHOR + timedelta(minutes=10)


def test_records_per_blob_range(ds: AuditDataset, truth: dict[str, Any]) -> None:
    dup_positions = Counter(cid for d in truth["duplicates"] for cid in d["contentIds"][1:])
    for meta in ds.blobs:
        assert 1 <= meta.record_count - dup_positions[meta.content_id] <= 200


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="records_per_blob"):
        AuditDataset(TENANT, AuditConfig(records_per_blob=(0, 5)), seed=1, anchor=ANCHOR)
    with pytest.raises(ValueError, match="unknown content types"):
        AuditDataset(TENANT, AuditConfig(content_types=("Audit.Nope",)), seed=1, anchor=ANCHOR)


# ---------------------------------------------------------------------------- listing


def test_window_is_inclusive_start_exclusive_end(ds: AuditDataset) -> None:
    meta = ds.blobs_for("Audit.SharePoint")[3]
    ct, created = meta.content_type, meta.content_created
    assert meta in ds.list_content(ct, created, created + MS, FAR_FUTURE)
    assert meta not in ds.list_content(ct, created - timedelta(hours=1), created, FAR_FUTURE)
    assert meta not in ds.list_content(ct, created + MS, created + timedelta(hours=1), FAR_FUTURE)
    assert ds.list_content(ct, created, created, FAR_FUTURE) == []
    # Naive datetimes are read as UTC.
    naive = created.replace(tzinfo=None)
    assert meta in ds.list_content(ct, naive, naive + MS, FAR_FUTURE.replace(tzinfo=None))


def test_listing_matches_brute_force(ds: AuditDataset) -> None:
    start = ANCHOR - timedelta(days=3)
    nows = [ds.started_at - timedelta(days=1), ds.started_at, ds.started_at + timedelta(seconds=10), FAR_FUTURE]
    for ct in CONTENT_TYPES:
        for hours in (1, 6, 24):
            for step in range(0, 72, 5):
                lo = start + timedelta(hours=step)
                hi = lo + timedelta(hours=hours)
                for now in nows:
                    expected = [
                        b
                        for b in ds.blobs
                        if b.content_type == ct and lo <= b.content_created < hi and b.visible_at <= now
                    ]
                    assert ds.list_content(ct, lo, hi, now) == expected


def test_late_blob_appears_only_after_its_visible_at(ds: AuditDataset) -> None:
    (late,) = [b for b in ds.blobs if b.visible_at > ds.started_at]
    ct = late.content_type
    lo, hi = late.content_created, late.content_created + MS
    assert ds.list_content(ct, lo, hi, ds.started_at) == []
    assert ds.list_content(ct, lo, hi, late.visible_at - MS) == []
    assert ds.list_content(ct, lo, hi, late.visible_at) == [late]


def test_blobs_for_unknown_content_type_is_empty(ds: AuditDataset) -> None:
    assert ds.blobs_for("Audit.Nope") == []
    assert ds.list_content("Audit.Nope", ANCHOR - timedelta(days=1), ANCHOR, FAR_FUTURE) == []


# ---------------------------------------------------------------------------- records


def test_bodies_are_arrays_of_records_with_common_fields(
    ds: AuditDataset, bodies: dict[str, list[dict[str, Any]]]
) -> None:
    for meta in ds.blobs:
        records = bodies[meta.content_id]
        assert isinstance(records, list)
        assert len(records) == meta.record_count
        for rec in records:
            assert isinstance(rec, dict)
            for field in COMMON_FIELDS:
                assert field in rec, (field, rec.get("RecordType"))
            assert UUID4_RE.match(rec["Id"])
            assert CREATION_TIME_RE.match(rec["CreationTime"])
            assert rec["OrganizationId"] == TENANT
            assert content_type_for(rec["RecordType"]) == meta.content_type


def test_creation_time_precedes_content_created(
    ds: AuditDataset, bodies: dict[str, list[dict[str, Any]]], truth: dict[str, Any]
) -> None:
    repeated = {(cid, d["id"]) for d in truth["duplicates"] for cid in d["contentIds"][1:]}
    unordered = 0
    for meta in ds.blobs:
        times = [_parse_creation(r["CreationTime"]) for r in bodies[meta.content_id]]
        for rec, when in zip(bodies[meta.content_id], times, strict=True):
            assert when <= meta.content_created
            if (meta.content_id, rec["Id"]) not in repeated:
                assert when >= meta.content_created - timedelta(minutes=90, seconds=1)
        unordered += times != sorted(times)
    assert unordered > len(ds.blobs) // 2  # records inside a blob are not in time order


def test_records_keep_sample_key_order(ds: AuditDataset, bodies: dict[str, list[dict[str, Any]]]) -> None:
    sample_orders = set()
    for path in (SAMPLES_DIR / "audit").glob("*.json"):
        sample_orders.add(tuple(json.loads(path.read_text(encoding="utf-8"))))
    seen_operations = set()
    for meta in ds.blobs:
        if meta.content_type == "DLP.All":
            continue
        for rec in bodies[meta.content_id]:
            keys = tuple(rec)
            # A large record may get ExtendedProperties appended at the end.
            padded = keys[-1] == "ExtendedProperties" and keys[:-1] in sample_orders
            assert keys in sample_orders or padded, keys
            seen_operations.add((rec["RecordType"], rec["Operation"]))
    assert len(seen_operations) >= 20  # most samples are used


def test_values_vary_between_records(ds: AuditDataset, bodies: dict[str, list[dict[str, Any]]]) -> None:
    users = Counter(r.get("UserId") for recs in bodies.values() for r in recs)
    ips = Counter(r.get("ClientIP") for recs in bodies.values() for r in recs)
    assert sum(1 for u in users if u and u.endswith(ds.domain)) >= 10
    assert sum(1 for ip in ips if ip and (ip.startswith(("203.0.113.", "198.51.100.", "192.0.2.", "2001:db8:")))) >= 6
    # Sanitized or odd sample values survive untouched.
    assert "ClientIP" in ips or " 52.159.112.221" in ips


def test_record_sizes_are_realistic(
    ds: AuditDataset, bodies: dict[str, list[dict[str, Any]]], truth: dict[str, Any]
) -> None:
    large = set(truth["large_record_ids"])
    sizes = [len(orjson.dumps(r)) for recs in bodies.values() for r in recs if r["Id"] not in large]
    assert min(sizes) >= 350
    assert max(sizes) <= 2600
    assert 700 <= sum(sizes) / len(sizes) <= 1500


def test_dlp_records_follow_the_dlp_schema(ds: AuditDataset, bodies: dict[str, list[dict[str, Any]]]) -> None:
    dlp = [r for meta in ds.blobs_for("DLP.All") for r in bodies[meta.content_id]]
    assert dlp
    assert {r["RecordType"] for r in dlp} == {11, 13}
    for rec in dlp:
        assert rec["Operation"] == "DlpRuleMatch"
        assert rec["UserKey"] == "DlpAgent"
        assert isinstance(rec["SensitiveInfoDetectionIsIncluded"], bool)
        assert UUID4_RE.match(rec["IncidentId"])
        (policy,) = rec["PolicyDetails"]
        assert {"PolicyId", "PolicyName", "Rules"} <= set(policy)
        rule = policy["Rules"][0]
        assert {"RuleId", "RuleName", "RuleMode", "Severity", "ConditionsMatched"} <= set(rule)
        info = rule["ConditionsMatched"]["SensitiveInformation"][0]
        assert {"Confidence", "Count", "SensitiveType", "UniqueCount"} <= set(info)
        meta_key = "SharePointMetaData" if rec["RecordType"] == 11 else "ExchangeMetaData"
        assert rec[meta_key]["From"] == rec["UserId"]
    # One incident per record (a duplicated record repeats its incident too).
    assert len({r["IncidentId"] for r in dlp}) == len({r["Id"] for r in dlp})


# ---------------------------------------------------------------------------- ground truth


def test_record_ids_match_bodies_exactly(
    ds: AuditDataset, bodies: dict[str, list[dict[str, Any]]], truth: dict[str, Any]
) -> None:
    occurrences: dict[str, list[str]] = {}
    for meta in ds.blobs:
        ids = [r["Id"] for r in bodies[meta.content_id]]
        assert ids == ds.blob_record_ids(meta.content_id)
        for rid in ids:
            occurrences.setdefault(rid, []).append(meta.content_id)
    assert set(occurrences) == ds.record_ids()
    assert len(ds.record_ids()) == 5000
    promised = {d["id"]: d["contentIds"] for d in truth["duplicates"]}
    for rid, cids in occurrences.items():
        assert cids == promised.get(rid, cids[:1]), rid
    for ct in CONTENT_TYPES:
        expected = {r["Id"] for m in ds.blobs_for(ct) for r in bodies[m.content_id]}
        assert ds.record_ids(ct) == expected
        assert truth["content_types"][ct]["record_ids"] == sorted(expected)


def test_duplicates_repeat_the_same_record_in_a_later_blob(
    ds: AuditDataset, bodies: dict[str, list[dict[str, Any]]], truth: dict[str, Any]
) -> None:
    dups = truth["duplicates"]
    assert 40 <= len(dups) <= 60  # 1 % of 5000, rounded per content type
    for dup in dups:
        first, second = (ds.blob(cid) for cid in dup["contentIds"])
        assert isinstance(first, BlobMeta) and isinstance(second, BlobMeta)
        assert first.content_type == second.content_type
        assert second.content_created > first.content_created
        (a,) = [r for r in bodies[first.content_id] if r["Id"] == dup["id"]]
        (b,) = [r for r in bodies[second.content_id] if r["Id"] == dup["id"]]
        assert orjson.dumps(a) == orjson.dumps(b)


def test_truth_blob_entries(ds: AuditDataset, truth: dict[str, Any]) -> None:
    entries = [e for ct in truth["content_types"].values() for e in ct["blobs"]]
    assert len(entries) == len(ds.blobs)
    for entry in entries:
        meta = ds.blob(entry["contentId"])
        assert meta is not None
        assert entry["recordIds"] == ds.blob_record_ids(meta.content_id)
        assert entry["contentCreated"].endswith("Z") and len(entry["contentCreated"]) == 24
    json.dumps(truth)  # JSON-able


def test_large_record_is_over_one_megabyte(ds: AuditDataset, truth: dict[str, Any]) -> None:
    (large_id,) = truth["large_record_ids"]
    (meta,) = [m for m in ds.blobs if large_id in ds.blob_record_ids(m.content_id)]
    (rec,) = [r for r in ds.records(meta.content_id) if r["Id"] == large_id]
    size = len(orjson.dumps(rec))
    assert size > 1_048_576
    assert abs(size - 1_500_000) < 100
    assert rec["ExtendedProperties"][-1]["Name"] == "Padding"


def test_no_large_records_when_disabled() -> None:
    d = AuditDataset(TENANT, AuditConfig(records=800, large_records=0), seed=3, anchor=ANCHOR)
    assert d.truth()["large_record_ids"] == []
    assert max(len(d.body(m.content_id)) for m in d.blobs) < 200 * 2600


# ---------------------------------------------------------------------------- scenarios


def test_add_blob_injects_records() -> None:
    d = AuditDataset(TENANT, AuditConfig(records=300), seed=5, anchor=ANCHOR)
    existing = sorted(d.record_ids("Audit.Exchange"))[0]
    records = [
        {"Id": "11111111-1111-4111-8111-111111111111", "CreationTime": "2025-11-24T09:00:00", "RecordType": 2},
        {"Id": existing, "CreationTime": "2025-11-24T08:00:00", "RecordType": 2},
    ]
    created = ANCHOR - timedelta(minutes=2)
    visible = ANCHOR + timedelta(seconds=30)
    meta = d.add_blob("Audit.Exchange", records, created, visible_at=visible)
    records[0]["Id"] = "changed-after-injection"
    assert meta.record_count == 2
    assert d.blob(meta.content_id) == meta
    assert orjson.loads(d.body(meta.content_id))[0]["Id"] == "11111111-1111-4111-8111-111111111111"
    assert "11111111-1111-4111-8111-111111111111" in d.record_ids("Audit.Exchange")
    assert len(d.record_ids()) == 301
    window = (created - timedelta(minutes=1), created + timedelta(minutes=1))
    assert meta not in d.list_content("Audit.Exchange", *window, now=ANCHOR)
    assert meta in d.list_content("Audit.Exchange", *window, now=visible)
    assert d.blobs[-1] == meta
    dup = next(x for x in d.truth()["duplicates"] if x["id"] == existing)
    assert dup["contentIds"][-1] == meta.content_id


def test_add_blob_requires_ids() -> None:
    d = AuditDataset(TENANT, AuditConfig(records=10), seed=5, anchor=ANCHOR)
    with pytest.raises(ValueError, match="Id"):
        d.add_blob("Audit.General", [{"Operation": "x"}], ANCHOR)


# ---------------------------------------------------------------------------- scale


def test_record_ids_for_one_million_records() -> None:
    t0 = time.perf_counter()
    d = AuditDataset(TENANT, AuditConfig(records=1_000_000), seed=9, anchor=ANCHOR)
    t1 = time.perf_counter()
    ids = d.record_ids()
    t2 = time.perf_counter()
    print(f"\n1M records: layout {t1 - t0:.2f}s, record_ids {t2 - t1:.2f}s, {len(d.blobs)} blobs")
    assert len(ids) == 1_000_000
    assert sum(len(d.record_ids(ct)) for ct in CONTENT_TYPES) == 1_000_000
    meta = d.blobs[len(d.blobs) // 2]
    assert {r["Id"] for r in d.records(meta.content_id)} <= ids
    t3 = time.perf_counter()
    full = [m for m in d.blobs if m.record_count == 200][:50]
    for m in full:
        d._build_body(m.index)
    print(f"body build: {(time.perf_counter() - t3) / len(full) * 1000:.2f} ms per 200-record blob")
