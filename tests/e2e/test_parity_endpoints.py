"""Swap ``driver: bridge`` for ``driver: pycni`` and nothing gets worse: endpoints and ports.

Each test runs one scenario on a Docker bridge network and on pycni networks side by side and
asserts the same outcome (or the documented difference, README "Differences from Docker's
bridge"):

* a restarted container is reachable at once (neighbours learn its MAC);
* a chain without a default route gives no ``docker_gwbridge`` leg (no way out, as --internal);
* published ports answer on 127.0.0.1, [::1] and the host's own addresses where the bridge's do;
* ``-p 80`` picks host ports as Docker's allocator does: in order from the ephemeral range.

Subnets 10.201.100.0/24-10.201.129.0/24 and fd00:201:1xx::/64; host ports 18510-18529; traffic
only between the test's containers, the host's own addresses of the test's bridges, and
loopback. Every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import REPO, TEST_IMAGE, docker, run
from tests.e2e.conftest import DRIVER, PycniServer, Tracker, engine_version
from tests.e2e.test_driver import inspect_net, sh

pytestmark = pytest.mark.e2e

WEB = "mkdir -p /www; echo hello > /www/i; httpd -p 80 -h /www; sleep 900"
GET = b"GET /i HTTP/1.0\r\n\r\n"


def answer(host: str, port: int, timeout: float = 1.0) -> str:
    """What a GET of /i through ``host:port`` gets: "hello", "refused" or "timeout"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
            sock.sendall(GET)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timeout"
        except OSError as exc:
            return f"error {exc.errno}"
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "empty"


