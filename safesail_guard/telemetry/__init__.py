"""OpenTelemetry for the guard proxy: traces, span events and metrics of guarded requests.

Modules: ``names`` (every span, event, attribute and metric name), ``instruments`` (:class:`GuardTelemetry`,
API only: what library and server code call per request), ``request_trace`` (:class:`RequestTrace`, one
request's spans, decision events and metrics), ``metric_instruments`` (the histograms and counters),
``attributes`` (the text-free values recorded: feature short names, decision summaries), ``setup``
(:func:`configure_telemetry`: SDK providers and exporters from the ``OTEL_*`` variables; only the server entry
point calls it). Importing this package configures nothing and does not import the SDK. Reference:
``docs/observability.md``.
"""

from safesail_guard.telemetry.attributes import DecisionSummary, short_name
from safesail_guard.telemetry.instruments import GuardTelemetry
from safesail_guard.telemetry.request_trace import RequestTrace
from safesail_guard.telemetry.setup import TelemetryConfigError, TelemetryHandle, configure_telemetry

__all__ = [
    "DecisionSummary",
    "GuardTelemetry",
    "RequestTrace",
    "TelemetryConfigError",
    "TelemetryHandle",
    "configure_telemetry",
    "short_name",
]
