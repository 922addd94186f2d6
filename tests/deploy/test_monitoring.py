"""The monitoring files (monitoring/, docs/RUNBOOK.md) against promtool and against the code.

promtool (Debian's `prometheus` package; `make test` installs it as root) checks the rules and
runs their unit tests; its output is written to the terminal (stderr, outside pytest's capture)
so `make test` shows it even under xdist, and is in the failure message when it fails. The other
tests read the rules, the dashboard and the runbook: every metric they name is one
app/observability/metrics.py exports, every alert has a runbook section, a summary, a severity,
and a unit test that fires it and one that does not.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from app.observability import metrics
from devtools.system import promtool_available
from tests.deploy.deploykit import ROOT, WORKERS, compose_file

PROM = ROOT / "monitoring" / "prometheus"
RULES = PROM / "alerts.yml"
RULE_TESTS = (PROM / "alerts.test.yml", PROM / "alerts.daily.test.yml")
DASHBOARD = ROOT / "monitoring" / "grafana" / "observer.json"
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"
METRIC = re.compile(r"\bobserver_[a-zA-Z0-9_]+")
SEVERITIES = {"warning", "critical"}


def _promtool(*args: str, capsys: pytest.CaptureFixture) -> str:
    ok, found = promtool_available()
    if not ok:
        pytest.fail(found)
    r = subprocess.run([found, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    out = f"$ promtool {' '.join(args)}\n{r.stdout}{r.stderr}"
    with capsys.disabled():  # shown in `make test`'s output: stderr is not captured by xdist
        sys.stderr.write("\n" + out)
        sys.stderr.flush()
    assert r.returncode == 0, out
    return out


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _dashboard_exprs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in _dashboard_exprs(value)]
    if isinstance(node, list):
        return [e for value in node for e in _dashboard_exprs(value)]
    return []


def exported_names() -> set[str]:
    """Every series name the code's metrics expose: a counter ``x`` as ``x_total`` (and
    ``x_created``), a histogram as ``x_bucket``, ``x_sum``, ``x_count``, a gauge as ``x``."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created")}
    names = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            names |= {obj._name + s for s in suffixes[obj._type]}
    return names


def _anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the markdown's headings (lower case, punctuation dropped, spaces to -)."""
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_promtool_checks_the_rules_and_the_config(capsys):
    out = _promtool("check", "rules", str(RULES.relative_to(ROOT)), capsys=capsys)
    assert f"SUCCESS: {len(_rules())} rules found" in out
    _promtool("check", "config", str((PROM / "prometheus.yml").relative_to(ROOT)), capsys=capsys)


def test_promtool_unit_tests_of_every_alert_pass(capsys):
    out = _promtool("test", "rules", *(str(p.relative_to(ROOT)) for p in RULE_TESTS), capsys=capsys)
    assert out.count("SUCCESS") == len(RULE_TESTS)


def test_every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not():
    fired, quiet = set(), set()
    for path in RULE_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = set(_alerts())
    assert alerts - fired == set(), "alerts no unit test fires"
    assert alerts - quiet == set(), "alerts no unit test shows quiet"
    assert (fired | quiet) - alerts == set(), "unit tests of alerts that do not exist"


def test_every_alert_says_what_it_means_how_bad_and_where_the_runbook_is():
    anchors = _anchors(RUNBOOK.read_text())
    for name, rule in _alerts().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], name
        path, _, anchor = notes["runbook"].partition("#")
        assert path == "docs/RUNBOOK.md", (name, notes["runbook"])
        assert anchor == name.lower() and anchor in anchors, f"{name}: no section #{anchor} in docs/RUNBOOK.md"


def test_the_runbooks_links_resolve():
    """Links to a section here or in another page of docs/ name a heading that exists."""
    text = RUNBOOK.read_text()
    links = re.findall(r"\]\(([\w.-]*\.md)?#([\w-]+)\)", text)
    assert len(links) > 20
    for page, anchor in links:
        target = RUNBOOK.parent / page if page else RUNBOOK
        assert anchor in _anchors(target.read_text()), f"{page or 'RUNBOOK.md'}#{anchor}"


def test_every_metric_in_the_rules_and_the_dashboard_is_exported_by_the_code():
    exported = exported_names()
    assert {"observer_events_rejected_total", "observer_forward_seconds_bucket", "observer_queue_depth"} <= exported
    assert "observer_events_rejected" not in exported and "observer_queue_depth_total" not in exported
    used = {name: "alerts.yml" for rule in _rules() for name in METRIC.findall(rule["expr"])}
    exprs = _dashboard_exprs(json.loads(DASHBOARD.read_text()))
    assert len(exprs) >= 20, "the dashboard's queries were not found"
    used |= {name: "observer.json" for expr in exprs for name in METRIC.findall(expr)}
    unknown = {name: where for name, where in used.items() if name not in exported}
    assert unknown == {}, "metrics named in monitoring/ that app/observability/metrics.py does not export"
    # what the issue asks the dashboard and the rules to show
    for needed in ("observer_http_requests_total", "observer_queue_depth", "observer_clickhouse_insert_seconds_bucket",
                   "observer_forward_seconds_bucket", "observer_dead_letters_total", "observer_destination_state"):
        assert needed in used, needed


def test_the_dashboard_uses_the_provisioned_datasource():
    uid = yaml.safe_load((ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"][0]["uid"]
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    assert dash["uid"] and panels
    assert all(p["datasource"]["uid"] == uid for p in panels)
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])


def test_compose_monitoring_profile_mounts_the_files_it_names():
    services = compose_file()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name
        for volume in services[name]["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), (name, volume)
    scraped = {t for job in yaml.safe_load((PROM / "prometheus.yml").read_text())["scrape_configs"]
               for sc in job["static_configs"] for t in sc["targets"]}
    expected = {f"web:{services['web']['environment']['OPERATOR_PORT']}"}
    expected |= {f"{name}:{services[name]['environment']['WORKER_METRICS_PORT']}" for name in WORKERS}
    assert scraped == expected


def test_docker_compose_config_takes_the_monitoring_profile():
    tool = shutil.which("docker-compose")
    if tool is None:
        pytest.fail("docker-compose not found: `make test` installs Debian's docker-compose as root")
    r = subprocess.run([tool, "-f", str(ROOT / "docker-compose.yml"), "--profile", "monitoring", "config"],
                       cwd=ROOT, env={"PATH": "/usr/bin:/bin", "UFSE_SECRET": "whsec_c2VjcmV0LXNlY3JldA=="},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    config = yaml.safe_load(r.stdout)["services"]
    assert config["prometheus"]["image"].startswith("prom/prometheus:")
    assert config["grafana"]["image"].startswith("grafana/grafana:")
