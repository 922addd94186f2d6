"""Every Redis key Observer writes is built here; this docstring is the layout.

Roles (each its own URL, defaulting to REDIS_URL; app/storage/redis_clients.py connects them):
  broker      CELERY_BROKER_URL    Celery's queues (Celery owns those keys: no prefix, no expiry),
                                   and the ingest journal (below)
  sessions    SESSIONS_REDIS_URL   session state, retries, the circuit, the sweep lock, heartbeats
  ratelimit   RATELIMIT_REDIS_URL  rate-limit counters and new-session markers (app/web/limits.py)

``{p}`` is REDIS_KEY_PREFIX (``obs:``); every key below expires (a due-index zset with its
newest item: each park renews it; its members leave when re-published). ``{bN}``, ``{jN}``,
``{events}``... are Redis Cluster hash tags: the keys one Lua script or transaction touches
share one tag, so each call stays in one slot.

On the sessions Redis:
  {p}s:{bN}:live:<project>:<sid>        hash, live state of the current version
  {p}s:{bN}:ver:<project>:<sid>         string, last claimed version (written by the claim, TTL idle + 6 h;
                                        a live session keeps its version in its hash)
  {p}s:{bN}:final:<project>:<sid>:<v>   hash, frozen snapshot awaiting forward
  {p}s:{bN}:applied:<batch>:<project>:<sid>  string, "<v>" once counted, "<v>:w" once written
  {p}s:{bN}:done:<project>:<sid>:<v>    string, tombstone of a completed version (TTL idle + 6 h):
                                        keeps the reconcile sweep off a just-delivered version
  {p}s:{bN}:deadline                    zset, member "<project>\\x1f<sid>", score = finalize-at ms
  {p}s:{bN}:outbox                      zset, member "<project>\\x1f<sid>\\x1f<v>", score = claimed-at ms
  {p}s:{bN}:claims:<project>:<day>      hash, minute -> versions of the project the claim froze in the bucket
                                        (written by the claim script itself: the ledger's ``finalized``; TTL 8 days)
  (live and final hashes carry ``pending``: batches counted but not yet written)
  {p}sessions:lag                       hash, per process "host:pid" -> "<lag ms>:<reported at ms>":
                                        the claim's watermark waits for the slowest fresh one (TTL 1 h)
  {p}due:{events}:index / :item:<id>    zset + strings, refused batches waiting for a retry
  {p}due:{forward}:index / :item:<m>    zset + strings, deliveries waiting for a retry or the circuit
  {p}circuit:{<host>}[:probe]           hash + string, the UFSE destination's circuit
  {p}claim-lock                         string, the maintenance sweep's lock (a random token)
  {p}reconcile:cursor                   string, where the next reconciliation page starts (TTL 6 h)
  {p}hb:sweep                           string, epoch seconds of the last finished sweep (TTL 1 day)
  {p}hb:workers                         hash, node -> a worker's heartbeat (JSON with its own expiry; TTL 30 s)
  {p}hb:clickhouse                      string, the chDB owner worker's ClickHouse heartbeat (JSON, TTL 20 s)
  {p}ledger:{<project>}:<minute>        hash, the loss ledger's counts of one project and received-at minute
                                        (app/accounting/ledger.py; TTL 8 days)
  {p}ledger:{<project>}:flush:<id>      string, a ledger write already applied (TTL 8 days)
  {p}creport:{<project>}:<id>           string, a client report already counted (TTL 1 day)
  {p}rejected:{<project>}               stream, the project's rejected events (app/accounting/rejected.py;
                                        capped at 10,000, TTL 7 days)
  {p}tails                              hash, project -> until (epoch ms): projects someone tails
  {p}tail:{<project>}                   pub/sub channel of the project's ingest verdicts (no key)
  {p}ask:<id>                           list, the chDB owner's answer to one command's read (TTL 1 min)
  {p}suppress:{sup} / :ver              hash + string, running deletion suppressions and their version
                                        (app/deletion/suppress.py)
  {p}deletions-lock                     string, one deletion run at a time (a random token)
  {p}due:{backlog:<project>}:index / :item:<m>  a disabled destination's parked deliveries (TTL 1 year)
On the broker's Redis (Redis broker only):
  {p}journal:{jN}:index / :b:<batch_id> zset + strings, accepted batches not yet counted
                                        (app/ingest/journal.py), TTL DEDUP_WINDOW
On the rate-limit Redis (app/web/limits.py, from ``ratelimit_prefix``; one script's keys share a tag):
  {p}rl:{k<key id>}:req|ev|ses          fixed-window counters per key (requests, events, new sessions)
  {p}rl:{k<key id>}:ip:<ip>:req|ev|ses  the same per client IP within the key (TTL: the window)
  {p}rl:{k<key id>}:s:<sid>             string, a session the key sent lately (TTL SESSION_IDLE_TIMEOUT)
  {p}rl:{ip:<ip>}:lookup                key lookups that reached PostgreSQL (TTL: the window)
"""
from __future__ import annotations

from typing import Literal

HeartbeatKind = Literal["sweep", "clickhouse"]


# -- sessions (app/sessions/store.py): every key of a session shares its bucket's hash tag ----------
def session_bucket(prefix: str, bucket: int) -> str:
    """The common start of every key in one session bucket."""
    return f"{prefix}s:{{b{bucket}}}:"


def session_live(prefix: str, bucket: int, project: str, session_id: str) -> str:
    """Hash: the live state of a session's current version."""
    return f"{session_bucket(prefix, bucket)}live:{project}:{session_id}"


def session_ver(prefix: str, bucket: int, project: str, session_id: str) -> str:
    """String: the session's last claimed version."""
    return f"{session_bucket(prefix, bucket)}ver:{project}:{session_id}"


