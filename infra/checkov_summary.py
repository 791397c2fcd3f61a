"""Fail `make infra-check` when checkov skipped files it could not parse or scanned nothing.

checkov reports .bicep files it cannot parse as "parsing errors" and still exits 0, and a scan of
an empty or moved infra/ passes with zero checks. This reads checkov's JSON report and exits
non-zero in both cases. Runs with the checkov environment's Python (standard library only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(report_path: str) -> int:
    data = json.loads(Path(report_path).read_text())
    reports = data if isinstance(data, list) else [data]
    unparsed = sorted({f for r in reports for f in r.get("results", {}).get("parsing_errors", [])})
    unparsed_count = sum(r.get("summary", {}).get("parsing_errors", 0) for r in reports)
    resources = sum(r.get("summary", {}).get("resource_count", 0) for r in reports)
    failed = sum(r.get("summary", {}).get("failed", 0) for r in reports)
    skipped = sum(r.get("summary", {}).get("skipped", 0) for r in reports)
    passed = sum(r.get("summary", {}).get("passed", 0) for r in reports)
    if unparsed or unparsed_count:
        print(f"infra-check: checkov could not parse {unparsed or unparsed_count} file(s); their checks did not run")
        return 1
    if resources == 0:
        print("infra-check: checkov scanned no resource in infra/")
        return 1
    if failed:
        print(f"infra-check: {failed} failed check(s)")
        return 1
    print(f"infra-check: {resources} resources, {passed} passed, {skipped} skipped (justified in place), 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
