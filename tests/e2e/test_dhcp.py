"""The dhcp IPAM keeps its lease: a container on macvlan + dhcp, wired in the ``--network none``
mode, against a DHCP server of the test's own (dnsmasq, in a namespace of its own, 2-minute
leases) and the CNI dhcp daemon, over more than two lease periods.

The daemon renews a lease from the namespace ADD ran in. The none mode runs the chain in the
container's own namespace, held open for the attachment's life, so the renewals reach the server
and the lease outlives its first term. Driver mode on Docker >= 28 with ``-o cni.place=sandbox``
runs the chain in the namespace Docker made, and keeps its lease the same way; on the staging
path driver mode refuses a dhcp chain at ``docker network create``, saying why and naming both
(its chain runs in a staging namespace the link leaves).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CNI_BIN, TEST_IMAGE, docker, run, unmet
from tests.e2e.conftest import DRIVER, PLUGIN_MODE, PycniServer, Tracker, engine_version
from tests.e2e.test_health import pycni_cli, report
from tests.e2e.test_none_mode import cli, exec_out

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(PLUGIN_MODE, reason="plugin mode: the --network none mode runs no driver: nothing in it differs with a managed plugin"),
]

SERVER = "10.201.212.1"
POOL = ("10.201.212.50", "10.201.212.99")
LEASE = 120  # seconds: dnsmasq's shortest
HOST_END, SERVER_END = "p212dh0", "p212dh1"


class DhcpServer:
    """dnsmasq serving 10.201.212.0/24 on a veth whose other end (``HOST_END``) is on the host,
    for macvlan to use as its master; its lease file is read as the truth."""

    def __init__(self, netns: str, root: Path) -> None:
        self.name = netns.rsplit("/", 1)[1]
        self.leases = root / "dnsmasq.leases"
        run("ip", "link", "add", HOST_END, "type", "veth", "peer", "name", SERVER_END,
            "netns", self.name)
        run("ip", "link", "set", HOST_END, "up")
        run("ip", "-n", self.name, "addr", "add", f"{SERVER}/24", "dev", SERVER_END)
        run("ip", "-n", self.name, "link", "set", SERVER_END, "up")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, "dnsmasq", "--keep-in-foreground",
             "--conf-file=/dev/null", "--port=0", "--bind-interfaces",
             f"--interface={SERVER_END}", "--dhcp-authoritative",
             f"--dhcp-range={POOL[0]},{POOL[1]},255.255.255.0,{LEASE}s",
             f"--dhcp-leasefile={self.leases}", "--pid-file=", "--log-dhcp",
             f"--log-facility={root / 'dnsmasq.log'}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def lease_of(self, address: str) -> int | None:
        """When the server's lease on ``address`` ends (epoch seconds); None if it holds none."""
        if not self.leases.exists():
            return None
        for line in self.leases.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] == address:
                return int(fields[0])
        return None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        run("ip", "link", "del", HOST_END, check=False)


