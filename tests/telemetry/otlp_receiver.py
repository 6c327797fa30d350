"""A loopback OTLP/HTTP receiver for tests: what a collector would see, decoded into plain dicts.

Runs ``http.server.ThreadingHTTPServer`` on 127.0.0.1 with an OS-chosen port in a daemon thread and accepts
``POST /v1/traces`` and ``POST /v1/metrics`` with protobuf bodies (``ExportTraceServiceRequest`` /
``ExportMetricsServiceRequest``), gzip- or deflate-encoded or plain, as the OTLP/HTTP exporters send them.
Other paths get 404, other content types 415. Every request's path and headers are kept in ``requests``.

Usage::

    with OTLPReceiver() as rx:
        handle = configure_telemetry(env={"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint}, set_global=False)
        ...  # emit, then handle.force_flush()
        assert rx.wait_for(lambda: any(s["name"] == "chat m" for s in rx.spans()))
        rx.metrics()["safesail.requests"][0]["value"]

Span dicts: ``name, trace_id, span_id, parent_span_id`` (hex; parent None for a root), ``kind`` (``SERVER``,
``CLIENT``, ``INTERNAL``, ...), ``status`` (``UNSET``/``OK``/``ERROR``), ``status_message``, ``attributes``,
``events`` (``[{name, attributes}]``), ``resource`` (resource attributes), ``scope`` (instrumentation scope name),
``start_ns``, ``end_ns``. Metric points: ``type`` (``sum``/``gauge``/``histogram``), ``unit``, ``attributes`` and
``value`` (sum, gauge) or ``count, sum, min, max, bucket_counts, explicit_bounds`` (histogram).
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

TRACES_PATH = "/v1/traces"
METRICS_PATH = "/v1/metrics"
PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedRequest:
    """One POST the receiver answered: its path, headers (lower-case names) and body size before decoding."""

    path: str
    headers: dict[str, str]
    size: int


def any_value(value: Any) -> Any:
    """A protobuf ``AnyValue`` as a Python value (arrays as lists, kvlists as dicts, bytes as bytes)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(kvs: Any) -> dict[str, Any]:
    """Repeated ``KeyValue`` as a dict."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def _hex(raw: bytes) -> str | None:
    return raw.hex() if raw and any(raw) else None


def decode_spans(request: ExportTraceServiceRequest) -> list[dict[str, Any]]:
    """Every span of an export request as a dict (see the module docstring)."""
    out = []
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append({
                    "name": s.name,
                    "trace_id": s.trace_id.hex(),
                    "span_id": s.span_id.hex(),
                    "parent_span_id": _hex(s.parent_span_id),
                    "kind": Span.SpanKind.Name(s.kind).removeprefix("SPAN_KIND_"),
                    "status": Status.StatusCode.Name(s.status.code).removeprefix("STATUS_CODE_"),
                    "status_message": s.status.message,
                    "attributes": attributes(s.attributes),
                    "events": [{"name": e.name, "attributes": attributes(e.attributes)} for e in s.events],
                    "resource": resource,
                    "scope": ss.scope.name,
                    "start_ns": s.start_time_unix_nano,
                    "end_ns": s.end_time_unix_nano,
                })
    return out


def _number(point: Any) -> float | int:
    return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double


def decode_metrics(request: ExportMetricsServiceRequest) -> list[tuple[str, dict[str, Any]]]:
    """Every data point of an export request as ``(metric name, point dict)``, in order."""
    out: list[tuple[str, dict[str, Any]]] = []
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind in ("sum", "gauge"):
                    for p in getattr(m, kind).data_points:
                        out.append((m.name, {"type": kind, "unit": m.unit, "attributes": attributes(p.attributes),
                                             "value": _number(p)}))
                elif kind == "histogram":
                    for p in m.histogram.data_points:
                        out.append((m.name, {
                            "type": "histogram", "unit": m.unit, "attributes": attributes(p.attributes),
                            "count": p.count, "sum": p.sum if p.HasField("sum") else None,
                            "min": p.min if p.HasField("min") else None, "max": p.max if p.HasField("max") else None,
                            "bucket_counts": list(p.bucket_counts), "explicit_bounds": list(p.explicit_bounds),
                        }))
                else:  # exponential histograms and summaries: kept by name only
                    out.append((m.name, {"type": kind or "unknown", "unit": m.unit, "attributes": {}}))
    return out


class OTLPReceiver:
    """An OTLP/HTTP receiver on ``127.0.0.1:<free port>``; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._spans: list[dict[str, Any]] = []
        self._points: list[tuple[str, dict[str, Any]]] = []
        self.requests: list[ReceivedRequest] = []
        self.errors: list[str] = []
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """Base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT``, e.g. ``http://127.0.0.1:43127``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> OTLPReceiver:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="otlp-receiver", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- reading --------------------------------------------------------------------------------------------------
    def spans(self) -> list[dict[str, Any]]:
        """Every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    def metrics(self, latest: bool = True) -> dict[str, list[dict[str, Any]]]:
        """``{metric name: [point, ...]}``. With ``latest`` (default) only the last point of each attribute set is
        kept: with cumulative temporality (the exporter's default) that point holds the running total."""
        with self._lock:
            points = list(self._points)
        out: dict[str, list[dict[str, Any]]] = {}
        if not latest:
            for name, point in points:
                out.setdefault(name, []).append(point)
            return out
        last: dict[str, dict[tuple[tuple[str, str], ...], dict[str, Any]]] = {}
        for name, point in points:
            key = tuple(sorted((k, repr(v)) for k, v in point["attributes"].items()))
            last.setdefault(name, {})[key] = point
        return {name: list(by_attrs.values()) for name, by_attrs in last.items()}

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> bool:
        """Poll ``predicate()`` until it is truthy (True) or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def clear(self) -> None:
        """Forget everything received."""
        with self._lock:
            self._spans.clear()
            self._points.clear()
            self.requests.clear()
            self.errors.clear()

    # -- serving --------------------------------------------------------------------------------------------------
    def _store(self, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if path == TRACES_PATH:
            req = ExportTraceServiceRequest()
            req.ParseFromString(body)
            spans = decode_spans(req)
            with self._lock:
                self._spans.extend(spans)
                self.requests.append(ReceivedRequest(path, headers, len(body)))
            return ExportTraceServiceResponse().SerializeToString()
        req_m = ExportMetricsServiceRequest()
        req_m.ParseFromString(body)
        points = decode_metrics(req_m)
        with self._lock:
            self._points.extend(points)
            self.requests.append(ReceivedRequest(path, headers, len(body)))
        return ExportMetricsServiceResponse().SerializeToString()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 10

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

            def _reply(self, status: int, body: bytes = b"", content_type: str = PROTOBUF) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                if path not in (TRACES_PATH, METRICS_PATH):
                    self._reply(404, b"not found", "text/plain")
                    return
                if (self.headers.get("Content-Type") or "").split(";")[0].strip() != PROTOBUF:
                    self._reply(415, b"only application/x-protobuf", "text/plain")
                    return
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                try:
                    body = (gzip.decompress(raw) if encoding == "gzip"
                            else zlib.decompress(raw) if encoding == "deflate" else raw)
                    reply = receiver._store(path, {k.lower(): v for k, v in self.headers.items()}, body)
                except Exception as exc:  # a malformed body is the exporter's bug: say so and keep serving
                    with receiver._lock:
                        receiver.errors.append(f"{path}: {type(exc).__name__}: {exc}")
                    self._reply(400, b"bad request", "text/plain")
                    return
                self._reply(200, reply)

        return Handler
