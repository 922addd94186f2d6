"""Observer's one process toolkit: start, wait until ready through the client libraries,
prefix logs, stop by process group; plus the fault helpers (kill -9, SIGSTOP/SIGCONT, restart,
kill of pool children only).

Modules: ``proc`` (the :class:`Proc` supervisor), ``redis_server``, ``postgres_server``,
``clickhouse_server`` (servers with data dirs, restartable on the same port), ``observer``
(web, workers, beat, Flower from the Procfile), ``sink`` (the UFSE sink), ``net`` (ports,
probes), ``system`` (Debian binaries). Used by ``make run`` (scripts/devstack.py), the
benchmarks, the end-to-end tests and ``scripts/faults``.
"""
