"""PNG plots from a results document (matplotlib, Agg backend; a dev-only dependency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def make_plots(result: dict[str, Any], directory: Path) -> list[Path]:
    """Throughput against concurrency, RSS against backlog size, RSS over time; returns the files."""
    try:
        import matplotlib
    except ImportError:  # plots are optional: the figures are in the JSON either way
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    raw = result.get("raw_limit", {}).get("modes", {}).get("record")

    sweep = result.get("sweep") or []
    if sweep:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for curve in dict.fromkeys(p["curve"] for p in sweep):
            points = sorted((p["concurrency"], p["records_per_s"]) for p in sweep if p["curve"] == curve)
            ax.plot([c for c, _ in points], [r for _, r in points], marker="o", label=curve)
        if raw:
            ax.axhline(raw["records_per_s"], color="grey", linestyle="--", label="raw limit (same run)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("O365_FETCH_CONCURRENCY (blob downloads in flight)")
        ax.set_ylabel("records/s (one record per event)")
        ax.set_title("Throughput against fetch concurrency")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = directory / "throughput-vs-concurrency.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    memory = result.get("memory") or []
    if memory:
        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for mode, label in (("record", "one record per event"), ("records", "envelope (records)")):
            points = sorted((m["records"], m["peak_rss_mb"]) for m in memory if m["mode"] == mode)
            if points:
                ax.plot([n for n, _ in points], [r for _, r in points], marker="o", label=f"peak RSS, {label}")
        base = sorted((m["records"], m["rss_before_run_mb"]) for m in memory if m["mode"] == "record")
        if base:
            ax.plot([n for n, _ in base], [r for _, r in base], linestyle=":", color="grey",
                    label="RSS before the run (imports)")
        ax.axhline(300, color="red", linestyle="--", linewidth=1, label="300 MB target")
        ax.set_xscale("log")
        ax.set_xlabel("backlog (records)")
        ax.set_ylabel("MB")
        ax.set_ylim(bottom=0)
        ax.set_title("Collector peak RSS against backlog size")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = directory / "rss-vs-backlog.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

        fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
        for m in memory:
            samples = m.get("rss_samples") or []
            if samples:
                label = f"{m['records']:,} records, {'envelope' if m['mode'] == 'records' else 'record'}"
                ax.plot([t for t, _ in samples], [kb / 1024 for _, kb in samples], label=label)
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("RSS (MB)")
        ax.set_ylim(bottom=0)
        ax.set_title("Collector RSS during the run")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / "rss-over-time.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)

    latency = result.get("latency") or {}
    if latency.get("per_second"):
        fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
        series = latency["per_second"]
        ax.bar(range(len(series)), series, width=1.0, color="tab:blue", alpha=0.7, label="API requests per second")
        ax.axhline(latency["budget_per_minute"] / 60, color="red", linestyle="--", linewidth=1,
                   label=f"budget {latency['budget_per_minute']}/min")
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("requests/s")
        ax.set_title("Latency-bound run: request rate against the tenant budget")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        path = directory / "latency-request-rate.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
