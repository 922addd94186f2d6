"""Python face of the session scripts: apply a batch, claim idle sessions, complete a forward."""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from redis.commands.core import Script
from redis.exceptions import NoScriptError

from app.accounting import ledger
from app.storage import lua, redis_keys
from app.storage.redis_clients import RedisClient

log = logging.getLogger(__name__)

SEP = "\x1f"  # cannot occur in a project name or a session_id (both validated)
# How far back the reconciliation sweep looks past the idle timeout, and so how long a completed
# version's tombstone must keep it off that sweep.
RECONCILE_HORIZON_S = 6 * 3600
# A process's reported session-step lag counts this long (about the visibility timeout: a
# worker silent for longer has had its messages handed to another).
LAG_FRESH_S = 60


def _process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claimed:
    """A session version frozen for forwarding."""

    project: str
    session_id: str
    version: int


@dataclass(frozen=True)
class Entry:
    """One batch's events in one session: what the session step counts."""

    project: str
    batch_id: str
    session_id: str
    counts: tuple  # (events, first ts_ms, last ts_ms)
    at_ms: int  # activity time: when the API received the batch
    counted_version: int = -1  # the version ClickHouse maps it to already (-1: none known)


# Idle-index buckets, each its own Redis Cluster hash tag so sessions spread over the slots.
# Fixed: a session's keys and deadline live in the bucket its id hashes to, so another number
# would orphan every deadline already written.
BUCKETS = 16


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return int(time.time() * 1000)


