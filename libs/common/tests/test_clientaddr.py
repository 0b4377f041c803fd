"""The client's address behind a reverse proxy: one parser for every service (SPM_TRUSTED_PROXIES)."""

from __future__ import annotations

import ipaddress

import pytest
from spm_common.clientaddr import client_address, network_of, parse_networks, rate_limit_key
from spm_common.settings import CommonSettings

TRUSTED = parse_networks(["10.0.0.0/8", "127.0.0.1/32", "2001:db8:ffff::/48"])


def test_an_untrusted_peers_forwarded_for_is_ignored() -> None:
    assert str(client_address("198.51.100.4", "203.0.113.7", TRUSTED)) == "198.51.100.4"
    assert str(client_address("198.51.100.4", "203.0.113.7", [])) == "198.51.100.4"
    assert str(client_address("127.0.0.1", "203.0.113.7", [])) == "127.0.0.1"  # no proxy is trusted by default


def test_a_trusted_proxys_rightmost_untrusted_hop_is_the_client() -> None:
    assert str(client_address("10.1.2.3", "203.0.113.7", TRUSTED)) == "203.0.113.7"
    # The client can write anything on the left; the hop the trusted proxy saw is the rightmost untrusted one.
    assert str(client_address("127.0.0.1", "1.1.1.1, 203.0.113.7, 10.0.0.9", TRUSTED)) == "203.0.113.7"
    assert str(client_address("[2001:db8:ffff::1]:443", "2001:db8:1:2::9", TRUSTED)) == "2001:db8:1:2::9"
    assert str(client_address("10.1.2.3", "garbage", TRUSTED)) == "10.1.2.3"
    assert str(client_address("10.1.2.3", None, TRUSTED)) == "10.1.2.3"
    assert str(client_address("::ffff:198.51.100.4", None, TRUSTED)) == "198.51.100.4"
    assert client_address(None, "203.0.113.7", TRUSTED) is None


def test_ipv6_clients_are_limited_by_their_64() -> None:
    one, two = ipaddress.ip_address("2001:db8:1:2::1"), ipaddress.ip_address("2001:db8:1:2:ffff::9")
    assert rate_limit_key(one) == rate_limit_key(two) == "2001:db8:1:2::/64"
    assert rate_limit_key(ipaddress.ip_address("2001:db8:1:3::1")) != rate_limit_key(one)
    assert rate_limit_key(ipaddress.ip_address("203.0.113.7")) == "203.0.113.7"
    assert rate_limit_key(None) == "unknown"


def test_trusted_proxies_is_a_setting_of_every_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPM_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1,2001:db8::/32")
    assert CommonSettings().trusted_proxies == [
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.1/32"),
        ipaddress.ip_network("2001:db8::/32"),
    ]
    monkeypatch.setenv("SPM_TRUSTED_PROXIES", "")
    assert CommonSettings().trusted_proxies == []


def test_a_network_is_the_address_masked_to_its_prefix() -> None:
    for text, v4, v6 in [
        ("203.0.113.77", 24, 48),
        ("2001:db8:1:2::1", 24, 48),
        ("2001:db8::1", 24, 64),
        ("::1", 24, 0),
    ]:
        address = ipaddress.ip_address(text)
        prefix = v4 if address.version == 4 else v6
        assert network_of(address, v4, v6) == str(ipaddress.ip_network((address, prefix), strict=False))
