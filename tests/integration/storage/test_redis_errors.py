"""Redis refusals classified by exception type and reply code, on replies a real server sends.

Each refusal is produced on a private redis-server (the suite's shared one is never reconfigured)
and goes through redis-py as a worker meets it: a direct command, and the same call inside a Lua
script (the session step's shape). Waiting fixes the transient ones, so the events flush requeues
and pauses on them; only data errors may end in a dead letter.
"""
from __future__ import annotations

import threading
import time

import pytest
import redis

from app.events.flush import REQUEUE, FlushDeps, Item, run_flush
from app.storage.redis_clients import is_transient, reply_code
from devtools.servers.redis import start_redis

SET_IN_SCRIPT = "return redis.call('SET', KEYS[1], ARGV[1])"


@pytest.fixture
def server(tmp_path):
    proc = start_redis(tmp_path / "redis", appendonly=False)
    client = redis.Redis.from_url(proc.url, decode_responses=True, socket_timeout=10)
    client.url = proc.url  # for a second connection
    yield client
    proc.stop()


def _refusals(r: redis.Redis, big: bool = False) -> list[BaseException]:
    """The error of a direct write and of the same write in a Lua script."""
    out = []
    for call in (lambda: r.set("k", "v" * (200_000 if big else 1)),
                 lambda: r.register_script(SET_IN_SCRIPT)(keys=["k2"], args=["v"])):
        with pytest.raises(redis.RedisError) as info:
            call()
        out.append(info.value)
    return out


def _flush_with_session_step_failing(exc: BaseException) -> dict:
    """An events flush whose session step meets ``exc``: its verdicts and pause."""
    dead: list = []

    def count(_batches):
        raise exc

    deps = FlushDeps(insert=lambda b: None, count_sessions=count, publish_session_step=lambda b: None,
                     park=lambda i, d: None, dead_letter=lambda i, e: dead.append(i), schedule=(60.0,))
    out = run_flush([Item("r1", {"batch_id": "b1", "project": "p", "events": []})], deps)
    return {"verdicts": set(out.verdicts.values()), "pause": out.pause, "dead": dead}


def test_out_of_memory_is_transient_direct_and_in_a_script(server):
    server.set("fill", "x" * 300_000)
    server.config_set("maxmemory-policy", "noeviction")
    server.config_set("maxmemory", "1mb")
    direct, scripted = _refusals(server, big=True)
    assert isinstance(direct, redis.exceptions.OutOfMemoryError)
    assert "OOM" not in str(direct), "redis-py strips the code: the text alone cannot tell"
    print(f"OOM as redis-py raises it: {type(direct).__name__}({str(direct)!r}); in a script: {str(scripted)[:90]!r}")
    for exc in (direct, scripted):
        assert reply_code(exc) == "OOM" and is_transient(exc), repr(exc)
    # The session step meeting it is requeued with a pause, never acked into a dead letter.
    assert _flush_with_session_step_failing(direct) == {"verdicts": {REQUEUE}, "pause": True, "dead": []}


def test_too_few_replicas_and_a_read_only_replica_are_transient(server):
    server.config_set("min-replicas-to-write", "1")
    for exc in _refusals(server):
        assert reply_code(exc) == "NOREPLICAS" and is_transient(exc), repr(exc)
    server.config_set("min-replicas-to-write", "0")
    server.replicaof("127.0.0.1", "1")  # a replica of an unreachable master: read-only
    try:
        direct, scripted = _refusals(server)
        assert isinstance(direct, redis.exceptions.ReadOnlyError)
        assert reply_code(scripted) == "READONLY" and is_transient(direct) and is_transient(scripted)
    finally:
        server.replicaof("NO", "ONE")


def test_a_failed_background_save_misconf_is_transient(server):
    server.config_set("stop-writes-on-bgsave-error", "yes")
    server.config_set("save", "3600 1")  # writes stop on a failed save only where saving is configured
    server.set("a", "1")
    server.config_set("dir", "/proc")  # nowhere the save can write its temporary file
    server.bgsave()
    deadline = time.monotonic() + 20
    while server.info("persistence").get("rdb_last_bgsave_status") != "err":
        assert time.monotonic() < deadline, "the background save did not fail"
        time.sleep(0.05)
    try:
        for exc in _refusals(server):
            assert reply_code(exc) == "MISCONF" and is_transient(exc), repr(exc)
    finally:
        server.config_set("save", "")  # else the server's own shutdown tries to save into /proc


def test_a_busy_script_is_transient(server):
    server.config_set("lua-time-limit", "10")  # the threshold after which others get BUSY
    spinner = redis.Redis.from_url(server.url, socket_timeout=30)
    t = threading.Thread(target=lambda: pytest.raises(redis.RedisError, spinner.eval,
                                                      "while true do end", 0), daemon=True)
    t.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                server.set("k", "v")
            except redis.ResponseError as exc:
                busy = exc
                break
            assert time.monotonic() < deadline, "never busy"
            time.sleep(0.02)
        assert reply_code(busy) == "BUSY" and is_transient(busy), repr(busy)
    finally:
        server.script_kill()
        t.join(5)


def test_data_errors_stay_permanent(server):
    server.lpush("list", "x")
    with pytest.raises(redis.ResponseError) as wrongtype:
        server.hset("list", "f", "v")
    with pytest.raises(redis.ResponseError) as in_script:
        server.eval("return redis.call('HSET', KEYS[1], 'f', 'v')", 1, "list")
    with pytest.raises(redis.ResponseError) as syntax:
        server.eval("this is not lua", 0)
    for exc in (wrongtype.value, in_script.value, syntax.value):
        assert not is_transient(exc), repr(exc)
    assert not is_transient(redis.exceptions.ClusterCrossSlotError("Keys in request don't hash to the same slot"))


def test_loading_as_redis_py_parses_the_servers_reply():
    """LOADING needs a dataset big enough to watch load; redis-py's own parser turns the reply the
    server sends (the text below, from server.c) into the exception a worker would meet."""
    from redis._parsers.base import BaseParser

    exc = BaseParser.parse_error("LOADING Redis is loading the dataset in memory")
    assert isinstance(exc, redis.exceptions.BusyLoadingError) and is_transient(exc)
