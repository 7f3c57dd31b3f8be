"""The address a request came from, for limits that count per client.

Sign-in lockouts (django-axes, through `AXES_CLIENT_IP_CALLABLE`) and the API's wrong-token limit
both count per address, so both must agree on it and neither may take it from a header the client
wrote. `X-Forwarded-For` is a list each proxy appends to; only its right-hand entries were written
by proxies we run. With `TRUSTED_PROXY_COUNT` = 0 (the default) the header is ignored and the
address is the TCP peer; with N it is the N-th entry from the right, the address the outermost of
our N proxies saw. A client can prepend anything it likes to the header and it is never read. This
is what Werkzeug's ProxyFix does with `x_for=N`; django-ipware's left-most default would trust the
client's own entry.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def _valid(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: the TCP peer, or the one our trusted proxies report."""
    peer = _valid(request.META.get("REMOTE_ADDR", ""))
    proxies: int = settings.TRUSTED_PROXY_COUNT
    if proxies == 0:
        return peer
    hops = [hop for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if hop.strip()]
    if len(hops) < proxies:
        # Fewer entries than proxies: the request did not come through all of them, so the header
        # is not theirs.
        return peer
    return _valid(hops[-proxies]) or peer


def rate_limit_key(address: str | None) -> str:
    """What a per-address limit counts under: the address, or its /64 network for IPv6.

    One IPv6 host is usually handed a whole /64, and could otherwise take a fresh address for
    every try.
    """
    if address is None:
        return "unknown"
    parsed = ipaddress.ip_address(address)
    if isinstance(parsed, ipaddress.IPv4Address):
        return str(parsed)
    if parsed.ipv4_mapped is not None:  # ::ffff:a.b.c.d is an IPv4 client on a dual-stack socket
        return str(parsed.ipv4_mapped)
    return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
