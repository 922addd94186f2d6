"""The bare parse-and-push baseline: Flask on gunicorn, parse the JSON body, LPUSH it to Redis.

What any ingest endpoint costs at least (HTTP, routing, JSON, one Redis round trip), so
Observer's rate is stated as a ratio of it measured in the same run (``baseline.py`` runs it).
"""
from __future__ import annotations

import gzip
import json
import os

import redis
from flask import Flask, jsonify, request


def create_app() -> Flask:
    """The app; its Redis client is created per gunicorn worker (the factory runs after fork)."""
    app = Flask(__name__)
    r = redis.Redis.from_url(os.environ["BASELINE_REDIS_URL"], socket_timeout=5)
    key = os.environ.get("BASELINE_LIST", "baseline:events")

    @app.post("/v1/events")
    def ingest():
        """Parse the batch and push the body as it came."""
        body = request.get_data()
        try:
            raw = gzip.decompress(body) if request.headers.get("Content-Encoding") == "gzip" else body
            events = json.loads(raw)["events"]
        except (ValueError, KeyError, TypeError, OSError):
            return jsonify(error="malformed"), 400
        r.lpush(key, body)
        return jsonify(accepted=len(events)), 202

    @app.get("/health")
    def health():
        """Ready once Redis answers."""
        r.ping()
        return jsonify(ok=True)

    return app
