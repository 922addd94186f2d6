"""A copy of the system ClickHouse config whose paths and ports all live under one directory."""
from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from devtools.net import LOCALHOST

_CH_PATH_PREFIXES = ("/var/lib/clickhouse", "/var/log/clickhouse-server", "/var/run/clickhouse-server")
_CH_REMOVE_TAGS = ("interserver_http_port", "interserver_https_port", "mysql_port",
                   "postgresql_port", "https_port", "tcp_port_secure", "grpc_port",
                   "prometheus", "listen_host", "interserver_http_host",
                   # test clusters of the stock config point at port 9000
                   "remote_servers")


def _child(parent: ET.Element, tag: str) -> ET.Element:
    """``parent``'s first ``tag`` element, made when it has none."""
    el = parent.find(tag)
    return el if el is not None else ET.SubElement(parent, tag)


def _drop(root: ET.Element, tags) -> None:
    """Remove every ``tags`` element directly under ``root``."""
    for tag in tags:
        for el in root.findall(tag):
            root.remove(el)


def _ch_rewrite_paths(root: ET.Element, dir: Path) -> None:
    mapping = {"/var/lib/clickhouse": str(dir / "data"),
               "/var/log/clickhouse-server": str(dir / "log"),
               "/var/run/clickhouse-server": str(dir / "run")}
    # Substitutions from /etc/metrika.xml (include_from) are not used here: drop the `incl`
    # attributes ("Include not found" noise) and the elements that are only a placeholder for
    # one (an empty <zookeeper/> left behind makes the DDLWorker fail on "No addresses").
    parents = {c: p for p in root.iter() for c in p}
    for el in list(root.iter()):
        if "incl" in el.attrib:
            del el.attrib["incl"]
            if len(el) == 0 and not (el.text or "").strip() and el in parents:
                parents[el].remove(el)
    for el in root.iter():
        if el.text and el.text.strip().startswith("/"):
            t = el.text.strip()
            for prefix in _CH_PATH_PREFIXES:
                if t == prefix or t.startswith(prefix + "/"):
                    el.text = mapping[prefix] + t[len(prefix):]
                    break


def write_config(dir: Path, tcp_port: int, http_port: int, source: Path,
                 cluster: ClusterNode | None = None) -> Path:
    tree = ET.parse(source / "config.xml")
    root = tree.getroot()
    _drop(root, _CH_REMOVE_TAGS)
    cache = str(512 * 1024 * 1024)  # a dev/test server: modest caches (allocated on demand anyway)
    for tag, value in (("path", f"{dir / 'data'}/"), ("tmp_path", f"{dir / 'data' / 'tmp'}/"),
                       ("user_files_path", f"{dir / 'data' / 'user_files'}/"),
                       ("format_schema_path", f"{dir / 'data' / 'format_schemas'}/"),
                       ("tcp_port", str(tcp_port)), ("http_port", str(http_port)),
                       ("mark_cache_size", cache), ("uncompressed_cache_size", cache)):
        _child(root, tag).text = value
    logger = _child(root, "logger")
    for tag, name in (("log", "clickhouse-server.log"), ("errorlog", "clickhouse-server.err.log")):
        _child(logger, tag).text = str(dir / "log" / name)
    _drop(logger, ("size", "count"))
    ET.SubElement(logger, "size").text = "100M"
    ET.SubElement(logger, "count").text = "3"
    ET.SubElement(root, "listen_host").text = LOCALHOST
    users = root.find("users_config")
    if users is not None and users.text and os.path.isabs(users.text.strip()):
        users.text = os.path.basename(users.text.strip())
    _ch_rewrite_paths(root, dir)
    if cluster is not None:
        add_cluster_elements(root, cluster)
    out = dir / "config.xml"
    tree.write(out, encoding="utf-8", xml_declaration=True)
    return out


@dataclass(frozen=True)
class ClusterNode:
    """What one server of a cluster needs in its config (``write_config(..., cluster=...)``)."""

    cluster: str                                   # the <remote_servers> entry's name
    shards: tuple[tuple[tuple[str, int], ...], ...]  # per shard, its replicas' (host, tcp port)
    zookeeper: tuple[tuple[str, int], ...]         # the ensemble's (host, client port)
    macros: tuple[tuple[str, str], ...]            # e.g. (("shard", "01"), ("replica", "r1"))
    interserver_port: int                          # replicas fetch parts from each other here
    session_timeout_ms: int = 30000                # ClickHouse's default


