"""The doctor's pure parts: thresholds, wording, exit codes and the compact log form."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from o365ingest import doctor
from o365ingest.credentials import ClientCredential
from o365ingest.doctor import Check, certificate_check, clock_check, exit_code, report, subscription_checks

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TENANT = "5f0c1c2e-8b1a-4c4e-9a57-1d2b3c4d5e6f"
FEED = "https://manage.office.com/api/v1.0/t/activity/feed"


def cert(days: float) -> ClientCredential:
    return ClientCredential({"private_key": "k", "public_certificate": "c"}, "certificate",
                            certificate_not_after=NOW + timedelta(days=days), certificate_sha256="ab" * 32,
                            source="Key Vault https://kv.vault.azure.net certificate 'o365ingest'")


@pytest.mark.parametrize(("days", "status"), [(-1, "fail"), (0, "fail"), (0.5, "warn"), (29.9, "warn"),
                                              (30, "ok"), (365, "ok")])
def test_certificate_expiry_thresholds(days, status):
    check = certificate_check(cert(days), NOW)
    assert check is not None and check.status == status
    if status == "ok":
        assert check.remedy is None
    else:
        assert "certificate 'o365ingest'" in (check.remedy or "") and "app registration" in (check.remedy or "")
    if status == "fail":
        assert "expired on" in check.detail


def test_a_client_secret_has_no_visible_expiry():
    assert certificate_check(ClientCredential("s", "secret", source="client secret"), NOW) is None


@pytest.mark.parametrize(("skew", "status"), [(0, "ok"), (-59, "ok"), (90, "warn"), (-200, "warn"),
                                              (301, "fail"), (-3600, "fail")])
def test_clock_skew_thresholds(skew, status):
    server = format_datetime(NOW - timedelta(seconds=skew), usegmt=True)
    check = clock_check(server, NOW, TENANT)
    assert check.status == status and check.tenant == TENANT
    assert ("ahead of" if skew > 0 else "behind") in check.detail or skew == 0
    assert (check.remedy is None) == (status == "ok")


@pytest.mark.parametrize("header", [None, "", "not a date"])
def test_missing_or_unreadable_date_header_warns_without_failing(header):
    assert clock_check(header, NOW, TENANT).status == "warn"


def test_subscriptions_missing_warn_once_and_disabled_fail_each():
    listed = [{"contentType": "Audit.Exchange", "status": "enabled"},
              {"contentType": "Audit.General", "status": "disabled"}]
    checks = subscription_checks(listed, ["Audit.Exchange", "Audit.General", "Audit.SharePoint", "DLP.All"],
                                 TENANT, FEED)
    assert [(c.name, c.status) for c in checks] == [("subscriptions", "warn"), ("subscription Audit.General", "fail")]
    assert checks[0].detail == "not started yet: Audit.SharePoint, DLP.All"
    assert f"{FEED}/subscriptions/start?contentType=Audit.General" in (checks[1].remedy or "")


def test_subscriptions_all_enabled_is_one_ok_line():
    listed = [{"contentType": "audit.exchange", "status": "Enabled"}]
    [check] = subscription_checks(listed, ["Audit.Exchange"], TENANT, FEED)
    assert check.status == "ok" and check.detail == "all 1 enabled: Audit.Exchange"
    [check] = subscription_checks({"unexpected": "shape"}, ["Audit.Exchange"], TENANT, FEED)
    assert check.status == "warn"


def test_exit_codes_and_report_lines():
    ok = Check("checkpoints", "ok", "writable")
    warn = Check("certificate", "warn", "expires in 3 day(s)", "Renew it.")
    fail = Check("clock", "fail", "600s ahead", "Use NTP.", TENANT)
    skip = Check("Management Activity API", "skip", "not checked", None, TENANT)
    assert exit_code([ok, skip]) == 0
    assert exit_code([ok, warn]) == 3
    assert exit_code([warn, fail, ok]) == 1
    lines = report([ok, warn, fail, skip]).splitlines()
    assert lines == [
        "[ok  ] checkpoints: writable",
        "[WARN] certificate: expires in 3 day(s)",
        "       remedy: Renew it.",
        f"[FAIL] tenant {TENANT} - clock: 600s ahead",
        "       remedy: Use NTP.",
        f"[skip] tenant {TENANT} - Management Activity API: not checked",
        "doctor: 1 ok, 1 warning(s), 1 failed, 1 skipped",
    ]


def test_compact_log_names_each_problem_with_its_remedy(caplog):
    caplog.set_level(logging.INFO, logger="o365ingest.doctor")
    doctor.log_summary([Check("checkpoints", "ok", "writable"), Check("clock", "fail", "600s ahead", "Use NTP.")])
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "doctor: 1 ok, 0 warning(s), 1 failed"),
        ("ERROR", "doctor [FAIL] clock: 600s ahead Remedy: Use NTP."),
    ]


async def test_first_run_doctor_is_bounded_and_never_raises(monkeypatch, caplog):
    async def hangs(runtime, *, step_seconds):
        await asyncio.sleep(60)

    async def breaks(runtime, *, step_seconds):
        raise RuntimeError("boom")

    caplog.set_level(logging.WARNING, logger="o365ingest.doctor")
    monkeypatch.setattr(doctor, "run_doctor", hangs)
    started = asyncio.get_running_loop().time()
    await doctor.first_run_doctor(object(), 0.2)  # type: ignore[arg-type]
    assert asyncio.get_running_loop().time() - started < 1.0
    monkeypatch.setattr(doctor, "run_doctor", breaks)
    await doctor.first_run_doctor(object(), 0.2)  # type: ignore[arg-type]
    messages = [r.getMessage() for r in caplog.records]
    assert "did not finish within" in messages[0]
    assert "could not run (RuntimeError)" in messages[1]
