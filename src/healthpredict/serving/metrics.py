"""Prometheus metrics of the service, on a registry of its own (one per app instance).

Request counts and latencies are recorded as requests finish; the model in use, reload
failures and prediction-log outcomes are read from the service state at scrape time, so they
can never disagree with ``/model`` and ``/ready``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """Request, latency and prediction metrics."""

    def __init__(self) -> None:
        """Create the metrics on a fresh registry."""
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "healthpredict_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "healthpredict_request_seconds",
            "Request latency by endpoint and status",
            ["endpoint", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "healthpredict_predictions",
            "Predictions by risk band",
            ["risk_band"],
            registry=self.registry,
        )
        # Label children by label values: the series are few and fixed once seen.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._bands: dict[str, Any] = {}

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request."""
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds tuples: once per series
            code = str(status)
            children = (
                self.requests.labels(endpoint, method, code),
                self.latency.labels(endpoint, code),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count_bands(self, bands: list[str]) -> None:
        """Count predictions by risk band."""
        if len(bands) == 1:
            self._band(bands[0]).inc()
            return
        for band in set(bands):
            self._band(band).inc(bands.count(band))

    def _band(self, band: str) -> Any:
        child = self._bands.get(band)
        if child is None:
            child = self._bands[band] = self.predictions.labels(band)
        return child

    def watch(self, read_state: Callable[[], dict[str, Any]]) -> None:
        """Export state read at scrape time (see :class:`_StateCollector`)."""
        self.registry.register(_StateCollector(read_state))


class _StateCollector(Collector):
    """Model in use, reload failures and prediction-log rows, read when scraped."""

    def __init__(self, read_state: Callable[[], dict[str, Any]]) -> None:
        self.read_state = read_state

    def collect(self) -> Iterator[Any]:
        state = self.read_state()
        model = GaugeMetricFamily(
            "healthpredict_model_version_info",
            "Model version in use (1 when loaded)",
            labels=["name", "version"],
        )
        if state["version"] is not None:
            model.add_metric([state["name"], state["version"]], 1.0)
        yield model
        yield CounterMetricFamily(
            "healthpredict_model_reload_failures",
            "Failed registry checks or model loads",
            value=state["reload_failures"],
        )
        rows = CounterMetricFamily(
            "healthpredict_prediction_log_rows",
            "Prediction-log rows by outcome",
            labels=["outcome"],
        )
        for outcome in ("written", "dropped", "failed"):
            rows.add_metric([outcome], state[outcome])
        yield rows
