"""The overlay against a real etcd on loopback, and its VTEPs in two namespaces of the test's own.

etcd is started by the test in a temp dir on free ports; "hosts" are clients of it (threads) or,
for the data plane, two network namespaces joined by a veth underlay (10.203.254.0/30), each
with a VTEP programmed by :mod:`shim.overlay.vtep` in a child process inside it. Overlay
subnets are inside 10.202.0.0/16; nothing leaves the namespaces.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shim.errors import InvalidRequest, StoreUnavailable
from shim.overlay import leases
from shim.overlay.leases import Asked, Holder
from shim.overlay.store import Endpoint, Etcd
from tests.etcd import EtcdServer, free_port

from .helpers import sh

pytestmark = pytest.mark.integration

RANGE = ipaddress.IPv4Network("10.202.0.0/16")


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def overlay_name(request: pytest.FixtureRequest, etcd: EtcdServer) -> Iterator[str]:
    """A fresh overlay name; its keys are removed after the test."""
    name = f"t{abs(hash(request.node.name)) % 10**8}"
    yield name
    kv = etcd.client()
    for key in kv.get_prefix(f"{leases.ROOT}{name}/"):
        kv.delete_if(key, kv.get(key) or "")


def test_racing_hosts_get_different_subnets(etcd: EtcdServer, overlay_name: str) -> None:
    hosts = 6
    got: list[ipaddress.IPv4Network] = []
    definitions: list[leases.Definition] = []
    barrier = threading.Barrier(hosts)
    errors: list[BaseException] = []

    def host(n: int) -> None:
        try:
            kv = etcd.client()  # each host its own client, as on separate machines
            barrier.wait()
            definition = leases.define(kv, Asked(overlay_name, RANGE), 1450)
            definitions.append(definition)
            got.append(leases.claim(kv, overlay_name, definition,
                                    Holder(f"10.203.254.{n}", "m"), kv.grant(30)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=host, args=(n,)) for n in range(hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(set(got)) == hosts, got
    assert len(set(definitions)) == 1


def test_a_contradicting_host_is_refused_by_the_real_store(etcd: EtcdServer,
                                                          overlay_name: str) -> None:
    kv = etcd.client()
    leases.define(kv, Asked(overlay_name, RANGE), 1450)
    with pytest.raises(InvalidRequest, match=r"subnet 10.202.0.0/16, not 10.201.0.0/16"):
        leases.define(kv, Asked(overlay_name, ipaddress.IPv4Network("10.201.0.0/16")), 1450)


def test_a_lease_nobody_keeps_alive_expires_and_its_peer_goes(etcd: EtcdServer,
                                                             overlay_name: str) -> None:
    kv = etcd.client()
    definition = leases.define(kv, Asked(overlay_name, RANGE), 1450)
    mine = leases.claim(kv, overlay_name, definition, Holder("a", "m"), kv.grant(60))
    short = kv.grant(2)
    theirs = leases.claim(kv, overlay_name, definition, Holder("b", "m"), short)
    assert [p.subnet for p in leases.peers(kv, overlay_name, mine)] == [theirs]
    deadline = time.monotonic() + 15
    while leases.peers(kv, overlay_name, mine) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert leases.peers(kv, overlay_name, mine) == []
    assert kv.refresh(short) == -1


def test_leaving_releases_and_the_last_removes_the_definition(etcd: EtcdServer,
                                                               overlay_name: str) -> None:
    kv = etcd.client()
    definition = leases.define(kv, Asked(overlay_name, RANGE), 1450)
    a, b = Holder("a", "m"), Holder("b", "m")
    la, lb = kv.grant(60), kv.grant(60)
    sa = leases.claim(kv, overlay_name, definition, a, la)
    sb = leases.claim(kv, overlay_name, definition, b, lb)
    leases.release(kv, overlay_name, sa, a, la)
    assert kv.get(leases.definition_key(overlay_name)) is not None
    leases.release(kv, overlay_name, sb, b, lb)
    assert kv.get_prefix(f"{leases.ROOT}{overlay_name}/") == {}
    assert kv.refresh(la) == -1


def _watch_in_thread(kv: Etcd, prefix: str) -> tuple[Any, list[list[str]], threading.Thread]:
    watch = kv.watch(prefix)
    heard: list[list[str]] = []
    thread = threading.Thread(target=lambda: heard.extend(watch), daemon=True)
    thread.start()
    return watch, heard, thread


def _until(check: Callable[[], object], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "never happened"
        time.sleep(0.01)


def test_a_watch_hears_puts_deletes_and_expiries_and_ends_when_closed(
        etcd: EtcdServer, overlay_name: str) -> None:
    kv = etcd.client()
    prefix = leases.overlay_prefix(overlay_name)
    watch, heard, thread = _watch_in_thread(kv, prefix)
    time.sleep(0.2)  # the watch is created before the gateway answers the first line
    kv.create(prefix + "a", "1")
    kv.create(f"{leases.ROOT}{overlay_name}x/b", "1")  # beside the prefix: not heard
    kv.delete_if(prefix + "a", "1")
    kv.create(prefix + "c", "1", kv.grant(2))
    _until(lambda: len(heard) >= 3)  # the expiry comes after about 2 s
    assert heard == [[prefix + "a"], [prefix + "a"], [prefix + "c"]]
    _until(lambda: len(heard) == 4)
    assert heard[3] == [prefix + "c"]
    kv.delete_if(f"{leases.ROOT}{overlay_name}x/b", "1")
    watch.close()
    thread.join(5)
    assert not thread.is_alive()


def test_a_watch_ends_when_etcd_restarts() -> None:
    server = EtcdServer()
    server.start()
    try:
        _watch, heard, thread = _watch_in_thread(server.client(), leases.ROOT)
        time.sleep(0.2)
        server.restart()
        thread.join(10)
        assert not thread.is_alive() and heard == []
    finally:
        server.close()


def test_an_unreachable_etcd_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailable, match=f"etcd at {url} did not answer"):
        Etcd(Endpoint(url), timeout=2).grant(60)


# --- the data plane ------------------------------------------------------------------------------

PROGRAM = """
import json, sys
from shim.overlay import vtep
args = json.loads(sys.argv[1])
vtep.ensure(*args["ensure"])
vtep.sync(args["name"], [vtep.Entry(__import__("ipaddress").IPv4Network(s), u, m)
                         for s, u, m in args["peers"]])
