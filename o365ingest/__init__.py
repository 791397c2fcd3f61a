"""o365ingest: Microsoft 365 audit logs and Exchange message traces into Azure Event Hubs."""

__version__ = "0.1.0"
