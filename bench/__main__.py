"""``python -m bench`` (``make bench``): the collector against the simulator, and the raw limit.

Starts the simulator (its own process, loopback HTTPS), adds a tenant per workload, and runs the
real collector in a child process per measurement (Event Hubs faked at send by a counting
producer that builds real ``EventDataBatch`` objects, or the real file sink). Prints the figures
and the issue's targets; writes ``bench/results/<timestamp>.json`` and ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import run_bench, summary_lines
from bench.plots import make_plots
from bench.workloads import FULL, PARTS, QUICK

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small workloads (under two minutes)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to run, from {', '.join(PARTS)} (default: all)")
    parser.add_argument("--label", default="", help="free text stored with the results")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results folder (default: bench/results)")
    parser.add_argument("--plots", type=Path, default=None,
                        help="write PNG plots to this folder (default: the results folder)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the CPU-bound collector runs (pstats + text next to the results)")
    args = parser.parse_args(argv)

    parts = tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    args.output.mkdir(parents=True, exist_ok=True)
    profile_dir = args.output / f"{stamp}-profile" if args.profile else None
    result = run_bench(QUICK if args.quick else FULL, parts, label=args.label, quick=args.quick,
                       profile_dir=profile_dir, log=lambda line: print(line, flush=True))
    for line in summary_lines(result):
        print(line)
    text = json.dumps(result, indent=1)
    path = args.output / f"{stamp}.json"
    path.write_text(text)
    (args.output / "latest.json").write_text(text)
    print(f"\nresults: {path}")
    if not args.no_plots:
        for plot in make_plots(result, args.plots or args.output):
            print(f"plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
