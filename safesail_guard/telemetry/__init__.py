"""OpenTelemetry for the guard proxy: traces, span events and metrics of guarded requests.

Modules: ``names`` (every span, event, attribute and metric name), ``instruments`` (:class:`GuardTelemetry`,
API only: what library and server code call per request), ``setup`` (:func:`configure_telemetry`: SDK
providers and exporters from the ``OTEL_*`` variables; only the server entry point calls it). Importing this
package configures nothing and does not import the SDK. Reference: ``docs/observability.md``.
"""

from safesail_guard.telemetry.instruments import DecisionSummary, GuardTelemetry, RequestTrace, short_name
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
