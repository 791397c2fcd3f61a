"""Reading what an in-memory OpenTelemetry reader collected, for the telemetry tests."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader

Points = dict[str, list[tuple[dict[str, Any], Any]]]


def collect(reader: InMemoryMetricReader) -> Points:
    """Every data point by metric name, with its attributes."""
    points: Points = defaultdict(list)
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    points[metric.name].append((dict(point.attributes or {}), point))
    return points


def total(points: Points, name: str, **where: str) -> float:
    """Sum of a counter (or count of a histogram) over the points whose attributes match ``where``."""
    found = 0.0
    for attributes, point in points.get(name, []):
        if all(attributes.get(k) == v for k, v in where.items()):
            found += point.count if isinstance(point, HistogramDataPoint) else point.value
    return found
