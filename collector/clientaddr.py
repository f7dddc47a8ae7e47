"""The address of the person behind a request, trusting forwarded headers only from
the proxies named in ``GNAHAT_TRUSTED_PROXIES`` (none by default).

``X-Forwarded-For`` is read from the right: each hop appends the address it received
from, so the right-most entries were written by our own proxies and the first entry
that is not one of them is the client. Anything to its left was written by the
client itself and is ignored — a client cannot pick its own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def parse_networks(spec: str) -> tuple[Network, ...]:
    """``"127.0.0.1, 10.0.0.0/8"`` → networks; a bad entry raises ValueError naming it."""
    out: list[Network] = []
    for part in spec.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(
                f"GNAHAT_TRUSTED_PROXIES: {part!r} is not an address or network"
            ) from None
    return tuple(out)


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted_spec: str) -> str:
    """The client's address: ``peer`` unless ``peer`` is a trusted proxy, then the
    right-most untrusted entry of ``X-Forwarded-For``."""
    peer = peer or "unknown"
    networks = parse_networks(trusted_spec)
    if not networks or not forwarded_for or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return peer  # garbage where an address belongs: not believed
    return hops[0] if hops else peer
