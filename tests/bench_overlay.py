"""P5 and P7 of ``make bench``: an overlay network across hosts, on the three-host rig.

P5: one pycni overlay network on hosts A and B (:mod:`tests.multihost`), two containers on
host A and one on host B. Each sample is the average RTT of a burst of pings from A's first
container, alternately to A's second (same host: through the bridge) and to B's (across:
bridge, VXLAN over the underlay veth, B's bridge). The ratio is what the overlay's encapsulation
costs relative to the local path on this machine; the hosts share one kernel, so it measures
pycni's data path, not a network.

P5 raw: the same two paths with the kernel alone, as the yardstick: two namespaces as hosts
on a veth underlay, a bridge in each, "containers" as namespaces on veths, and one VXLAN link
per host programmed as pycni programs its VTEP (address, onlink route, permanent neighbour, fdb
entry) but by hand, with no Docker, no iptables rule and no pycni. Pinged with the same busybox
in the same run, interleaved; its ratio is the floor the kernel's VXLAN sets on this machine.

P7: how soon a host that joins is routed on the others. Host C creates the network; each
sample is the time from ``docker network create`` returning on C (C's lease is in etcd by
then) until hosts A and B both route C's subnet via their VTEP, polled every few ms; then C
removes the network and the time until both have dropped the route is the sample's other half.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shim.overlay import leases
from tests.multihost import UNDERLAY_A, Host, Rig, vtep_routes

NET = "pycni-bench-p5"
OVERLAY = "bench"
CREATE = ("-d", "pycni", "--ipam-driver", "null", "-o", f"cni.overlay={OVERLAY}",
          "-o", "cni.overlay.subnet=10.202.0.0/16")
VTEP = f"pycni.{leases.default_vni(OVERLAY)}"
IMAGE = "pycni-test:busybox"
PINGS = 10  # per sample
_RTT = re.compile(r"round-trip min/avg/max = [\d.]+/([\d.]+)/")


def _avg_rtt(out: str) -> float:
    found = _RTT.search(out)
    if found is None:
        raise AssertionError(f"no round-trip summary in: {out!r}")
    return float(found.group(1)) / 1000  # seconds


@dataclass
class OverlayResult:
    """Seconds: P5's RTT samples across hosts and on one host, the same of the kernel alone;
    P7's join and leave samples."""

    crossed: list[float] = field(default_factory=list)
    local: list[float] = field(default_factory=list)
    raw_crossed: list[float] = field(default_factory=list)
    raw_local: list[float] = field(default_factory=list)
    learnt: list[float] = field(default_factory=list)
    forgotten: list[float] = field(default_factory=list)


