"""Tests of the OpenTelemetry helpers (`safesail_guard.telemetry`) and the loopback OTLP receiver they use."""
