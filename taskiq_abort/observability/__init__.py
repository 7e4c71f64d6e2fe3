"""Aborts seen from outside: the events hub, metrics, traces, progress, logs.

Nothing here is imported on the task path but the hub (``events``) and the log filter; the
extras (prometheus-client, OpenTelemetry) are imported when ``AbortObservability`` starts.
"""
