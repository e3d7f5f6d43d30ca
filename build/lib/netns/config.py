"""The topology and shaping as data (standard library only, so every part can import it)."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class Shaping:
    """Optional link shaping, applied on both ends' egress."""

    rate: str | None = None  # tbf, e.g. "100mbit"
    delay: str | None = None  # netem, e.g. "10ms"
    loss: str | None = None  # netem, e.g. "1%"

    @property
    def wants_netem(self) -> bool:
        return self.delay is not None or self.loss is not None
