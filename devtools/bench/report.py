"""The printed summary: the eight figures (medians, with each run's value), and the verdicts."""
from __future__ import annotations

from devtools.bench.gate import Verdict, lookup
from devtools.bench.measure import OTHERS
from devtools.bench.stats import fmt, isnum


def _row(doc: dict, n: str, label: str, value: str, path: str = "", digits: int = 0) -> str:
    """One figure's line; with ``path``, each run's value beside the median."""
    runs = [lookup(r, path) for r in doc.get("runs", [])] if path else []
    each = f"   runs [{' / '.join(fmt(v, digits) for v in runs)}]" if len(runs) > 1 else ""
    return f"{n:>2}  {label:<44} {value}{each}"


def summary(doc: dict) -> str:
    """The summary table of a result document."""
    m, cfg, mach, code = doc["median"], doc["config"], doc["machine"], doc.get("code", {})
    e, lat, q, ins, d, red, b = (m.get(k) or {} for k in ("e2e", "latency", "queryable", "inserts", "delivery",
                                                           "redis", "baseline"))
    n = len(doc.get("runs", []))
    dirty = f" + {code['dirty_files']} changed files" if code.get("dirty_files") else ""
    delivery_overrides = ", ".join(f"{k}={v}" for k, v in cfg.get("delivery_overrides", {}).items())
    lines = [
        f"=== Observer benchmark: median of {n} run{'s' if n != 1 else ''} ({mach.get('cpus')} cores "
        f"{mach.get('model', '')}, {mach.get('mem_gb')} GB; ClickHouse {mach.get('clickhouse', '?')}; "
        f"commit {code.get('commit', '?')}{dirty}) ===",
        f"load: {cfg['generator']}; {cfg['batch']} events of ~{cfg['event_bytes']} B per request",
        "overrides (all else at its default): " + ", ".join(f"{k}={v}" for k, v in cfg.get("overrides", {}).items())
        + (f"; delivery stack also {delivery_overrides}" if delivery_overrides else ""),
        "",
        _row(doc, "1", "sustained end to end (accepted and stored)", f"{fmt(e.get('e2e_eps'), 0)} events/s",
             "e2e.e2e_eps"),
        _row(doc, "", "  accepted over HTTP (closed loop)", f"{fmt(e.get('accepted_eps'), 0)} events/s "
             f"(p50 {fmt(e.get('p50_ms'))} ms, p99 {fmt(e.get('p99_ms'))} ms)", "e2e.accepted_eps"),
        _row(doc, "", "  stored in ClickHouse during the load", f"{fmt(e.get('stored_eps_during_load'), 0)} events/s",
             "e2e.stored_eps_during_load"),
        _row(doc, "", "  stored count caught up after the load", f"{fmt(e.get('catchup_s'), 2)} s", "e2e.catchup_s", 2),
        _row(doc, "2", f"ingest latency at {cfg['open_fraction']:.0%} ({fmt(lat.get('target_eps'), 0)} events/s)",
             f"p50 {fmt(lat.get('p50_ms'))} ms, p99 {fmt(lat.get('p99_ms'))} ms", "latency.p99_ms", 1),
        _row(doc, "3", "accepted -> queryable", f"p50 {fmt(q.get('p50_s'), 2)} s, p95 {fmt(q.get('p95_s'), 2)} s "
             f"({fmt(q.get('probes'), 0)} probes, ClickHouse polled every {fmt(q.get('poll_interval_s'), 1)} s)",
             "queryable.p95_s", 2),
        _row(doc, "4", "ClickHouse writes at full load", f"from {ins.get('source', '?')}"),
        f"    {'table':<22} {'rows/INSERT':>12} {'INSERTs/s':>10} {'rows/s':>9}",
    ]
    window = ins.get("window_s")
    for name, t in sorted((ins.get("tables") or {}).items()):
        rows_s = t.get("rows", 0) / window if isnum(window) and isnum(t.get("rows")) else float("nan")
        lines.append(f"    {name:<22} {fmt(t.get('rows_per_insert'), 0):>12} {fmt(t.get('inserts_per_s'), 2):>10} "
                     f"{fmt(rows_s, 0):>9}")
    mk = red.get("markers") or {}
    lines += [
        _row(doc, "5", "idle timeout passed -> delivered at UFSE",
             f"p50 {fmt(d.get('p50_s'), 2)} s, p95 {fmt(d.get('p95_s'), 2)} s ({fmt(d.get('delivered'), 0)}/"
             f"{fmt(d.get('sessions'), 0)} sessions; SESSION_IDLE_TIMEOUT={fmt(d.get('idle_timeout_s'), 0)} s; "
             f"sessions rows/INSERT {fmt(d.get('sessions_rows_per_insert'), 1)})", "delivery.p95_s", 2),
        _row(doc, "6", f"Redis per active session ({fmt(red.get('sessions'), 0)} sessions)",
             f"{fmt(red.get('bytes_per_session'), 0)} B of used_memory "
             f"({fmt(red.get('bytes_per_session_without_markers'), 0)} B without the batch markers; "
             f"all counted {fmt(red.get('counted_after_s'), 1)} s after the last request)",
             "redis.bytes_per_session"),
    ]
    for name, k in sorted((red.get("kinds") or {}).items(), key=lambda kv: -(kv[1].get("per_session") or 0)):
        lines.append(f"    {name:<30} {fmt(k.get('per_session'), 0):>6} B/session   {fmt(k.get('keys'), 0)} keys x "
                     f"{fmt(k.get('bytes_each'), 0)} B (MEMORY USAGE of a sample)")
    lines.append(_row(doc, "", "  batch markers per 1,000 events/s sustained",
                      f"{fmt(mk.get('mb_per_1k_eps'), 1)} MB = {fmt(mk.get('per_s_per_1k_eps'), 1)} written/s x "
                      f"{fmt(mk.get('ttl_s'), 0)} s TTL x {fmt(mk.get('bytes_each'), 0)} B "
                      f"(kind {mk.get('kind') or ', '.join(mk.get('found') or ['?'])}; "
                      f"TTL from {mk.get('ttl_source', '-')})",
                      "redis.markers.mb_per_1k_eps", 1))
    best, obs = b.get("best") or {}, b.get("observer_settings") or {}
    lines += [
        _row(doc, "7", f"baseline, calibration's fastest ({best.get('config', '?')})",
             f"{fmt(best.get('eps'), 0)} events/s (p99 {fmt(best.get('p99_ms'))} ms)", "baseline.best.eps"),
        _row(doc, "", f"  at Observer's settings ({obs.get('config', '?')})",
             f"{fmt(obs.get('eps'), 0)} events/s (p99 {fmt(obs.get('p99_ms'))} ms)", "baseline.observer_settings.eps"),
        _row(doc, "", "  Observer end to end / the faster baseline", f"{fmt(b.get('ratio'), 3)}x", "baseline.ratio", 3),
        _row(doc, "8", "CPU seconds per 1,000 events stored", "(sustained phase; % of one core in brackets)"),
    ]
    pcts = m.get("cpu_pct") or {}
    for name, v in sorted((m.get("cpu_per_1k_events") or {}).items(), key=lambda kv: -(kv[1] if isnum(kv[1]) else 0)):
        lines.append(f"    {name:<30} {fmt(v, 3):>7} s   ({fmt(pcts.get(name), 0)} %)")
    if OTHERS in pcts:
        lines.append(f"    {OTHERS:<30} {'':>7}     ({fmt(pcts[OTHERS], 0)} % during the sustained load, "
                     f"{fmt(lat.get('others_cpu_pct'), 0)} % during the open loop: other jobs on a shared host)")
    if best.get("cpu_per_1k_events"):
        lines.append("    baseline (best): " + ", ".join(f"{k} {fmt(v, 3)} s"
                                                         for k, v in best["cpu_per_1k_events"].items()))
    lines.append(scrub_line(doc))
    return "\n".join(lines)


def scrub_line(doc: dict) -> str:
    """Figure 9: web CPU per request, the scrubber's worst-case body against a plain one."""
    sc = doc["median"].get("scrub") or {}
    shapes = ", ".join(f"{k} {fmt(v, 1)}" for k, v in (sc.get("shapes") or {}).items())
    return "\n".join([
        _row(doc, "9", f"web CPU per request of {fmt(sc.get('body_bytes'), 0)} B (privacy scrub)",
             f"worst {fmt(sc.get('worst_ms'), 1)} ms ({sc.get('worst_shape', '?')}) / "
             f"plain {fmt(sc.get('plain_ms'), 1)} ms = {fmt(sc.get('ratio'), 2)}x", "scrub.ratio", 2),
        f"    worst-case shapes, ms: {shapes or '-'}; answers other than 202: {fmt(sc.get('not_202'), 0)}"])


def verdicts(vs: list[Verdict]) -> str:
    """PASS/MISS lines, gate first."""
    return "\n".join(["targets (median of the runs; [gate] decides --check's exit status):"]
                     + ["  " + v.line for v in sorted(vs, key=lambda v: not v.target.gate)])