class SessionStore:
    """Session state for one Redis and key prefix."""

    def __init__(self, redis: RedisClient, *, prefix: str, idle_s: int, max_s: int, buckets: int = BUCKETS,
                 marker_ttl_s: int) -> None:
        self.r = redis
        self.prefix = prefix
        self.buckets = buckets
        self.idle_ms = idle_s * 1000
        self.max_ms = max_s * 1000
        self.marker_ttl = marker_ttl_s
        # Live state outlives the longest session by a margin, so expiry is a safety net only.
        self.live_ttl = max_s + idle_s + 86400
        # The counter bridges a claim and its version's rows reaching ClickHouse (whose highest
        # version is every new version's floor): hours are plenty; kept as long as a tombstone.
        self.ver_ttl = idle_s + RECONCILE_HORIZON_S
        self.final_ttl = 14 * 86400
        # A counted batch whose session_batches row is not written yet holds its version's
        # 'pending': its marker must outlive any storage outage, as long as the snapshot waits.
        self.pending_marker_ttl = self.final_ttl
        self.tombstone_ttl = idle_s + RECONCILE_HORIZON_S
        # The scripts (app/sessions/*.lua): every key one touches arrives through KEYS and
        # shares one hash tag.
        self._apply = redis.register_script(lua.load(__file__, "apply_batch"))
        self._written = redis.register_script(lua.load(__file__, "mark_written"))
        self._recover = redis.register_script(lua.load(__file__, "recover"))
        self._claim = redis.register_script(lua.load(__file__, "claim"))
        self._complete = redis.register_script(lua.load(__file__, "complete"))
        self._restamp = redis.register_script(lua.load(__file__, "restamp_stale"))
        self._note_attempt = redis.register_script(lua.load(__file__, "note_attempt"))

    # -- keys -------------------------------------------------------------------------------
    def bucket_of(self, project: str, session_id: str) -> int:
        """Stable bucket of a session."""
        return zlib.crc32(f"{project}{SEP}{session_id}".encode()) % self.buckets

    def keys(self, project: str, session_id: str) -> dict[str, str]:
        """The version-less keys of one session (all in the session's bucket slot)."""
        b, p = self.bucket_of(project, session_id), self.prefix
        return {
            "live": redis_keys.session_live(p, b, project, session_id),
            "ver": redis_keys.session_ver(p, b, project, session_id),
            "deadline": redis_keys.session_deadline(p, b), "outbox": redis_keys.session_outbox(p, b),
        }

    def _final(self, project: str, session_id: str, version: int | str) -> str:
        return redis_keys.session_final(self.prefix, self.bucket_of(project, session_id), project, session_id, version)

    def _done(self, project: str, session_id: str, version: int | str) -> str:
        return redis_keys.session_done(self.prefix, self.bucket_of(project, session_id), project, session_id, version)

    def _marker(self, project: str, batch_id: str, session_id: str) -> str:
        return redis_keys.session_applied(self.prefix, self.bucket_of(project, session_id), batch_id, project,
                                          session_id)

    # -- update -----------------------------------------------------------------------------
    def apply_batch(self, project: str, batch_id: str, per_session: dict[str, tuple[int, int, int]],
                    at_ms: int | None = None,
                    version_floor: Callable[[str, str], int] | None = None) -> dict[str, tuple[int, bool]]:
        """Count a batch into each of its sessions; returns {session_id: (version, newly_applied)}.

        ``at_ms`` is the batch's activity time: when the API received it (now by default).
        ``version_floor(project, session_id)`` gives the highest version ClickHouse knows; it is
        asked only when a new version starts, so versions continue after Redis lost its data.
        Each newly counted batch adds one to its version's ``pending`` until mark_written().
        """
        now = now_ms() if at_ms is None else at_ms
        entries = [Entry(project, batch_id, sid, tuple(v), now) for sid, v in per_session.items()]

        def floors(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
            return {pair: int(version_floor(*pair)) if version_floor else 0 for pair in pairs}

        results = self.apply_many(entries, floors)
        return {e.session_id: res for e, res in zip(entries, results, strict=True)}

    def apply_many(self, entries: list[Entry],
                   floors: Callable[[list[tuple[str, str]]],
                                    dict[tuple[str, str], int]] | None = None) -> list[tuple[int, bool]]:
        """Count many (batch, session) entries in one pipelined round; returns (version, newly
        counted) per entry, in order.

        Entries starting a new version need the floor ClickHouse knows: ``floors`` gets every
        such (project, session_id) at once (one query for the flush), then those entries run again.
        Two entries of one session in one round are applied in order, as sequential calls would be.
        """
        calls = [self._apply_call(e, -1) for e in entries]
        results = self._run_many(self._apply, calls)
        need = sorted({(e.project, e.session_id)
                       for e, (_v, fresh) in zip(entries, results, strict=True) if fresh == -1})
        if need:
            known = floors(need) if floors else {}
            again = [i for i, (_v, fresh) in enumerate(results) if fresh == -1]
            retried = self._run_many(self._apply, [self._apply_call(entries[i], int(known.get(
                (entries[i].project, entries[i].session_id), 0))) for i in again])
            for i, res in zip(again, retried, strict=True):
                results[i] = res
        return [(int(v), bool(fresh)) for v, fresh in results]

    def _apply_call(self, e: Entry, floor: int) -> tuple[list[str], list]:
        k = self.keys(e.project, e.session_id)
        n, first_ts, last_ts = e.counts
        keys = [k["live"], k["ver"], self._marker(e.project, e.batch_id, e.session_id), k["deadline"]]
        args = [e.at_ms, self.idle_ms, self.max_ms, n, first_ts, last_ts, f"{e.project}{SEP}{e.session_id}",
                self.pending_marker_ttl, self.live_ttl, int(floor), int(e.counted_version)]
        return keys, args

    def mark_written(self, project: str, batch_id: str, versions: dict[str, int]) -> None:
        """Say the batch's session_batches rows are written: its versions wait for it no longer."""
        self.mark_written_many([(project, batch_id, sid, v) for sid, v in versions.items()])

    def mark_written_many(self, written: list[tuple[str, str, str, int]]) -> None:
        """mark_written for many (project, batch_id, session_id, version) in one pipelined round."""
        calls = []
        for project, batch_id, sid, version in written:
            k = self.keys(project, sid)
            calls.append(([self._marker(project, batch_id, sid), k["live"], self._final(project, sid, version)],
                          [str(int(version)), self.marker_ttl]))
        self._run_many(self._written, calls)

    def _run_many(self, script: Script, calls: list[tuple[list[str], list]]) -> list:
        """EVALSHA every call in one pipeline (not a transaction: each script is atomic on its
        own, and a cluster pipeline sends each to its slot's node); loads the script and runs
        again the calls a restarted Redis answered NOSCRIPT."""
        if not calls:
            return []
        out: list = [None] * len(calls)
        todo = list(range(len(calls)))
        for _round in range(2):
            pipe = self.r.pipeline(transaction=False)
            for i in todo:
                keys, args = calls[i]
                # execute_command: a cluster pipeline refuses its evalsha() method, yet routes
                # an EVALSHA by its keys (all of one call share a slot)
                pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
            replies = pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, NoScriptError):
                    missing.append(i)
                elif isinstance(reply, Exception):
                    raise reply
                else:
                    out[i] = reply
            if not missing:
                return out
            self.r.script_load(script.script)
            todo = missing
        raise NoScriptError("script could not be loaded")

    # -- claim ------------------------------------------------------------------------------
    def note_lag(self, lag_ms: int, who: str | None = None, at_ms: int | None = None) -> None:
        """Record how far behind receipt this process's session step runs (received -> counted).

        One field per process (``host:pid``) in one hash: with several worker sets the claim
        waits for the slowest one that reported lately, not for whichever wrote last.
        """
        now = now_ms() if at_ms is None else at_ms
        key = redis_keys.sessions_lag(self.prefix)
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(key, who or _process_id(), f"{max(0, int(lag_ms))}:{now}")
        pipe.expire(key, 3600)
        pipe.execute()

    def lag_ms(self, at_ms: int | None = None) -> int:
        """The largest lag reported within the last LAG_FRESH_S seconds (0 when none); stale
        fields (a process that stopped, or has had nothing to count) are dropped."""
        return self.lag(at_ms)[0]

    def lag(self, at_ms: int | None = None) -> tuple[int, int]:
        """(the largest fresh lag in ms, how many processes reported one within LAG_FRESH_S)."""
        now = now_ms() if at_ms is None else at_ms
        key = redis_keys.sessions_lag(self.prefix)
        worst, fresh, stale = 0, 0, []
        for who, value in (self.r.hgetall(key) or {}).items():
            lag, _, at = str(value).partition(":")
            if not at or now - int(at) > LAG_FRESH_S * 1000:
                stale.append(who)
                continue
            worst, fresh = max(worst, int(lag)), fresh + 1
        if stale:
            self.r.hdel(key, *stale)
        return worst, fresh

    def claim_due(self, at_ms: int | None = None, limit: int = 500,
                  backlog: Callable[[], int] | None = None) -> list[Claimed]:
        """Freeze every session whose deadline passed; each version is claimed exactly once.

        Deadlines are receive times plus the idle timeout, so they are compared with a watermark,
        now minus the pipeline's lag: while the queues run behind, a session is not finalized
        before the batches already received for it have been counted. When no process reported a
        lag lately while ``backlog()`` (the events queue's ready messages) says batches wait,
        nothing is counting them (every events worker stopped): nothing is claimed until one
        reports again, or those sessions would be split into two versions.
        """
        now = now_ms() if at_ms is None else at_ms
        worst, fresh = self.lag(now)
        if not fresh and backlog is not None:
            waiting = backlog()
            if waiting:
                log.warning("claims held: batches wait in the events queue and no events worker reported",
                            extra={"queued": waiting})
                return []
        watermark = now - worst
        claimed: list[Claimed] = []
        for bucket in range(self.buckets):
            deadline = redis_keys.session_deadline(self.prefix, bucket)
            # The clients decode responses (app/storage/redis_clients.py): members and values are str.
            members = cast(list[str], self.r.zrangebyscore(deadline, "-inf", watermark, start=0, num=limit))
            for member in members:
                got = self._claim_one(member, now, watermark)
                if got:
                    claimed.append(got)
        return claimed

    def _claim_one(self, member: str, now: int, watermark: int) -> Claimed | None:
        project, _, sid = member.partition(SEP)
        k = self.keys(project, sid)
        for _attempt in range(3):  # the version can move on between HGET and the script
            version = cast("str | None", self.r.hget(k["live"], "version"))
            if version is None:
                version = "0"  # the script removes the stale index entry
            claims = redis_keys.session_claims(self.prefix, self.bucket_of(project, sid), project, now // 86_400_000)
            result = self._claim(
                keys=[k["live"], k["deadline"], k["outbox"], self._final(project, sid, version), k["ver"], claims],
                args=[member, version, now, self.final_ttl, f"{member}{SEP}{version}", watermark, self.ver_ttl,
                      ledger.minute(now), ledger.TTL_S],
            )
            if result == 1:
                return Claimed(project, sid, int(version))
            if result == 0:
                return None
        return None

    def stale_outbox(self, older_than_s: float, at_ms: int | None = None, limit: int = 500) -> list[Claimed]:
        """Claimed sessions whose forward never completed (re-enqueue them)."""
        now = now_ms() if at_ms is None else at_ms
        out: list[Claimed] = []
        for bucket in range(self.buckets):
            members = self._restamp(keys=[redis_keys.session_outbox(self.prefix, bucket)],
                                    args=[now - int(older_than_s * 1000), now, limit])
            for m in members:
                project, sid, version = m.split(SEP)
                out.append(Claimed(project, sid, int(version)))
        return out

    # -- forward side -----------------------------------------------------------------------
    def snapshot(self, project: str, session_id: str, version: int) -> dict[str, str] | None:
        """The frozen state of a claimed version, or None once completed/expired."""
        data = cast(dict[str, str], self.r.hgetall(self._final(project, session_id, version)))
        return data or None

    def note_attempt(self, project: str, session_id: str, version: int, entry: dict) -> None:
        """Keep one delivery attempt with the version's snapshot (field ``a:<at_ms>:<attempt>``)
        until its ``sessions`` row carries the whole log."""
        field = f"a:{int(entry['at_ms'])}:{int(entry.get('attempt', 0))}"
        self._note_attempt(keys=[self._final(project, session_id, version)],
                           args=[field, json.dumps(entry, separators=(",", ":"))])

    def keep_snapshot(self, project: str, session_id: str, version: int, ttl_s: int) -> bool:
        """Make a claimed version's snapshot live ``ttl_s`` from now (a delivery parked for a
        disabled destination waits for an operator, not for the retry schedule); the hash says
        until when in ``expires_ms``. False when the snapshot is gone."""
        key = self._final(project, session_id, version)
        pipe = self.r.pipeline(transaction=True)
        pipe.exists(key)
        pipe.hset(key, "expires_ms", now_ms() + ttl_s * 1000)
        pipe.expire(key, ttl_s)
        found, _, _ = pipe.execute()
        if not found:
            self.r.delete(key)  # HSET made a stub of a snapshot that was gone
        return bool(found)

    def complete(self, project: str, session_id: str, version: int) -> None:
        """Forget a forwarded (or dead-lettered) version, leaving a short tombstone for the reconciler."""
        k = self.keys(project, session_id)
        self._complete(keys=[k["outbox"], self._final(project, session_id, version),
                             self._done(project, session_id, version)],
                       args=[f"{project}{SEP}{session_id}{SEP}{version}", self.tombstone_ttl])

    def recover(self, project: str, session_id: str, version: int, batches: int, at_ms: int | None = None) -> bool:
        """Freeze and queue a version Redis does not know (lost data); False when Redis knows it."""
        now = now_ms() if at_ms is None else at_ms
        k = self.keys(project, session_id)
        got = self._recover(
            keys=[k["live"], self._final(project, session_id, version), k["outbox"],
                  self._done(project, session_id, version), k["ver"]],
            args=[str(int(version)), now, self.final_ttl, f"{project}{SEP}{session_id}{SEP}{version}",
                  int(batches), self.ver_ttl])
        return bool(got == 1)

    def live(self, project: str, session_id: str) -> dict[str, str]:
        """The live hash of a session (empty when none)."""
        return cast(dict[str, str], self.r.hgetall(self.keys(project, session_id)["live"]))
