"""``-o cni.place=sandbox``: the chain straight in the namespace Docker made for the container
(Docker ≥ 28), with no staging namespace and no move; on older engines, ``docker run`` is refused
with what to do.

Subnets 10.201.230.0/24 to 10.201.233.0/24, host port 18230. Outside names are answered by a
dnsmasq of the test's own in the "outside" namespace of the parity tests.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_IMAGE, docker, run
from tests.e2e.conftest import DRIVER, PycniServer, Tracker, engine_version
from tests.e2e.test_driver import inspect_net, sh
from tests.e2e.test_engine_restart import engine_back, restart_engine, wait_running  # noqa: F401
from tests.e2e.test_health import pycni_cli, report
from tests.e2e.test_parity_networks import WEB, Outside, outside  # noqa: F401
from tests.e2e.test_surface import wait_http

pytestmark = pytest.mark.e2e

OUTSIDE_NAME = "outside.pycni.test"


def needs_engine(sandbox_first: bool) -> None:
    """The test is for engines that make the sandbox before Join (28 on), or for the others."""
    if (engine_version() >= (28, 0)) != sandbox_first:
        pytest.skip("Docker makes the sandbox before Join from 28 on" if sandbox_first
                    else "the refusal is for engines before 28")


def sandbox_network(e2e: Tracker, name: str, subnet: str, *options: str) -> str:
    return e2e.network(name, "-d", DRIVER, "--subnet", subnet, "-o", "cni.place=sandbox",
                       *options)


def host_state() -> tuple[list[str], list[str]]:
    """pycni's staging namespaces and host links: none on the sandbox path."""
    netns = [n for n in run("ip", "netns", "list").stdout.split() if n.startswith("pycni-")]
    links = [line.split(": ")[1] for line in run("ip", "-o", "link").stdout.splitlines()
             if line.split(": ")[1].startswith("pcn")]
    return netns, links


@pytest.fixture
def outside_dns(outside: Outside, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    """A DNS server beyond the host that knows one name (the network safety rule: ours)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", outside.name, "dnsmasq", "--keep-in-foreground", "--no-resolv",
         "--no-hosts", "--bind-interfaces", f"--listen-address={Outside.ADDRESS}",
         f"--address=/{OUTSIDE_NAME}/{Outside.ADDRESS}", f"--pid-file={tmp_path / 'pid'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield Outside.ADDRESS
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_engine_that_makes_the_sandbox_late_is_refused_clearly(e2e: Tracker) -> None:
    needs_engine(sandbox_first=False)
    net = sandbox_network(e2e, "pycni-e2e-sb-old", "10.201.230.0/24")
    proc = docker("run", "-d", "--name", "pycni-e2e-sb-old-c", "--network", net, TEST_IMAGE,
                  "sleep", "60", check=False)
    e2e.containers.append("pycni-e2e-sb-old-c")
    assert proc.returncode != 0
    assert "takes Docker 28 or later" in proc.stderr and "cni.place" in proc.stderr, proc.stderr


def test_the_sandbox_path_keeps_what_users_see(e2e: Tracker, pycni: PycniServer,
                                               outside_dns: str) -> None:
    """inspect's address and MAC, the gateway, Docker's DNS by name and alias and for outside
    names, a published port, a restart, connect and disconnect: as on the staging path, with no
    staging namespace and no host link of pycni's."""
    needs_engine(sandbox_first=True)
    before = host_state()
    net = sandbox_network(e2e, "pycni-e2e-sb", "10.201.230.0/24")
    a = e2e.run("pycni-e2e-sb-a", "--network", net, "--network-alias", "web",
                "-p", "18230:80", "--dns", outside_dns, TEST_IMAGE, "sh", "-c", WEB)
    b = e2e.run("pycni-e2e-sb-b", "--network", net, "--dns", outside_dns, TEST_IMAGE,
                "sleep", "900")
    assert host_state() == before
    for c in (a, b):
        info = inspect_net(c, net)
        link = sh(c, "ip addr show eth0")
        assert f"{info['IPAddress']}/24" in link and info["MacAddress"] in link, link
        assert info["Gateway"] == "10.201.230.1"
        assert "default via 10.201.230.1 dev eth0" in sh(c, "ip route")
    assert inspect_net(a, net)["IPAddress"] in sh(b, "nslookup web 127.0.0.11")
    sh(b, "ping -c1 -W2 pycni-e2e-sb-a")
    assert Outside.ADDRESS in sh(b, f"nslookup -type=a {OUTSIDE_NAME}")  # Docker forwards
    wait_http("127.0.0.1", 18230, "hello-" + sh(a, "hostname").strip())
    proc = pycni_cli(pycni, "check", a)
    assert proc.returncode == 0 and "FAIL" not in proc.stdout, report(proc)

    docker("restart", "-t", "1", a)
    sh(b, "ping -c1 -W2 web")
    wait_http("127.0.0.1", 18230, "hello-" + sh(a, "hostname").strip())

    other = sandbox_network(e2e, "pycni-e2e-sb2", "10.201.231.0/24")
    docker("network", "connect", other, b)
    assert "10.201.231." in sh(b, "ip addr show eth1")
    docker("network", "disconnect", other, b)
    assert "eth1" not in sh(b, "ip -o link")
    assert host_state() == before


def test_tuning_sysctls_reach_the_container(e2e: Tracker, pycni: PycniServer) -> None:
    """The kernel resets per-interface sysctls when a link changes namespace; in the sandbox
    the link never does, so tuning's settings stay, and pycni check has no warning to give."""
    needs_engine(sandbox_first=True)
    pycni.write_conflist("e2e-sbt", {
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "bridge", "bridge": "pycni-e2esbt", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.232.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "firewall"},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_ignore": "2"}},
        ],
    })
    net = sandbox_network(e2e, "pycni-e2e-sbt", "10.201.232.0/24", "-o", "cni.network=e2e-sbt")
    c = e2e.run("pycni-e2e-sbt1", "--network", net, TEST_IMAGE, "sleep", "900")
    assert sh(c, "cat /proc/sys/net/ipv4/conf/eth0/arp_ignore").strip() == "2"
    assert "10.201.232." in sh(c, "ip addr show eth0")
    proc = pycni_cli(pycni, "check", c)
    assert proc.returncode == 0 and "warning" not in proc.stdout, report(proc)


