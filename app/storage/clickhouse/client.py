"""ClickHouse adapter: one interface over a server (native protocol, pooled) or chDB.

``CLICKHOUSE_URL=clickhouse://user:pass@host:9000/db`` talks to a server with clickhouse-driver;
``chdb:///path`` opens an in-process chDB data directory. chDB allows one process per directory
and must not be imported before Celery forks, so it is imported lazily here and only the
owning worker ever calls :func:`get_clickhouse` with a chdb URL.

Queries use ``%(name)s`` placeholders; values are escaped by the driver (server) or by
:func:`quote` (chDB). Identifiers (database, table) are validated, never taken from input.
"""
from __future__ import annotations

import contextlib
import json
import queue
import re
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s")


# Server error codes that say "not now" rather than "never": overload, limits, a replica or
# ZooKeeper away, a table not created yet. A batch that failed with one of these is retried
# without counting an attempt; any other server error is about the data and is isolated.
TRANSIENT_CODES = frozenset({
    3,    # UNEXPECTED_END_OF_FILE (connection cut mid-answer)
    60,   # UNKNOWN_TABLE (migration still running)
    81,   # UNKNOWN_DATABASE
    159,  # TIMEOUT_EXCEEDED
    164,  # READONLY
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    225,  # NO_ZOOKEEPER
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS
    279,  # ALL_CONNECTION_TRIES_FAILED
    285,  # TOO_FEW_LIVE_REPLICAS (an insert_quorum replica away)
    286,  # UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE (another quorum INSERT still in flight)
    289,  # REPLICA_IS_NOT_IN_QUORUM
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
    999,  # KEEPER_EXCEPTION
})
_CODE = re.compile(r"Code:\s*(\d+)")
# Sent with every query; they matter only where a query touches a Distributed table (a
# CLICKHOUSE_CLUSTER install) and change nothing on a single node. ``global``: an IN subquery
# over a Distributed table runs once on the initiator and its result goes to every shard, so
# the queries read the same as on one node (18.16 refuses them otherwise, code 288). Sync
# Distributed INSERTs: the INSERT returns once every shard wrote its rows, not once they are
# queued on the initiator's disk. ``in_order`` without the local shortcut: every server reads
# and writes a shard on its first live replica, so a read sees what was acknowledged before it
# (replication lags ~0.1 s, unbounded while ZooKeeper is away). See app/storage/clickhouse/cluster.py.
CLUSTER_SESSION_SETTINGS = {"distributed_product_mode": "global", "insert_distributed_sync": 1,
                            "load_balancing": "in_order", "prefer_localhost_replica": 0}


