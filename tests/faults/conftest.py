"""The fault suite's servers: one PostgreSQL and one ClickHouse 18.16 server for the module."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))


@pytest.fixture(scope="module")
def fault_servers(tmp_path_factory):
    """Servers started by the suite itself (stopped and restarted by cases that fault them)."""
    from faultlib.rig import Servers

    servers = Servers(tmp_path_factory.mktemp("faults"))
    yield servers
    servers.stop()
