"""The fault cases (devtools/faults/cases.py), one test each: Observer at its default settings on
servers the suite starts itself, SDK-like load, one fault, then reconciliation.

Each case gets its own broker (a Redis with AOF, or with ``--broker amqp`` a private RabbitMQ
node beside a Redis), its own databases on the suite's PostgreSQL and ClickHouse 18.16 servers,
its own UFSE sink and Observer processes, and passes only with 0 acknowledged events missing
from ClickHouse and from UFSE, everything stored within 2 minutes of the fault's end, and its
own checks. Overrides (named and printed with each case): SESSION_IDLE_TIMEOUT (sessions
finalize within the run, not after 30 min) and, for the "hour" cases, RETRY_TIME_SCALE.

By default (``make test``) the CI subset at reduced load: cases 0, 1, 2, 5, 10, 11 on Redis
and 14 on RabbitMQ. ``--fault-scale full``: every case, then 1, 2, 5, 8 on chDB.
"""
import shutil
import sys
import time

import pytest

from devtools.faults.cases import CASES, CI_AMQP, CI_REDIS, Case, Ctx
from devtools.faults.report import RECOVERY_BOUND, Result, table
from devtools.faults.rig import WHY, Rig, repeats
from devtools.load import SCALES, Load
from devtools.servers.rabbitmq import rabbitmq_installed
from devtools.wait import until

pytestmark = pytest.mark.e2e


def plan(scale: str, broker: str | None, cases: list | None, chdb: bool) -> list[tuple[int, bool, str]]:
    """(case, on chDB, broker) entries the options ask for."""
    if scale == "ci" and not cases and not broker:
        return [(n, False, "redis") for n in CI_REDIS] + [(n, False, "amqp") for n in CI_AMQP]
    chosen = cases or (sorted(CASES) if scale == "full" else list(CI_REDIS + CI_AMQP))
    if chdb:
        if cases and any(CASES[n].chdb_na for n in cases):
            raise pytest.UsageError("; ".join(f"case {n} on chDB: {CASES[n].chdb_na}" for n in cases
                                              if CASES[n].chdb_na))
        chosen = [n for n in chosen if not CASES[n].chdb_na]
    out = [(n, chdb, broker or "redis") for n in chosen]
    if scale == "full" and not cases and not chdb:
        out += [(c.n, True, broker or "redis") for c in CASES.values() if c.chdb and not c.chdb_na]
    return out


def pytest_generate_tests(metafunc):
    opt = metafunc.config.getoption
    entries = plan(opt("fault_scale"), opt("broker"), opt("fault_case"), opt("chdb"))
    metafunc.parametrize("entry", entries, ids=[f"case{n}-{b}" + ("-chdb" if e else "") for n, e, b in entries])