print(json.dumps([[str(e.subnet), e.underlay, e.mac] for e in vtep.entries(args["name"])]))
"""


def program(ns: str, ensure: list[object], peers: list[list[str]]) -> list[list[str]]:
    name = str(ensure[0])
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", PROGRAM,
         json.dumps({"ensure": ensure, "name": name, "peers": peers})],
        capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return list(json.loads(proc.stdout))


def test_two_hosts_reach_each_other_through_their_vteps(ns: Callable[[], str]) -> None:
    a, b = ns().rsplit("/", 1)[1], ns().rsplit("/", 1)[1]
    sh("ip", "link", "add", "ovl-a", "netns", a, "type", "veth", "peer", "name", "ovl-b",
       "netns", b)
    for host, link, address in ((a, "ovl-a", "10.203.254.1/30"), (b, "ovl-b", "10.203.254.2/30")):
        sh("ip", "-n", host, "addr", "add", address, "dev", link)
        sh("ip", "-n", host, "link", "set", link, "up")
    vni = 4242
    name = f"pycni.{vni}"
    mac_a, mac_b = "0e:00:00:00:0a:01", "0e:00:00:00:0b:01"
    got = program(a, [name, vni, "10.203.254.1", "10.202.1.0", mac_a, 1450],
                  [["10.202.2.0/24", "10.203.254.2", mac_b]])
    assert got == [["10.202.2.0/24", "10.203.254.2", mac_b]]
    program(b, [name, vni, "10.203.254.2", "10.202.2.0", mac_b, 1450],
            [["10.202.1.0/24", "10.203.254.1", mac_a]])
    # idempotent: a second round changes nothing
    assert program(a, [name, vni, "10.203.254.1", "10.202.1.0", mac_a, 1450],
                   [["10.202.2.0/24", "10.203.254.2", mac_b]]) == got
    details = sh("ip", "-n", a, "-d", "link", "show", name).stdout
    assert f"vxlan id {vni}" in details and "dstport 4789" in details and "nolearning" in details
    assert "mtu 1450" in details
    sh("ip", "netns", "exec", a, "busybox", "ping", "-c", "2", "-W", "2", "10.202.2.0")
    sh("ip", "netns", "exec", b, "busybox", "ping", "-c", "2", "-W", "2", "10.202.1.0")
    # the peer goes: route, neighbour and fdb entries with it
    assert program(a, [name, vni, "10.203.254.1", "10.202.1.0", mac_a, 1450], []) == []
    assert "10.202.2.0" not in sh("ip", "-n", a, "route", "show", "dev", name).stdout
    assert "10.202.2.0" not in sh("ip", "-n", a, "neigh", "show", "dev", name).stdout
    assert mac_b not in sh("bridge", "-n", a, "fdb", "show", "dev", name).stdout


def test_the_default_underlay_is_the_default_routes_source(ns: Callable[[], str]) -> None:
    host, peer = ns().rsplit("/", 1)[1], ns().rsplit("/", 1)[1]
    sh("ip", "link", "add", "ovl-u", "netns", host, "type", "veth", "peer", "name", "ovl-p",
       "netns", peer)
    sh("ip", "-n", host, "addr", "add", "10.203.254.5/30", "dev", "ovl-u")
    sh("ip", "-n", host, "link", "set", "ovl-u", "up", "mtu", "1400")

    def ask() -> str:
        code = ("from shim.overlay import vtep; u = vtep.default_underlay(); "
                "print(u, vtep.underlay_mtu(u) if u else 0)")
        return sh("ip", "netns", "exec", host, sys.executable, "-c", code).stdout.strip()

    assert ask() == "0"  # no default route: nothing to take (pycni serve then asks for one)
    sh("ip", "-n", host, "route", "add", "default", "via", "10.203.254.6")
    assert ask() == "10.203.254.5 1400"


def test_etcd_over_tls_with_a_client_certificate() -> None:
    server = EtcdServer(tls=True)
    try:
        server.start()
        kv = server.client()
        assert server.url.startswith("https://")
        definition = leases.define(kv, Asked("tls", RANGE), 1450)
        claimed = leases.claim(kv, "tls", definition, Holder("a", "m"), kv.grant(30))
        assert claimed.subnet_of(RANGE)
        # without the client certificate etcd refuses, and the error says where
        bare = Etcd(Endpoint(server.url, ca=str(server.tls["ca"])), timeout=3)
        with pytest.raises(StoreUnavailable, match=f"etcd at {server.url} did not answer"):
            bare.get("/pycni/x")
    finally:
        server.close()
