"""The SSRF guard's address rules (app/forwarding/ssrf.py), pure logic."""
from __future__ import annotations

import pytest

from app.forwarding.ssrf import Guard, RefusedAddress


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("240.0.0.1", "reserved"),  # noqa: S104 -- an address to refuse, not a bind
    ("100.64.0.1", "not a public address"),  # carrier-grade NAT: neither private nor global
    ("::ffff:10.0.0.1", "private"),  # IPv4-mapped IPv6 is judged as its IPv4
])
def test_non_public_addresses_are_refused(address, kind):
    assert kind in (Guard().refusal(address) or ""), address


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"])
def test_public_addresses_pass(address):
    assert Guard().refusal(address) is None


def test_an_allowed_network_passes_and_only_it():
    guard = Guard(["10.20.0.0/16"])
    assert guard.refusal("10.20.3.4") is None
    assert "private" in (guard.refusal("10.21.0.1") or "")


def test_a_url_without_a_usable_host_or_scheme_is_refused():
    for url in ("ftp://93.184.216.34/x", "http:///nohost", "javascript:alert(1)"):
        with pytest.raises(ValueError):
            Guard().check_url(url)
    with pytest.raises(RefusedAddress, match="does not resolve"):
        Guard().check_url("http://no-such-host.invalid/x")
