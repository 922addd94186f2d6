"""Settings: defaults, precedence, and start-up errors that name the variable."""
from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from app.settings import SPEC, ConfigError, Settings, env_bool, load_settings, read_env_file

ROOT = Path(__file__).resolve().parents[2]


def _load(env=None, **overrides):
    return load_settings({"OBSERVER_ENV_FILE": str(_EMPTY[0]), **(env or {})}, overrides)


# An empty env file per test: xdist runs this module's tests in several processes at once, so a
# file shared beside the module was removed by one worker's teardown while another read it.
_EMPTY: list[Path] = [Path("/nonexistent")]


@pytest.fixture(autouse=True)
def _empty_env_file(tmp_path):
    _EMPTY[0] = tmp_path / "empty.env"
    _EMPTY[0].write_text("")


def test_defaults_and_derived_urls():
    s = _load()
    assert s.port == 8000 and s.session_idle_timeout == 1800 and s.session_max_duration == 86400
    # The timings the visibility timeout implies, at the defaults and when it changes.
    assert (s.sessions_retry_max, s.journal_grace, s.batch_marker_ttl, s.beat_stale_after) == (30, 90, 900, 60)
    # A non-default visibility timeout (300 s) on purpose: the derived values must follow it.
    t = _load({"BROKER_VISIBILITY_TIMEOUT": "300"})
    assert (t.sessions_retry_max, t.journal_grace, t.batch_marker_ttl) == (150, 450, 4500)
    assert t.batch_marker_ttl >= t.journal_grace + 2 * t.broker_visibility_timeout
    assert s["JOURNAL_GRACE"] == 90
    assert s.celery_broker_url == s.redis_url == s.sessions_redis_url == s.ratelimit_redis_url
    assert s.chdb_path is None


def test_environment_overrides_file_and_overrides_win(tmp_path):
    f = tmp_path / "o.env"
    f.write_text("# comment\nSESSION_IDLE_TIMEOUT=30\nPORT='9000'\n\nCLICKHOUSE_URL=chdb:///tmp/x\n")
    s = load_settings({"OBSERVER_ENV_FILE": str(f), "PORT": "9100"}, {"REDIS_URL": "redis://h:1/2"})
    assert s.session_idle_timeout == 30 and s.port == 9100 and s.redis_url == "redis://h:1/2"
    assert s.chdb_path == "/tmp/x" and s.celery_broker_url == "redis://h:1/2"  # noqa: S108 -- compared, never opened
    assert read_env_file(f)["PORT"] == "9000"


@pytest.mark.parametrize("name,value,fragment", [
    ("SESSION_IDLE_TIMEOUT", "abc", "SESSION_IDLE_TIMEOUT: expected an integer"),
    ("PORT", "0", "PORT: must be >= 1"),
    ("UFSE_TIMEOUT", "soon", "UFSE_TIMEOUT: expected a number"),
    ("RATELIMIT_FAIL_OPEN", "ture", "RATELIMIT_FAIL_OPEN: expected one of"),
    ("REDIS_URL", "http://x", "REDIS_URL: expected a URL"),
    ("CLICKHOUSE_URL", "mysql://x", "CLICKHOUSE_URL"),
    ("RATE_LIMIT_DEFAULT", "lots", "RATE_LIMIT_DEFAULT: expected a rate"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT: expected one of"),
    ("UFSE_URL", "http://u/x", "UFSE_SECRET: required"),
    ("SESSION_MAX_DURATION", "10", "SESSION_MAX_DURATION: must be >= SESSION_IDLE_TIMEOUT"),
    ("BROKER_SOCKET_TIMEOUT", "40", "BROKER_VISIBILITY_TIMEOUT: must be at least twice BROKER_SOCKET_TIMEOUT"),
    ("CLICKHOUSE_TIMEOUT", "60", "BROKER_VISIBILITY_TIMEOUT: must be at least twice EVENTS_FLUSH_INTERVAL"),
    ("FORWARD_RETRY_SCHEDULE", "5,,soon", "FORWARD_RETRY_SCHEDULE: expected a number"),
    ("EVENTS_RETRY_SCHEDULE", ",", "EVENTS_RETRY_SCHEDULE: expected comma-separated seconds"),
    ("BATCH_MARKER_TTL", "30", "BATCH_MARKER_TTL: derived (BATCH_MARKER_TTL = 15 x BROKER_VISIBILITY_TIMEOUT)"),
    ("JOURNAL_GRACE", "10", "JOURNAL_GRACE: derived"),
    # below twice JOURNAL_GRACE (90 s at the defaults) the journal's entries expired before the
    # sweep could re-publish them: the journal was off without a word
    ("DEDUP_WINDOW", "120", "DEDUP_WINDOW: must be at least twice JOURNAL_GRACE"),
])
def test_bad_values_stop_start_up_naming_the_variable(name, value, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        _load({name: value})


def test_bad_secret_and_unknown_override():
    with pytest.raises(ConfigError, match="UFSE_SECRET"):
        _load({"UFSE_URL": "http://u/x", "UFSE_SECRET": "whsec_!!!"})
    with pytest.raises(ConfigError, match="unknown setting"):
        _load(NOPE=1)
    with pytest.raises(ConfigError, match="OBSERVER_ENV_FILE"):
        load_settings({"OBSERVER_ENV_FILE": "/nonexistent/file"})
    assert _load({"UFSE_URL": "http://u/x", "UFSE_SECRET": "whsec_dGVzdHNlY3JldA=="}).ufse_url == "http://u/x"


def test_env_bool_spellings():
    assert env_bool("X", "Yes") is True and env_bool("X", "off") is False


def test_readme_documents_every_setting():
    readme = (ROOT / "docs" / "CONFIGURATION.md").read_text()
    missing = [name for name in SPEC if f"`{name}`" not in readme]
    assert not missing, f"docs/CONFIGURATION.md lacks {missing} (python -m devtools.settings_table)"


def test_settings_attributes_are_spec_in_order_with_the_parsers_types():
    """Settings declares one attribute per SPEC entry, in order, typed as its parser returns."""
    assert [f.name for f in dataclasses.fields(Settings)] == [name.lower() for name in SPEC]
    hints = typing.get_type_hints(Settings)
    s = _load()
    for name, (_default, parse, _doc) in SPEC.items():
        value = getattr(s, name.lower())
        assert s[name] == value
        declared = hints[name.lower()]
        if typing.get_origin(declared) is tuple:
            item = typing.get_args(declared)[0]
            assert isinstance(value, tuple) and all(type(v) is item for v in value), (name, declared, value)
            # a one-item list: the item's type even when the default is empty
            probe = parse(name, "10.0.0.0/8" if name == "DESTINATIONS_ALLOWED_NETWORKS" else "1")
            assert all(type(v) is item for v in probe), (name, declared, probe)
        else:
            assert type(value) is declared, (name, declared, value)
    with pytest.raises(KeyError):
        s["NOPE"]
