"""Flower's configuration file (``celery -A tasks flower --conf=./flowerconfig.py``).

Flower executes it after reading its ``FLOWER_*`` environment variables and command line, so
it can refuse to start an unauthenticated dashboard: Flower shows every task's arguments and
can revoke tasks and shut workers down. Credentials: ``FLOWER_BASIC_AUTH=user:password``
(comma-separated for several users) or ``--basic-auth=...``; OAuth (``FLOWER_AUTH`` +
``FLOWER_AUTH_PROVIDER``) counts too. ``make run`` generates its own (var/flower_auth).
"""
import sys

from tornado.options import options


def _has_credentials() -> bool:
    pairs = [p for p in (options.basic_auth or []) if p]
    if pairs and all(user and password for user, _, password in (p.partition(":") for p in pairs)):
        return True
    return bool(options.auth and options.auth_provider)


if not _has_credentials():
    sys.exit("flower: refusing to start without credentials: set FLOWER_BASIC_AUTH=user:password "
             "(or --basic-auth=user:password, or FLOWER_AUTH + FLOWER_AUTH_PROVIDER for OAuth)")
