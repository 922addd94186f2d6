"""RabbitMQ: a private node of Debian's rabbitmq-server 3.10 on free loopback ports, all its data in one dir.

The machine's own RabbitMQ (node ``rabbit@localhost`` on 5672) is never touched: the node here
has its own name, AMQP and distribution ports, Mnesia and log dirs, config, plugins file (empty:
no management plugin) and ``HOME`` (its Erlang cookie), and every ``rabbitmqctl`` call names it
with ``-n``. The scripts are run from /usr/lib/rabbitmq/bin: /usr/sbin's wrappers switch to the
``rabbitmq`` user, whose cookie and home are the machine's node's. ``RABBITMQ_CONF_ENV_FILE``
points at an empty file of ours, so /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost)
is not read.

Processes: the leader is the ``rabbitmq-server`` shell script (it turns SIGTERM into a graceful
stop of the VM); ``beam.smp`` is its child in the same process group; ``erl_child_setup`` (its
own session) and its helpers exit with the VM, and the leftovers sweep kills by PID whatever of
them outlived it. ``epmd`` is shared by every Erlang node of the machine: the VM starts one only
if none runs, it daemonizes, and it is left alone. ``kill9``, ``sigstop`` and ``sigcont`` act on
the group, so they reach the VM.

    mq = start_rabbitmq(tmp / "mq")     # ready once an AMQP connection opens
    mq.url                              # amqp://guest:guest@127.0.0.1:PORT//
    mq.queues()                         # rabbitmqctl -n NODE list_queues ... as dicts
    mq.kill9(); mq.restart()            # same ports, same node name, same data
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import psutil

from devtools import console
from devtools.leftovers import stop_leftover
from devtools.net import LOCALHOST, choose_port, free_port, start_retrying_ports
from devtools.proc import Proc, children_of, pid_alive
from devtools.system import require_debian_package
from devtools.wait import until

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
# Only loopback, for the node's distribution listener and for the CLI's.
LOOPBACK_DIST = "-kernel inet_dist_use_interface {127,0,0,1}"
QUEUE_INFO = ("name", "type", "durable", "arguments", "messages", "messages_ready",
              "messages_unacknowledged", "messages_persistent", "consumers")


def rabbitmq_installed() -> bool:
    """True when Debian's rabbitmq-server scripts are there."""
    return os.access(RABBIT_BIN / "rabbitmq-server", os.X_OK)


