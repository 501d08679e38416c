"""The host's loopback stays closed to containers (CVE-2020-8558 class), as on Docker's bridge.

Publishing a port on ``127.0.0.1`` makes portmap set ``route_localnet=1`` on the network's
bridge; without pycni's guard (:mod:`shim.firewall`), a container could then reach services
that listen only on the host's loopback. Each scenario runs on a Docker bridge network, a
zero-config pycni network and a conflist pycni network (bridge with ``isGateway`` + ``ipMasq``,
host-local, portmap, firewall; IPv4 and IPv6), side by side, with the host listening on
``127.0.0.1`` (TCP and UDP) and ``[::1]`` (UDP):

* **raw**: a container with Docker's default capabilities (NET_RAW) writes frames to its
  gateway's MAC addressed to 127.0.0.1 (a UDP datagram, a TCP SYN) and ::1 (a UDP datagram);
* **net_admin**: a container with NET_ADMIN (and its own ``route_localnet``) routes 127.0.0.1
  via its gateway and connects (TCP, ``nc``) and sends (UDP, ``tftp``).

Nothing may arrive, on any driver; the published port still answers on the host's 127.0.0.1.

Subnets 10.201.140.0/24-10.201.142.0/24 and fd00:201:14x::/64; host ports 18620-18649; traffic
only from the test's containers to the host's loopback. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_IMAGE, docker, run
from tests.e2e.conftest import DRIVER, PLUGIN_MODE, PycniServer, Tracker
from tests.e2e.test_driver import sh
from tests.e2e.test_health import pycni_cli
from tests.e2e.test_parity_endpoints import WEB, answer, seconds_until

pytestmark = pytest.mark.e2e

ATTACK = Path(__file__).with_name("loopback_attack.py")


class Listeners:
    """What the host keeps to itself: TCP and UDP on 127.0.0.1:PORT, UDP on [::1]:PORT."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.udp4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", port))
        self.tcp.listen(8)
        self.udp4.bind(("127.0.0.1", port))
        self.udp6.bind(("::1", port))
        for sock in (self.tcp, self.udp4, self.udp6):
            sock.setblocking(False)

    def close(self) -> None:
        for sock in (self.tcp, self.udp4, self.udp6):
            sock.close()

    def reached(self, attacker: str) -> dict[str, bool]:
        """What arrived: a TCP connection or a half-open one (a SYN answered) from the
        ``attacker``'s IPv4 address, datagrams."""
        got = {"tcp 127.0.0.1": self._tcp_seen(attacker), "udp 127.0.0.1": self._drain(self.udp4),
               "udp ::1": self._drain(self.udp6)}
        with contextlib.suppress(BlockingIOError):
            conn, _peer = self.tcp.accept()
            conn.close()
            got["tcp 127.0.0.1"] = True
        return got

    def _tcp_seen(self, attacker: str) -> bool:
        # /proc/net/tcp: "sl local rem st ...", addresses as little-endian hex; anything on our
        # port from the attacker is a connection (01 ESTABLISHED) or a SYN the host answered
        # (03 SYN_RECV)
        local = f"0100007F:{self.port:04X}"
        remote = f"{struct.unpack('<I', socket.inet_aton(attacker))[0]:08X}"
        with open("/proc/net/tcp") as f:
            rows = [line.split() for line in f.readlines()[1:]]
        return any(r[1] == local and r[2].startswith(remote + ":") for r in rows)

    @staticmethod
    def _drain(sock: socket.socket) -> bool:
        seen = False
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(4096)
                seen = True
        return seen


@contextlib.contextmanager
def listening(port: int) -> Iterator[Listeners]:
    listeners = Listeners(port)
    try:
        yield listeners
    finally:
        listeners.close()


def serves_on_loopback(port: int) -> bool:
    return seconds_until(lambda: answer("127.0.0.1", port) == "hello", 5) is not None


