"""Tests for the simulator's deterministic Exchange message traces (m365sim.tracedata)."""

from __future__ import annotations

import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from m365sim.dataset import SAMPLES_DIR
from m365sim.tracedata import STATUSES, TraceConfig, TraceDataset, rws_row

TENANT = "5b1c3f9e-7a2d-4e8b-9c61-0f2a4d6e8b10"
ANCHOR = datetime(2025, 11, 24, 9, 30, 15, tzinfo=UTC)
EVERYTHING = (ANCHOR - timedelta(days=30), ANCHOR)
SETTLED = ANCHOR + timedelta(minutes=5)  # after every change (delays are at most 30 s)

GRAPH_KEYS = [
    "id",
    "senderAddress",
    "recipientAddress",
    "messageId",
    "receivedDateTime",
    "subject",
    "size",
    "fromIP",
    "toIP",
    "status",
]
GUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MSDATE_RE = re.compile(r"^/Date\((\d+)\)/$")


def _received(row: dict[str, Any]) -> datetime:
    return datetime.strptime(row["receivedDateTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _sample_items(name: str) -> list[dict[str, Any]]:
    doc = json.loads((SAMPLES_DIR / "messagetrace" / name).read_text(encoding="utf-8"))
    items: list[dict[str, Any]] = doc["d"]["results"] if "d" in doc else doc["value"]
    return items


@pytest.fixture(scope="module")
def td() -> TraceDataset:
    return TraceDataset(TENANT, TraceConfig(), seed=42, anchor=ANCHOR)


@pytest.fixture(scope="module")
def rows(td: TraceDataset) -> list[dict[str, Any]]:
    return td.query(*EVERYTHING, now=ANCHOR)


# ---------------------------------------------------------------------------- shape


def test_rows_have_the_graph_shape(td: TraceDataset, rows: list[dict[str, Any]]) -> None:
    sample_keys = list(_sample_items("graph-v1-list-example1.json")[0])
    assert sample_keys == GRAPH_KEYS
    assert len(rows) == td.row_count
    for row in rows:
        assert list(row) == GRAPH_KEYS
        assert GUID_RE.match(row["id"])
        assert re.match(r"^<[^<>@]+@[^<>@]+>$", row["messageId"])
        assert row["status"] in STATUSES
        assert isinstance(row["size"], int) and row["size"] > 0
        assert isinstance(row["toIP"], str) and isinstance(row["fromIP"], str)
        assert ANCHOR - timedelta(days=7) <= _received(row) <= ANCHOR - timedelta(minutes=1)
    inbound = [r for r in rows if not r["senderAddress"].endswith(td.organization)]
    assert inbound and all(r["toIP"] == "" for r in inbound)


def test_one_row_per_recipient_sharing_the_message_id(rows: list[dict[str, Any]]) -> None:
    keys = [(r["id"], r["recipientAddress"]) for r in rows]
    assert len(set(keys)) == len(keys)
    per_message = Counter(r["id"] for r in rows)
    assert set(per_message.values()) == {1, 2, 3}
    assert len(per_message) == 2000
    by_id: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_id.setdefault(r["id"], []).append(r)
    for group in by_id.values():
        shared = {(r["messageId"], r["senderAddress"], r["receivedDateTime"], r["subject"]) for r in group}
        assert len(shared) == 1


def test_rows_are_in_stable_order(rows: list[dict[str, Any]]) -> None:
    keys = [(r["receivedDateTime"], r["id"], r["recipientAddress"]) for r in rows]
    assert keys == sorted(keys)


def test_final_status_mix(td: TraceDataset) -> None:
    final = Counter(r["status"] for r in td.query(*EVERYTHING, now=SETTLED))
    assert final["delivered"] > 0.7 * td.row_count
    for status in ("failed", "quarantined", "filteredAsSpam", "expanded"):
        assert final[status] > 0, status
    assert final["pending"] == final["gettingStatus"] == 0


# ---------------------------------------------------------------------------- determinism


def test_same_inputs_same_rows(td: TraceDataset, rows: list[dict[str, Any]]) -> None:
    again = TraceDataset(TENANT, TraceConfig(), seed=42, anchor=ANCHOR)
    assert again.query(*EVERYTHING, now=ANCHOR) == rows
    assert again.truth() == td.truth()


def test_other_seed_other_rows(rows: list[dict[str, Any]]) -> None:
    other = TraceDataset(TENANT, TraceConfig(), seed=43, anchor=ANCHOR).query(*EVERYTHING, now=ANCHOR)
    assert {r["id"] for r in other}.isdisjoint({r["id"] for r in rows})


# ---------------------------------------------------------------------------- window


def test_window_bounds_are_both_inclusive(td: TraceDataset, rows: list[dict[str, Any]]) -> None:
    row = rows[len(rows) // 2]
    at = _received(row)
    same_second = [r for r in rows if r["receivedDateTime"] == row["receivedDateTime"]]
    assert td.query(at, at, ANCHOR) == same_second
    second = timedelta(seconds=1)
    assert row not in td.query(at + second, at + timedelta(hours=1), ANCHOR)
    assert row not in td.query(at - timedelta(hours=1), at - second, ANCHOR)
    assert row in td.query(at - timedelta(hours=1), at, ANCHOR)


def test_query_matches_brute_force(td: TraceDataset, rows: list[dict[str, Any]]) -> None:
    for hours in (1, 10, 48):
        for step in range(0, 7 * 24, 13):
            lo = ANCHOR - timedelta(days=7) + timedelta(hours=step)
            hi = lo + timedelta(hours=hours)
            assert td.query(lo, hi, ANCHOR) == [r for r in rows if lo <= _received(r) <= hi]


# ---------------------------------------------------------------------------- status timeline


def test_statuses_change_after_start(td: TraceDataset) -> None:
    before = td.query(*EVERYTHING, now=ANCHOR)
    after = td.query(*EVERYTHING, now=SETTLED)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a["status"] != b["status"]]
    assert len(changed) == round(td.row_count * 0.2)
    for a, b in changed:
        assert a["status"] in ("gettingStatus", "pending")
        assert b["status"] not in ("gettingStatus", "pending")
        assert {k: v for k, v in a.items() if k != "status"} == {k: v for k, v in b.items() if k != "status"}
    unchanged = [a for a, b in zip(before, after, strict=True) if a["status"] == b["status"]]
    assert all(r["status"] not in ("gettingStatus", "pending") for r in unchanged)


def test_timeline_truth_matches_status_at(td: TraceDataset) -> None:
    truth = td.truth()["rows"]
    assert len(truth) == td.row_count
    twice = [r for r in truth if len(r["timeline"]) == 3]
    assert twice, "some rows change twice"
    for entry in truth:
        timeline = entry["timeline"]
        assert entry["final"] == timeline[-1][1] == td.status_at(entry["id"], entry["recipientAddress"], SETTLED)
        first = datetime.fromisoformat(timeline[0][0])
        assert first == datetime.fromisoformat(entry["receivedDateTime"])
        for when, status in timeline:
            at = datetime.fromisoformat(when)
            assert td.status_at(entry["id"], entry["recipientAddress"], at) == status
        for (t0, _), (t1, _) in pairwise(timeline):
            assert datetime.fromisoformat(t0) < datetime.fromisoformat(t1)
            change = datetime.fromisoformat(t1) - ANCHOR
            assert timedelta(seconds=2) <= change <= timedelta(seconds=30)
    for entry in twice:
        assert [s for _, s in entry["timeline"]] == ["gettingStatus", "pending", "delivered"]
        mid = datetime.fromisoformat(entry["timeline"][1][0])
        assert td.status_at(entry["id"], entry["recipientAddress"].upper(), mid) == "pending"


def test_status_at_unknown_row_raises(td: TraceDataset) -> None:
    with pytest.raises(KeyError):
        td.status_at("00000000-0000-0000-0000-000000000000", "nobody@example.com", ANCHOR)


def test_no_changes_when_fraction_is_zero() -> None:
    td = TraceDataset(TENANT, TraceConfig(messages=300, changing_fraction=0), seed=1, anchor=ANCHOR)
    early = td.query(*EVERYTHING, now=ANCHOR - timedelta(days=30))
    assert early == td.query(*EVERYTHING, now=SETTLED)
    assert all(len(r["timeline"]) == 1 for r in td.truth()["rows"])


def test_changes_are_relative_to_started_at() -> None:
    started = ANCHOR + timedelta(hours=2)
    td = TraceDataset(TENANT, TraceConfig(messages=300), seed=1, anchor=ANCHOR, started_at=started)
    pending = [r for r in td.query(*EVERYTHING, now=started) if r["status"] in ("gettingStatus", "pending")]
    assert pending
    assert all(
        r["status"] not in ("gettingStatus", "pending")
        for r in td.query(*EVERYTHING, now=started + timedelta(seconds=31))
    )


# ---------------------------------------------------------------------------- RWS shape


def test_rws_row_msdate_matches_the_odata_v2_sample(rows: list[dict[str, Any]], td: TraceDataset) -> None:
    sample = _sample_items("rws-sekoia-d-results.json")[0]
    row = next(r for r in rows if r["toIP"] == "")
    window = (ANCHOR - timedelta(days=2), ANCHOR)
    out = rws_row(row, "msdate", index=7, organization=td.organization, start_date=window[0], end_date=window[1])
    assert list(out) == list(sample)
    assert list(out["__metadata"]) == list(sample["__metadata"])
    assert out["__metadata"]["type"] == "TenantReporting.MessageTrace"
    assert out["__metadata"]["uri"].endswith("/Reporting.svc/MessageTrace(7)")
    assert out["Index"] == 7
    assert out["Organization"] == td.organization
    m = MSDATE_RE.match(out["Received"])
    assert m is not None
    assert int(m[1]) == int(_received(row).timestamp() * 1000)
    assert out["StartDate"] == f"/Date({int(window[0].timestamp() * 1000)})/"
    assert out["EndDate"] == f"/Date({int(window[1].timestamp() * 1000)})/"
    assert out["ToIP"] is None
    assert out["MessageTraceId"] == row["id"]
    assert (out["SenderAddress"], out["RecipientAddress"], out["Size"]) == (
        row["senderAddress"],
        row["recipientAddress"],
        row["size"],
    )


def test_rws_row_iso_matches_the_json_light_sample(rows: list[dict[str, Any]]) -> None:
    sample = _sample_items("rws-sumologic-odata-value.json")[0]
    row = rows[0]
    out = rws_row(row, "iso", metadata=False)
    assert list(out) == list(sample)
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}$", out["Received"])
    assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$", out["StartDate"])
    assert out["Received"].startswith(row["receivedDateTime"][:-1])
    assert out["Organization"].endswith(".onmicrosoft.com")
    with_meta = rws_row(row, "iso")
    assert list(with_meta) == ["__metadata", *sample]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("gettingStatus", "GettingStatus"),
        ("pending", "Pending"),
        ("failed", "Failed"),
        ("delivered", "Delivered"),
        ("expanded", "Expanded"),
        ("quarantined", "Quarantined"),
        ("filteredAsSpam", "FilteredAsSpam"),
    ],
)
def test_rws_status_is_pascal_case(rows: list[dict[str, Any]], status: str, expected: str) -> None:
    assert rws_row({**rows[0], "status": status}, "msdate")["Status"] == expected


def test_rws_row_rejects_unknown_date_style(rows: list[dict[str, Any]]) -> None:
    with pytest.raises(ValueError, match="date_style"):
        rws_row(rows[0], "epoch")
