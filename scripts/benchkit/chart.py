"""The PNG chart: throughput and latency over time of the median run (matplotlib, Agg backend).

Top: events/s accepted over HTTP and stored in ClickHouse, per second, through the sustained
(closed-loop) phase and the open-loop phase at 70 %, with the baseline's rate for scale.
Bottom: p50 and p99 latency per second (log scale; open loop: from the scheduled send time).
"""
from __future__ import annotations

from pathlib import Path

from benchkit.stats import isnum


def median_run(doc: dict) -> tuple[int, dict]:
    """(index, run) of the run whose end-to-end rate is the median one."""
    runs = doc["runs"]
    ok = [i for i, r in enumerate(runs) if "timeline" in r]
    if not ok:
        raise ValueError("no run has a timeline to draw")
    order = sorted(ok, key=lambda i: runs[i]["e2e"]["e2e_eps"] if isnum(runs[i]["e2e"].get("e2e_eps")) else 0)
    i = order[len(order) // 2]
    return i, runs[i]


def draw(doc: dict, path: Path) -> Path:
    """Write the chart of ``doc`` to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    i, run = median_run(doc)
    s, o = run["timeline"]["sustained"], run["timeline"]["open_loop"]
    off = o["t0"] - s["t0"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    xs = [k + 0.5 for k in range(len(s["accepted_eps"]))]
    xo = [off + k + 0.5 for k in range(len(o["accepted_eps"]))]
    top.plot(xs, s["accepted_eps"], color="tab:blue", label="accepted (HTTP 202), events/s")
    top.plot(xo, o["accepted_eps"], color="tab:blue")
    stored = [(t, v) for t, v in s["stored_eps"] if isnum(v)] + \
        [(off + t, v) for t, v in o.get("stored_eps", []) if isnum(v)]
    if stored:
        top.plot([t for t, _ in stored], [v for _, v in stored], color="tab:green",
                 label="stored in ClickHouse, events/s")
    base = run["baseline"]
    if isnum(base.get("faster_eps")):
        top.axhline(base["faster_eps"] * 0.15, color="tab:red", ls=":", lw=1,
                    label=f"0.15 x baseline ({base['faster_eps']:,.0f} events/s, {base['faster']})")
    top.axvspan(off, off + len(o["accepted_eps"]), color="0.93", zorder=0)
    top.text(1, top.get_ylim()[1] * 0.95, "closed loop, 8 connections (max)", va="top", fontsize=8)
    top.text(off + 1, top.get_ylim()[1] * 0.95, f"open loop at {run['latency']['target_eps']:,.0f} events/s",
             va="top", fontsize=8)
    top.set_ylabel("events/s")
    top.set_ylim(bottom=0)
    top.legend(loc="lower left", fontsize=8)
    for series, x0, style in ((s, 0.0, "--"), (o, off, "-")):
        xx = [x0 + k + 0.5 for k in range(len(series["p50_ms"]))]
        when = "open loop, from the scheduled send" if x0 else "closed loop"
        bottom.plot(xx, series["p50_ms"], style, color="tab:purple", label=f"p50, {when}")
        bottom.plot(xx, series["p99_ms"], style, color="tab:orange", label=f"p99, {when}")
    bottom.axhline(25, color="tab:red", ls=":", lw=1, label="25 ms target (open loop)")
    bottom.axvspan(off, off + len(o["accepted_eps"]), color="0.93", zorder=0)
    bottom.set_yscale("log")
    bottom.set_ylabel("latency per second, ms")
    bottom.set_xlabel(f"seconds (run {i + 1} of {len(doc['runs'])}, the median by end-to-end rate)")
    bottom.legend(loc="lower left", fontsize=7, ncol=3)
    m = doc["machine"]
    fig.suptitle(f"Observer on {m.get('cpus')} cores, everything co-located "
                 f"(ClickHouse {m.get('clickhouse', '?')}), {doc['started_at']}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