class DhcpDaemon:
    """The CNI dhcp plugin's daemon (``dhcp daemon``), on a socket of the test's own."""

    def __init__(self, root: Path) -> None:
        self.socket = root / "dhcp.sock"
        self.proc = subprocess.Popen(
            [os.path.join(CNI_BIN, "dhcp"), "daemon", "-socketpath", str(self.socket)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, \
                f"dhcp daemon did not start: {self.proc.stderr.read() if self.proc.stderr else ''}"
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def dhcp(e2e: Tracker, netns: Callable[[], str], tmp_path: Path
         ) -> Iterator[tuple[DhcpServer, DhcpDaemon]]:
    """Set up after ``e2e``, so both are gone (the veth with them) before the leak audit."""
    if not os.access(os.path.join(CNI_BIN, "dhcp"), os.X_OK):
        unmet(f"needs the CNI dhcp plugin in {CNI_BIN} (make deps)")
    if shutil.which("dnsmasq") is None:
        unmet("needs dnsmasq (make deps)")
    server = DhcpServer(netns(), tmp_path)
    try:
        daemon = DhcpDaemon(tmp_path)
        try:
            yield server, daemon
        finally:
            daemon.stop()
    finally:
        server.stop()


def hold_past_two_terms(server: DhcpServer, daemon: DhcpDaemon, addresses: list[str]) -> None:
    """The server holds the leases on ``addresses`` for more than two terms: renewed, since
    without renewals it drops a lease when its first term ends."""
    first_terms = {a: server.lease_of(a) for a in addresses}
    assert None not in first_terms.values(), server.leases.read_text()
    end = max(t or 0 for t in first_terms.values()) + LEASE + 10
    while time.time() < end:
        time.sleep(10)
        assert server.proc.poll() is None and daemon.proc.poll() is None
        for address in addresses:
            held = server.lease_of(address)
            assert held is not None and held > time.time(), \
                f"the server no longer holds {address}: {server.leases.read_text()!r}"
    for address, first_term in first_terms.items():  # renewed more than once
        assert (server.lease_of(address) or 0) > (first_term or 0) + LEASE


def address_of(container: str) -> str:
    line = exec_out(container, "ip", "-o", "-4", "addr", "show", "eth0")
    address = line.split()[3].split("/")[0]
    assert in_pool(address), line
    return address


def in_pool(address: str) -> bool:
    low, high = (ipaddress.IPv4Address(a) for a in POOL)
    return low <= ipaddress.IPv4Address(address) <= high


def chain(daemon: DhcpDaemon) -> dict[str, object]:
    return {"cniVersion": "1.0.0", "plugins": [
        {"type": "macvlan", "master": HOST_END, "mode": "bridge",
         "ipam": {"type": "dhcp", "daemonSocketPath": str(daemon.socket)}}]}


@pytest.mark.lease
def test_containers_keep_their_dhcp_leases_past_two_terms(
        e2e: Tracker, pycni: PycniServer, dhcp: tuple[DhcpServer, DhcpDaemon]) -> None:
    """The none mode on every engine; on Docker >= 28 also driver mode with
    ``-o cni.place=sandbox`` (Docker told no address), side by side over the same terms."""
    server, daemon = dhcp
    pycni.write_conflist("e2e-dhcp", chain(daemon))
    none_mode = "pycni-e2e-dhcp"
    e2e.containers.append(none_mode)
    proc = cli(pycni, "run", "--cni-net", "e2e-dhcp", "--", "-d", "--name", none_mode,
               TEST_IMAGE, "sleep", "900")
    assert proc.returncode == 0, report(proc)
    addresses = {none_mode: address_of(none_mode)}
    if engine_version() >= (28, 0):
        net = e2e.network("pycni-e2e-dhcps", "-d", DRIVER, "--ipam-driver", "null",
                          "-o", "cni.network=e2e-dhcp", "-o", "cni.place=sandbox")
        driver_mode = e2e.run("pycni-e2e-dhcps-c", "--network", net, TEST_IMAGE, "sleep", "900")
        addresses[driver_mode] = address_of(driver_mode)
        # the router option as Docker's gateway; pycni finds the endpoint as it made it
        assert f"default via {SERVER} dev eth0" in exec_out(driver_mode, "ip", "route")
        proc = pycni_cli(pycni, "check", driver_mode)
        assert proc.returncode == 0 and "FAIL" not in proc.stdout, report(proc)
    hold_past_two_terms(server, daemon, list(addresses.values()))
    for container, address in addresses.items():
        assert f"{address}/24" in exec_out(container, "ip", "-o", "-4", "addr", "show", "eth0")
        assert docker("exec", container, "ping", "-c1", "-W2", SERVER,
                      check=False).returncode == 0
    proc = cli(pycni, "detach", none_mode, "e2e-dhcp")
    assert proc.returncode == 0, report(proc)
    for container, address in addresses.items():
        docker("rm", "-f", container)
        assert server.lease_of(address) is None, server.leases.read_text()  # DEL released it
    assert "e2e-dhcp" not in pycni_cli(pycni, "ls").stdout.split()  # the none mode's network


def test_the_staging_path_refuses_a_dhcp_chain_naming_what_keeps_the_lease(
        e2e: Tracker, pycni: PycniServer, dhcp: tuple[DhcpServer, DhcpDaemon]) -> None:
    _, daemon = dhcp
    pycni.write_conflist("e2e-dhcpd", chain(daemon))
    proc = docker("network", "create", "-d", DRIVER, "--ipam-driver", "null",
                  "-o", "cni.network=e2e-dhcpd", "pycni-e2e-dhcpd", check=False)
    if proc.returncode == 0:
        e2e.networks.append("pycni-e2e-dhcpd")
    assert proc.returncode != 0, "a dhcp chain was accepted on the staging path"
    assert "the dhcp IPAM cannot keep its lease on the staging path" in proc.stderr, proc.stderr
    assert "cni.place=sandbox --ipam-driver null" in proc.stderr, proc.stderr
    assert "--network none mode" in proc.stderr, proc.stderr
