"""Failure isolation in an events flush, and the default retry schedules.

The insert callable raises the real exceptions a flush meets: redis-py's ConnectionError, a
ClickHouseError classified from clickhouse-driver's own error classes.
"""
from __future__ import annotations

import redis
from clickhouse_driver import errors as drv

from app.events.flush import ACK, REQUEUE, FlushDeps, Item, is_transient, run_flush
from app.retry.backoff import schedule_delay
from app.settings import load_settings
from app.storage.clickhouse.client import ClickHouseError, wrap


def _items(n: int) -> list[Item]:
    return [Item(f"r{i}", {"batch_id": f"b{i}", "project": "p", "events": []}) for i in range(n)]


class World:
    """Records what the flush did; ``poison`` batch ids make the INSERT fail as data."""

    def __init__(self, poison=(), outage: BaseException | None = None) -> None:
        self.poison, self.outage = set(poison), outage
        self.stored, self.published, self.parked, self.dead, self.inserts = [], [], [], [], 0
        self.counted: list[str] = []
        self.count_error: BaseException | None = None

    def insert(self, batches):
        self.inserts += 1
        if self.outage is not None:
            raise self.outage
        if any(b["batch_id"] in self.poison for b in batches):
            raise wrap(drv.ServerException("Cannot parse input", code=27))
        self.stored += [b["batch_id"] for b in batches]

    def count(self, batches):
        if self.count_error is not None:
            raise self.count_error
        self.counted += [b["batch_id"] for b in batches]

    def deps(self, schedule=(60.0, 300.0)) -> FlushDeps:
        return FlushDeps(insert=self.insert, count_sessions=self.count,
                         publish_session_step=lambda b: self.published.append(b["batch_id"]),
                         park=lambda item, due: self.parked.append((item.batch["batch_id"], item.attempt)),
                         dead_letter=lambda item, err: self.dead.append(item.batch["batch_id"]), schedule=schedule,
                         rng=lambda: 1.0)


def test_one_poison_batch_is_isolated_and_its_neighbours_are_stored():
    w = World(poison={"b5"})
    out = run_flush(_items(16), w.deps())
    assert sorted(w.stored) == sorted(f"b{i}" for i in range(16) if i != 5)
    assert w.parked == [("b5", 0)] and w.dead == []
    assert all(v == ACK for v in out.verdicts.values()) and not out.pause
    assert w.inserts <= 1 + 2 * 4, "split by halves: about 2 log2(n) INSERTs"


def test_a_lone_batch_past_its_schedule_is_dead_lettered_alone():
    w = World(poison={"b1"})
    items = _items(3)
    items[1].attempt = 2  # both scheduled retries already used
    out = run_flush(items, w.deps())
    assert w.dead == ["b1"] and sorted(w.stored) == ["b0", "b2"] and out.verdicts["r1"] == ACK


def test_clickhouse_down_requeues_everything_and_counts_no_attempt():
    w = World(outage=wrap(drv.NetworkError("Code: 210. Connection refused (127.0.0.1:9000)")))
    out = run_flush(_items(8), w.deps())
    assert out.pause and set(out.verdicts.values()) == {REQUEUE}
    assert w.inserts == 1 and w.parked == [] and w.dead == [], "an outage is a delay: no split, no dead letter"