def add_cluster_elements(root: ET.Element, node: ClusterNode) -> None:
    """Add <zookeeper>, <remote_servers>, <macros> and the interserver port to a server config."""
    _drop(root, ("zookeeper", "remote_servers", "macros", "interserver_http_port", "interserver_http_host"))
    zk = ET.SubElement(root, "zookeeper")
    for i, (host, port) in enumerate(node.zookeeper, 1):
        entry = ET.SubElement(zk, "node", index=str(i))
        ET.SubElement(entry, "host").text = host
        ET.SubElement(entry, "port").text = str(port)
    ET.SubElement(zk, "session_timeout_ms").text = str(node.session_timeout_ms)
    cluster = ET.SubElement(ET.SubElement(root, "remote_servers"), node.cluster)
    for replicas in node.shards:
        shard = ET.SubElement(cluster, "shard")
        # Replicated tables copy to their replicas themselves: a Distributed INSERT writes one.
        ET.SubElement(shard, "internal_replication").text = "true"
        for host, port in replicas:
            replica = ET.SubElement(shard, "replica")
            ET.SubElement(replica, "host").text = host
            ET.SubElement(replica, "port").text = str(port)
    macros = ET.SubElement(root, "macros")
    for key, value in node.macros:
        ET.SubElement(macros, key).text = value
    ET.SubElement(root, "interserver_http_port").text = str(node.interserver_port)
    ET.SubElement(root, "interserver_http_host").text = LOCALHOST


def copy_aux(dir: Path, source: Path) -> None:
    src_users = source / "users.xml"
    if src_users.exists():
        tree = ET.parse(src_users)
        _ch_rewrite_paths(tree.getroot(), dir)
        tree.write(dir / "users.xml", encoding="utf-8", xml_declaration=True)
    for sub in ("config.d", "users.d", "conf.d"):
        s = source / sub
        d = dir / sub
        if d.exists():
            shutil.rmtree(d)
        if s.is_dir():
            d.mkdir()
            for f in s.iterdir():
                if f.suffix in (".xml", ".yaml", ".yml") and f.is_file():
                    if f.suffix == ".xml":
                        try:
                            tree = ET.parse(f)
                            _drop(tree.getroot(), _CH_REMOVE_TAGS)
                            _ch_rewrite_paths(tree.getroot(), dir)
                            tree.write(d / f.name, encoding="utf-8", xml_declaration=True)
                            continue
                        except ET.ParseError:
                            pass
                    shutil.copy2(f, d / f.name)


def with_log_tables(source: Path, out: Path, flush_ms: int = 1000) -> Path:
    """A config source like ``source`` whose server also keeps ``system.part_log`` and logs
    every query to ``system.query_log`` (``log_queries=1`` in the default profile), both
    flushed every ``flush_ms``: what a benchmark counts INSERTs and parts with.

    Pass the returned directory as ``config_source`` of ``start_clickhouse_server``; the
    default config (no part log, queries not logged) is left as it is.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tree = ET.parse(Path(source) / "config.xml")
    root = tree.getroot()
    for tag in ("part_log", "query_log"):
        el = _child(root, tag)
        for sub, text in (("database", "system"), ("table", tag),
                          ("flush_interval_milliseconds", str(int(flush_ms)))):
            _child(el, sub).text = text
    tree.write(out / "config.xml", encoding="utf-8", xml_declaration=True)
    users_src = Path(source) / "users.xml"
    if users_src.exists():
        users = ET.parse(users_src)
        profile = users.getroot().find("profiles/default")
        if profile is not None:
            _child(profile, "log_queries").text = "1"
        users.write(out / "users.xml", encoding="utf-8", xml_declaration=True)
    for sub in ("config.d", "users.d", "conf.d"):
        if (Path(source) / sub).is_dir():
            shutil.copytree(Path(source) / sub, out / sub, dirs_exist_ok=True)
    return out