class RawVxlan:
    """P5's yardstick: two hosts and three containers as bare namespaces, VXLAN between the
    hosts, nothing else (the module's docstring). Subnets 10.201.250.0/24 (a /25 per host),
    underlay 10.203.252.0/30, all inside the namespaces."""

    HOSTS = ("pycni-p5raw-h1", "pycni-p5raw-h2")
    CONTAINERS = ("pycni-p5raw-c1", "pycni-p5raw-c2", "pycni-p5raw-c3")
    SAME, CROSS = "10.201.250.3", "10.201.250.130"

    def __init__(self, sh: Callable[..., Any]) -> None:
        self.sh = sh

    def up(self) -> None:
        self.down()
        sh = self.sh
        h1, h2 = self.HOSTS
        for ns in (*self.HOSTS, *self.CONTAINERS):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "link", "add", "name", "ul", "netns", h1, "type", "veth", "peer", "name", "ul",
           "netns", h2)
        for n, (host, net, vtep, mac) in enumerate((
                (h1, "10.201.250.0", "10.201.250.0", "02:00:0a:c9:fa:00"),
                (h2, "10.201.250.128", "10.201.250.128", "02:00:0a:c9:fa:80")), start=1):
            gateway = net.rsplit(".", 1)[0] + "." + str(int(net.rsplit(".", 1)[1]) + 1)
            sh("ip", "-n", host, "addr", "add", f"10.203.252.{n}/30", "dev", "ul")
            sh("ip", "-n", host, "link", "set", "ul", "up")
            sh("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            sh("ip", "-n", host, "link", "add", "name", "hbr", "type", "bridge")
            sh("ip", "-n", host, "addr", "add", f"{gateway}/25", "dev", "hbr")
            sh("ip", "-n", host, "link", "set", "dev", "hbr", "up")
            sh("ip", "-n", host, "link", "add", "name", "vx", "address", mac, "mtu", "1450",
               "type", "vxlan", "id", "4242", "local", f"10.203.252.{n}", "dstport", "4789",
               "nolearning")
            sh("ip", "-n", host, "addr", "add", f"{vtep}/32", "dev", "vx")
            sh("ip", "-n", host, "link", "set", "vx", "up")
        for n, (container, host, address) in enumerate((
                (self.CONTAINERS[0], h1, "10.201.250.2"), (self.CONTAINERS[1], h1, self.SAME),
                (self.CONTAINERS[2], h2, self.CROSS))):
            gateway = "10.201.250.1" if host == h1 else "10.201.250.129"
            sh("ip", "link", "add", "name", f"c{n}", "netns", host, "type", "veth", "peer", "name",
               "eth0", "netns", container)
            sh("ip", "-n", host, "link", "set", f"c{n}", "master", "hbr", "up")
            sh("ip", "-n", container, "addr", "add", f"{address}/25", "dev", "eth0")
            sh("ip", "-n", container, "link", "set", "eth0", "up")
            sh("ip", "-n", container, "route", "add", "default", "via", gateway)
        for host, subnet, vtep, mac, underlay in (
                (h1, "10.201.250.128/25", "10.201.250.128", "02:00:0a:c9:fa:80", "10.203.252.2"),
                (h2, "10.201.250.0/25", "10.201.250.0", "02:00:0a:c9:fa:00", "10.203.252.1")):
            sh("ip", "-n", host, "route", "add", subnet, "via", vtep, "dev", "vx", "onlink")
            sh("ip", "-n", host, "neigh", "add", vtep, "lladdr", mac, "dev", "vx", "nud",
               "permanent")
            sh("bridge", "-n", host, "fdb", "append", mac, "dev", "vx", "dst", underlay)

    def burst(self, target: str) -> float:
        return _avg_rtt(self.sh("ip", "netns", "exec", self.CONTAINERS[0], "busybox", "ping",
                                "-q", "-c", str(PINGS), "-i", "0.05", "-W", "2", target))

    def down(self) -> None:
        for ns in (*self.CONTAINERS, *self.HOSTS):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _until(hosts: list[Host | None], subnet: str, routed: bool, since: float) -> float:
    """Seconds from ``since`` until every one of ``hosts`` routes ``subnet`` (or, with
    ``routed`` False, none does); each host's own moment, the latest counts."""
    latest = 0.0
    for host in hosts:
        while (subnet in vtep_routes(host, VTEP)) != routed:
            if time.monotonic() - since > 30:
                raise AssertionError(f"{subnet}: routed={routed} never held on "
                                     f"{host.label if host else 'host A'}")
        latest = max(latest, time.monotonic() - since)
    return latest


def overlay(restart_server: Callable[[dict[str, str]], None], runs: int,
            sh: Callable[..., Any], quiet: Callable[..., Any]) -> OverlayResult:
    """P5's and P7's samples; ``restart_server(env)`` restarts the bench's pycni with ``env``
    added (etcd for the run, nothing after)."""
    rig = Rig(third=True)
    assert rig.c is not None
    b, c = rig.b.docker_cli(), rig.c.docker_cli()
    raw = RawVxlan(sh)
    result = OverlayResult()
    try:
        rig.up()
        assert rig.etcd is not None
        restart_server({"PYCNI_ETCD": rig.etcd.url, "PYCNI_UNDERLAY_ADDRESS": UNDERLAY_A})
        sh("docker", "network", "create", *CREATE, NET)
        rig.b.docker("network", "create", *CREATE, NET)
        for name in ("pycni-bench-p5-a1", "pycni-bench-p5-a2"):
            sh("docker", "run", "-d", "--name", name, "--network", NET, IMAGE, "sleep", "3600")
        rig.b.docker("run", "-d", "--name", "pycni-bench-p5-b1", "--network", NET, IMAGE,
                     "sleep", "3600")
        fmt = f'{{{{(index .NetworkSettings.Networks "{NET}").IPAddress}}}}'
        same = sh("docker", "inspect", "-f", fmt, "pycni-bench-p5-a2").strip()
        cross = rig.b.docker("inspect", "-f", fmt, "pycni-bench-p5-b1").stdout.strip()

        def burst(target: str) -> float:
            return _avg_rtt(sh("docker", "exec", "pycni-bench-p5-a1", "ping", "-q", "-c",
                               str(PINGS), "-i", "0.05", "-W", "2", target))

        # until the peer's routes are there (etcd's watch), and warm caches
        for _ in range(40):
            probe = subprocess.run(["docker", "exec", "pycni-bench-p5-a1", "ping", "-c", "1",
                                    "-W", "1", cross], capture_output=True, timeout=10,
                                   check=False)
            if probe.returncode == 0:
                break
        raw.up()
        burst(cross)  # warm caches
        burst(same)
        raw.burst(raw.CROSS)
        raw.burst(raw.SAME)
        for n in range(runs):
            first, second = (cross, same) if n % 2 == 0 else (same, cross)
            a, b_ = burst(first), burst(second)
            result.crossed.append(a if first == cross else b_)
            result.local.append(b_ if first == cross else a)
            first, second = (raw.CROSS, raw.SAME) if n % 2 == 0 else (raw.SAME, raw.CROSS)
            a, b_ = raw.burst(first), raw.burst(second)
            result.raw_crossed.append(a if first == raw.CROSS else b_)
            result.raw_local.append(b_ if first == raw.CROSS else a)
        for _ in range(runs):
            rig.c.docker("network", "create", *CREATE, NET)
            created = time.monotonic()
            subnet = rig.subnet_of(OVERLAY, rig.c.underlay)
            result.learnt.append(_until([None, rig.b], subnet, True, created))
            rig.c.docker("network", "rm", NET)
            removed = time.monotonic()
            result.forgotten.append(_until([None, rig.b], subnet, False, removed))
        return result
    finally:
        quiet("docker", "rm", "-f", "pycni-bench-p5-a1", "pycni-bench-p5-a2")
        quiet("docker", "network", "rm", NET)
        if rig.b.holder is not None:
            quiet(*b, "rm", "-f", "pycni-bench-p5-b1")
            quiet(*b, "network", "rm", NET)
        if rig.c.holder is not None and rig.c.docker("network", "inspect", NET,
                                                     check=False).returncode == 0:
            quiet(*c, "network", "rm", NET)
        raw.down()
        restart_server({})
        rig.down()
        os.environ.pop("PYCNI_ETCD", None)
