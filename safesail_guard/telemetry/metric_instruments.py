"""The guard's OpenTelemetry metric instruments (histograms and counters), created once per process.

:class:`MetricInstruments` holds every instrument the guard records to, each created on one meter with the name,
unit, description and bucket boundaries (as advice) from :mod:`safesail_guard.telemetry.names`.
:class:`~safesail_guard.telemetry.instruments.GuardTelemetry` creates it at start-up and
:class:`~safesail_guard.telemetry.request_trace.RequestTrace` records to it when a stage or a request ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics

from safesail_guard.telemetry import names as n

@dataclass(frozen=True)
class MetricInstruments:
    """The meter's instruments, created once per :class:`~safesail_guard.telemetry.instruments.GuardTelemetry`."""

    request_duration: metrics.Histogram
    time_to_first_token: metrics.Histogram
    time_per_output_token: metrics.Histogram
    token_usage: metrics.Histogram
    client_duration: metrics.Histogram
    requests: metrics.Counter
    decisions: metrics.Counter
    stage_duration: metrics.Histogram
    guard_duration: metrics.Histogram
    guard_per_token: metrics.Histogram

    @classmethod
    def create(cls, meter: metrics.Meter) -> MetricInstruments:
        """Create every instrument on ``meter`` (bucket boundaries as advice, see :mod:`.names`)."""
        h = meter.create_histogram
        return cls(
            request_duration=h(n.METRIC_SERVER_REQUEST_DURATION, unit="s",
                               description="Guarded request duration, to the last byte or output token.",
                               explicit_bucket_boundaries_advisory=n.DURATION_BUCKETS),
            time_to_first_token=h(n.METRIC_SERVER_TIME_TO_FIRST_TOKEN, unit="s",
                                  description="Time to the first output token, for successful responses.",
                                  explicit_bucket_boundaries_advisory=n.TTFT_BUCKETS),
            time_per_output_token=h(n.METRIC_SERVER_TIME_PER_OUTPUT_TOKEN, unit="s",
                                    description="Time per output token after the first, for successful responses.",
                                    explicit_bucket_boundaries_advisory=n.TPOT_BUCKETS),
            token_usage=h(n.METRIC_CLIENT_TOKEN_USAGE, unit="{token}",
                          description="Input and output tokens per request.",
                          explicit_bucket_boundaries_advisory=n.TOKEN_BUCKETS),
            client_duration=h(n.METRIC_CLIENT_OPERATION_DURATION, unit="s",
                              description="Duration of the call to the upstream model server.",
                              explicit_bucket_boundaries_advisory=n.DURATION_BUCKETS),
            requests=meter.create_counter(n.METRIC_REQUESTS, unit="{request}",
                                          description="Guarded requests by mode, status and final action."),
            decisions=meter.create_counter(n.METRIC_DECISIONS, unit="{decision}",
                                           description="Policy decisions by action, stage and concept."),
            stage_duration=h(n.METRIC_STAGE_DURATION, unit="s", description="Duration of each pipeline stage.",
                             explicit_bucket_boundaries_advisory=n.STAGE_BUCKETS),
            guard_duration=h(n.METRIC_GUARD_DURATION, unit="s",
                             description="Time spent in guard hooks and policy evaluation per request.",
                             explicit_bucket_boundaries_advisory=n.GUARD_BUCKETS),
            guard_per_token=h(n.METRIC_GUARD_TIME_PER_TOKEN, unit="s",
                              description="Guard time per token the guard processed.",
                              explicit_bucket_boundaries_advisory=n.GUARD_PER_TOKEN_BUCKETS),
        )
