"""The printed summary: the eight figures (medians, with each run's value), and the verdicts."""
from __future__ import annotations

from benchkit.gate import Verdict
from benchkit.stats import fmt, isnum

FIG_W = 44


def _runs(doc: dict, path: str, digits: int = 0) -> str:
    vals = []
    for r in doc.get("runs", []):
        node = r
        for part in path.split("."):
            node = node.get(part, {}) if isinstance(node, dict) else {}
        vals.append(fmt(node, digits) if isnum(node) else "n/a")
    return "[" + " / ".join(vals) + "]" if len(vals) > 1 else ""


def _row(n: str, label: str, value: str, runs: str = "") -> str:
    return f"{n:>2}  {label:<{FIG_W}} {value}" + (f"   runs {runs}" if runs else "")


def summary(doc: dict) -> str:
    """The summary table of a result document."""
    m = doc["median"]
    cfg, mach = doc["config"], doc["machine"]
    n = len(doc.get("runs", []))
    e, lat, q, ins, d, red, b = (m.get(k, {}) for k in ("e2e", "latency", "queryable", "inserts", "delivery",
                                                          "redis", "baseline"))
    code = doc.get("code", {})
    lines = [
        f"=== Observer benchmark: median of {n} run{'s' if n != 1 else ''} "
        f"({mach.get('cpus')} cores {mach.get('model', '')}, {mach.get('mem_gb')} GB; ClickHouse "
        f"{mach.get('clickhouse', '?')}; commit {code.get('commit', '?')}"
        f"{' + ' + str(code['dirty_files']) + ' changed files' if code.get('dirty_files') else ''}) ===",
        f"load: {cfg['generator']}; {cfg['batch']} events of ~{cfg['event_bytes']} B per request",
        "overrides (all else at its default): " + ", ".join(f"{k}={v}" for k, v in cfg.get("overrides", {}).items())
        + (f"; delivery stack also {', '.join(f'{k}={v}' for k, v in cfg.get('delivery_overrides', {}).items())}"
           if cfg.get("delivery_overrides") else ""),
        "",
        _row("1", "sustained end to end (accepted and stored)", f"{fmt(e.get('e2e_eps'), 0)} events/s",
             _runs(doc, "e2e.e2e_eps")),
        _row("", "  accepted over HTTP (closed loop)", f"{fmt(e.get('accepted_eps'), 0)} events/s "
             f"(p50 {fmt(e.get('p50_ms'))} ms, p99 {fmt(e.get('p99_ms'))} ms)", _runs(doc, "e2e.accepted_eps")),
        _row("", "  stored in ClickHouse during the load", f"{fmt(e.get('stored_eps_during_load'), 0)} events/s",
             _runs(doc, "e2e.stored_eps_during_load")),
        _row("", "  stored count caught up after the load", f"{fmt(e.get('catchup_s'), 2)} s",
             _runs(doc, "e2e.catchup_s", 2)),
        _row("2", f"ingest latency at {cfg['open_fraction']:.0%} ({fmt(lat.get('target_eps'), 0)} events/s)",
             f"p50 {fmt(lat.get('p50_ms'))} ms, p99 {fmt(lat.get('p99_ms'))} ms", _runs(doc, "latency.p99_ms", 1)),
        _row("3", "accepted -> queryable", f"p50 {fmt(q.get('p50_s'), 2)} s, p95 {fmt(q.get('p95_s'), 2)} s "
             f"({fmt(q.get('probes'), 0)} probes, ClickHouse polled every {fmt(q.get('poll_interval_s'), 1)} s)",
             _runs(doc, "queryable.p95_s", 2)),
        _row("4", "ClickHouse writes at full load", f"from {ins.get('source', '?')}"),
    ]
    tables = ins.get("tables") or {}
    lines.append(f"    {'table':<22} {'rows/INSERT':>12} {'INSERTs/s':>10} {'rows/s':>9}   INSERT statements "
                 "(system.query_log)")
    for name, t in sorted(tables.items()):
        window = ins.get("window_s") or float("nan")
        stmts = t.get("statements")
        st = (f"{fmt(stmts, 0)} in {fmt(window, 0)} s" if isnum(stmts) else "not logged")
        if isnum(stmts) and stmts == 0 and t.get("inserts"):
            st += " (written by a materialized view)"
        lines.append(f"    {name:<22} {fmt(t.get('rows_per_insert'), 0):>12} {fmt(t.get('inserts_per_s'), 2):>10} "
                     f"{fmt(t.get('rows', 0) / window if isnum(window) else float('nan'), 0):>9}   {st}")
    mk = red.get("markers") or {}
    lines += [
        _row("5", "idle timeout passed -> delivered at UFSE",
             f"p50 {fmt(d.get('p50_s'), 2)} s, p95 {fmt(d.get('p95_s'), 2)} s "
             f"({fmt(d.get('delivered'), 0)}/{fmt(d.get('sessions'), 0)} sessions; SESSION_IDLE_TIMEOUT="
             f"{fmt(d.get('idle_timeout_s'), 0)} s; sessions rows/INSERT {fmt(d.get('sessions_rows_per_insert'), 1)})",
             _runs(doc, "delivery.p95_s", 2)),
        _row("6", f"Redis per active session ({fmt(red.get('sessions'), 0)} sessions)",
             f"{fmt(red.get('bytes_per_session'), 0)} B of used_memory "
             f"({fmt(red.get('bytes_per_session_without_markers'), 0)} B "
             f"without the batch markers; all counted {fmt(red.get('counted_after_s'), 1)} s after the last request)",
             _runs(doc, "redis.bytes_per_session")),
    ]
    kinds = red.get("kinds") or {}
    for name, k in sorted(kinds.items(), key=lambda kv: -(kv[1].get("per_session") or 0)):
        lines.append(f"    {name:<30} {fmt(k.get('per_session'), 0):>6} B/session   "
                     + (f"{fmt(k.get('keys'), 0)} keys x {fmt(k.get('bytes_each'), 0)} B (MEMORY USAGE of a sample)"
                        if k.get("keys") else f"{fmt(k.get('members'), 0)} members added"))
    unaccounted = red.get("bytes_per_session", float("nan")) - red.get("accounted_per_session", float("nan"))
    if isnum(unaccounted):
        lines.append(f"    {'(unaccounted: allocator, dicts)':<30} {fmt(unaccounted, 0):>6} B/session   "
                     "used_memory growth not in any key's MEMORY USAGE")
    lines.append(_row("", "  batch markers per 1,000 events/s sustained",
                      f"{fmt(mk.get('mb_per_1k_eps'), 1)} MB = {fmt(mk.get('per_s_per_1k_eps'), 1)} written/s x "
                      f"{fmt(mk.get('ttl_s'), 0)} s TTL x {fmt(mk.get('bytes_each'), 0)} B "
                      f"(kinds {', '.join(mk.get('found') or []) or 'none'}; TTL from "
                      f"{mk.get('ttl_source', mk.get('setting', '?'))})",
                      _runs(doc, "redis.markers.mb_per_1k_eps", 1)))
    for name, k in sorted((red.get("ttl_kinds") or {}).items()):
        if name.split(": ", 1)[-1] in (mk.get("found") or []):
            continue  # the markers line above
        if isnum(k.get("mb_per_1k_eps")) and k.get("mb_per_1k_eps", 0) >= 0.05:
            lines.append(f"    {name:<30} {fmt(k['mb_per_1k_eps'], 1):>6} MB per 1,000 events/s "
                         f"({fmt(k['per_s_per_1k_eps'], 1)}/s x {fmt(k['ttl_s'], 0)} s x {fmt(k['bytes_each'], 0)} B)")
    best, obs = b.get("best") or {}, b.get("observer_settings") or {}
    lines += [
        _row("7", f"baseline, calibration's fastest ({best.get('config', '?')})",
             f"{fmt(best.get('eps'), 0)} events/s (p99 {fmt(best.get('p99_ms'))} ms)", _runs(doc, "baseline.best.eps")),
        _row("", f"  at Observer's settings ({obs.get('config', '?')})", f"{fmt(obs.get('eps'), 0)} events/s "
             f"(p99 {fmt(obs.get('p99_ms'))} ms)", _runs(doc, "baseline.observer_settings.eps")),
        _row("", "  Observer end to end / the faster baseline", f"{fmt(b.get('ratio'), 3)}x",
             _runs(doc, "baseline.ratio", 3)),
        _row("8", "CPU seconds per 1,000 events stored", "(sustained phase, from /proc; % of one core in brackets)"),
    ]
    per = m.get("cpu_per_1k_events") or {}
    pcts = m.get("cpu_pct") or {}
    for name, v in sorted(per.items(), key=lambda kv: -(kv[1] if isnum(kv[1]) else 0)):
        lines.append(f"    {name:<30} {fmt(v, 3):>7} s   ({fmt(pcts.get(name), 0)} %)")
    others = "(other processes on the machine)"
    if others in pcts:
        lines.append(f"    {others:<30} {'':>7}     ({fmt(pcts[others], 0)} % during the sustained load, "
                     f"{fmt(lat.get('others_cpu_pct'), 0)} % during the open loop: other jobs on a shared host)")
    bl = best.get("cpu_per_1k_events") or {}
    if bl:
        lines.append("    baseline (best): " + ", ".join(f"{k} {fmt(v, 3)} s" for k, v in bl.items()))
    return "\n".join(lines)


def verdicts(vs: list[Verdict]) -> str:
    """PASS/MISS lines, gate first."""
    out = ["targets (median of the runs; [gate] decides --check's exit status):"]
    out += ["  " + v.line for v in sorted(vs, key=lambda v: not v.target.gate)]
    return "\n".join(out)