def say(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def test_case(entry, fault_servers, tmp_path, record_property, request):
    n, chdb, broker = entry
    case, scale = CASES[n], SCALES[request.config.getoption("fault_scale")]
    res = Result(case=str(n), title=case.title_for(broker), engine="chdb" if chdb else "server", broker=broker)
    t0 = time.monotonic()
    try:
        if broker == "amqp" and not rabbitmq_installed():
            res.error = "rabbitmq-server is not installed (apt-get install -y rabbitmq-server)"
        else:
            run(case, Rig(fault_servers, n, case.overrides(scale), tmp_path / "rig", chdb=chdb, broker=broker,
                          sessions_redis=case.sessions_redis, maxmemory=case.maxmemory), scale, res)
    except Exception as exc:
        res.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        raise
    finally:
        res.seconds = time.monotonic() - t0
        record_property("fault_result", res.asdict())
        say(f"case {n} ({res.engine}, {broker}): {'PASS' if res.ok else 'FAIL'} in {res.seconds:.0f}s")
    assert res.ok, table([res])
    if not request.config.getoption("fault_keep"):
        shutil.rmtree(tmp_path / "rig", ignore_errors=True)


def run(case: Case, rig: Rig, scale, res: Result) -> None:
    """Rig up, load, fault, reconcile, the case's checks; the rig is stopped afterwards."""
    res.overrides = ", ".join(f"{k}={v}" for k, v in rig.overrides.items()) or "none"
    res.notes += [f"override {k}: {WHY[k]}" for k in rig.overrides]
    try:
        say(f"case {case.n} ({res.engine}, {res.broker}): starting the stack ({rig.dir})")
        rig.start()
        c = Ctx(rig, scale, res)
        if case.setup:
            case.setup(c)
        c.load = Load(rig.stack.url, rig.key, scale, prefix=rig.tag).start()
        say(f"case {case.n}: load running, fault: {res.title}")
        fault_end = case.fault(c)
        time.sleep(scale.tail)
        c.load.stop()
        c.load.join()
        stats = c.load.stats
        expected = stats.acked - c.excluded
        res.sent, res.acked = len(stats.sent), len(stats.acked)
        say(f"case {case.n}: load done ({res.acked}/{res.sent} acknowledged; {dict(stats.statuses)}); reconciling")
        stored: set = set()

        def all_stored() -> bool:
            nonlocal stored
            stored = rig.stored_ids()
            return expected <= stored

        if not rig.chdb and until(all_stored, "stored", timeout=RECOVERY_BOUND + 30, interval=0.5, raises=False) \
                is not None:
            res.recovery_s = time.monotonic() - fault_end
        if until(lambda: expected <= rig.forwarded(), "forwarded", timeout=RECOVERY_BOUND + scale.idle_timeout + 30,
                 interval=0.5, raises=False) is not None:
            c.extra["forward_done"] = time.monotonic()
            res.delivered_s = c.extra["forward_done"] - fault_end
        if rig.chdb:  # chDB cannot be read while its owner runs: time until everything was forwarded
            res.recovery_s = res.delivered_s
            res.notes.append("stored again s on chDB = until every acknowledged event was forwarded")
        for check in case.after:
            check(c)
        forwarded = rig.forwarded()
        res.forwarded, res.missing_ufse = len(expected & forwarded), len(expected - forwarded)
        res.repeated = repeats(rig.deliveries())[0]
        res.restores = rig.broker.live_restores(rig)
        if rig.broker_kind == "amqp":
            rig.broker.checks(rig, res)
        elif case.dead_holder:
            res.notes.append("restores here are the killed workers' messages (expected, after the visibility timeout)")
        elif case.dead_connection:
            held = int(c.extra.get("held_at_kill", 0))
            res.check("restores only of messages in flight on the connections the broker's kill, stop or freeze cut",
                      res.restores <= held, f"{res.restores} restored, {held} were in flight at the fault")
        else:
            res.check("no message a live worker held was restored by the broker", res.restores == 0,
                      f"{res.restores} restored")
        res.notes.append(f"client answers: {dict(stats.statuses)}; gave up on {stats.gave_up} batches")
        if c.excluded:
            res.notes.append(f"{len(c.excluded)} acknowledged poison events belong in the dead letter, not stored")
        ledger_report(rig, case, res)
        if rig.chdb:
            rig.stack.stop()
            stored = rig.stored_ids()
        res.stored, res.missing_ch = len(expected & stored), len(expected - stored)
        if res.missing_ch or res.missing_ufse:
            res.notes.append(rig.diagnose())
            lost = (expected - stored) | (expected - forwarded)
            where = sorted({sid for sid, ids in stats.batches.values() if lost & set(ids)})
            res.notes.append(f"missing events (first 3): {sorted(lost)[:3]}; their sessions: {where[:5]}")
    finally:
        try:
            rig.stop()
        except Exception as exc:
            res.notes.append(f"stopping the rig: {exc}")
        say(f"case {case.n}: logs {rig.dir / 'logs'}")


# Cases whose fault takes the loss ledger with it (it lives on the sessions Redis).
LEDGER_NA = {13: "FLUSHALL empties the sessions Redis, the ledger's home, mid-run"}


def ledger_report(rig: Rig, case: Case, res: Result) -> None:
    """``flask report`` on the case's project once everything is forwarded: its identities
    (received = accepted + rejected + ..., accepted = stored + duplicates + dead-lettered,
    finalized = delivered + ...) must hold after the fault, with the counts in the notes."""
    import json

    if case.n in LEDGER_NA:
        res.notes.append(f"report not checked: {LEDGER_NA[case.n]}")
        return
    until(lambda: _report(rig)["ok"], "the ledger's identities", timeout=20, interval=1, raises=False)
    rep = _report(rig)
    i, st, sv = rep["ingest"], rep["storage"], rep["sessions"]
    summary = (f"received {i['received']} = accepted {i['accepted']} + rejected {i['rejected']} + rate-limited "
               f"{i['rate_limited']}; accepted = stored {st['stored']} + duplicates {st['duplicates']} + "
               f"dead-lettered {st['dead_lettered']} + in flight {st['in_flight']}; finalized {sv['finalized']} = "
               f"delivered {sv['delivered']} + empty {sv['empty']} + dead-lettered {sv['dead_lettered']} + waiting "
               f"{sv['waiting']}")
    problems = "; ".join(c["problem"] for c in rep["checks"] if not c["holds"])
    res.notes.append(f"flask report: {summary}")
    res.check("flask report: the loss ledger's identities hold", rep["ok"], problems or json.dumps(rep)[:300])


def _report(rig: Rig) -> dict:
    import json

    out = rig.stack.flask("report", "--project", f"faults{rig.case}", "--since", "2h", "--json", check=False)
    return json.loads(out.stdout)