class ClickHouseError(RuntimeError):
    """A ClickHouse call failed; ``transient`` says whether waiting can fix it."""

    def __init__(self, message: str, *, code: int | None = None, transient: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.transient = transient


def classify(exc: BaseException) -> tuple[int | None, bool]:
    """(server error code, transient?) of a driver or chDB exception."""
    code = getattr(exc, "code", None)
    if not isinstance(code, int):
        found = _CODE.search(str(exc))
        code = int(found.group(1)) if found else None
    try:
        from clickhouse_driver import errors as drv
    except ImportError:  # chDB-only install
        drv = None
    if drv is not None and isinstance(exc, (drv.NetworkError, drv.SocketTimeoutError)):
        return code, True
    if isinstance(exc, (OSError, EOFError, TimeoutError)):
        return code, True
    if code is None:
        # No server code: the driver failed before or outside the server (a connection that
        # never came up). chDB reports every failure with a code, so this is connection-side.
        return None, drv is not None and isinstance(exc, drv.Error) and not isinstance(exc, drv.ServerException)
    return code, code in TRANSIENT_CODES


def wrap(exc: BaseException) -> ClickHouseError:
    """A ClickHouseError carrying the classification of ``exc``."""
    code, transient = classify(exc)
    return ClickHouseError(f"{type(exc).__name__}: {exc}"[:2000], code=code, transient=transient)


def ident(name: str) -> str:
    """Validate a database/table identifier."""
    if not _IDENT.match(name):
        raise ValueError(f"bad ClickHouse identifier {name!r}")
    return name


def quote(value: Any) -> str:
    """Render a Python value as a ClickHouse literal."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return "[" + ", ".join(quote(v) for v in value) + "]"
    if isinstance(value, (datetime, date)):
        value = value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def substitute(sql: str, params: dict[str, Any] | None) -> str:
    """Replace ``%(name)s`` placeholders with quoted literals."""
    if not params:
        return sql
    return _PLACEHOLDER.sub(lambda m: quote(params[m.group(1)]), sql)


class ClickHouse(Protocol):
    """What the pipeline calls on ClickHouse: a backend below, or a :class:`Deadline` around one."""

    @property
    def database(self) -> str: ...

    @property
    def kind(self) -> str: ...

    def execute(self, sql: str, params: dict | None = None) -> list[tuple]: ...

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
               settings: dict | None = None) -> int: ...

    def close(self) -> None: ...


class ServerBackend:
    """A ClickHouse server over the native protocol with a small connection pool."""

    kind = "server"

    def __init__(self, url: str, pool_size: int = 8, timeout: float = 20.0) -> None:
        from clickhouse_driver import Client  # imported here so chDB-only installs stay light

        parsed = urlparse(url)
        self.database = ident((parsed.path or "/default").lstrip("/") or "default")
        self._kwargs = dict(
            host=parsed.hostname or "127.0.0.1", port=parsed.port or 9000,
            user=unquote(parsed.username or "default"), password=unquote(parsed.password or ""),
            connect_timeout=3, send_receive_timeout=timeout, sync_request_timeout=5,
            settings={"use_numpy": False, **CLUSTER_SESSION_SETTINGS},
        )
        self._client_cls = Client
        self._pool: queue.LifoQueue = queue.LifoQueue(maxsize=pool_size)
        self._sem = threading.BoundedSemaphore(pool_size)

    def _take(self) -> Any:
        self._sem.acquire()
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            return self._client_cls(database="default", **self._kwargs)

    def _give(self, client: Any, broken: bool) -> None:
        if broken:
            client.disconnect()
        else:
            self._pool.put_nowait(client)
        self._sem.release()

    def _run(self, sql: str, data: Any = None, params: dict | None = None, settings: dict | None = None) -> Any:
        from clickhouse_driver.errors import Error as DriverError

        client = self._take()
        broken = False
        try:
            if data is not None:
                return client.execute(sql, data, settings=settings)
            return client.execute(sql, params or {}, settings=settings)
        except (DriverError, OSError, EOFError) as exc:
            broken = True
            raise wrap(exc) from exc
        except Exception as exc:
            # A row the driver cannot encode (a lone surrogate, a wrong type) fails mid-INSERT
            # and leaves the connection unusable; it is a data error, not an outage.
            broken = True
            raise ClickHouseError(f"{type(exc).__name__}: {exc}"[:2000], transient=False) from exc
        finally:
            self._give(client, broken)

    def execute(self, sql: str, params: dict | None = None) -> list[tuple]:
        """Run a statement or query; returns rows as tuples."""
        rows: list[tuple] = self._run(sql, params=params)
        return rows

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
               settings: dict | None = None) -> int:
        """INSERT rows (tuples in ``columns`` order) in one block; returns the row count."""
        rows = list(rows)
        if rows:
            cols = ", ".join(ident(c) for c in columns)
            self._run(f"INSERT INTO {ident(self.database)}.{ident(table)} ({cols}) VALUES", data=rows,
                      settings=settings)
        return len(rows)

    def close(self) -> None:
        """Disconnect pooled clients."""
        while True:
            try:
                self._pool.get_nowait().disconnect()
            except queue.Empty:
                return


class ChdbBackend:
    """An in-process chDB session on a data directory; one per process, calls serialized."""

    kind = "chdb"

    def __init__(self, path: str, database: str = "observer") -> None:
        from chdb import session  # lazy: importing chdb before Celery forks hangs the child

        self.database = ident(database)
        self.path = path
        self._session = session.Session(path)
        self._lock = threading.Lock()

    def _query(self, sql: str) -> Any:
        try:
            with self._lock:
                return self._session.query(sql, "JSONCompact")
        except Exception as exc:  # chdb raises its own RuntimeError subclasses
            raise wrap(exc) from exc

    def execute(self, sql: str, params: dict | None = None) -> list[tuple]:
        """Run a statement or query; returns rows as tuples."""
        result = self._query(substitute(sql, params))
        raw = result.bytes() if result is not None else b""
        if not raw.strip():
            return []
        return [tuple(row) for row in json.loads(raw)["data"]]

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
               settings: dict | None = None) -> int:
        """INSERT rows as JSONEachRow in one statement; returns the row count."""
        cols = [ident(c) for c in columns]
        lines = [json.dumps(dict(zip(cols, row, strict=True)), ensure_ascii=False,
                            separators=(",", ":")) for row in rows]
        if lines:
            head = f"INSERT INTO {self.database}.{ident(table)} ({', '.join(cols)}) FORMAT JSONEachRow\n"
            self._query(head + "\n".join(lines))
        return len(lines)

    def close(self) -> None:
        """Close the chDB session (releases the directory lock)."""
        with self._lock, contextlib.suppress(Exception):  # closing twice is harmless
            self._session.close()


_backends: dict[str, ServerBackend | ChdbBackend] = {}
_lock = threading.Lock()


class Deadline:
    """A ClickHouse client whose calls stop once a monotonic deadline has passed.

    An events flush makes several calls (dedup lookup, INSERT, version floors, the
    ``session_batches`` INSERT) while its messages wait unacked; no call starts after the
    flush's budget is spent, so the flush ends within budget + one call's timeout, below the
    broker's visibility timeout. The refusal is transient: the flush requeues and pauses.
    """

    def __init__(self, ch: ClickHouse, deadline: float) -> None:
        self._ch = ch
        self._deadline = deadline

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ch, name)

    @property
    def database(self) -> str:
        """The wrapped client's database."""
        return self._ch.database

    @property
    def kind(self) -> str:
        """The wrapped client's kind (server or chdb)."""
        return self._ch.kind

    def close(self) -> None:
        """Close the wrapped client."""
        self._ch.close()

    def _check(self) -> None:
        if time.monotonic() > self._deadline:
            raise ClickHouseError("events flush time budget spent (ClickHouse answers slowly)", transient=True)

    def execute(self, sql: str, params: dict | None = None) -> list[tuple]:
        self._check()
        return self._ch.execute(sql, params)

    def insert(self, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
               settings: dict | None = None) -> int:
        self._check()
        return self._ch.insert(table, columns, rows, settings=settings)


def get_clickhouse(url: str, pool_size: int = 8, timeout: float = 20.0) -> ServerBackend | ChdbBackend:
    """The process-wide backend for ``url`` (created on first use)."""
    with _lock:
        backend = _backends.get(url)
        if backend is None:
            parsed = urlparse(url)
            if parsed.scheme == "chdb":
                backend = ChdbBackend(parsed.path or "./var/chdb")
            else:
                backend = ServerBackend(url, pool_size, timeout)
            _backends[url] = backend
        return backend


def close_all() -> None:
    """Close every backend (worker shutdown, tests)."""
    with _lock:
        for backend in _backends.values():
            backend.close()
        _backends.clear()
