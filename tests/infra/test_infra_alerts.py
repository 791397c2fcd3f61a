"""Alert rules and the workbook (infra/app/alerts.bicep): what they watch, whom they notify, and that
their KQL names only metrics and dimensions the collector really records."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from o365ingest.telemetry import Instruments
from tests.infra.infra_bicep_model import INFRA, Evaluator, Template, Templates, func_args, render

ALERTS = "infra/app/alerts.bicep"
RULE = "Microsoft.Insights/scheduledQueryRules"
KQL = INFRA / "app" / "kql"
APPI = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/components/appi-x"
GROUP = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/actionGroups/ops"
# Attribute keys the code records (telemetry.py docstring); the KQL may split or filter by these only.
DIMENSIONS = {"tenant", "stream", "reason", "status", "code", "operation", "kind"}


class NameRecorder:
    def __init__(self) -> None:
        self.names: list[str] = []

    def _create(self, name: str, **_: Any) -> object:
        self.names.append(name)
        return object()

    create_counter = create_histogram = _create


def recorded_metrics() -> set[str]:
    meter = NameRecorder()
    Instruments.create(meter)  # type: ignore[arg-type]
    return set(meter.names)


def rule_query(body: dict[str, Any]) -> str:
    [criterion] = body["properties"]["criteria"]["allOf"]
    call = criterion["query"]["function"]
    assert call["type"] == "load_text_content", "rule queries are loaded from infra/app/kql"
    return (INFRA / "app" / call["parameters"]["file_path"]).read_text()


def test_four_rules_watch_lag_failures_lost_content_and_silence(templates: Templates) -> None:
    tpl = templates[ALERTS]
    rules = tpl.resources_of(RULE)
    assert set(rules) == {"lagAlert", "failedRunsAlert", "lostDataAlert", "stalledAlert"}
    for symbol, body in rules.items():
        props = body["properties"]
        assert body["kind"] == "LogAlert" and props["enabled"] is True, symbol
        assert props["scopes"] == ["appInsightsId"], symbol
        assert props["actions"] == "actions", symbol
        assert props["displayName"].startswith("o365ingest: ") and len(props["description"].split()) >= 10
    criteria = {symbol: body["properties"]["criteria"]["allOf"][0] for symbol, body in rules.items()}
    assert criteria["lagAlert"]["threshold"] == "lagThresholdMinutes"
    assert (criteria["lagAlert"]["metricMeasureColumn"], criteria["lagAlert"]["operator"]) == ("lagMinutes",
                                                                                            "GreaterThan")
    assert criteria["stalledAlert"]["timeAggregation"] == "Count" and criteria["stalledAlert"]["operator"] == \
        "LessThan" and criteria["stalledAlert"]["threshold"] == 1
    assert rules["stalledAlert"]["properties"]["windowSize"] == "stalledWindow"
    for symbol in ("failedRunsAlert", "lostDataAlert"):
        assert (criteria[symbol]["operator"], criteria[symbol]["threshold"]) == ("GreaterThan", 0), symbol


def dimension_names(expr: Any, tpl: Template) -> list[str]:
    """Names of a rule's split dimensions: a variable, or concat() of variables and literal lists.
    (Read by hand: the dimension objects have an "operator" key, which the evaluator would take for
    an operator expression.)"""
    if isinstance(expr, str):
        return dimension_names(tpl.variables[expr]["value"], tpl)
    if isinstance(expr, dict) and expr.get("function", {}).get("type") == "concat":
        return [n for arg in func_args(expr) for n in dimension_names(arg, tpl)]
    assert isinstance(expr, list), expr
    return [str(item["name"]) for item in expr]


def test_split_rules_name_the_tenant_and_stream(templates: Templates) -> None:
    tpl = templates[ALERTS]
    for symbol, body in tpl.resources_of(RULE).items():
        criterion = body["properties"]["criteria"]["allOf"][0]
        query = rule_query(body)
        if symbol == "stalledAlert":
            assert "dimensions" not in criterion and "summarize" not in query, "a row count, so 0 rows can fire"
            continue
        dimensions = dimension_names(criterion["dimensions"], tpl)
        assert dimensions[:2] == ["tenant", "stream"], symbol
        for column in [*dimensions, criterion["metricMeasureColumn"]]:
            assert re.search(rf"\b{column}\b", query), f"{symbol}: the query has no column {column}"


@pytest.mark.parametrize(("group", "expected"), [("", []), (GROUP, [GROUP])])
def test_the_action_group_is_optional(templates: Templates, group: str, expected: list[str]) -> None:
    tpl = templates[ALERTS]
    assert tpl.param_default("actionGroupId") == ""
    assert Evaluator(tpl, params={"actionGroupId": group}).eval("actions") == {"actionGroups": expected}


def test_alerts_are_wired_from_main_through_monitoring(templates: Templates) -> None:
    monitoring = templates["infra/app/monitoring.bicep"]
    assert monitoring.module_file("alerts") == INFRA / "app" / "alerts.bicep"
    passed = {k: render(v, monitoring) for k, v in monitoring.module_body("alerts")["params"].items()}
    assert passed["appInsightsId"] == "appInsights.id"
    assert passed["actionGroupId"] == "actionGroupId"
    assert passed["lagThresholdMinutes"] == "lagThresholdMinutes" and passed["stalledWindow"] == "stalledWindow"
    main = templates.main
    into_monitoring = {k: render(v, main) for k, v in main.module_body("monitoring")["params"].items()}
    assert into_monitoring["actionGroupId"] == "alertActionGroupId"
    assert into_monitoring["lagThresholdMinutes"] == "alertLagThresholdMinutes"
    assert into_monitoring["stalledWindow"] == "alertStalledWindow"
    assert main.param_default("alertActionGroupId") == ""
    assert main.param_default("alertLagThresholdMinutes") == templates[ALERTS].param_default("lagThresholdMinutes")
    assert main.decorator("alertStalledWindow", "allowed") == templates[ALERTS].decorator("stalledWindow", "allowed")


def test_kql_names_only_metrics_and_dimensions_the_code_records() -> None:
    known = recorded_metrics()
    assert len(known) >= 20
    files = sorted(KQL.glob("*.kql"))
    assert {p.name for p in files} >= {"watermark-lag.kql", "throughput.kql", "errors.kql", "alert-failed-runs.kql",
                                      "alert-lost-data.kql", "alert-stalled.kql"}
    for path in files:
        text = path.read_text()
        names = set(re.findall(r'"(o365ingest\.[a-z_.]+)"', text))
        assert names <= known, f"{path.name}: unknown metric(s) {sorted(names - known)}"
        keys = set(re.findall(r"customDimensions\.(\w+)", text))
        assert keys <= DIMENSIONS, f"{path.name}: unknown dimension(s) {sorted(keys - DIMENSIONS)}"
    assert "o365ingest.runs" in (KQL / "alert-stalled.kql").read_text()


def test_workbook_shows_lag_throughput_and_errors_from_the_same_files(templates: Templates) -> None:
    tpl = templates[ALERTS]
    workbook = Evaluator(tpl, params={"appInsightsId": APPI}).eval("workbook")
    json.dumps(workbook)  # serializable as the workbook's serializedData
    assert workbook["version"] == "Notebook/1.0" and workbook["fallbackResourceIds"] == [APPI]
    queries = {item["content"]["title"]: item["content"] for item in workbook["items"] if item["type"] == 3}
    assert {title.split()[0] for title in queries} == {"Watermark", "Records", "Errors"}
    files = {"Watermark": "watermark-lag.kql", "Records": "throughput.kql", "Errors": "errors.kql"}
    for title, content in queries.items():
        assert content["query"] == (KQL / files[title.split()[0]]).read_text()
        assert content["resourceType"] == "microsoft.insights/components"
    body = tpl.only("Microsoft.Insights/workbooks")
    assert render(body["properties"]["serializedData"], tpl) == "string(workbook)"
    assert render(body["properties"]["sourceId"], tpl) == "appInsightsId"


def test_operations_guide_shows_every_query_verbatim(repo: Path) -> None:
    guide = (repo / "docs/operations.md").read_text()
    blocks = re.findall(r"```kusto\n(.*?)```", guide, re.S)
    for path in sorted(KQL.glob("*.kql")):
        assert path.read_text() in blocks, f"docs/operations.md does not show infra/app/kql/{path.name} verbatim"
