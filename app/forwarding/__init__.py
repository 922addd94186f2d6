"""Forwarding finished sessions to UFSE: payload, Standard Webhooks signing, HTTP client."""
