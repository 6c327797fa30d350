"""Configure the OpenTelemetry SDK (tracer and meter providers, exporters) from the standard ``OTEL_*`` variables.

Only the server entry point calls :func:`configure_telemetry`; everything else uses the API
(:mod:`safesail_guard.telemetry.instruments`). Supported variables:

- ``OTEL_SDK_DISABLED=true``: nothing is configured, every span and metric is a no-op.
- ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``: the resource (``service.version`` defaults to the
  package version).
- ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``: comma lists of ``otlp``, ``console``, ``none``.
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` (base URL, ``/v1/traces`` and ``/v1/metrics`` are appended) and the
  per-signal ``OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT`` (used as given); the same pattern for
  ``_HEADERS`` (``name=value`` pairs, values percent-encoded; a malformed entry is an error that never shows the
  value), ``_TIMEOUT`` (milliseconds, as the specification says; the Python exporter's own reading is
  seconds, so we pass the converted value explicitly) and ``_COMPRESSION`` (``gzip``, ``deflate``, ``none``).
- ``OTEL_EXPORTER_OTLP_PROTOCOL`` (and per signal): only ``http/protobuf``; ``grpc`` and ``http/json`` raise
  :class:`TelemetryConfigError` because those exporters are not installed.
- ``OTEL_METRIC_EXPORT_INTERVAL`` / ``OTEL_METRIC_EXPORT_TIMEOUT`` (ms), ``OTEL_BSP_*`` (batch span processor),
  ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``.

**Default when nothing is set: no exporter.** The OpenTelemetry specification's default for
``OTEL_TRACES_EXPORTER`` is ``otlp`` to ``localhost:4318``. We do not follow it: ``make run`` on a laptop has no
collector, and the OTLP exporter would then log a connection error every few seconds and retry with back-off
on shutdown, which buries the server's own output and slows Ctrl-C. So a signal is exported only when its
exporter variable is set, or an OTLP endpoint variable for it is set (setting ``OTEL_EXPORTER_OTLP_ENDPOINT``
alone turns on OTLP for both traces and metrics). A signal with no exporter gets the API's no-op provider, so
unexported telemetry costs nothing. :meth:`TelemetryHandle.describe` says which case applies on the banner.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import metrics, trace

from safesail_guard import __version__

EXPORTERS = ("otlp", "console", "none")
"""Valid entries of ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``."""
PROTOCOL = "http/protobuf"
"""The only OTLP protocol the installed exporter speaks."""
DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"
DEFAULT_METRIC_INTERVAL_MS = 60_000
DEFAULT_METRIC_TIMEOUT_MS = 30_000
DEFAULT_OTLP_TIMEOUT_MS = 10_000
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio")

_SIGNALS = {"traces": "TRACES", "metrics": "METRICS"}


class TelemetryConfigError(ValueError):
    """An ``OTEL_*`` variable asks for something this installation cannot do (the message says what is valid)."""


@dataclass(frozen=True)
class ExporterTarget:
    """Where one signal goes: exporter name and, for OTLP, its URL (credentials removed) and compression."""

    name: str
    endpoint: str | None = None
    compression: str | None = None

    def describe(self) -> str:
        """``otlp http://host:4318/v1/traces`` or ``console``."""
        if self.endpoint is None:
            return self.name
        extra = f" ({self.compression})" if self.compression and self.compression != "none" else ""
        return f"{self.name} {self.endpoint}{extra}"


