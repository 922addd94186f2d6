"""The CI subset of scripts/faults (cases 0, 1, 2, 5, 10, 11; 14 on RabbitMQ) at reduced load, at the default settings.

Same case code as ``scripts/faults --ci``. Overrides, printed with each case's figures:
SESSION_IDLE_TIMEOUT=3 (sessions finalize within the test, not after 30 min) and, for cases 10
and 11, RETRY_TIME_SCALE=0.001 (UFSE "down for an hour" becomes 3.6 s; the ~1.4 h of ClickHouse
retries before a poison batch is dead-lettered become 5 s). Case 2 and then case 14 on a private
RabbitMQ node (graceful restart under load) run in a background thread from the first test on
(case 2 mostly waits out the default 60 s visibility timeout) and are checked last. Each case
passes only with 0 acknowledged events missing from ClickHouse and from UFSE, everything stored
within 2 minutes of the fault's end, and its own checks (faultlib.registry).
"""
import concurrent.futures as cf

import pytest

from faultlib import registry, report, runner

pytestmark = pytest.mark.e2e
PLAN = [(case, broker) for case, _chdb, broker in registry.ci_plan()]
BACKGROUND = [(c, b) for c, b in PLAN if registry.ci_background(c, b)]
FOREGROUND = [(c, b) for c, b in PLAN if not registry.ci_background(c, b)]


@pytest.fixture(scope="module")
def background(fault_servers):
    """Start the background cases at once (one after another in one thread); ``{(n, broker): future}``."""
    pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bg-case")
    futures = {(c.n, b): pool.submit(runner.run_case, fault_servers, c, runner.CI, False, b) for c, b in BACKGROUND}
    yield futures
    pool.shutdown(wait=True)


def _check(result) -> None:
    text = report.table([result])
    print("\n" + text)
    assert result.ok, text


@pytest.mark.parametrize("n,broker", [(c.n, b) for c, b in FOREGROUND + BACKGROUND],
                         ids=[f"{c.n}-{b}" for c, b in FOREGROUND + BACKGROUND])
def test_fault_case(fault_servers, background, n, broker):
    if (n, broker) in background:
        _check(background[(n, broker)].result(timeout=900))
    else:
        _check(runner.run_case(fault_servers, registry.CASES[n], runner.CI, broker=broker))