def session_final(prefix: str, bucket: int, project: str, session_id: str, version: int | str) -> str:
    """Hash: the frozen snapshot of a claimed version."""
    return f"{session_bucket(prefix, bucket)}final:{project}:{session_id}:{version}"


def session_done(prefix: str, bucket: int, project: str, session_id: str, version: int | str) -> str:
    """String: the tombstone of a completed version."""
    return f"{session_bucket(prefix, bucket)}done:{project}:{session_id}:{version}"


def session_applied(prefix: str, bucket: int, batch_id: str, project: str, session_id: str) -> str:
    """String: the marker of one batch counted into one session."""
    return f"{session_bucket(prefix, bucket)}applied:{batch_id}:{project}:{session_id}"


def session_deadline(prefix: str, bucket: int) -> str:
    """Zset: the bucket's live sessions by finalize-at time."""
    return f"{session_bucket(prefix, bucket)}deadline"


def session_claims(prefix: str, bucket: int, project: str, day: int) -> str:
    """Hash: minute -> how many of the project's versions the claim froze in the bucket that day."""
    return f"{session_bucket(prefix, bucket)}claims:{project}:{int(day)}"


def session_outbox(prefix: str, bucket: int) -> str:
    """Zset: the bucket's claimed versions not yet forwarded."""
    return f"{session_bucket(prefix, bucket)}outbox"


def sessions_lag(prefix: str) -> str:
    """Hash: each process's session-step lag."""
    return f"{prefix}sessions:lag"


# -- retries, circuit, sweep --------------------------------------------------------------------------
def due_index(prefix: str, name: str) -> str:
    """Zset of a due-time index (``events``, ``forward``): member -> due time."""
    return f"{prefix}due:{{{name}}}:index"


def due_item_prefix(prefix: str, name: str) -> str:
    """Start of a due-time index's per-member payload keys (the member follows)."""
    return f"{prefix}due:{{{name}}}:item:"


def circuit(prefix: str, host: str) -> str:
    """Hash: a destination's circuit."""
    return f"{prefix}circuit:{{{host}}}"


def circuit_probe(prefix: str, host: str) -> str:
    """String: the lock of the one caller probing an open circuit."""
    return f"{circuit(prefix, host)}:probe"


def reconcile_cursor(prefix: str) -> str:
    """String: JSON [project, session_id, version] where the next reconciliation page starts."""
    return f"{prefix}reconcile:cursor"


def sweep_lock(prefix: str) -> str:
    """String: the maintenance sweep's lock."""
    return f"{prefix}claim-lock"


def heartbeat(prefix: str, kind: HeartbeatKind) -> str:
    """String: a heartbeat (workers' are one hash: ``worker_heartbeats``)."""
    return f"{prefix}hb:{kind}"


def worker_heartbeats(prefix: str) -> str:
    """Hash: every worker's heartbeat, field = node name, value = JSON with its own expiry
    (read with one HGETALL by /ready and /metrics; expires when no worker writes)."""
    return f"{prefix}hb:workers"


# -- rate limits and the journal ------------------------------------------------------------------------
def ratelimit_prefix(prefix: str) -> str:
    """The start of every rate-limit key (app/web/limits.py builds them)."""
    return f"{prefix}rl"


def journal_shard(prefix: str, shard: int) -> str:
    """The common start of one journal shard's keys: ``index`` (zset) and ``b:<batch_id>``."""
    return f"{prefix}journal:{{j{shard}}}:"


def journal_index(prefix: str, shard: int) -> str:
    """Zset: a journal shard's entries by receive time."""
    return f"{journal_shard(prefix, shard)}index"


def journal_body_prefix(prefix: str, shard: int) -> str:
    """Start of a journal shard's per-batch body keys (the batch_id follows)."""
    return f"{journal_shard(prefix, shard)}b:"


# -- accounting ---------------------------------------------------------------------------------
def ledger(prefix: str, project: str, minute: int) -> str:
    """Hash: the ledger's counts of one project and minute (every minute of a project in one slot)."""
    return f"{prefix}ledger:{{{project}}}:{int(minute)}"


def ledger_flush(prefix: str, project: str, flush_id: str) -> str:
    """String: one process's ledger write for a project, applied once (same slot as its hashes)."""
    return f"{prefix}ledger:{{{project}}}:flush:{flush_id}"


def client_report(prefix: str, project: str, report_id: str) -> str:
    """String: a client report id already counted."""
    return f"{prefix}creport:{{{project}}}:{report_id}"


def rejected(prefix: str, project: str) -> str:
    """Stream: the project's rejected events, kept a week."""
    return f"{prefix}rejected:{{{project}}}"


def tails(prefix: str) -> str:
    """Hash: project -> epoch ms until which someone tails it."""
    return f"{prefix}tails"


def tail_channel(prefix: str, project: str) -> str:
    """Pub/sub channel of one project's ingest verdicts."""
    return f"{prefix}tail:{{{project}}}"


def owner_reply(prefix: str, ask_id: str) -> str:
    """List: where the chDB owner pushes its answer to one read (app/accounting/owner.py)."""
    return f"{prefix}ask:{ask_id}"


# -- deletion -------------------------------------------------------------------------------------
def suppressions(prefix: str) -> str:
    """Hash: every running suppression (project, subject kind, subject -> until)."""
    return f"{prefix}suppress:{{sup}}"


def suppressions_version(prefix: str) -> str:
    """String: bumped on every change of the suppressions hash."""
    return f"{prefix}suppress:{{sup}}:ver"


def deletions_lock(prefix: str) -> str:
    """String: one deletion run at a time."""
    return f"{prefix}deletions-lock"