def gateway(container: str) -> tuple[str, str]:
    """The container's IPv4 gateway and its MAC (learnt by a ping)."""
    gw = sh(container, "ip route | awk '/^default/ {print $3}'").strip()
    sh(container, f"ping -c 1 -W 2 {gw} >/dev/null", check=False)
    mac = sh(container, f"ip neigh show {gw} | "
             "awk '{for (i = 1; i < NF; i++) if ($i == \"lladdr\") print $(i + 1)}'").strip()
    assert gw and mac.count(":") == 5, f"{container}: gateway {gw!r} {mac!r}"
    return gw, mac


def addresses(container: str) -> tuple[str, str]:
    v4 = sh(container, "ip -4 -o addr show eth0 | awk '{print $4}'").strip().split("/")[0]
    v6 = sh(container, "ip -6 -o addr show eth0 scope global | awk '{print $4}'").strip()
    return v4, v6.split("/")[0]


def raw_attack(container: str, port: int) -> dict[str, bool]:
    _gw, mac = gateway(container)
    v4, v6 = addresses(container)
    pid = docker("inspect", "-f", "{{.State.Pid}}", container).stdout.strip()
    with listening(port) as host:
        run("nsenter", f"--net=/proc/{pid}/ns/net", "python3", str(ATTACK), mac, v4, str(port),
            *([v6] if v6 else []))
        time.sleep(1.0)  # a datagram or SYN on its way
        return host.reached(v4)


def net_admin_attack(container: str, port: int) -> dict[str, bool]:
    gw, _mac = gateway(container)
    script = (
        "ip route del local 127.0.0.0/8 dev lo table local; "
        "ip route del local 127.0.0.1 dev lo table local; "
        f"ip route add 127.0.0.1/32 via {gw} dev eth0; "
        f"echo hi | nc -w 2 127.0.0.1 {port}; "
        f"timeout 2 tftp -g -r probe -l /tmp/probe 127.0.0.1 {port}; true"
    )
    with listening(port) as host:
        sh(container, script, check=False)
        got = host.reached(addresses(container)[0])
    # the connection the container asked for counts as the whole TCP attack
    got.pop("udp ::1")
    return got


def test_no_container_reaches_the_hosts_loopback(e2e: Tracker, pycni: PycniServer) -> None:
    pycni.write_conflist("pycni-e2e-lbc", {"cniVersion": "1.0.0", "plugins": [
        {"type": "bridge", "bridge": "pycni-e2e-lbc", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local",
                  "ranges": [[{"subnet": "10.201.142.0/24"}], [{"subnet": "fd00:201:142::/64"}]],
                  "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"}]})
    dual = ("--ipv6",)
    nets = {
        "bridge": e2e.network("pycni-e2e-lb-br", *dual, "--subnet", "10.201.140.0/24",
                              "--subnet", "fd00:201:140::/64"),
        "zero-config": e2e.network("pycni-e2e-lb-zc", "-d", DRIVER, *dual,
                                   "--subnet", "10.201.141.0/24", "--subnet",
                                   "fd00:201:141::/64"),
        # host-local picks both addresses (plugins 1.1.1 take one IP= through CNI_ARGS)
        "conflist": e2e.network("pycni-e2e-lb-cl", "-d", DRIVER, "-o",
                                "cni.network=pycni-e2e-lbc", "--ipam-driver", "null"),
    }
    seen: dict[str, dict[str, bool]] = {}
    for n, (kind, net) in enumerate(nets.items()):
        published = 18620 + 10 * n
        e2e.run(f"{net}-web", "--network", net, "-p", f"127.0.0.1:{published}:80",
                TEST_IMAGE, "sh", "-c", WEB)
        raw = e2e.run(f"{net}-raw", "--network", net, TEST_IMAGE, "sleep", "900")
        admin = e2e.run(f"{net}-adm", "--network", net, "--cap-add", "NET_ADMIN",
                        "--sysctl", "net.ipv4.conf.all.route_localnet=1",
                        TEST_IMAGE, "sleep", "900")
        # publishing on the loopback still works (what portmap's snat is for)
        assert serves_on_loopback(published), kind
        for attack, got in (("raw", raw_attack(raw, published + 1)),
                            ("net_admin", net_admin_attack(admin, published + 2))):
            for what, arrived in got.items():
                seen.setdefault(f"{attack} {what}", {})[kind] = arrived
    table = "\n".join(f"{attack:28} " + "  ".join(f"{k}={'REACHED' if v else 'blocked'}"
                                                  for k, v in row.items())
                      for attack, row in seen.items())
    print(f"\nattacks on the host's loopback:\n{table}")
    reached = {attack: [k for k, v in row.items() if v] for attack, row in seen.items()}
    assert all(not kinds for kinds in reached.values()), f"reached the loopback:\n{table}"


