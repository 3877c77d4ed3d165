"""Operators: Prometheus metrics and systemd readiness/logging
(docs/operations.md).
"""
