"""The numbered cases: what each does, what it needs, what it checks afterwards."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from faultlib import cases_data as d
from faultlib import cases_kill as k
from faultlib import cases_outage as o


@dataclass
class Case:
    n: int
    title: str
    fault: Callable
    after: list = field(default_factory=list)
    setup: Callable | None = None
    sessions_redis: bool = False
    maxmemory: str | None = None
    hour: bool = False  # compresses an hour with RETRY_TIME_SCALE
    chdb: bool = False  # also run on chDB
    chdb_na: str = ""  # why a chDB run of this case has nothing to act on
    dead_holder: bool = False  # the fault kills a worker's main process: its messages come back by restore
    # The fault kills the broker: messages in flight then were on connections that died, their
    # acks died with them, so up to that many restores are the recovery, not a long wait.
    dead_connection: bool = False
    amqp_title: str = ""  # the title when the broker is RabbitMQ (cases that act on the broker)

    def title_for(self, broker: str) -> str:
        """The case's title on this broker."""
        return self.amqp_title if broker == "amqp" and self.amqp_title else self.title

    def overrides(self, scale) -> dict:
        """The only settings changed: the idle timeout, and the retry time scale for 'an hour'."""
        out = {"SESSION_IDLE_TIMEOUT": scale.idle_timeout}
        if self.hour:
            out["RETRY_TIME_SCALE"] = scale.hour_scale
        return out


CASES = {c.n: c for c in [
    Case(0, "broker Redis kill -9, restart from its AOF (appendfsync always), events worker holding work",
         k.broker_kill_restart, after=[k.broker_drained], dead_connection=True,
         amqp_title="RabbitMQ kill -9, restart on its data (quorum queues), events worker holding work"),
    Case(1, "kill -9 of pool children every 2 s, flushes included", k.pool_children, chdb=True,
         chdb_na="the chDB owner runs a threads pool: it has no pool children to kill"),
    Case(2, "kill -9 of each worker's main process, then a restart", k.worker_mains, chdb=True,
         dead_holder=True),
    Case(3, "kill -9 of beat and a restart; then two beats at once", k.beat_kill_two),
    Case(4, "SIGTERM of web and workers under load, then a restart", k.sigterm_web_workers),
    Case(5, "broker Redis SIGSTOP for 10 s", o.broker_sigstop, after=[o.frozen_answers], chdb=True,
         amqp_title="RabbitMQ SIGSTOP for 10 s"),
    Case(6, "separate sessions Redis (SESSIONS_REDIS_URL) kill -9, down 5 s, restart", o.sessions_redis_down,
         sessions_redis=True),
    Case(7, "broker Redis at maxmemory (noeviction) during a ClickHouse outage", o.maxmemory_ch_down,
         maxmemory="1gb", after=[o.limit_cleared],
         amqp_title="RabbitMQ at its memory high watermark (publishers blocked) during a ClickHouse outage"),
    Case(8, "ClickHouse stopped for an hour (compressed)", o.ch_down_hour, after=[o.no_dead_letters], hour=True,
         chdb=True, chdb_na="chDB runs inside the owner worker: there is no ClickHouse server to stop"),
    Case(9, "PostgreSQL stopped for 60 s under load", o.pg_down),
    Case(10, "UFSE down for an hour (compressed), then back; then UFSE answering 400, dlq replay",
         o.ufse_down_hour, after=[d.ufse_4xx_then_replay], hour=True),
    Case(11, "a poison batch among good ones (dead letter after EVENTS_RETRY_SCHEDULE, ~1.4 h, compressed)",
         d.poison_batch, setup=d.poison_setup, after=[d.poison_isolated], hour=True),
    Case(12, "over-limit bodies (3 and 8 MiB with Content-Length)", d.over_limit),
    Case(13, "sessions Redis FLUSHALL mid-run (issue 11, exactly-once)", d.sessions_flushall,
         sessions_redis=True, after=[d.no_conflicting_versions]),
    Case(14, "broker Redis restarted (graceful stop + start) under load", k.broker_graceful_restart,
         after=[k.broker_drained], dead_connection=True,
         amqp_title="RabbitMQ restarted (graceful stop + start) under load"),
]}

CI_SUBSET = (0, 1, 2, 5, 10, 11)
# Runs alongside the others in CI: after the kill it mostly waits out the visibility timeout.
CI_BACKGROUND = (2,)
# On RabbitMQ in CI: the graceful restart, in the background after case 2.
CI_AMQP = (14,)


def ci_plan() -> list[tuple]:
    """The CI subset as (case, chdb, broker): the Redis cases, then the RabbitMQ ones."""
    return [(CASES[n], False, "redis") for n in CI_SUBSET] + [(CASES[n], False, "amqp") for n in CI_AMQP]


def ci_background(case, broker: str) -> bool:
    """True for the CI entries that run in the background thread (case 2, the RabbitMQ cases)."""
    return case.n in CI_BACKGROUND or broker == "amqp"
