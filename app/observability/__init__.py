"""Logging, metrics, request ids and Sentry."""
