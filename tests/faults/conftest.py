"""The fault suite's options, its servers, and the table of case results at the end of the run.

Options (scripts/faults passes them): ``--fault-scale ci|full`` (ci by default: what `make test`
runs), ``--broker redis|amqp``, ``--fault-case N`` (repeatable), ``--chdb`` (the chosen cases on
chDB), ``--fault-keep`` (keep data and logs of passing cases too).
"""
import shutil
import tempfile
from pathlib import Path

import pytest


def pytest_addoption(parser):
    g = parser.getgroup("faults", "fault suite (tests/faults)")
    g.addoption("--fault-scale", choices=("ci", "full"), default="ci",
                help="load and the compressed hour: ci (make test, the CI subset) or full (every case)")
    g.addoption("--broker", choices=("redis", "amqp"), default=None,
                help="Celery's broker: the case's Redis or a private RabbitMQ node (default: Redis; the CI "
                     "subset runs case 14 on RabbitMQ)")
    g.addoption("--fault-case", type=int, action="append", default=None, help="run this case (repeatable)")
    g.addoption("--chdb", action="store_true", help="run the chosen cases on chDB instead of the 18.16 server")
    g.addoption("--fault-keep", action="store_true", help="keep data and logs of passing cases")


@pytest.fixture(scope="session")
def suite_dirs(request):
    """``make(prefix)``: a directory outside pytest's basetemp (as root PostgreSQL runs as another
    user that must traverse to its data, and every pytest run that starts makes /tmp/pytest-of-root
    private again), removed at the end unless a test failed or ``--fault-keep``."""
    made: list[Path] = []
    yield lambda prefix: made.append(Path(tempfile.mkdtemp(prefix=prefix))) or made[-1]
    for path in made:
        if request.session.testsfailed or request.config.getoption("fault_keep"):
            print(f"\ndata and logs kept under {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def fault_servers(suite_dirs):
    """PostgreSQL and ClickHouse 18.16 servers of this process, started by the suite itself
    (cases stop and restart them; each case gets its own databases)."""
    from devtools.faults.rig import Servers

    servers = Servers(suite_dirs("observer-faults-"))
    yield servers
    servers.stop()


_results: dict = {}


def pytest_runtest_logreport(report):
    """Collect each case's figures (``record_property("fault_result", ...)``; xdist carries them)."""
    if report.when == "call":
        for key, value in report.user_properties:
            if key == "fault_result":
                _results[report.nodeid] = value


def pytest_terminal_summary(terminalreporter, config):
    if not _results or hasattr(config, "workerinput"):
        return
    from devtools.faults.report import Result, table

    results = [Result(**r) for r in _results.values()]
    failed = [f"{r.case}/{r.engine}/{r.broker}" for r in results if not r.ok]
    na = sum(1 for r in results if r.na)
    tr = terminalreporter
    kinds = {"topology" if r.engine == "cluster" else f"{config.getoption('fault_scale')} scale" for r in results}
    tr.write_sep("=", f"fault cases ({', '.join(sorted(kinds))})")
    tr.write_line(table(results))
    if any(r.engine == "chdb" for r in results):  # what has nothing to act on there is not generated
        from devtools.faults.cases import CASES

        for c in CASES.values():
            if c.chdb and c.chdb_na:
                tr.write_line(f"case {c.n} on chDB: not applicable, {c.chdb_na}")
    tr.write_line(f"\n{len(results) - len(failed)}/{len(results)} cases passed" + (f" ({na} n/a)" if na else "")
                  + (f"; failed: {', '.join(failed)}" if failed else "")
                  + f"; {sum(r.seconds for r in results):.0f}s in cases")
