"""``exchangeMessageTraceDetail`` events for one message trace row (getDetailsByRecipient).

The trace dataset only knows rows and their status timeline; the detail events are the
processing steps that explain that status, in the shape of Microsoft's v1.0 sample.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from m365sim.clock import iso_seconds

_FINAL_EVENTS: dict[str, tuple[str, str, str]] = {
    # status -> (event, action, description)
    "delivered": ("Deliver", "", "The message was successfully delivered."),
    "failed": (
        "Fail",
        "",
        "Reason: [{LED=550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup};"
        "{MSG=};{FQDN=};{IP=};{LRT=}]",
    ),
    "pending": ("Defer", "", "Reason: [{LED=451 4.4.0 Message failed to be made redundant};{MSG=};{FQDN=};{IP=}]"),
    "expanded": ("Expand", "", "The distribution group was expanded."),
    "quarantined": ("Quarantine", "Quarantine", "The message was quarantined."),
    "filteredAsSpam": ("Spam", "Move message to Junk Email folder", "The message was marked as spam."),
}


def detail_events(row: dict[str, Any], status: str, host: str) -> list[dict[str, Any]]:
    """Receive, then the step that produced ``status`` (none yet while ``gettingStatus``)."""
    received = datetime.strptime(row["receivedDateTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    events = [
        _event(row, received, "Receive", "", f"Message received by: {host}", "Receive"),
    ]
    final = _FINAL_EVENTS.get(status)
    if final is not None:
        event, action, description = final
        events.append(_event(row, received + timedelta(seconds=5), event, action, description, event))
    return events


def _event(row: dict[str, Any], when: datetime, event: str, action: str, description: str, mep: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "messageId": row["messageId"],
        "dateTime": iso_seconds(when),
        "event": event,
        "action": action,
        "description": description,
        "data": f'<root><MEP Name="Event" String="{mep}" /><MEP Name="MessageSize" Integer="{row["size"]}" /></root>',
    }
