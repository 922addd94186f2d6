"""devtools.bench.gate: the --check targets, their verdicts and margins (pure logic)."""
from __future__ import annotations

from devtools.bench.gate import MISS, NA, PASS, TARGETS, Target, evaluate, gate_passed, judge

NAN = float("nan")


def _figures(**over):
    figures = {
        "baseline": {"ratio": 0.30},
        "latency": {"p99_ms": 20.0},
        "inserts": {"tables": {"events": {"rows_per_insert": 2000.0, "inserts_per_s": 1.0},
                               "session_batches": {"rows_per_insert": 1500.0, "inserts_per_s": 1.5},
                               "event_ids": {"rows_per_insert": 2000.0, "inserts_per_s": 1.0}}},
        "queryable": {"p95_s": 1.0}, "delivery": {"p95_s": 5.0, "sessions_rows_per_insert": 30.0},
        "redis": {"bytes_per_session": 600.0, "markers": {"mb_per_1k_eps": 2.0}},
        "scrub": {"ratio": 1.5, "tail": {"ratio": 1.02}},
    }
    for path, value in over.items():
        node = figures
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return figures


def _status(verdicts, path):
    return [v.status for v in verdicts if v.target.path == path and v.target.gate]


def test_all_targets_met_passes_the_gate():
    vs = evaluate(_figures())
    assert gate_passed(vs)
    assert all(v.status == PASS for v in vs if v.target.gate)


def test_each_gate_target_alone_can_fail_the_gate():
    for path, bad in [("baseline__ratio", 0.149), ("latency__p99_ms", 25.1),
                      ("inserts__tables__events__rows_per_insert", 999.0),
                      ("inserts__tables__events__inserts_per_s", 2.01),
                      ("inserts__tables__session_batches__rows_per_insert", 10.0),
                      ("inserts__tables__session_batches__inserts_per_s", 30.0), ("scrub__ratio", 3.01)]:
        vs = evaluate(_figures(**{path: bad}))
        assert not gate_passed(vs), path
        assert _status(vs, path.replace("__", ".")) == [MISS], path


def test_bounds_are_inclusive():
    vs = evaluate(_figures(baseline__ratio=0.15, latency__p99_ms=25.0,
                           inserts__tables__events__rows_per_insert=1000.0,
                           inserts__tables__events__inserts_per_s=2.0))
    assert gate_passed(vs)


def test_a_figure_that_was_not_measured_is_a_miss_not_a_pass():
    vs = evaluate(_figures(latency__p99_ms=NAN))
    assert not gate_passed(vs)
    v = next(v for v in vs if v.target.path == "latency.p99_ms")
    assert v.status == MISS and "not measured" in v.detail
    figures = _figures()
    del figures["baseline"]
    assert not gate_passed(evaluate(figures))


def test_a_table_that_does_not_exist_is_not_applicable():
    figures = _figures()
    del figures["inserts"]["tables"]["session_batches"]
    vs = evaluate(figures)
    assert gate_passed(vs)
    assert _status(vs, "inserts.tables.session_batches.rows_per_insert") == [NA]
    # ...but a table that exists and got no INSERT cannot show its rows per INSERT
    vs = evaluate(_figures(inserts__tables__session_batches__rows_per_insert=NAN))
    assert not gate_passed(vs)


def test_informational_targets_never_decide_the_gate():
    vs = evaluate(_figures(queryable__p95_s=9.0, redis__bytes_per_session=5000.0, delivery__p95_s=60.0))
    assert gate_passed(vs)
    assert {v.target.path for v in vs if v.status == MISS} == {"queryable.p95_s", "redis.bytes_per_session",
                                                               "delivery.p95_s"}


def test_margins_say_by_how_much():
    over = judge(Target("x", "p99", "<=", 25, " ms"), {"x": 268.0})
    assert over.status == MISS and "over by 243.0 ms" in over.detail and "10.7x" in over.detail
    short = judge(Target("x", "ratio", ">=", 0.15, "x", digits=2), {"x": 0.05})
    assert short.status == MISS and "short by 0.10x" in short.detail and "33%" in short.detail
    spare = judge(Target("x", "p99", "<=", 25, " ms"), {"x": 20.0})
    assert spare.status == PASS and "5.0 ms to spare" in spare.detail
    assert "PASS" in spare.line and "[info]" in spare.line


def test_the_gate_is_the_issues_targets():
    gated = {t.path for t in TARGETS if t.gate}
    assert gated == {"baseline.ratio", "latency.p99_ms",
                     "inserts.tables.events.rows_per_insert", "inserts.tables.events.inserts_per_s",
                     "inserts.tables.session_batches.rows_per_insert", "inserts.tables.session_batches.inserts_per_s",
                     "scrub.ratio"}
    assert next(t for t in TARGETS if t.gate and t.path == "baseline.ratio").bound == 0.15
    # issue 19, acceptance 2: the scrubber's worst-case body costs at most 3x a plain one
    scrub = next(t for t in TARGETS if t.gate and t.path == "scrub.ratio")
    assert (scrub.op, scrub.bound) == ("<=", 3)


def test_the_scrub_ratio_gates_alone_with_only_scrub():
    """--only-scrub judges figure 9 alone: the other targets, not measured, are not asked."""
    only = [t for t in TARGETS if t.path.startswith("scrub.")]
    assert gate_passed(evaluate({"scrub": {"ratio": 2.9}}, only))
    assert not gate_passed(evaluate({"scrub": {"ratio": 3.2}}, only))
    assert not gate_passed(evaluate({"scrub": {"ratio": NAN}}, only))  # not measured: a miss
