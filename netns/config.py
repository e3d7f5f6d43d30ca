"""The topology and shaping as data (standard library only, so every part can import it)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

# Extra client source addresses (idle connections past one address's 64k ports) sit in the client's
# prefix at interface ids ::5a5a:0:N, N = 1..MAX_EXTRA_ADDRESSES: whatever carries one of them on our
# client interface is ours (see netns/topology.py).
EXTRA_BLOCK = 0x5A5A_0000_0000
MAX_EXTRA_ADDRESSES = 64


@dataclass(frozen=True)
class Topology:
    server_ns: str = "sk-server"
    client_ns: str = "sk-client"
    server_if: str = "swissknife0"
    client_if: str = "swissknife1"
    server_addr: str = "fd00:5a::1"
    client_addr: str = "fd00:5a::2"
    prefix: int = 64
    mtu: int = 1500

    def ends(self) -> list[tuple[str, str, str]]:
        """(namespace, interface, address) of each end."""
        return [
            (self.server_ns, self.server_if, self.server_addr),
            (self.client_ns, self.client_if, self.client_addr),
        ]

    def extra_client_addrs(self, count: int = MAX_EXTRA_ADDRESSES) -> list[str]:
        """The first `count` extra client source addresses (`count` at most MAX_EXTRA_ADDRESSES)."""
        if not 0 <= count <= MAX_EXTRA_ADDRESSES:
            raise ValueError(f"at most {MAX_EXTRA_ADDRESSES} extra client addresses, not {count}")
        base = ipaddress.IPv6Network(f"{self.client_addr}/{self.prefix}", strict=False).network_address + EXTRA_BLOCK
        return [str(base + n) for n in range(1, count + 1)]


@dataclass(frozen=True)
class Shaping:
    """Optional link shaping, applied on both ends' egress."""

    rate: str | None = None  # tbf, e.g. "100mbit"
    delay: str | None = None  # netem, e.g. "10ms"
    loss: str | None = None  # netem, e.g. "1%"

    @property
    def wants_netem(self) -> bool:
        return self.delay is not None or self.loss is not None
