"""How K idle connections are spread over holder processes and client source addresses (pure)."""

from __future__ import annotations

import pytest

from bench.holder import PER_ADDRESS, PER_HOLDER, IdleConnections, addresses_needed, plan
from netns.config import MAX_EXTRA_ADDRESSES, Topology


def test_each_holder_and_each_source_address_stays_under_its_limit():
    assert plan(300, per_holder=100, per_address=200) == [(0, 100), (0, 100), (1, 100)]
    assert plan(250, per_holder=100, per_address=150) == [(0, 100), (0, 50), (1, 100)]
    assert plan(1000) == [(0, 1000)] and plan(0) == [] and plan(20_000) == [(0, 15_000), (1, 5_000)]
    chunks = plan(100_000)
    assert sum(n for _, n in chunks) == 100_000 and max(n for _, n in chunks) <= PER_HOLDER
    for address in {a for a, _ in chunks}:
        assert sum(n for a, n in chunks if a == address) <= PER_ADDRESS
    assert len(chunks) == 7 and addresses_needed(100_000) == 7 and addresses_needed(10_000) == 1


def test_too_few_source_addresses_is_refused():
    with pytest.raises(ValueError, match="300 connections need 2 source addresses, 1 given"):
        IdleConnections("sk-client", "fd00:5a::1", 80, 300, ["fd00:5a::2"], per_holder=100, per_address=200)


def test_extra_client_addresses_are_a_fixed_block_of_the_client_prefix():
    topo = Topology()
    assert topo.extra_client_addrs(2) == ["fd00:5a::5a5a:0:1", "fd00:5a::5a5a:0:2"]
    assert Topology(client_addr="fd00:5b::2").extra_client_addrs(1) == ["fd00:5b::5a5a:0:1"]
    assert len(topo.extra_client_addrs()) == MAX_EXTRA_ADDRESSES
    with pytest.raises(ValueError, match=f"at most {MAX_EXTRA_ADDRESSES}"):
        topo.extra_client_addrs(MAX_EXTRA_ADDRESSES + 1)
