"""The client's address behind a reverse proxy, one parser for every service (SPM_TRUSTED_PROXIES).

Every real deployment has a TLS proxy in front: the TCP peer is then the proxy, and a rate limit keyed on it
puts the whole site in one bucket. The peer's `X-Forwarded-For` is believed only when the peer is a trusted
proxy, and then only its rightmost hop that is not itself a trusted proxy: hops further left are written by
the client and can say anything.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

from starlette.requests import Request

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# One IPv6 customer is usually given a whole /64 (RFC 6177): an address inside it is theirs to pick, so a
# limit keyed on the full address would be a limit per request.
RATE_LIMIT_IPV6_PREFIX = 64


def parse_networks(values: Sequence[object]) -> list[Network]:
    """CIDRs or single addresses (`10.0.0.0/8`, `192.0.2.1`) as networks; host bits are ignored."""
    return [ipaddress.ip_network(str(value), strict=False) for value in values]


def parse_ip(text: str | None) -> Address | None:
    """An address as a peer or a forwarding hop writes it (`v4`, `v4:port`, `v6`, `[v6]:port`); an IPv4-mapped
    IPv6 address is its IPv4 address. None for anything else."""
    if not text:
        return None
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:  # the usual dotted quad, parsed in C (as strictly as ipaddress: no leading zeros, no short forms)
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address.version == net.version and address in net for net in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> Address | None:
    """The client's address: the connection's peer, unless the peer is a trusted proxy; then the rightmost
    X-Forwarded-For hop that is not itself a trusted proxy. A hop that is not an address stops the walk at
    the last good one (what follows it cannot be trusted to be what the proxy saw)."""
    address = parse_ip(peer)
    if address is None:
        return None
    if not forwarded_for or not trusted or not is_trusted(address, trusted):
        return address
    for hop in reversed(forwarded_for.split(",")):
        candidate = parse_ip(hop)
        if candidate is None:
            break
        address = candidate
        if not is_trusted(candidate, trusted):
            break
    return address


def of_request(request: Request, trusted: Sequence[Network]) -> Address | None:
    """`client_address` of an HTTP request."""
    return client_address(
        request.client.host if request.client else None, request.headers.get("x-forwarded-for"), trusted
    )


def network_of(address: Address, ipv4_prefix: int, ipv6_prefix: int) -> str:
    """The network of `address` with the prefix of its family, as text (`192.0.2.0/24`, `2001:db8:1::/48`).
    Masked as an integer: a fifth of the cost of `ipaddress.ip_network(..., strict=False)`."""
    bits, prefix = (32, ipv4_prefix) if address.version == 4 else (128, ipv6_prefix)
    first = int(address) >> (bits - prefix) << (bits - prefix)
    return f"{type(address)(first)}/{prefix}"


def rate_limit_key(address: Address | None) -> str:
    """What a rate limit counts a client by: its IPv4 address, or its IPv6 /64; "unknown" without one."""
    if address is None:
        return "unknown"
    if address.version == 4:
        return str(address)
    return network_of(address, 32, RATE_LIMIT_IPV6_PREFIX)
