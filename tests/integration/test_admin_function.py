"""The ops HTTP functions, called as the v2 programming model builds them, against the simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import function_app
from o365ingest.cli import main

OTHER_TENANT = "0f0f0f0f-1111-2222-3333-444444444444"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def request(route: str, body: bytes | str | dict[str, Any] | list[Any], method: str = "POST",
            content_type: str | None = "application/json") -> func.HttpRequest:
    data = body if isinstance(body, bytes) else (body if isinstance(body, str) else json.dumps(body)).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    return func.HttpRequest(method=method, url=f"https://app.example/api/{route}", headers=headers, body=data)


async def backfill(req: func.HttpRequest) -> func.HttpResponse:
    return await function_app.ops_backfill.build().get_user_function()(req)


async def status(req: func.HttpRequest) -> func.HttpResponse:
    return await function_app.ops_status.build().get_user_function()(req)


def sink_lines(directory: Path) -> list[bytes]:
    return [line for path in directory.rglob("*.jsonl") for line in path.read_bytes().splitlines()]


def problem(response: func.HttpResponse, status_code: int) -> dict[str, Any]:
    assert response.status_code == status_code, response.get_body()
    assert response.mimetype == "application/problem+json"
    body = json.loads(response.get_body())
    assert body["status"] == status_code and body["type"] == "about:blank" and body["title"] and body["detail"]
    return body


@pytest.fixture
async def app_env(tenants, tmp_path, monkeypatch) -> AsyncIterator[dict[str, str]]:
    """The Function App's settings for one simulated tenant, and a fresh runtime for it."""
    tenant = tenants(records=300, days=1.0, audit={"records_per_blob": [5, 15]})
    env = tenants.env(tenant, O365_SINK="file", O365_FILE_SINK_DIR=str(tmp_path / "out"),
                      O365_CONTENT_TYPES="Audit.Exchange,Audit.General")
    for name in list(os.environ):
        if name.startswith("O365_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(function_app, "_runtime", None)
    yield env
    await function_app._backfills.wait()
    if function_app._runtime is not None:
        await function_app._runtime.close()


def valid(env: dict[str, str], **changes: Any) -> dict[str, Any]:
    now = datetime.now(UTC).replace(microsecond=0)
    body = {"tenant": env["O365_TENANTS"], "stream": "Audit.Exchange", "start": iso(now - timedelta(hours=20)),
            "end": iso(now - timedelta(hours=1))}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize(("case", "field", "fragment"), [
    ("unknown field", "priority", "unknown field; allowed: tenant, stream, start, end"),
    ("missing start", "start", "required"),
    ("tenant not a GUID", "tenant", "is not a tenant GUID"),
    ("tenant not configured", "tenant", "is not one of the tenants in O365_TENANTS"),
    ("stream unknown", "stream", "is not a configured stream; expected one of Audit.Exchange, Audit.General"),
    ("stream not configured", "stream", "'Audit.SharePoint' is not a configured stream"),
    ("stream not a string", "stream", "expected a string, got 5"),
    ("no offset", "start", "is not an ISO 8601 time with an offset"),
    ("not a time", "end", "is not an ISO 8601 time with an offset"),
    ("fraction", "start", "use whole seconds"),
    ("end before start", "end", "must be after start"),
    ("end in the future", "end", "is in the future"),
    ("older than 7 days", "start", "is more than 7 days back"),
    ("longer than 7 days", "end", "the window may span at most 7 days"),
])
async def test_malformed_backfill_requests_get_400_problem_details(app_env, case, field, fragment):
    now = datetime.now(UTC).replace(microsecond=0)
    body = {
        "unknown field": valid(app_env, priority="high"),
        "missing start": valid(app_env, start=None),
        "tenant not a GUID": valid(app_env, tenant="contoso.onmicrosoft.com"),
        "tenant not configured": valid(app_env, tenant=OTHER_TENANT),
        "stream unknown": valid(app_env, stream="Audit.Everything"),
        "stream not configured": valid(app_env, stream="Audit.SharePoint"),
        "stream not a string": valid(app_env, stream=5),
        "no offset": valid(app_env, start="2026-11-20T00:00:00"),
        "not a time": valid(app_env, end="yesterday"),
        "fraction": valid(app_env, start=(now - timedelta(hours=2, microseconds=-500_000)).isoformat()),
        "end before start": valid(app_env, start=iso(now - timedelta(hours=1)), end=iso(now - timedelta(hours=2))),
        "end in the future": valid(app_env, end=iso(now + timedelta(hours=1))),
        "older than 7 days": valid(app_env, start=iso(now - timedelta(days=7, minutes=1))),
        "longer than 7 days": valid(app_env, start=iso(now - timedelta(days=6)), end=iso(now + timedelta(days=2))),
    }[case]
    response = await backfill(request("ops/backfill", body))
    doc = problem(response, 400)
    assert doc["title"] == "Bad Request" and doc["detail"] == "The backfill request is not valid; see errors."
    assert any(e["field"] == field and fragment in e["detail"] for e in doc["errors"]), doc["errors"]


async def test_every_problem_is_reported_at_once(app_env):
    response = await backfill(request("ops/backfill", {"tenant": "x", "stream": "y", "extra": 1}))
    doc = problem(response, 400)
    assert [e["field"] for e in doc["errors"]] == ["extra", "start", "end", "tenant", "stream"]


@pytest.mark.parametrize(("req", "status_code", "fragment"), [
    (request("ops/backfill", b"{not json"), 400, "not valid JSON"),
    (request("ops/backfill", [1, 2]), 400, "must be a JSON object, not a JSON list"),
    (request("ops/backfill", b""), 400, "not valid JSON"),
    (request("ops/backfill", {"tenant": "a"}, content_type="text/plain"), 415, "Content-Type: application/json"),
    (request("ops/backfill", {"tenant": "a"}, content_type=None), 415, "Content-Type: application/json"),
    (request("ops/backfill", {"pad": "x" * 5000}), 413, "at most 4096 are read"),
    (request("ops/backfill", b"", method="GET"), 405, "Use POST."),
])
async def test_transport_level_problems(app_env, req, status_code, fragment):
    response = await backfill(req)
    doc = problem(response, status_code)
    assert fragment in doc["detail"]
    if status_code == 405:
        assert response.headers["Allow"] == "POST"


async def test_backfill_runs_in_the_background_and_status_reports_it(app_env, sim):
    body = valid(app_env)
    response = await backfill(request("ops/backfill", body))
    assert response.status_code == 202, response.get_body()
    accepted = json.loads(response.get_body())
    tenant = app_env["O365_TENANTS"]
    assert accepted["state"] == "started" and accepted["statusUrl"] == "/api/ops/status"
    assert accepted["id"] == (f"backfill/{tenant}/Audit.Exchange/"
                              f"{body['start'][:19].replace('-', '').replace(':', '')}-"
                              f"{body['end'][:19].replace('-', '').replace(':', '')}")
    again = json.loads((await backfill(request("ops/backfill", body))).get_body())
    assert again["state"] == "running", "one backfill per window at a time on an instance"
    await function_app._backfills.wait()

    response = await status(request("ops/status", accepted["statusRequest"]))
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = json.loads(response.get_body())
    [row] = document["backfills"]
    assert row["key"] == accepted["id"] and row["state"] == "complete" and row["progressPercent"] == 100.0
    assert row["runningHere"] is False and row["deliveredRecords"] > 0 and row["lastError"] is None
    # the live checkpoint was never touched
    assert document["streams"] == [{"tenant": tenant, "stream": "Audit.Exchange", "started": False}]
    assert len(sink_lines(Path(app_env["O365_FILE_SINK_DIR"]))) == row["deliveredRecords"]


async def test_status_is_the_same_document_as_the_cli(app_env, capsys):
    response = await status(request("ops/status", b"", content_type=None))
    assert response.status_code == 200
    from_function = json.loads(response.get_body())
    assert await asyncio.to_thread(main, ["status", "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)
    for doc in (from_function, from_cli):
        doc.pop("generated")
    assert from_function == from_cli
    assert [(r["tenant"], r["stream"]) for r in from_function["streams"]] == [
        (app_env["O365_TENANTS"], "Audit.Exchange"), (app_env["O365_TENANTS"], "Audit.General")]


def comparable(document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """The document without what depends on the moment it was made: (rest, lag per stream)."""
    rest = json.loads(json.dumps(document))
    rest.pop("generated")
    lags = {f"{row['tenant']}/{row['stream']}": row.pop("lagSeconds") for row in rest["streams"] if row["started"]}
    return rest, lags


async def test_status_after_a_live_run_and_a_backfill_is_the_same_from_the_cli_and_the_function(app_env, capsys):
    assert await asyncio.to_thread(main, ["run"]) == 0
    response = await backfill(request("ops/backfill", valid(app_env, stream="Audit.General")))
    assert response.status_code == 202, response.get_body()
    await function_app._backfills.wait()
    capsys.readouterr()

    from_function = json.loads((await status(request("ops/status", b"", content_type=None))).get_body())
    assert await asyncio.to_thread(main, ["status", "--json"]) == 0
    from_cli = json.loads(capsys.readouterr().out)

    # the function adds one field per backfill: whether it is running on the instance that answered
    assert [row.pop("runningHere") for row in from_function["backfills"]] == [False]
    function_doc, function_lags = comparable(from_function)
    cli_doc, cli_lags = comparable(from_cli)
    assert function_doc == cli_doc
    assert function_lags.keys() == cli_lags.keys() and all(
        abs(function_lags[k] - cli_lags[k]) <= 5 for k in function_lags), (function_lags, cli_lags)

    # and the document shows both: every live stream ran, the backfill finished
    tenant = app_env["O365_TENANTS"]
    assert [(r["tenant"], r["stream"], r["started"]) for r in cli_doc["streams"]] == [
        (tenant, "Audit.Exchange", True), (tenant, "Audit.General", True)]
    assert all(r["deliveredRecords"] > 0 and r["lastError"] is None and r["lastRun"] for r in cli_doc["streams"])
    [row] = cli_doc["backfills"]
    assert row["stream"] == "Audit.General" and row["state"] == "complete" and row["progressPercent"] == 100.0


def test_ops_functions_take_post_only_with_a_function_key(monkeypatch):
    # get_functions() records the names it indexed and refuses to index them twice in one process
    monkeypatch.setattr(function_app.app, "functions_bindings", {})
    functions = {f.get_function_name(): f for f in function_app.app.get_functions()}
    http = {name for name, f in functions.items() if f.is_http_function()}
    assert {"ops_backfill", "ops_status"} <= http
    for name in http:  # none anonymous: every HTTP function needs at least a function key
        assert functions[name].get_trigger().auth_level == func.AuthLevel.FUNCTION, name
    for name, route in (("ops_backfill", "ops/backfill"), ("ops_status", "ops/status")):
        trigger = functions[name].get_trigger()
        assert list(trigger.methods) == [func.HttpMethod.POST], name
        assert trigger.route == route
        # what the host indexes from the worker
        [bound] = [b for b in json.loads(functions[name].get_function_json())["bindings"]
                   if b["type"] == "httpTrigger"]
        assert bound["authLevel"] == "FUNCTION" and bound["methods"] == ["POST"], bound


@pytest.mark.parametrize(("body", "field"), [({"tenant": OTHER_TENANT}, "tenant"), ({"stream": "DLP.All"}, "stream"),
                                             ({"window": "1h"}, "window")])
async def test_status_filters_are_validated(app_env, body, field):
    doc = problem(await status(request("ops/status", body)), 400)
    assert [e["field"] for e in doc["errors"]] == [field]


async def test_message_traces_backfill_up_to_90_days_back(app_env, monkeypatch):
    now = datetime.now(UTC).replace(microsecond=0)
    old = {"start": iso(now - timedelta(days=6, hours=12)), "end": iso(now - timedelta(days=5))}
    doc = problem(await backfill(request("ops/backfill", valid(app_env, stream="MessageTrace", **old))), 400)
    assert doc["errors"][0]["field"] == "stream", "not a configured stream while message traces are off"
    monkeypatch.setenv("O365_MESSAGETRACE_ENABLED", "true")
    monkeypatch.setattr(function_app, "_runtime", None)
    doc = problem(await backfill(request("ops/backfill", valid(
        app_env, stream="MessageTrace", start=iso(now - timedelta(days=91)), end=iso(now - timedelta(days=88))))), 400)
    assert doc["errors"] == [{"field": "start", "detail": "is more than 90 days back: message traces are kept 90 days"}]
    response = await backfill(request("ops/backfill", valid(app_env, stream="MessageTrace", **old)))
    assert response.status_code == 202, response.get_body()
    accepted = json.loads(response.get_body())
    assert accepted["id"].startswith(f"backfill/{app_env['O365_TENANTS']}/MessageTrace/")
    await function_app._backfills.wait()
    document = json.loads((await status(request("ops/status", accepted["statusRequest"]))).get_body())
    [row] = document["backfills"]
    assert row["key"] == accepted["id"] and row["state"] == "complete" and row["lastError"] is None, row
    [live] = document["streams"]
    assert live["stream"] == "MessageTrace" and live["started"] is False, "the live trace checkpoint is untouched"


async def test_invalid_settings_are_a_500_problem_naming_the_setting(app_env, monkeypatch):
    monkeypatch.delenv("O365_TENANTS")
    doc = problem(await status(request("ops/status", {})), 500)
    assert any(e["detail"].startswith("O365_TENANTS: required") for e in doc["errors"])


async def test_timer_logs_the_compact_doctor_once_per_instance_and_flushes_every_run(app_env, monkeypatch, caplog):
    from azure.functions.timer import TimerRequest

    flushed: list[int] = []
    monkeypatch.setattr(function_app, "flush", lambda: flushed.append(1))
    monkeypatch.setattr(function_app, "_doctor_started", False)
    caplog.set_level(logging.INFO, logger="o365ingest")
    timer = function_app.audit_timer.build().get_user_function()
    await timer(TimerRequest(past_due=False))
    await timer(TimerRequest(past_due=True))
    summaries = [r.getMessage() for r in caplog.records if r.getMessage().startswith("doctor: ")]
    assert len(summaries) == 1, summaries
    # it ran beside the run, which starts the subscriptions: "not started yet" may or may not be seen
    assert summaries[0].startswith("doctor: ") and ", 0 failed" in summaries[0]
    assert flushed == [1, 1]
    runs = [r for r in caplog.records if r.name == "o365ingest.runner" and " ok; " in r.getMessage()]
    assert {r.stream for r in runs} == {"Audit.Exchange", "Audit.General"} and len(runs) == 4