def test_redis_down_is_transient_with_redis_pys_own_exception():
    assert is_transient(redis.ConnectionError("Error 111 connecting"))
    assert is_transient(redis.TimeoutError("Timeout reading from socket"))
    # Replies as the server sends them, through redis-py's own parser (which strips the code);
    # tests/integration/storage/test_redis_errors.py gets them from a real server.
    from redis._parsers.base import BaseParser

    assert is_transient(BaseParser.parse_error("OOM command not allowed when used memory > 'maxmemory'."))
    assert is_transient(BaseParser.parse_error("MISCONF Errors writing to the AOF file: No space left on device"))
    assert not is_transient(BaseParser.parse_error("ERR value is not an integer or out of range"))
    assert not is_transient(redis.ResponseError("WRONGTYPE Operation against a key"))
    # A Redis Cluster failing over or resharding: redis-py's own cluster exceptions.
    ex = redis.exceptions
    assert is_transient(ex.ClusterDownError("CLUSTERDOWN The cluster is down"))
    assert is_transient(ex.MasterDownError("MASTERDOWN Link with MASTER is down"))
    assert is_transient(ex.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"))
    assert is_transient(ex.MovedError("3999 127.0.0.1:6381"))
    assert is_transient(ex.ReadOnlyError("READONLY You can't write against a read only replica."))
    assert is_transient(ex.SlotNotCoveredError("Slot 3999 not covered by the cluster"))
    assert not is_transient(ex.ClusterCrossSlotError("CROSSSLOT Keys in request don't hash to the same slot"))
    w = World(outage=redis.ConnectionError("Error 111 connecting to 127.0.0.1:1"))
    assert run_flush(_items(2), w.deps()).pause


def test_server_codes_split_into_transient_and_data():
    assert is_transient(wrap(drv.ServerException("Too many parts", code=252)))
    assert not is_transient(wrap(drv.ServerException("Cannot parse", code=27)))
    assert not is_transient(ClickHouseError("UnicodeEncodeError: surrogates not allowed", transient=False))
    assert not is_transient(ValueError("a bug"))


def test_the_session_step_runs_once_per_flush_over_every_stored_batch():
    w = World(poison={"b2"})
    out = run_flush(_items(6), w.deps())
    assert sorted(w.counted) == ["b0", "b1", "b3", "b4", "b5"], "one call, the refused batch left out"
    assert w.published == [] and all(v == ACK for v in out.verdicts.values())


def test_session_step_outage_requeues_the_stored_batches_and_pauses():
    w = World()
    w.count_error = redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390")
    out = run_flush(_items(3), w.deps())
    assert sorted(w.stored) == ["b0", "b1", "b2"], "stored first; a redelivery finds them and counts them"
    assert out.pause and set(out.verdicts.values()) == {REQUEUE} and w.published == []


def test_session_step_data_error_falls_back_to_one_task_per_batch_and_a_publish_failure_requeues_only_that_batch():
    w = World()
    w.count_error = redis.ResponseError("ERR Error running script: a bug")
    deps = w.deps()

    def publish(batch):
        if batch["batch_id"] == "b1":
            raise OSError("broker gone")
        w.published.append(batch["batch_id"])

    deps.publish_session_step = publish
    out = run_flush(_items(3), deps)
    assert w.published == ["b0", "b2"]
    assert out.verdicts == {"r0": ACK, "r1": REQUEUE, "r2": ACK} and not out.pause


def test_park_failure_keeps_the_message():
    w = World(poison={"b0"})
    deps = w.deps()

    def park(item, due):
        raise redis.ConnectionError("sessions Redis down")

    deps.park = park
    out = run_flush(_items(1), deps)
    assert out.verdicts == {"r0": REQUEUE} and out.pause


def _defaults(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    return load_settings({"OBSERVER_ENV_FILE": str(empty)})


def test_default_schedules_outlast_real_outages_and_never_hold_a_message_past_the_timeout(tmp_path):
    """Acceptance: ClickHouse retries span >= 1 h, UFSE retries about a day, and no Celery
    countdown or buffered wait exceeds the visibility timeout (all at the defaults)."""
    s = _defaults(tmp_path)
    events_span = sum(s.events_retry_schedule)
    ufse_span = sum(s.forward_retry_schedule)
    print(f"EVENTS_RETRY_SCHEDULE spans {events_span / 3600:.2f} h; "
          f"FORWARD_RETRY_SCHEDULE spans {ufse_span / 3600:.1f} h; "
          f"BROKER_VISIBILITY_TIMEOUT {s.broker_visibility_timeout} s")
    assert events_span >= 3600
    assert 20 * 3600 <= ufse_span <= 36 * 3600
    # Minimum jittered span too (jitter keeps at least half of each delay).
    assert sum(schedule_delay(s.forward_retry_schedule, i, 1.0, lambda: 0.0)
               for i in range(len(s.forward_retry_schedule))) >= 12 * 3600
    vt = s.broker_visibility_timeout
    assert vt <= 60
    # Waits on a live worker: a sessions.update countdown, a forward countdown, a held events
    # message, a flush (interval + one ClickHouse call), each below the visibility timeout.
    from app.events.worker import flush_budget
    from tasks.events import persist

    assert s.sessions_retry_max < vt
    assert persist.hold_limit + s.events_flush_interval < vt
    # A flush starts no ClickHouse call after its budget: it ends within budget + one call.
    print(f"flush: {s.events_flush_interval} s buffered + {flush_budget()} s budget + "
          f"{s.clickhouse_timeout} s last call")
    assert s.events_flush_interval + flush_budget() + s.clickhouse_timeout < vt
    from app.events.worker import PAUSE_MAX

    assert vt > PAUSE_MAX
