"""create_app(): settings, extensions, blueprints, error handlers, CLI. Nothing at import time."""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.pool
from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.middleware.proxy_fix import ProxyFix

from app.accounting.ledger import Ledger, ledger
from app.accounting.tail import Tails, tails
from app.broker import Publisher
from app.deletion.suppress import Suppressions, request_path_client
from app.ingest.journal import Journal, journal_for
from app.ingest.privacy import DEFAULT_SENSITIVE_PARAMS
from app.keys.cache import KeyCache
from app.keys.store import KeyStore
from app.observability import logging as obs_logging
from app.observability import metrics
from app.observability.context import new_request_id, request_id_var, valid_request_id
from app.settings import Settings, load_settings
from app.web.limits import IngestLimits

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the views need, attached as ``app.extensions["observer"]``."""

    settings: Settings
    keys: KeyCache
    key_store: KeyStore
    publisher: Publisher
    limiter: IngestLimits
    sensitive_params: frozenset
    journal: Journal | None
    suppressions: Suppressions
    # The sessions Redis with request-path timeouts (1 s, no retry): suppressions, client
    # reports, rejected events kept, the live tail; and this process's loss ledger.
    sessions_redis: Any
    ledger: Ledger
    tails: Tails


def _install_sentry(settings: Settings) -> None:
    if not settings.sentry_dsn:
        return
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration

    from app.observability.sentry import safe_options

    sentry_sdk.init(dsn=settings.sentry_dsn, environment=settings.observer_env, integrations=[FlaskIntegration()],
                    **safe_options())


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the web app from defaults, the environment and ``config`` overrides."""
    settings = load_settings(overrides=config)
    obs_logging.configure(settings.log_level, settings.log_format)
    _install_sentry(settings)
    app = Flask("observer", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = None  # the ingest body reader enforces its own limit (gzip too)
    if isinstance(app.json, DefaultJSONProvider):  # Flask's own provider: keep the fields' order
        app.json.sort_keys = False
    if settings.trusted_proxy_count:
        # Flask's documented way to add WSGI middleware; mypy sees wsgi_app as a method.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_count, x_proto=settings.trusted_proxy_count)  # type: ignore[method-assign]
    store = KeyStore(settings.database_url, settings.database_pool_max)
    request_r = request_path_client(settings.sessions_redis_url)
    limiter = IngestLimits(settings)
    app.extensions["observer"] = Runtime(
        settings=settings, keys=KeyCache(store.lookup, settings.key_cache_ttl, stale_max=settings.key_cache_stale_max,
                                         unavailable=(psycopg2.OperationalError, psycopg2.InterfaceError,
                                                      psycopg2.pool.PoolError)),
        key_store=store,
        publisher=Publisher(settings), limiter=limiter,
        sensitive_params=frozenset(DEFAULT_SENSITIVE_PARAMS | {p.lower() for p in settings.sensitive_query_params}),
        journal=journal_for(settings),
        suppressions=Suppressions(request_r, settings.redis_key_prefix),
        sessions_redis=request_r, ledger=ledger(settings.sessions_redis_url, settings.redis_key_prefix),
        tails=tails(settings.sessions_redis_url, settings.redis_key_prefix),
    )

    from app.web import cli, errors, health, ingest

    errors.register(app)
    app.register_blueprint(ingest.bp)
    app.register_blueprint(health.bp)
    cli.register(app)

    @app.before_request
    def _request_context() -> None:
        g.started = time.perf_counter()
        g.request_id = valid_request_id(request.headers.get("X-Request-ID")) or new_request_id()
        request_id_var.set(g.request_id)

    @app.after_request
    def _finish(resp: Response) -> Response:
        resp.headers["X-Request-ID"] = getattr(g, "request_id", "") or ""
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.HTTP_REQUESTS.labels(endpoint, str(resp.status_code)).inc()
        if hasattr(g, "started"):
            metrics.HTTP_LATENCY.labels(endpoint).observe(time.perf_counter() - g.started)
        return resp

    # Runs after every other after_request hook (they run in reverse order): Retry-After only
    # on 429, or our own value (e.g. 503's) where we set one.
    def _retry_after_only_where_meant(resp: Response) -> Response:
        if resp.status_code != 429:
            mine = getattr(g, "retry_after", None)
            if mine is not None:
                resp.headers["Retry-After"] = mine
            else:
                resp.headers.pop("Retry-After", None)
        return resp

    app.after_request_funcs.setdefault(None, []).insert(0, _retry_after_only_where_meant)
    return app
