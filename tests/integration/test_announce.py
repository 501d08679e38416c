"""Telling neighbours an address moved to a new MAC (:func:`shim.neighbours.announce`).

Two namespaces of the test's own joined by a veth pair: the "host" side holds neighbour entries
for the container's addresses with an old MAC (as after a container restart that kept its
address); an announcement from the container side must replace them. Subnets 10.201.129.0/24 and
fd00:201:129::/64, nothing leaves the pair.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from shim import neighbours
from shim.errors import NetlinkFailure

from .helpers import sh

pytestmark = pytest.mark.integration

OLD_MAC = "02:00:00:00:01:01"
NEW_MAC = "02:00:00:00:02:02"


def neighbour(ns: str, address: str) -> str:
    out = sh("ip", "-n", ns, "neigh", "show", address).stdout.split()
    return out[out.index("lladdr") + 1] if "lladdr" in out else ""


def test_announce_updates_neighbours_in_both_families(ns: Callable[[], str]) -> None:
    host, container = ns().rsplit("/", 1)[1], ns().rsplit("/", 1)[1]
    sh("ip", "-n", host, "link", "add", "h0", "type", "veth", "peer", "name", "c0",
       "netns", container)
    sh("ip", "-n", container, "link", "set", "c0", "address", NEW_MAC)
    for where, dev, v4, v6 in ((host, "h0", "10.201.129.1/24", "fd00:201:129::1/64"),
                               (container, "c0", "10.201.129.2/24", "fd00:201:129::2/64")):
        sh("ip", "-n", where, "addr", "add", v4, "dev", dev)
        sh("ip", "-n", where, "addr", "add", v6, "dev", dev, "nodad")
        sh("ip", "-n", where, "link", "set", dev, "up")
    # What the host remembers from the container before its restart.
    for address in ("10.201.129.2", "fd00:201:129::2"):
        sh("ip", "-n", host, "neigh", "replace", address, "lladdr", OLD_MAC, "dev", "h0",
           "nud", "stale")
        assert neighbour(host, address) == OLD_MAC

    neighbours.announce(container, "c0", ["10.201.129.2/24", "fd00:201:129::2/64", "fe80::1/64"])

    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if {neighbour(host, a) for a in ("10.201.129.2", "fd00:201:129::2")} == {NEW_MAC}:
            break
        time.sleep(0.05)
    assert neighbour(host, "10.201.129.2") == NEW_MAC
    assert neighbour(host, "fd00:201:129::2") == NEW_MAC
    sh("ip", "-n", host, "link", "delete", "h0")


def test_announce_names_a_missing_link(ns: Callable[[], str]) -> None:
    name = ns().rsplit("/", 1)[1]
    with pytest.raises(NetlinkFailure, match=f"no interface eth9 in {name}"):
        neighbours.announce(name, "eth9", ["10.201.129.2/24"])
