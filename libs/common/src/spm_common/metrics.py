"""Prometheus metrics every service exposes at /metrics; labelled by service so tests may run several."""

from prometheus_client import Counter, Gauge, Histogram

HTTP_LATENCY = Histogram(
    "spm_http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_CONSUMED = Counter(
    "spm_events_consumed_total",
    "Events taken from the service's queue, by outcome: processed, duplicate, ignored (not its concern),"
    " retried, dead_lettered",
    ["service", "type", "outcome"],
)
EVENTS_PUBLISHED = Counter("spm_events_published_total", "Events published by the outbox relay", ["service", "type"])
EVENTS_PUBLISH_FAILED = Counter(
    "spm_events_publish_failed_total", "Outbox publishes the broker did not confirm", ["service"]
)
OUTBOX_BACKLOG = Gauge("spm_outbox_backlog", "Outbox rows not yet published", ["service"])
