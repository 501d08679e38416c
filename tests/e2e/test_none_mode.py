"""The ``--network none`` mode against the real dockerd and the real plugins: ``pycni attach``,
``pycni detach``, ``pycni run`` and ``pycni gc``, each test under the leak audit.

The CLI runs as a user runs it, with the session server's conf and state dirs; the conflists are
written into the server's conf dir. The bridge plugin leaves its bridge behind on DEL (it is the
network's, not the attachment's), so each test removes the bridge it made.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.conftest import TEST_IMAGE, docker, run
from tests.e2e.conftest import DRIVER, PLUGIN_MODE, PycniServer, Tracker
from tests.e2e.test_health import pycni_cli, report

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(PLUGIN_MODE, reason="plugin mode: the --network none mode runs no driver: nothing in it differs with a managed plugin"),
]


WEB = "mkdir -p /www; echo hello > /www/i; httpd -p 80 -h /www; sleep 900"


def answer(host: str, port: int) -> str:
    """The body's last line of a GET of /i through ``host:port`` ("" if nothing answered)."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"GET /i HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return ""
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def chain(name: str, bridge: str, subnet: str, *extra: dict[str, object],
          tuning: dict[str, str] | None = None) -> dict[str, object]:
    """The chain users write, which the tests share: bridge (isGateway + ipMasq) + host-local
    on IPv4 and IPv6 (fd00:201:XYZ::/64 for 10.201.XYZ.0/24) with default routes (+ tuning) +
    portmap + firewall. Masquerade is what leaked before the namespace was pinned: a chain
    without it could not show that."""
    prefix = subnet.rsplit(".", 1)[0]
    v6 = f"fd00:201:{prefix.split('.')[2]}::/64"
    plugins: list[dict[str, object]] = [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}], [{"subnet": v6}]],
                  "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]},
         "dns": {"nameservers": [f"{prefix}.1"], "search": [f"{name}.test"]}},
    ]
    if tuning:
        plugins.append({"type": "tuning", "sysctl": tuning})
    plugins += [{"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "firewall"}, *extra]
    return {"cniVersion": "1.0.0", "plugins": plugins}


@contextlib.contextmanager
def bridge_removed(name: str) -> Iterator[None]:
    try:
        yield
    finally:
        run("ip", "link", "del", name, check=False)


@pytest.fixture(autouse=True)
def _detached_even_if_the_test_failed(e2e: Tracker, pycni: PycniServer) -> Iterator[None]:
    """A test that failed half-way leaves attachments: remove its containers, then let
    ``pycni gc`` DEL what they had, before the leak audit looks."""
    yield
    e2e.cleanup()
    pycni_cli(pycni, "gc", "--state-dir", str(pycni.state_dir))


def cli(pycni: PycniServer, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``pycni COMMAND`` with the session server's conf and state dirs (before ``--``)."""
    return pycni_cli(pycni, command, "--conf-dir", str(pycni.conf_dir),
                     "--state-dir", str(pycni.state_dir), *args)


def address(result: str) -> str:
    ips = json.loads(result)["ips"]
    return str(ips[0]["address"]).split("/")[0]


def exec_out(container: str, *command: str) -> str:
    return docker("exec", container, *command).stdout.strip()


def test_two_containers_reach_each_other_and_a_published_port(
    e2e: Tracker, pycni: PycniServer
) -> None:
    pycni.write_conflist("e2e-nm", chain("e2e-nm", "pycni-nm0", "10.201.200.0/24"))
    with bridge_removed("pycni-nm0"):
        web = e2e.run("pycni-e2e-nm-web", "--network", "none", TEST_IMAGE, "sh", "-c", WEB)
        client = e2e.run("pycni-e2e-nm-cl", "--network", "none", TEST_IMAGE, "sleep", "600")
        port = 28201
        proc = cli(pycni, "attach", web, "e2e-nm", "-p", f"{port}:80")
        assert proc.returncode == 0, report(proc)
        web_ip = address(proc.stdout)
        proc = cli(pycni, "attach", client, "e2e-nm", "--ip", "10.201.200.77")
        assert proc.returncode == 0, report(proc)
        assert address(proc.stdout) == "10.201.200.77"

        # by address, both ways, and HTTP to the web container
        exec_out(client, "ping", "-c", "1", "-W", "3", web_ip)
        exec_out(web, "ping", "-c", "1", "-W", "3", "10.201.200.77")
        assert "hello" in exec_out(client, "wget", "-q", "-O", "-", f"http://{web_ip}/i")
        # the published port from the host, through portmap (its DNAT serves local addresses)
        for _ in range(25):
            if answer("10.201.200.1", port) == "hello":
                break
            time.sleep(0.2)
        assert answer("10.201.200.1", port) == "hello"
        # the chain's dns is in the container's resolv.conf
        resolv = exec_out(client, "cat", "/etc/resolv.conf")
        assert "nameserver 10.201.200.1" in resolv and "search e2e-nm.test" in resolv

        listing = pycni_cli(pycni, "ls")
        assert "pycni-e2e-nm-cl" in listing.stdout and "10.201.200.77/24" in listing.stdout
        # a second pycni attach of the same interface is refused; a taken host port too
        again = cli(pycni, "attach", client, "e2e-nm")
        assert again.returncode == 2 and "already attached" in again.stderr, report(again)
        taken = cli(pycni, "attach", client, "e2e-nm", "--ifname", "eth1", "-p", f"{port}:80")
        assert taken.returncode == 2 and "already in use" in taken.stderr, report(taken)

        # gc (the server's sweeps and this mode's) leaves live containers' attachments alone
        swept = pycni_cli(pycni, "gc", "--state-dir", str(pycni.state_dir))
        assert swept.returncode == 0 and "e2e-nm" not in swept.stdout, report(swept)
        assert answer("10.201.200.1", port) == "hello"

        for container in (web, client):
            proc = cli(pycni, "detach", container, "e2e-nm")
            assert proc.returncode == 0, report(proc)
        assert "eth0" not in exec_out(client, "ip", "-o", "link")
        assert answer("10.201.200.1", port) != "hello"
        docker("rm", "-f", web, client)


def test_detach_and_gc_after_the_container_is_gone(e2e: Tracker, pycni: PycniServer) -> None:
    pycni.write_conflist("e2e-nmg", chain("e2e-nmg", "pycni-nm1", "10.201.201.0/24"))
    with bridge_removed("pycni-nm1"):
        a = e2e.run("pycni-e2e-nmg-a", "--network", "none", TEST_IMAGE, "sleep", "600")
        b = e2e.run("pycni-e2e-nmg-b", "--network", "none", TEST_IMAGE, "sleep", "600")
        for c in (a, b):
            proc = cli(pycni, "attach", c, "e2e-nmg", "-p", f"{28210 if c == a else 28211}:80")
            assert proc.returncode == 0, report(proc)
        docker("rm", "-f", a, b)
        proc = cli(pycni, "detach", a, "e2e-nmg")  # by the name it had
        assert proc.returncode == 0, report(proc)
        proc = pycni_cli(pycni, "gc", "--state-dir", str(pycni.state_dir))
        assert proc.returncode == 0, report(proc)
        assert "attachment pycni-e2e-nmg-b/e2e-nmg/eth0: its container is gone; DEL run" \
            in proc.stdout
        assert "CNI attachment" not in proc.stdout  # the server's sweeps leave them to this mode
        assert "e2e-nmg" not in pycni_cli(pycni, "ls").stdout


def test_run_attaches_before_returning_and_tuning_sysctls_reach_the_container(
    e2e: Tracker, pycni: PycniServer
) -> None:
    pycni.write_conflist("e2e-nmt", chain("e2e-nmt", "pycni-nm2", "10.201.202.0/24",
                                          tuning={"net.ipv4.conf.eth0.arp_ignore": "1"}))
    pycni.write_conflist("e2e-nmt2", chain("e2e-nmt2", "pycni-nm3", "10.201.203.0/24"))
    with bridge_removed("pycni-nm2"), bridge_removed("pycni-nm3"):
        e2e.containers.append("pycni-e2e-nmt")
        proc = cli(pycni, "run", "--cni-net", "e2e-nmt,e2e-nmt2", "--ip", "10.201.202.9",
                   "--", "-d", "--name", "pycni-e2e-nmt", TEST_IMAGE, "sleep", "600")
        assert proc.returncode == 0, report(proc)
        c = "pycni-e2e-nmt"
        info = json.loads(docker("inspect", c).stdout)[0]
        assert info["HostConfig"]["NetworkMode"] == "none"
        assert proc.stdout.strip() == info["Id"]
        # the address is there the moment pycni run returns, on both networks
        addrs = exec_out(c, "ip", "-o", "-4", "addr")
        assert "eth0" in addrs and "10.201.202.9/24" in addrs, addrs
        assert "eth1" in addrs and "10.201.203." in addrs, addrs
        # the sysctl tuning set is the container's own
        assert exec_out(c, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore") == "1"
        assert exec_out(c, "cat", "/proc/sys/net/ipv4/conf/eth1/arp_ignore") == "0"
        for net in ("e2e-nmt", "e2e-nmt2"):
            proc = cli(pycni, "detach", c, net)
            assert proc.returncode == 0, report(proc)
        docker("rm", "-f", c)


def test_run_with_a_failing_chain_removes_the_container_and_names_the_plugin(
    e2e: Tracker, pycni: PycniServer
) -> None:
    pycni.write_conflist("e2e-nmf", chain("e2e-nmf", "pycni-nm4", "10.201.204.0/24"))
    pycni.write_conflist("e2e-nmf2", chain("e2e-nmf2", "pycni-nm5", "10.201.205.0/24",
                                           {"type": "pycni-test-fail"}))
    with bridge_removed("pycni-nm4"), bridge_removed("pycni-nm5"):
        e2e.containers.append("pycni-e2e-nmf")
        proc = cli(pycni, "run", "--cni-net", "e2e-nmf,e2e-nmf2", "-p", "28220:80", "--",
                   "-d", "--name", "pycni-e2e-nmf", TEST_IMAGE, "sleep", "600")
        assert proc.returncode == 4, report(proc)
        assert "pycni run: removed the container" in proc.stderr, report(proc)
        assert 'CNI plugin "pycni-test-fail" failed (ADD)' in proc.stderr, report(proc)
        gone = docker("inspect", "pycni-e2e-nmf", check=False)
        assert gone.returncode != 0
        assert "e2e-nmf" not in pycni_cli(pycni, "ls").stdout


def test_run_with_a_holder_the_app_starts_with_its_address_and_keeps_it(
    e2e: Tracker, pycni: PycniServer
) -> None:
    pycni.write_conflist("e2e-nmh", chain("e2e-nmh", "pycni-nm6", "10.201.206.0/24"))
    with bridge_removed("pycni-nm6"):
        app, holder = "pycni-e2e-nmh", "pycni-e2e-nmh-pycni-holder"
        e2e.containers += [holder, app]
        # the app's first instruction prints its addresses
        proc = cli(pycni, "run", "--cni-net", "e2e-nmh", "--ip", "10.201.206.5",
                   "--holder", f"{TEST_IMAGE} sleep 2147483647", "--",
                   "--name", app, TEST_IMAGE, "sh", "-c", "ip -o -4 addr; sleep 600")
        assert proc.returncode == 0, report(proc)
        info = json.loads(docker("inspect", app).stdout)[0]
        assert proc.stdout.strip() == info["Id"]
        assert info["HostConfig"]["NetworkMode"] == "container:" + json.loads(
            docker("inspect", holder).stdout)[0]["Id"]
        for _ in range(25):
            logs = docker("logs", app).stdout
            if "eth0" in logs:
                break
            time.sleep(0.2)
        assert "eth0" in logs and "10.201.206.5/24" in logs, logs
        # the chain's dns reaches the app too (it shares the holder's resolv.conf)
        assert "search e2e-nmh.test" in exec_out(app, "cat", "/etc/resolv.conf")
        listing = pycni_cli(pycni, "ls").stdout
        assert f"in holder {holder}" in listing and "10.201.206.5/24" in listing, listing

        docker("restart", "-t", "0", app)  # a restart keeps the holder's namespace
        assert "10.201.206.5/24" in exec_out(app, "ip", "-o", "-4", "addr")

        docker("rm", "-f", app)
        proc = pycni_cli(pycni, "gc", "--state-dir", str(pycni.state_dir))
        assert proc.returncode == 0, report(proc)
        assert f"attachment {app}/e2e-nmh/eth0: its container is gone; DEL run" in proc.stdout
        assert docker("inspect", holder, check=False).returncode != 0  # the holder went too


def test_host_ports_are_one_space_across_both_modes(e2e: Tracker, pycni: PycniServer) -> None:
    """A port a driver-mode container publishes is refused to pycni attach -p, and the other
    way round, each naming the container that holds it."""
    pycni.write_conflist("e2e-nmx", chain("e2e-nmx", "pycni-nmx0", "10.201.209.0/24"))
    net = e2e.network("pycni-e2e-nmx", "-d", DRIVER,
                      "--subnet", "10.201.210.0/24")
    with bridge_removed("pycni-nmx0"):
        web = e2e.run("pycni-e2e-nmx-web", "--network", net, "-p", "28260:80", TEST_IMAGE,
                      "sleep", "600")
        held = e2e.run("pycni-e2e-nmx-held", "--network", "none", TEST_IMAGE, "sleep", "600")
        proc = cli(pycni, "attach", held, "e2e-nmx", "-p", "28260:80")
        assert proc.returncode == 2, report(proc)
        assert f"port 28260 on all addresses is already in use: container {web} publishes it" \
            in proc.stderr, report(proc)
        proc = cli(pycni, "attach", held, "e2e-nmx", "-p", "28261:80")
        assert proc.returncode == 0, report(proc)
        taken = docker("run", "-d", "--name", "pycni-e2e-nmx-2", "--network", net, "-p",
                       "28261:80", TEST_IMAGE, "sleep", "600", check=False)
        e2e.containers.append("pycni-e2e-nmx-2")
        assert taken.returncode != 0
        assert f"container {held} publishes it (pycni attach, on e2e-nmx)" in taken.stderr, \
            taken.stderr
        proc = cli(pycni, "detach", held, "e2e-nmx")
        assert proc.returncode == 0, report(proc)


def test_run_passes_its_own_cni_args_and_capability_args(e2e: Tracker, pycni: PycniServer) -> None:
    """``pycni run --arg`` and ``--cap``: the bandwidth plugin, which declares the
    ``bandwidth`` capability, shapes the container's traffic on the host's end of its veth."""
    bandwidth: dict[str, object] = {"type": "bandwidth", "capabilities": {"bandwidth": True}}
    pycni.write_conflist("e2e-cap", chain("e2e-cap", "pycni-cap0", "10.201.207.0/24", bandwidth))
    c = "pycni-e2e-cap"
    e2e.containers.append(c)
    with bridge_removed("pycni-cap0"):
        proc = cli(pycni, "run", "--cni-net", "e2e-cap", "--arg", "TEAM=blue",
                   "--cap", '{"bandwidth": {"ingressRate": 8000000, "ingressBurst": 80000}}',
                   "--", "-d", "--name", c, TEST_IMAGE, "sleep", "900")
        assert proc.returncode == 0, report(proc)
        [record] = (pycni.state_dir / "containers").glob("*.json")
        data = json.loads(record.read_text())
        assert ["TEAM", "blue"] in data["cni_args"] and ["K8S_POD_NAME", c] in data["cni_args"]
        ports = run("ip", "-o", "link", "show", "master", "pycni-cap0").stdout.split("\n")
        [veth] = [line.split(": ")[1].split("@")[0] for line in ports if line]
        assert "tbf" in run("tc", "qdisc", "show", "dev", veth).stdout  # shaped
        proc = cli(pycni, "run", "--cni-net", "e2e-cap", "--cap", '{"portMappings": []}',
                   "--", "-d", "--name", f"{c}-x", TEST_IMAGE, "true")
        assert proc.returncode != 0 and "pycni fills portMappings itself (from -p)" in proc.stderr
        assert cli(pycni, "detach", c, "e2e-cap").returncode == 0
        docker("rm", "-f", c)
