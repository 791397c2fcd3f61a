"""Command line: ``python -m o365ingest COMMAND``. The same code paths as the Function App."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from . import doctor
from .audit import StreamResult, StreamStats
from .check import check_tokens
from .cursor import parse_time
from .ops import backfill_reach as reach  # one rule, shared with the ops function
from .planning import Window
from .runner import run_audit, run_messagetrace
from .runtime import Runtime
from .settings import CONTENT_TYPES, MESSAGETRACE_STREAM, Settings, SettingsError, load_settings, read_env_file
from .status import format_backfills, format_status, status_document
from .tokens import TokenRegistry


def _settings(args: argparse.Namespace) -> Settings:
    env = dict(os.environ)
    if args.env_file:
        for key, value in read_env_file(Path(args.env_file)).items():
            env.setdefault(key, value)
    return load_settings(env)


async def _check(settings: Settings) -> int:
    results = await check_tokens(settings, TokenRegistry(settings))
    for r in results:
        mark = "ok  " if r.ok else "FAIL"
        print(f"[{mark}] tenant {r.tenant_id} - {r.api}: {r.detail}")
        if r.remedy:
            print(f"       remedy: {r.remedy}")
    failed = sum(not r.ok for r in results)
    print(f"check: {len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _progress(stats: list[StreamStats]) -> None:
    if not sys.stderr.isatty():
        return
    listed = sum(s.listed for s in stats)
    fetched = sum(s.fetched for s in stats)
    records = sum(s.records for s in stats)
    print(f"\r  blobs listed {listed:>7}  fetched {fetched:>7}  records {records:>9}", end="", file=sys.stderr)


def _report(results: list[StreamResult]) -> int:
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for r in results:
        print(r.summary())
    records = sum(r.stats.records for r in results)
    blobs = sum(r.stats.delivered for r in results)
    failed = [r for r in results if r.status == "failed"]
    print(f"total: {records} records from {blobs} blobs in {len(results)} streams; {len(failed)} failed")
    return 1 if failed else 0


async def _run(settings: Settings, args: argparse.Namespace, backfill: Window | None = None) -> int:
    async with Runtime.create(settings) as runtime:
        jobs = []
        if args.stream in ("audit", "all"):
            jobs.append(run_audit(runtime, budget_seconds=args.budget, tenant_ids=args.tenant,
                                  content_types=args.content_type, backfill=backfill, progress=_progress))
        if args.stream in ("messagetrace", "all"):  # nothing (and a log line) while message traces are off
            jobs.append(run_messagetrace(runtime, budget_seconds=args.budget, tenant_ids=args.tenant,
                                         backfill=backfill, progress=None if jobs else _progress))
        groups = await asyncio.gather(*jobs)
    return _report([result for group in groups for result in group])


async def _status(settings: Settings, as_json: bool) -> int:
    async with Runtime.create(settings) as runtime:
        document = await status_document(runtime)
    if as_json:
        print(json.dumps(document, indent=2))
    else:
        print(format_status(document["streams"]))
        if document["backfills"]:
            print(format_backfills(document["backfills"]))
    return 0


async def _doctor(settings: Settings) -> int:
    async with Runtime.create(settings) as runtime:
        checks = await doctor.run_doctor(runtime)
    print(doctor.report(checks))
    return doctor.exit_code(checks)


def _time(value: str) -> datetime:
    try:
        return parse_time(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-20T00:00:00Z)") from exc


def backfill_problem(start: datetime, stream: str, settings: Settings, now: datetime) -> str | None:
    """Why ``--start`` is further back than a selected stream's API reads (None: it is not)."""
    audit_age, audit_why = reach("audit", settings)
    trace_age, trace_why = reach(MESSAGETRACE_STREAM, settings)  # 30 days with the legacy source
    if stream in ("audit", "all") and start < now - audit_age:
        hint = (f" (--stream messagetrace reaches {round(trace_age / timedelta(days=1))} days back)"
                if settings.messagetrace_enabled else "")
        return f"--start is more than {audit_why}{hint}"
    if stream == "messagetrace" and start < now - trace_age:
        return f"--start is more than {trace_why}"
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m o365ingest",
        description="Collect Microsoft 365 audit logs and Exchange message traces into Azure Event Hubs.",
        epilog="Settings come from environment variables (see README.md); --env-file adds a .env file.",
    )
    parser.add_argument("--env-file", help="read settings from this .env file (the environment wins)")
    parser.add_argument("--log-level", default=None, help="override O365_LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("check", help="get a token for every configured API and tenant, and report",
                   description="Acquire a token for each configured API in each tenant and report what "
                               "worked, what did not, and how to fix it. Exit code 1 if anything failed.")

    def scoped(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tenant", action="append", help="only this tenant GUID (repeatable)")
        p.add_argument("--content-type", action="append", choices=CONTENT_TYPES, help="only this content type")
        p.add_argument("--stream", choices=("audit", "messagetrace", "all"), default="all",
                       help="audit logs, message traces (when O365_MESSAGETRACE_ENABLED), or both (default)")
        p.add_argument("--budget", type=float, default=None,
                       help="seconds before the run stops taking new work (default: the Function budget)")

    run = sub.add_parser("run", help="run one collection cycle (what the timer does)",
                         description="List, fetch and publish every configured stream once, then commit.")
    scoped(run)
    backfill = sub.add_parser("backfill", help="replay a window without moving the live checkpoints",
                              description="Re-collect [--start, --end) (audit: at most 7 days back; message "
                                          "traces: 90 days, 30 with O365_MESSAGETRACE_SOURCE=rws; the APIs' "
                                          "limits). What the live streams already "
                                          "delivered is skipped. Resumable: running the same window again "
                                          "continues where it stopped.")
    backfill.add_argument("--start", type=_time, required=True, help="ISO 8601 start (inclusive)")
    backfill.add_argument("--end", type=_time, required=True, help="ISO 8601 end (exclusive)")
    scoped(backfill)
    status = sub.add_parser("status", help="per stream: watermark, lag, seen and abandoned blobs, last error")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("doctor", help="self-test: credentials, tokens and roles, audit logging, subscriptions, clock, "
                   "Event Hubs, checkpoints; one remedy per problem",
                   description="Check everything a run needs and print one line per check, plus one line with the "
                               "exact remedy for each problem. Exit code 0: healthy; 1: something failed; "
                               "3: warnings only (e.g. a certificate expiring within 30 days).")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"o365ingest: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level or settings.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("azure", "httpx", "msal", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.command == "check":
        return asyncio.run(_check(settings))
    if args.command in ("run", "backfill") and args.stream == "messagetrace" and not settings.messagetrace_enabled:
        parser.error("message traces are off: set O365_MESSAGETRACE_ENABLED=true")
    if args.command == "run":
        return asyncio.run(_run(settings, args))
    if args.command == "backfill":
        if args.end <= args.start:
            parser.error("--end must be after --start")
        problem = backfill_problem(args.start, args.stream, settings, datetime.now(UTC))
        if problem:
            parser.error(problem)
        return asyncio.run(_run(settings, args, Window(args.start, args.end)))
    if args.command == "status":
        return asyncio.run(_status(settings, args.json))
    if args.command == "doctor":
        return asyncio.run(_doctor(settings))
    return 2
