"""The SSRF guard of project destinations: a URL an API user may set must not make Observer's
workers POST into the network they run in.

A destination's host is resolved, and every address it resolves to must be public (not loopback,
private, link-local, multicast, reserved or unspecified; IPv4-mapped IPv6 judged as its IPv4) or
inside ``DESTINATIONS_ALLOWED_NETWORKS``. That is checked when the destination is set, and again
at every connection against the address actually connected to (a name that resolved public at
``destinations set`` may resolve private at delivery: DNS rebinding). The guarded connection
resolves the name itself, refuses before connecting when any answer is refused, connects to a
vetted address, and checks the socket's peer once more. Redirects are never followed (the
client sends with ``allow_redirects=False``) and the environment's proxies are ignored.

``UFSE_URL`` is the operator's own setting and is not guarded.
"""
from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util import connection

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RefusedAddress(Exception):
    """A destination resolves to (or connected to) an address the guard refuses."""


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver; tests replace this function)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class Guard:
    """The addresses a project destination may reach."""

    def __init__(self, allowed: Iterable[str] = ()) -> None:
        self.allowed: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n, strict=False) for n in allowed)

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be reached, or None when it may."""
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allowed):
            return None
        for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):
            if getattr(ip, f"is_{kind}"):
                return f"{ip}, a {kind.replace('_', '-')} address"
        return None if ip.is_global else f"{ip}, not a public address"

    def addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host``; every answer must pass, else RefusedAddress names the first refused."""
        try:
            found = resolve(host.strip("[]"), port)
        except (OSError, UnicodeError) as exc:
            raise RefusedAddress(f"{host} does not resolve: {exc}") from None
        if not found:
            raise RefusedAddress(f"{host} does not resolve")
        for address in found:
            why = self.refusal(address)
            if why:
                said = why if host.strip("[]") == address else f"{host} resolves to {why}"
                raise RefusedAddress(f"{said} (allow it in DESTINATIONS_ALLOWED_NETWORKS)")
        return found

    def check_url(self, url: str) -> list[str]:
        """The addresses of a destination URL, or ValueError/RefusedAddress saying why not."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("a destination is an http:// or https:// URL with a host")
        return self.addresses(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))


def check_reachable(url: str, guard: Guard, timeout: float = 5.0) -> str | None:
    """Ask the destination once (GET, no redirects, guarded) when it is set.

    A redirect is refused: deliveries never follow one, and one pointing at a refused address is
    the classic way round a name check. Returns a warning when the receiver does not answer (it
    may not be up yet), None when it answered.
    """
    session = requests.Session()
    session.trust_env = False
    session.mount("http://", GuardedAdapter(guard, max_retries=0))
    session.mount("https://", GuardedAdapter(guard, max_retries=0))
    try:
        resp = session.get(url, timeout=timeout, allow_redirects=False)
    except RefusedAddress:
        raise
    except requests.RequestException as exc:
        return f"the receiver did not answer ({type(exc).__name__}); deliveries will retry"
    finally:
        session.close()
    if resp.is_redirect or 300 <= resp.status_code < 400:
        target = urljoin(url, resp.headers.get("Location", ""))
        try:
            guard.check_url(target)
        except (RefusedAddress, ValueError) as exc:
            raise RefusedAddress(f"it redirects to {urlsplit(target).netloc}, and {exc}") from None
        raise RefusedAddress(f"it answers {resp.status_code} (a redirect); deliveries never follow redirects: "
                             "set the final URL")
    return None


class _Guarded:
    """A urllib3 connection that connects only to addresses its guard accepts."""

    guard: Guard
    host: str
    _dns_host: str
    port: int
    timeout: float | None
    source_address: tuple[str, int] | None
    socket_options: list | None

    def _new_conn(self) -> socket.socket:
        addresses = self.guard.addresses(self._dns_host, self.port)
        last: OSError | None = None
        for address in addresses:
            try:
                sock = connection.create_connection((address, self.port), self.timeout,
                                                    source_address=self.source_address,
                                                    socket_options=self.socket_options)
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from exc
            except OSError as exc:
                last = exc
                continue
            peer = str(sock.getpeername()[0])
            why = self.guard.refusal(peer)
            if why:
                sock.close()
                raise RefusedAddress(f"{self.host} connected to {why}")
            return sock
        raise NewConnectionError(self, f"Failed to establish a new connection: {last}")  # type: ignore[arg-type]


class GuardedAdapter(HTTPAdapter):
    """requests' adapter whose connections go through a Guard."""

    def __init__(self, guard: Guard, **kwargs: Any) -> None:
        self._guard = guard  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        attrs = {"guard": self._guard}
        http = type("GuardedHTTPConnection", (_Guarded, HTTPConnection), attrs)
        https = type("GuardedHTTPSConnection", (_Guarded, HTTPSConnection), attrs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