@dataclass
class TelemetryHandle:
    """The configured providers; pass them to ``GuardTelemetry`` and call :meth:`shutdown` when the server stops.

    ``tracer_provider`` / ``meter_provider`` are SDK providers when their signal is exported, otherwise the API's
    no-op providers. ``traces`` / ``metrics`` list where each signal goes (empty: not exported).
    """

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    service_name: str
    traces: tuple[ExporterTarget, ...] = ()
    metrics: tuple[ExporterTarget, ...] = ()
    metric_interval_ms: int | None = None
    disabled: bool = False
    is_global: bool = False
    _shut: bool = field(default=False, repr=False)

    def force_flush(self, timeout_millis: int = 10_000) -> bool:
        """Export everything buffered now; True when every provider flushed in time."""
        ok = True
        for provider in (self.tracer_provider, self.meter_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                ok = bool(flush(timeout_millis)) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and stop the exporters (idempotent)."""
        if self._shut:
            return
        self._shut = True
        for provider in (self.tracer_provider, self.meter_provider):
            stop = getattr(provider, "shutdown", None)
            if stop is not None:
                stop()

    def describe(self) -> str:
        """One line for the start-up banner: where traces and metrics go."""
        if self.disabled:
            return "telemetry: disabled (OTEL_SDK_DISABLED=true)"
        if not self.traces and not self.metrics:
            return ("telemetry: off (set OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER to export; "
                    "see docs/observability.md)")
        traces = ", ".join(t.describe() for t in self.traces) or "off"
        metrics_ = ", ".join(t.describe() for t in self.metrics) or "off"
        if self.metrics and self.metric_interval_ms is not None:
            metrics_ += f" every {self.metric_interval_ms / 1000:g}s"
        return f"telemetry: service {self.service_name}; traces -> {traces}; metrics -> {metrics_}"


def configure_telemetry(service_name: str = "safesail-guard", *, env: Mapping[str, str] | None = None,
                        span_exporter: Any = None, metric_reader: Any = None,
                        set_global: bool = True) -> TelemetryHandle:
    """Build tracer and meter providers from ``env`` (default ``os.environ``); see the module docstring.

    ``span_exporter`` (added with a synchronous ``SimpleSpanProcessor``) and ``metric_reader`` are extra
    destinations, for tests; they turn their signal on even when no variable does. With ``set_global`` the
    providers become the process-wide API providers (possible once per process: tests pass ``False`` and hand
    the providers to ``GuardTelemetry``). Raises :class:`TelemetryConfigError` for values it cannot honour.
    """
    env = os.environ if env is None else env
    if _get(env, "OTEL_SDK_DISABLED").lower() == "true":
        return TelemetryHandle(trace.NoOpTracerProvider(), metrics.NoOpMeterProvider(), service_name,
                               disabled=True)

    trace_names = _exporter_names(env, "traces")
    metric_names = _exporter_names(env, "metrics")
    resource = _resource(service_name, env)
    name = str(resource.attributes.get("service.name", service_name))

    tracer_provider: trace.TracerProvider = trace.NoOpTracerProvider()
    trace_targets: list[ExporterTarget] = []
    if trace_names or span_exporter is not None:
        tracer_provider, trace_targets = _tracer_provider(env, resource, trace_names, span_exporter, set_global)

    meter_provider: metrics.MeterProvider = metrics.NoOpMeterProvider()
    metric_targets: list[ExporterTarget] = []
    interval: int | None = None
    if metric_names or metric_reader is not None:
        interval = _int_ms(env, "OTEL_METRIC_EXPORT_INTERVAL", DEFAULT_METRIC_INTERVAL_MS)
        meter_provider, metric_targets = _meter_provider(env, resource, metric_names, metric_reader, interval,
                                                         set_global)

    handle = TelemetryHandle(tracer_provider, meter_provider, name, tuple(trace_targets), tuple(metric_targets),
                             interval if metric_names else None)
    if set_global:
        if trace_targets or span_exporter is not None:
            trace.set_tracer_provider(tracer_provider)
            handle.is_global = True
        if metric_targets or metric_reader is not None:
            metrics.set_meter_provider(meter_provider)
            handle.is_global = True
    return handle


# -- pieces ----------------------------------------------------------------------------------------------------------
def _get(env: Mapping[str, str], key: str) -> str:
    return (env.get(key) or "").strip()


def _exporter_names(env: Mapping[str, str], signal: str) -> list[str]:
    """The exporters asked for ``signal`` (``traces``/``metrics``), after the no-collector default."""
    upper = _SIGNALS[signal]
    raw = _get(env, f"OTEL_{upper}_EXPORTER")
    if not raw:
        has_endpoint = _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or _get(env, f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")
        out = ["otlp"] if has_endpoint else []
    else:
        names = [part.strip().lower() for part in raw.split(",") if part.strip()]
        bad = [x for x in names if x not in EXPORTERS]
        if bad:
            raise TelemetryConfigError(f"OTEL_{upper}_EXPORTER={raw!r}: unknown exporter {bad[0]!r}; "
                                       f"valid values: {', '.join(EXPORTERS)} (comma-separated)")
        if "none" in names and len(names) > 1:
            raise TelemetryConfigError(f"OTEL_{upper}_EXPORTER={raw!r}: 'none' cannot be combined with other "
                                       "exporters")
        out = [x for x in dict.fromkeys(names) if x != "none"]
    if "otlp" in out:
        _check_protocol(env, upper)
    return out


def _check_protocol(env: Mapping[str, str], upper: str) -> None:
    for key in (f"OTEL_EXPORTER_OTLP_{upper}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = _get(env, key)
        if not value:
            continue
        if value.lower() != PROTOCOL:
            hint = (" (the gRPC exporter is not installed; collectors accept OTLP/HTTP on port 4318)"
                    if value.lower() == "grpc" else "")
            raise TelemetryConfigError(f"{key}={value!r} is not supported: safesail-guard exports OTLP over "
                                       f"{PROTOCOL} only{hint}; unset it or set it to {PROTOCOL}")
        return  # the per-signal value, when set, wins over the general one


def _resource(service_name: str, env: Mapping[str, str]) -> Any:
    """service.name: OTEL_SERVICE_NAME > service.name in OTEL_RESOURCE_ATTRIBUTES > ``service_name``."""
    from opentelemetry.sdk.resources import (
        SERVICE_NAME,
        SERVICE_VERSION,
        TELEMETRY_SDK_LANGUAGE,
        TELEMETRY_SDK_NAME,
        TELEMETRY_SDK_VERSION,
        Resource,
    )
    from opentelemetry.sdk.version import __version__ as sdk_version

    attrs: dict[str, Any] = {TELEMETRY_SDK_LANGUAGE: "python", TELEMETRY_SDK_NAME: "opentelemetry",
                             TELEMETRY_SDK_VERSION: sdk_version, SERVICE_NAME: service_name,
                             SERVICE_VERSION: __version__}
    attrs.update(_parse_resource_attributes(_get(env, "OTEL_RESOURCE_ATTRIBUTES")))
    if _get(env, "OTEL_SERVICE_NAME"):
        attrs[SERVICE_NAME] = _get(env, "OTEL_SERVICE_NAME")
    return Resource(attrs)


def _parse_resource_attributes(raw: str) -> dict[str, str]:
    """``key1=value1,key2=value2`` with percent-encoded values; malformed pairs raise."""
    from urllib.parse import unquote

    out: dict[str, str] = {}
    for pair in raw.split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TelemetryConfigError(f"OTEL_RESOURCE_ATTRIBUTES: {pair.strip()!r} is not key=value")
        out[key.strip()] = unquote(value.strip())
    return out


def _int_ms(env: Mapping[str, str], key: str, default: int) -> int:
    raw = _get(env, key)
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise TelemetryConfigError(f"{key}={raw!r} is not a number of milliseconds") from None
    if value <= 0:
        raise TelemetryConfigError(f"{key}={raw!r} must be a positive number of milliseconds")
    return value


def _signal_key(env: Mapping[str, str], upper: str, suffix: str) -> str:
    """The variable that sets ``suffix`` for a signal: the per-signal one when set, else the general one."""
    specific = f"OTEL_EXPORTER_OTLP_{upper}_{suffix}"
    return specific if _get(env, specific) else f"OTEL_EXPORTER_OTLP_{suffix}"


def otlp_endpoint(env: Mapping[str, str], signal: str) -> str:
    """The OTLP/HTTP URL of ``signal``: the per-signal variable as given, else the base URL + ``/v1/<signal>``."""
    upper = _SIGNALS[signal]
    specific = _get(env, f"OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")
    if specific:
        return specific
    base = _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_OTLP_ENDPOINT
    return f"{base.rstrip('/')}/v1/{signal}"


def _otlp_options(env: Mapping[str, str], signal: str) -> tuple[dict[str, Any], ExporterTarget]:
    """Keyword arguments for an OTLP/HTTP exporter of ``signal``, and its banner description."""
    from opentelemetry.exporter.otlp.proto.http import Compression

    upper = _SIGNALS[signal]
    endpoint = otlp_endpoint(env, signal)
    endpoint_key = _signal_key(env, upper, "ENDPOINT")
    try:
        parts = urlsplit(endpoint)
        _ = parts.port  # raises for a port that is not a number in range
    except ValueError as exc:
        raise TelemetryConfigError(f"{endpoint_key}: the OTLP {signal} endpoint {_redact(endpoint)!r} is not a "
                                   f"valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TelemetryConfigError(f"{endpoint_key}: the OTLP {signal} endpoint {_redact(endpoint)!r} is not an "
                                   "http(s) URL")
    compression_key = _signal_key(env, upper, "COMPRESSION")
    compression = (_get(env, compression_key) or "none").lower()
    valid = [c.value for c in Compression]
    if compression not in valid:
        raise TelemetryConfigError(f"{compression_key}={compression!r} is not supported; valid: {', '.join(valid)}")
    timeout_ms = _int_ms(env, _signal_key(env, upper, "TIMEOUT"), DEFAULT_OTLP_TIMEOUT_MS)
    headers = _otlp_headers(env, upper)
    options = {"endpoint": endpoint, "headers": headers, "timeout": timeout_ms / 1000,
               "compression": Compression(compression)}
    return options, ExporterTarget("otlp", _redact(endpoint), compression)


_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP header name (an RFC 9110 token)."""
_HEADER_SPLIT = re.compile(r"[ \t]*,[ \t]*")


def _otlp_headers(env: Mapping[str, str], upper: str) -> dict[str, str]:
    """The OTLP headers of a signal: ``name=value`` pairs separated by commas, values percent-encoded.

    Stricter than the SDK's parser, which skips a malformed entry with a warning that prints the entry, and so
    can print a credential into the server log, and which lets through values that the HTTP client rejects
    later, at every export, with the value in its error. Here a malformed entry is a `TelemetryConfigError`
    that names the variable and the entry's position, never its value. Names are lowercased (as the SDK does).
    """
    from urllib.parse import unquote

    key = _signal_key(env, upper, "HEADERS")
    raw = _get(env, key)
    entries = [e for e in _HEADER_SPLIT.split(raw) if e.strip()] if raw else []
    headers: dict[str, str] = {}
    for i, entry in enumerate(entries, 1):
        name, sep, value = entry.partition("=")
        name = unquote(name).strip()
        where = f"{key}: entry {i} of {len(entries)}"
        if not sep or not _HEADER_NAME.fullmatch(name):
            raise TelemetryConfigError(f"{where} is not name=value with a valid header name (the entry is not "
                                       "shown: it may hold a credential); write name=value pairs separated by "
                                       "commas, with percent-encoded values (e.g. authorization=Bearer%20TOKEN)")
        try:
            decoded = unquote(value.strip(), errors="strict")
        except UnicodeDecodeError:
            decoded = None
        if decoded is None or any(not (ch == "\t" or " " <= ch <= "~" or "\xa0" <= ch <= "\xff") for ch in decoded):
            raise TelemetryConfigError(f"{where} (header {name.lower()!r}): the value holds characters an HTTP "
                                       "header cannot carry (control characters, or non-Latin-1 text); the value "
                                       "is not shown: it may hold a credential")
        headers[name.lower()] = decoded.strip()
    return headers


def _redact(url: str) -> str:
    """``url`` without user:password@ and with its query string's values hidden (banner lines and errors must
    not leak credentials, and some collectors take a key as a query parameter)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # cannot tell where the credentials are: show none of it
        return "<unparsable URL>"
    query = parts.query
    if query:
        query = "&".join(f"{p.partition('=')[0]}=..." if "=" in p else "..." for p in query.split("&"))
    if parts.username is None and parts.password is None and query == parts.query:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _sampler(env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.trace import sampling

    name = _get(env, "OTEL_TRACES_SAMPLER").lower() or "parentbased_always_on"
    if name not in SAMPLERS:
        raise TelemetryConfigError(f"OTEL_TRACES_SAMPLER={name!r} is not supported; valid: {', '.join(SAMPLERS)}")
    if name.endswith("always_on"):
        root = sampling.ALWAYS_ON
    elif name.endswith("always_off"):
        root = sampling.ALWAYS_OFF
    else:
        raw = _get(env, "OTEL_TRACES_SAMPLER_ARG") or "1.0"
        try:
            ratio = float(raw)
        except ValueError:
            raise TelemetryConfigError(f"OTEL_TRACES_SAMPLER_ARG={raw!r} is not a ratio in [0, 1]") from None
        if not 0.0 <= ratio <= 1.0:
            raise TelemetryConfigError(f"OTEL_TRACES_SAMPLER_ARG={raw!r} is not a ratio in [0, 1]")
        root = sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def _tracer_provider(env: Mapping[str, str], resource: Any, names: Sequence[str], extra: Any,
                     set_global: bool) -> tuple[Any, list[ExporterTarget]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=resource, sampler=_sampler(env), shutdown_on_exit=set_global)
    targets: list[ExporterTarget] = []
    for name in names:
        if name == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            targets.append(ExporterTarget("console"))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            options, target = _otlp_options(env, "traces")
            bsp = _bsp_options(env)
            try:
                processor = BatchSpanProcessor(OTLPSpanExporter(**options), **bsp)
            except ValueError as exc:  # e.g. a batch size larger than the queue
                keys = ", ".join(k for k in _BSP_KEYS if _get(env, k)) or "OTEL_BSP_*"
                raise TelemetryConfigError(f"{keys}: {exc}") from None
            provider.add_span_processor(processor)
            targets.append(target)
    if extra is not None:
        provider.add_span_processor(SimpleSpanProcessor(extra))
    return provider, targets


_BSP_KEYS = {"OTEL_BSP_SCHEDULE_DELAY": "schedule_delay_millis", "OTEL_BSP_MAX_QUEUE_SIZE": "max_queue_size",
             "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "max_export_batch_size",
             "OTEL_BSP_EXPORT_TIMEOUT": "export_timeout_millis"}


def _bsp_options(env: Mapping[str, str]) -> dict[str, Any]:
    return {arg: _int_ms(env, key, 1) for key, arg in _BSP_KEYS.items() if _get(env, key)}


def _meter_provider(env: Mapping[str, str], resource: Any, names: Sequence[str], extra: Any, interval: int,
                    set_global: bool) -> tuple[Any, list[ExporterTarget]]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader

    timeout = _int_ms(env, "OTEL_METRIC_EXPORT_TIMEOUT", DEFAULT_METRIC_TIMEOUT_MS)
    readers: list[Any] = []
    targets: list[ExporterTarget] = []
    for name in names:
        if name == "console":
            exporter: Any = ConsoleMetricExporter()
            targets.append(ExporterTarget("console"))
        else:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            options, target = _otlp_options(env, "metrics")
            exporter = OTLPMetricExporter(**options)
            targets.append(target)
        readers.append(PeriodicExportingMetricReader(exporter, export_interval_millis=interval,
                                                     export_timeout_millis=timeout))
    if extra is not None:
        readers.append(extra)
    return MeterProvider(metric_readers=readers, resource=resource, shutdown_on_exit=set_global), targets