def test_a_chain_whose_ipam_picks_the_address(e2e: Tracker, pycni: PycniServer) -> None:
    """--ipam-driver null: the chain's IPAM hands the address out at CreateEndpoint, Docker
    knows it (inspect, its DNS), the chain puts it on the interface at Join, and removing the
    container releases it (the leak audit reads host-local's books)."""
    needs_engine(sandbox_first=True)
    pycni.write_conflist("e2e-sbn", {
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "bridge", "bridge": "pycni-e2esbn", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.233.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
        ],
    })
    net = e2e.network("pycni-e2e-sbn", "-d", DRIVER, "--ipam-driver", "null",
                      "-o", "cni.network=e2e-sbn", "-o", "cni.place=sandbox")
    a = e2e.run("pycni-e2e-sbn-a", "--network", net, TEST_IMAGE, "sleep", "900")
    b = e2e.run("pycni-e2e-sbn-b", "--network", net, TEST_IMAGE, "sleep", "900")
    address = inspect_net(a, net)["IPAddress"]
    assert address.startswith("10.201.233.") and f"{address}/24" in sh(a, "ip addr show eth0")
    assert address in sh(b, "nslookup pycni-e2e-sbn-a 127.0.0.11")
    sh(b, f"ping -c1 -W2 {address}")
    docker("rm", "-f", a)
    e2e.containers.remove(a)
    proc = docker("run", "-d", "--name", a, "--network", net, TEST_IMAGE, "sleep", "900")
    e2e.containers.append(a)
    assert proc.returncode == 0


def test_a_docker_network_joins_before_a_sandbox_network_not_after(e2e: Tracker) -> None:
    """The documented limit that keeps the sandbox place a choice per network: Docker numbers
    only the interfaces it moves in itself, so a Docker network connected after a sandbox-path
    network is given its eth0 and Docker's rename fails; connected before, it works (README,
    "How it works"). Pinned so that a change in Docker's behaviour is noticed."""
    needs_engine(sandbox_first=True)
    sbx = sandbox_network(e2e, "pycni-e2e-sbx", "10.201.234.0/24")
    brx = e2e.network("pycni-e2e-sbx-br", "-d", "bridge", "--subnet", "10.201.235.0/24")
    first = e2e.run("pycni-e2e-sbx-1", "--network", sbx, TEST_IMAGE, "sleep", "900")
    late = docker("network", "connect", brx, first, check=False)
    assert late.returncode != 0 and "file exists" in late.stderr, late.stderr
    second = e2e.run("pycni-e2e-sbx-2", "--network", brx, TEST_IMAGE, "sleep", "900")
    docker("network", "connect", sbx, second)
    assert "10.201.234." in sh(second, "ip addr show eth1")
    assert "10.201.235." in sh(second, "ip addr show eth0")


def test_the_sandbox_path_survives_sigkill_of_pycni_and_engine_restarts(
        e2e: Tracker, pycni: PycniServer, engine_back: object) -> None:  # noqa: F811
    """SIGKILL of pycni, a dockerd restart that takes restart-always containers down and back,
    and one with live-restore: containers keep (or get back) their network, and removing them
    leaves nothing (the leak audit)."""
    needs_engine(sandbox_first=True)
    net = sandbox_network(e2e, "pycni-e2e-sbr", "10.201.236.0/24")
    for name in ("pycni-e2e-sbr-1", "pycni-e2e-sbr-2"):
        e2e.run(name, "--restart", "always", "--network", net, TEST_IMAGE, "sleep", "900")
    pycni.restart(signal.SIGKILL)
    sh("pycni-e2e-sbr-1", "ping -c1 -W2 pycni-e2e-sbr-2")
    restart_engine()  # without live-restore: the containers stop with it, then come back
    for name in ("pycni-e2e-sbr-1", "pycni-e2e-sbr-2"):
        wait_running(name)
    sh("pycni-e2e-sbr-2", "ping -c1 -W2 pycni-e2e-sbr-1")
    restart_engine("--live-restore")
    for name in ("pycni-e2e-sbr-1", "pycni-e2e-sbr-2"):
        wait_running(name)
    restart_engine("--live-restore")  # this time they live through it
    sh("pycni-e2e-sbr-1", "ping -c1 -W2 pycni-e2e-sbr-2")