def _start_time(pid: int) -> float | None:
    """When ``pid`` started (tells a PID from a reused one)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@contextlib.contextmanager
def amqp_connection(port: int, vhost: str = "/", timeout: float = 2.0):
    """A py-amqp connection to a private node as its guest user (which it admits from loopback only)."""
    import amqp

    conn = amqp.Connection(f"{LOCALHOST}:{port}", userid="guest", password="guest", virtual_host=vhost,  # noqa: S106
                           connect_timeout=timeout, read_timeout=2.5 * timeout, write_timeout=2.5 * timeout)
    try:
        conn.connect()
        yield conn
    finally:
        conn.collect()


def _amqp_open(port: int):
    def ready() -> bool:
        with amqp_connection(port, timeout=1.0) as conn:
            return conn.connected
    return ready


class RabbitMQ(Proc):
    """One node. Signals go to the process group (the VM is the leader's child)."""

    @property
    def node(self) -> str:
        return self.extra["node"]

    def start(self, wait: bool = True) -> RabbitMQ:
        super().start(wait=wait)
        self.extra["tree"] = self._tree()
        if wait:
            console.note(f"rabbitmq {self.node} on {LOCALHOST}:{self.port} ready in {self.startup_seconds:.1f}s"
                         + (" (restart)" if self.starts > 1 else ""))
        return self

    def _tree(self) -> list[tuple[int, str]]:
        """(pid, start time) of every descendant of the leader now (VM, erl_child_setup, helpers)."""
        out, todo = [], [self.pid]
        while todo and len(out) < 64:
            for child in children_of(todo.pop()):
                out.append((child, _start_time(child)))
                todo.append(child)
        return out

    def _sweep(self, grace: float = 3.0) -> list[int]:
        """SIGKILL, by PID, the descendants recorded at start that outlived the VM; returns them."""
        tree = [(p, t) for p, t in self.extra.get("tree", []) if t is not None]
        until(lambda: not any(pid_alive(p) and _start_time(p) == t for p, t in tree), "helpers gone", timeout=grace,
              interval=0.05, raises=False)
        killed = []
        for pid, started in tree:
            if pid_alive(pid) and _start_time(pid) == started:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass
        if killed:
            console.note(f"rabbitmq {self.node}: killed leftover helper processes {killed}")
        return killed

    def stop(self, grace: float | None = None) -> int | None:
        """Graceful stop (SIGTERM: the script stops the VM cleanly), then SIGKILL of the group."""
        if self.proc is not None and self.alive():
            self.kill_group(signal.SIGCONT)  # a frozen VM cannot shut down
        code = super().stop(grace)
        self._sweep()
        return code

    def restart(self, wait: bool = True) -> RabbitMQ:
        """Start again on the same ports, node name and data (stopping first if running)."""
        if self.alive():
            self.stop()
        else:
            self.kill_group()
            self.proc.wait()
            self._sweep()
        return self.start(wait=wait)

    def kill9(self, group: bool = True) -> int:
        """kill -9 of the VM (the whole group: the script and beam.smp), then the helpers."""
        self.kill_group()
        code = self.proc.wait(30)
        self._sweep()
        return code

    def sigstop(self) -> None:
        """Freeze the VM: its sockets stay open, nothing answers."""
        self.kill_group(signal.SIGSTOP)

    def sigcont(self) -> None:
        self.kill_group(signal.SIGCONT)

    # ------------------------------------------------------------------ rabbitmqctl -n NODE

    def ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        """``rabbitmqctl -n NODE ARGS`` with this node's cookie; its stdout."""
        r = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args], env=self.extra["ctl_env"],
                           capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl -n {self.node} {' '.join(args)}: exit {r.returncode}: "
                               f"{(r.stderr or r.stdout).strip()[-400:]}")
        return r.stdout

    def eval(self, expr: str, timeout: float = 30.0) -> str:
        """``rabbitmqctl eval EXPR`` (an Erlang expression ending in a dot)."""
        return self.ctl("eval", expr, timeout=timeout).strip()

    def add_vhost(self, vhost: str) -> str:
        """Create ``vhost`` with full rights for guest; its AMQP URL."""
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return self.url_for(vhost)

    def url_for(self, vhost: str = "/") -> str:
        """The AMQP URL of ``vhost`` (the default one is ``//``)."""
        return f"amqp://guest:guest@{LOCALHOST}:{self.port}/{'/' if vhost == '/' else vhost}"

    def queues(self, vhost: str = "/") -> dict[str, dict]:
        """``list_queues`` of ``vhost``: {name: {type, durable, arguments, messages, ...}}."""
        out = self.ctl("list_queues", "-q", "-p", vhost, "--formatter", "json", *QUEUE_INFO)
        return {q["name"]: q for q in json.loads(out or "[]")}

    def memory(self) -> int:
        """Bytes of memory the node counts against its high watermark."""
        return int(self.eval("vm_memory_monitor:get_process_memory()."))

    def set_memory_limit(self, limit_bytes: int) -> None:
        """Set the memory high watermark to an absolute number of bytes (publishers block above it)."""
        self.ctl("set_vm_memory_high_watermark", "absolute", str(int(limit_bytes)))

    def alarms(self) -> str:
        """The node's resource alarms as Erlang terms ('[]' when none)."""
        return self.eval("rabbit_alarm:get_alarms().")

    def counters(self) -> dict[str, int]:
        """AMQP 0-9-1 message counters since the node started (all queue types summed)."""
        names = ("published", "published_in_confirm_mode", "confirmed", "delivered", "redelivered", "acknowledged")
        text = self.eval(
            "O = rabbit_global_counters:overview(), P = maps:get([{protocol, amqp091}], O), "
            "Q = [M || {[{protocol, amqp091}, {queue_type, _}], M} <- maps:to_list(O)], "
            "S = fun(F) -> lists:sum([maps:get(F, M, 0) || M <- Q]) end, "
            "{maps:get(messages_received_total, P), maps:get(messages_received_confirm_total, P), "
            "maps:get(messages_confirmed_total, P), S(messages_delivered_total), "
            "S(messages_redelivered_total), S(messages_acknowledged_total)}.")
        # A tuple, not a list: Erlang prints a list whose integers are all printable (32-126, as
        # counters are soon after a restart) as a string, e.g. "ddd" for [100,100,100].
        return dict(zip(names, parse_int_tuple(text), strict=True))