def test_route_localnet_goes_with_the_network(e2e: Tracker, pycni: PycniServer) -> None:
    """A bridge that outlives the network (the admin's) gets route_localnet back to 0."""
    bridge = "pycni-e2e-lbk"
    run("ip", "link", "add", bridge, "type", "bridge")
    try:
        run("ip", "link", "set", bridge, "up")
        pycni.write_conflist("pycni-e2e-lbk", {"cniVersion": "1.0.0", "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.143.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"}]})
        net = e2e.network("pycni-e2e-lbk", "-d", DRIVER, "-o", "cni.network=pycni-e2e-lbk",
                          "--subnet", "10.201.143.0/24")
        web = e2e.run(f"{net}-web", "--network", net, "-p", "127.0.0.1:18650:80",
                      TEST_IMAGE, "sh", "-c", WEB)
        flag = Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet")
        assert flag.read_text().strip() == "1"  # portmap's snat
        docker("rm", "-f", web)
        docker("network", "rm", net)
        assert flag.read_text().strip() == "0"
    finally:
        run("ip", "link", "del", bridge, check=False)
    assert not os.path.exists(f"/sys/class/net/{bridge}")


@pytest.mark.skipif(PLUGIN_MODE, reason="plugin mode: the --network none mode runs no driver")
def test_none_mode_attachments_keep_the_loopback_closed(e2e: Tracker, pycni: PycniServer) -> None:
    """The same attacks on containers started with --network none and wired by pycni attach."""
    bridge = "pycni-e2e-lbn"
    pycni.write_conflist("e2e-lbn", {"cniVersion": "1.0.0", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.144.0/24"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"}]})
    try:
        web = e2e.run("pycni-e2e-lbn-web", "--network", "none", TEST_IMAGE, "sh", "-c", WEB)
        raw = e2e.run("pycni-e2e-lbn-raw", "--network", "none", TEST_IMAGE, "sleep", "900")
        admin = e2e.run("pycni-e2e-lbn-adm", "--network", "none", "--cap-add", "NET_ADMIN",
                        "--sysctl", "net.ipv4.conf.all.route_localnet=1",
                        TEST_IMAGE, "sleep", "900")
        attach(pycni, web, "-p", "127.0.0.1:18660:80")
        for container in (raw, admin):
            attach(pycni, container)
        assert Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").read_text().strip() == "1"
        assert serves_on_loopback(18660)
        got = {**{f"raw {k}": v for k, v in raw_attack(raw, 18661).items()},
               **{f"net_admin {k}": v for k, v in net_admin_attack(admin, 18662).items()}}
        assert not any(got.values()), f"reached the loopback: {got}"
        for container in (web, raw, admin):
            none_cli(pycni, "detach", container, "e2e-lbn")
        # the network's last attachment closes route_localnet on the bridge it leaves behind
        assert Path(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet").read_text().strip() == "0"
    finally:
        e2e.cleanup()
        pycni_cli(pycni, "gc", "--state-dir", str(pycni.state_dir))
        run("ip", "link", "del", bridge, check=False)


def none_cli(pycni: PycniServer, command: str, *args: str) -> str:
    proc = pycni_cli(pycni, command, "--conf-dir", str(pycni.conf_dir),
                     "--state-dir", str(pycni.state_dir), *args)
    assert proc.returncode == 0, f"pycni {command}: {proc.stderr}"
    return proc.stdout


def attach(pycni: PycniServer, container: str, *args: str) -> None:
    none_cli(pycni, "attach", container, "e2e-lbn", *args)