def seconds_until(check: Callable[[], bool], limit: float) -> float | None:
    """How long until ``check()`` holds (polled), or None if it didn't within ``limit`` s."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def serves(port: int) -> bool:
    """Whether 127.0.0.1:``port`` answers "hello" within 5 s (a container starting up)."""
    return seconds_until(lambda: answer("127.0.0.1", port) == "hello", 5) is not None


def pycni_inspect(pycni: PycniServer, network: str) -> dict[str, Any]:
    out = run(str(REPO / ".venv/bin/pycni"), "inspect", network,
              "--state-dir", str(pycni.state_dir)).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def pycni_host_ports(pycni: PycniServer, network: str) -> set[int]:
    """The host ports pycni published on ``network`` ("0.0.0.0:32768->80/tcp" → 32768)."""
    return {int(p.split("->")[0].rsplit(":", 1)[1])
            for e in pycni_inspect(pycni, network)["endpoints"] for p in e["ports"]}


def neighbour_mac(ip: str, container: str | None = None) -> str:
    """The MAC the host (or ``container``) holds for ``ip``; "" if none."""
    if container is None:
        out = run("ip", "neigh", "show", ip).stdout.split()
    else:
        out = sh(container, f"ip neigh show {ip}").split()
    return out[out.index("lladdr") + 1].lower() if "lladdr" in out else ""


def wait_dad(*bridges: str) -> None:
    """IPv6 addresses are usable once duplicate address detection is done (bounded)."""
    for _ in range(60):
        if not any(run("ip", "-6", "addr", "show", "dev", b, "tentative").stdout.strip()
                   for b in bridges):
            return
        time.sleep(0.1)
    raise AssertionError(f"IPv6 addresses of {bridges} still tentative after 6 s")


def bridge_of(network: str) -> str:
    data = json.loads(docker("network", "inspect", network).stdout)[0]
    net_id = str(data["Id"])
    if data["Driver"] == "bridge":
        return str(data["Options"].get("com.docker.network.bridge.name") or "br-" + net_id[:12])
    return "pycni-" + net_id[:9]


# --- 1. a restarted container is reachable at once -----------------------------------------------


def restart_reachability(e2e: Tracker, net: str, tag: str, port: int) -> dict[str, Any]:
    """A container restarted with ``docker restart -t 0``: seconds until the host (through the
    published port) and another container (straight to its address) reach it again, measured
    side by side from the moment the restart returns; the MAC the host and the other container
    hold for it then; and its MAC."""
    web = e2e.run(f"pycni-e2e-rs-{tag}", "--network", net, "-p", f"127.0.0.1:{port}:80",
                  TEST_IMAGE, "sh", "-c", WEB)
    peer = e2e.run(f"pycni-e2e-rp-{tag}", "--network", net, TEST_IMAGE, "sleep", "900")
    ip = inspect_net(web, net)["IPAddress"]
    fetch = f"printf 'GET /i HTTP/1.0\\r\\n\\r\\n' | nc -w 1 {ip} 80"
    # Both neighbours talk to it first: they hold its address and MAC.
    assert seconds_until(lambda: answer("127.0.0.1", port) == "hello", 5) is not None
    assert "hello" in sh(peer, fetch)
    docker("restart", "-t", "0", web)
    got: dict[str, Any] = {}

    def from_peer() -> None:
        got["peer"] = seconds_until(lambda: "hello" in sh(peer, fetch, check=False), 2.5)

    beside = threading.Thread(target=from_peer)
    beside.start()
    got["host"] = seconds_until(lambda: answer("127.0.0.1", port, timeout=0.3) == "hello", 2.5)
    beside.join(10)
    assert inspect_net(web, net)["IPAddress"] == ip  # the same address, a new endpoint
    got["mac"] = str(inspect_net(web, net)["MacAddress"]).lower()
    got["host holds"] = neighbour_mac(ip)
    got["peer holds"] = neighbour_mac(ip, peer)
    return got


def test_a_restarted_container_is_reachable_at_once(e2e: Tracker, pycni: PycniServer) -> None:
    """The bridge derives the MAC from the address (02:42 + IPv4), so neighbours' entries stay
    right; pycni does the same on zero-config networks and, where the chain picks the MAC,
    announces it (gratuitous ARP) before the container starts."""
    pycni.write_conflist("pycni-e2e-rsc", {"cniVersion": "1.0.0", "plugins": [
        {"type": "bridge", "bridge": "pycni-e2e-rsc", "isGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.102.0/24"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "firewall"},
        {"type": "portmap", "capabilities": {"portMappings": True}}]})
    nets = {
        "bridge": e2e.network("pycni-e2e-rs-br", "--subnet", "10.201.100.0/24"),
        "zero-config": e2e.network("pycni-e2e-rs-zc", "-d", DRIVER,
                                   "--subnet", "10.201.101.0/24"),
        # Docker's IPAM hands the chain the same address again; the chain picks a new MAC
        "conflist": e2e.network("pycni-e2e-rs-cl", "-d", DRIVER, "-o",
                                "cni.network=pycni-e2e-rsc", "--subnet", "10.201.102.0/24"),
    }
    got = {kind: restart_reachability(e2e, net, kind[:2], 18510 + n)
           for n, (kind, net) in enumerate(nets.items())}
    late = {kind: seen for kind, seen in got.items()
            if not (seen["host"] is not None and seen["host"] < 1.5
                    and seen["peer"] is not None and seen["peer"] < 1.5
                    and seen["host holds"] == seen["peer holds"] == seen["mac"])}
    assert late == {}, f"not reachable within 1.5 s of the restart: {late}"
    # Docker's own MAC, 02:42 + the address, on the zero-config network; on the bridge too
    # before 28, whose bridge gives a random MAC (and announces it, as pycni does): pycni keeps
    # the one that survives a restart (README, "Differences from Docker's bridge").
    assert got["zero-config"]["mac"] == "02:42:0a:c9:65:02"
    if engine_version() < (28, 0):
        assert got["bridge"]["mac"] == "02:42:0a:c9:64:02"
    else:
        assert not got["bridge"]["mac"].startswith("02:42:0a:c9:64:")


# --- 4. no hidden docker_gwbridge leg ------------------------------------------------------------


def gwbridge_exists() -> bool:
    return docker("network", "inspect", "docker_gwbridge", check=False).returncode == 0


def test_no_docker_gwbridge_leg_without_a_default_route(e2e: Tracker,
                                                        pycni: PycniServer) -> None:
    """A chain that gives no default route: the container has eth0 only and no way out, as
    on an --internal bridge network, and Docker makes no docker_gwbridge."""
    existed = gwbridge_exists()
    if not existed:
        e2e.networks.insert(0, "docker_gwbridge")  # removed last, should Docker make it
    pycni.write_conflist("pycni-e2e-nr", {"cniVersion": "1.0.0", "plugins": [
        {"type": "bridge", "bridge": "pycni-e2e-nr",
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.103.0/24"}]]}}]})
    py = e2e.network("pycni-e2e-nr", "-d", DRIVER, "-o", "cni.network=pycni-e2e-nr",
                     "--ipam-driver", "null")
    br = e2e.network("pycni-e2e-nr-br", "--internal", "--subnet", "10.201.104.0/24")
    for net in (py, br):
        name = e2e.run(f"{net}-c", "--network", net, TEST_IMAGE, "sleep", "900")
        links = sh(name, "ls /sys/class/net").split()
        assert sorted(links) == ["eth0", "lo"], f"{net}: {links}"
        # Docker 20.10's bridge still gives an --internal network's containers a default route
        # (to a gateway that forwards nothing); pycni gives none on either engine, as 26.1 does.
        if net == py or engine_version() >= (26, 0):
            assert "default" not in sh(name, "ip route; ip -6 route"), net
        data = json.loads(docker("inspect", name).stdout)[0]
        assert list(data["NetworkSettings"]["Networks"]) == [net]
    assert gwbridge_exists() == existed
    [endpoint] = pycni_inspect(pycni, py)["endpoints"]
    assert endpoint["way_out"] == "none"


# --- 7. published ports on loopback and the host's own addresses --------------------------------


def udp_no_ports(container: str) -> int:
    """Datagrams that reached the container with nobody listening (its kernel counts them)."""
    lines = [line.split() for line in sh(container, "cat /proc/net/snmp").splitlines()
             if line.startswith("Udp:")]
    return int(lines[1][lines[0].index("NoPorts")])


def test_published_ports_answer_where_the_bridges_do(e2e: Tracker, pycni: PycniServer) -> None:
    """127.0.0.1, [::1], and the host's own IPv4 and IPv6 addresses (the test's bridges'), on
    IPv4-only and dual-stack networks, for -p PORT:80 and -p 127.0.0.1:PORT:80."""
    nets = {
        ("bridge", "v4"): e2e.network("pycni-e2e-pp-b4", "--subnet", "10.201.105.0/24"),
        ("bridge", "ds"): e2e.network("pycni-e2e-pp-b6", "--ipv6", "--subnet", "10.201.106.0/24",
                                      "--subnet", "fd00:201:106::/64"),
        ("pycni", "v4"): e2e.network("pycni-e2e-pp-p4", "-d", DRIVER,
                                     "--subnet", "10.201.107.0/24"),
        ("pycni", "ds"): e2e.network("pycni-e2e-pp-p6", "-d", DRIVER, "--ipv6",
                                     "--subnet", "10.201.108.0/24",
                                     "--subnet", "fd00:201:108::/64"),
    }
    ports = {}
    for n, ((driver, family), net) in enumerate(nets.items()):
        all_port, local_port, udp_port = 18514 + 3 * n, 18515 + 3 * n, 18516 + 3 * n
        e2e.run(f"pycni-e2e-pp-{driver[0]}{family}", "--network", net,
                "-p", f"{all_port}:80", "-p", f"127.0.0.1:{local_port}:80",
                "-p", f"{udp_port}:5353/udp", TEST_IMAGE, "sh", "-c", WEB)
        ports[driver, family] = (all_port, local_port, udp_port)
    wait_dad(bridge_of(nets["bridge", "ds"]), bridge_of(nets["pycni", "ds"]))
    addresses = ["127.0.0.1", "::1", "10.201.105.1", "10.201.107.1",
                 "fd00:201:106::1", "fd00:201:108::1"]
    for (driver, family), (all_port, _local, _udp) in ports.items():
        assert serves(all_port), (driver, family)
    seen = {}
    for (driver, family), (all_port, local_port, _udp) in ports.items():
        for address in addresses:
            seen[driver, family, "all", address] = answer(address, all_port)
            seen[driver, family, "127.0.0.1", address] = answer(address, local_port)
    differs = {k[1:]: (seen[("bridge", *k[1:])], v) for k, v in seen.items()
               if k[0] == "pycni" and v != seen[("bridge", *k[1:])]}
    assert differs == {}, f"(bridge, pycni) where they differ: {differs}"
    # What the bridge answers: every address for -p PORT:80; 127.0.0.1 alone for -p
    # 127.0.0.1:PORT:80.
    for family in ("v4", "ds"):
        for address in addresses:
            assert seen["pycni", family, "all", address] == "hello", (family, address)
            assert (seen["pycni", family, "127.0.0.1", address] == "hello") == (
                address == "127.0.0.1"), (family, address)
    # UDP over [::1] to an IPv4-only container, as docker-proxy carries it.
    for driver in ("bridge", "pycni"):
        name, udp = f"pycni-e2e-pp-{driver[0]}v4", ports[driver, "v4"][2]
        before = udp_no_ports(name)
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            for _ in range(3):
                sock.sendto(b"ping-udp", ("::1", udp))
                time.sleep(0.1)
        assert udp_no_ports(name) >= before + 3, driver
    # Gone with the containers: nothing of pycni's listens on their ports any more.
    for driver in ("bridge", "pycni"):
        for family in ("v4", "ds"):
            docker("rm", "-f", f"pycni-e2e-pp-{driver[0]}{family}")
    listening = run("ss", "-Htlnu").stdout
    for all_port, local_port, udp_port in ports.values():
        for port in (all_port, local_port, udp_port):
            assert f":{port} " not in listening, listening


def test_the_proxy_comes_back_with_pycni_and_goes_with_the_container(
        e2e: Tracker, pycni: PycniServer) -> None:
    """The proxy lives in ``pycni serve``: a restarted pycni listens again for the endpoints it
    serves; a stopped container's ports are let go (Revoke), and a removed one's too."""
    net = e2e.network("pycni-e2e-pr", "-d", DRIVER, "--subnet", "10.201.112.0/24")
    web = e2e.run("pycni-e2e-pr-web", "--network", net, "-p", "18526:80", TEST_IMAGE,
                  "sh", "-c", WEB)
    assert serves(18526) and answer("::1", 18526) == "hello"
    pycni.restart()
    assert seconds_until(lambda: answer("::1", 18526) == "hello", 5) is not None
    docker("stop", "-t", "0", web)
    assert answer("::1", 18526) == answer("127.0.0.1", 18526) == "refused"
    assert ":18526 " not in run("ss", "-Htln").stdout
    docker("start", web)
    assert serves(18526) and answer("::1", 18526) == "hello"


# --- 9. ephemeral host ports ---------------------------------------------------------------------


def kernel_range() -> tuple[int, int]:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        first, last = (int(n) for n in f.read().split())
    return first, last


def test_ephemeral_ports_in_order_from_the_kernels_range(e2e: Tracker,
                                                         pycni: PycniServer) -> None:
    """-p 80 twice on each driver: host ports from ip_local_port_range, one after the other
    (Docker's allocator searches in order from after the last port it gave); pycni's and
    Docker's never the same port at once."""
    br = e2e.network("pycni-e2e-eph-br", "--subnet", "10.201.109.0/24")
    py = e2e.network("pycni-e2e-eph-py", "-d", DRIVER, "--subnet", "10.201.111.0/24")
    got: dict[str, list[int]] = {"bridge": [], "pycni": []}
    for driver, net in (("pycni", py), ("bridge", br)):
        for n in range(2):
            name = e2e.run(f"pycni-e2e-eph-{driver}{n}", "--network", net, "-p", "80",
                           TEST_IMAGE, "sh", "-c", WEB)
            if driver == "bridge":
                out = docker("port", name, "80/tcp").stdout.split()[0]
                got[driver].append(int(out.rsplit(":", 1)[1]))
            else:
                [new] = pycni_host_ports(pycni, py) - set(got[driver])
                got[driver].append(new)
    first, last = kernel_range()
    for driver, (a, b) in got.items():
        assert first <= a <= last and first <= b <= last, (driver, got)
        assert b == a + 1, f"{driver}: {got[driver]} are not in order"
    assert not set(got["bridge"]) & set(got["pycni"]), got
    for driver, host_ports in got.items():
        for port in host_ports:
            assert serves(port), (driver, port)


def test_a_taken_host_port_names_the_container_holding_it(e2e: Tracker) -> None:
    """Docker's bridge: "port is already allocated"; pycni names the container, as a compose
    service scaled past one fixed host port would want to know."""
    nets = {"bridge": e2e.network("pycni-e2e-pt-br", "--subnet", "10.201.109.0/24"),
            "pycni": e2e.network("pycni-e2e-pt-py", "-d", DRIVER, "--subnet", "10.201.110.0/24")}
    for n, (kind, net) in enumerate(nets.items()):
        port = 18528 + n
        first = e2e.run(f"{net}-1", "--network", net, "-p", f"{port}:80", TEST_IMAGE,
                        "sleep", "900")
        e2e.containers.append(f"{net}-2")
        second = docker("run", "-d", "--name", f"{net}-2", "--network", net, "-p", f"{port}:80",
                        TEST_IMAGE, "sleep", "900", check=False)
        assert second.returncode != 0, kind
        if kind == "bridge":
            assert "port is already allocated" in second.stderr, second.stderr
        else:
            assert f"port {port} on all addresses is already in use: container {first} " \
                   "publishes it" in second.stderr, second.stderr
            assert "pycni gc" not in second.stderr