def parse_int_tuple(text: str) -> list[int]:
    """The integers of an Erlang tuple as ``rabbitmqctl eval`` prints it: ``{1,2,3}``."""
    text = text.strip()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"not an Erlang tuple: {text[:80]!r}")
    return [int(v) for v in text[1:-1].replace("\n", " ").split(",") if v.strip()]


def _write_files(dir: Path, config: dict) -> None:
    (dir / "rabbitmq-env.conf").write_text("# empty: shadows /etc/rabbitmq/rabbitmq-env.conf\n")
    (dir / "enabled_plugins").write_text("[].\n")  # no management (or any) plugin
    lines = ["# written by devtools/servers/rabbitmq.py"] + [f"{k} = {v}" for k, v in config.items()]
    (dir / "rabbitmq.conf").write_text("\n".join(lines) + "\n")


def _env(dir: Path, node: str, port: int, dist_port: int) -> tuple[dict, dict]:
    """(node environment, rabbitmqctl environment): nothing inherited from RABBITMQ_*/ERL_*."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
    common = dict(base, HOME=str(dir), RABBITMQ_CONF_ENV_FILE=str(dir / "rabbitmq-env.conf"),
                  ERL_EPMD_ADDRESS=LOCALHOST, LANG="C.UTF-8", LC_ALL="C.UTF-8")
    env = dict(common, RABBITMQ_NODENAME=node, RABBITMQ_NODE_IP_ADDRESS=LOCALHOST,
               RABBITMQ_NODE_PORT=str(port), RABBITMQ_DIST_PORT=str(dist_port),
               RABBITMQ_MNESIA_BASE=str(dir / "mnesia"), RABBITMQ_LOG_BASE=str(dir / "log"),
               RABBITMQ_LOGS="-", RABBITMQ_CONFIG_FILE=str(dir / "rabbitmq.conf"),
               RABBITMQ_ENABLED_PLUGINS_FILE=str(dir / "enabled_plugins"),
               RABBITMQ_PID_FILE=str(dir / "beam.pid"),
               RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=LOOPBACK_DIST)
    ctl = dict(common, RABBITMQ_CTL_ERL_ARGS=LOOPBACK_DIST)
    return env, ctl


def start_rabbitmq(dir: Path, port: int | None = None, *, name: str = "rabbitmq",
                   config: dict | None = None, strict_port: bool = False, timeout: float = 120.0,
                   echo: bool = False) -> RabbitMQ:
    """Run a private RabbitMQ node on ``dir``; ready once an AMQP connection (py-amqp) opens.

    ``config`` adds ``key = value`` lines to its rabbitmq.conf (defaults otherwise: memory high
    watermark 0.4 of RAM, disk free limit 50 MB, consumer_timeout 30 min). The node name is
    ``observer-<name>-<hex>@localhost``; ``extra['node']``, ``extra['dist_port']``. Its start time is
    printed and kept in ``startup_seconds``.
    """
    require_debian_package(rabbitmq_installed(), "rabbitmq-server", "a RabbitMQ node")
    dir = Path(dir).resolve()
    for sub in ("mnesia", "log"):
        (dir / sub).mkdir(parents=True, exist_ok=True)
    # A node a previous run left behind (its VM wrote beam.pid); its command line names our HOME.
    stop_leftover(dir / "beam.pid", f"-home {dir} ")
    _write_files(dir, dict(config or {}))
    node = f"observer-{name}-{uuid.uuid4().hex[:8]}@localhost"
    def build(first: bool) -> Proc:
        chosen = choose_port(port if first else None, strict_port, name)
        dist = free_port()
        while dist == chosen:
            dist = free_port()
        env, ctl_env = _env(dir, node, chosen, dist)
        return RabbitMQ(name, [RABBIT_BIN / "rabbitmq-server"], env=env, cwd=dir, log_path=dir / "rabbitmq.log",
                        ready=_amqp_open(chosen), ready_timeout=timeout, url=f"amqp://guest:guest@{LOCALHOST}:{chosen}//",
                        port=chosen, dir=dir, pid_file=dir / "rabbitmq-server.pid", echo=echo,
                        stop_signals=((signal.SIGTERM, 60.0),),
                        extra={"node": node, "dist_port": dist, "ctl_env": ctl_env, "ports": (dist,)})
    return start_retrying_ports(build, strict=strict_port, grace=5)
