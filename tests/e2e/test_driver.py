"""Driver mode end to end: real dockerd, the docker CLI, real CNI plugins, a real pycni serve.

Every test runs under the leak audit (``e2e`` fixture): after its containers and networks are
removed, the host must be as it was — reservations, netns, links, iptables, cache, pycni state.
Only subnets in 10.200.0.0/14 are used, and traffic stays between the test's own containers.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import threading
from typing import Any

import pytest

from tests.conftest import TEST_IMAGE, docker
from tests.e2e.conftest import DRIVER, PycniServer, Tracker, call

pytestmark = pytest.mark.e2e


def inspect_net(container: str, network: str) -> dict[str, Any]:
    data = json.loads(docker("inspect", container).stdout)[0]
    nets: dict[str, dict[str, Any]] = data["NetworkSettings"]["Networks"]
    return nets[network]


def sh(container: str, script: str, check: bool = True) -> str:
    return docker("exec", container, "sh", "-c", script, check=check).stdout


def test_zero_config_network_dns_and_addresses(e2e: Tracker) -> None:
    net = e2e.network("pycni-e2e-zc", "-d", DRIVER, "--subnet", "10.200.10.0/24")
    a = e2e.run("pycni-e2e-a", "--network", net, TEST_IMAGE, "sleep", "600")
    b = e2e.run("pycni-e2e-b", "--network", net, TEST_IMAGE, "sleep", "600")
    subnet = ipaddress.ip_network("10.200.10.0/24")
    info_a, info_b = inspect_net(a, net), inspect_net(b, net)
    for info in (info_a, info_b):
        assert ipaddress.ip_address(info["IPAddress"]) in subnet
        assert info["IPPrefixLen"] == 24
        assert info["Gateway"] == "10.200.10.1"
        assert info["MacAddress"]
    assert info_a["IPAddress"] != info_b["IPAddress"]
    # The address Docker knows is the one on eth0, and the default route goes via the gateway.
    assert f"inet {info_a['IPAddress']}/24" in sh(a, "ip addr show eth0")
    assert info_a["MacAddress"] in sh(a, "ip link show eth0")
    assert "default via 10.200.10.1 dev eth0" in sh(a, "ip route")
    # Docker's embedded DNS resolves the other container by name; they reach each other.
    assert info_b["IPAddress"] in sh(a, "nslookup pycni-e2e-b 127.0.0.11")
    sh(a, "ping -c1 -W2 pycni-e2e-b")
    sh(b, f"ping -c1 -W2 {info_a['IPAddress']}")
    # Each endpoint keeps its staging netns while it exists (DEL needs to see the same one).
    staged = {n for n in os.listdir("/run/netns") if n.startswith("pycni-") and "-t-" not in n}
    assert {"pycni-" + info["EndpointID"][:12] for info in (info_a, info_b)} <= staged


def test_docker_rm_and_network_rm_leave_nothing(e2e: Tracker, pycni: PycniServer) -> None:
    net = e2e.network("pycni-e2e-rm", "-d", DRIVER, "--subnet", "10.200.11.0/24")
    e2e.run("pycni-e2e-rm1", "--network", net, TEST_IMAGE, "sleep", "600")
    endpoints = list((pycni.state_dir / "endpoints").glob("*.json"))
    assert len(endpoints) == 1
    record = json.loads(endpoints[0].read_text())
    assert record["phase"] == "joined"
    cache = f"/var/lib/cni/results/{record['config']['name']}-{record['id']}-eth0"
    with open(cache) as f:
        assert json.load(f)["kind"] == "cniCacheV1"
    docker("rm", "-f", "pycni-e2e-rm1")
    assert not list((pycni.state_dir / "endpoints").glob("*.json"))
    docker("network", "rm", net)
    assert not list((pycni.state_dir / "networks").glob("*.json"))
    # (the leak audit of the e2e fixture checks links, netns, iptables, cache files)


def test_docker_run_rm_many_at_once(e2e: Tracker) -> None:
    """Containers started concurrently on one network all get distinct working addresses."""
    net = e2e.network("pycni-e2e-par", "-d", DRIVER, "--subnet", "10.200.12.0/24")
    names = [f"pycni-e2e-par{n}" for n in range(8)]
    errors: list[str] = []

    def start(name: str) -> None:
        proc = docker("run", "-d", "--name", name, "--network", net, TEST_IMAGE, "sleep", "600",
                      check=False)
        if proc.returncode != 0:
            errors.append(proc.stderr)

    e2e.containers.extend(names)
    threads = [threading.Thread(target=start, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    addresses = {inspect_net(n, net)["IPAddress"] for n in names}
    assert len(addresses) == len(names)
    sh(names[0], " && ".join(f"ping -c1 -W2 {ip}" for ip in sorted(addresses)))


def test_named_conflist_with_cni_ipam(e2e: Tracker, pycni: PycniServer) -> None:
    """--ipam-driver null: host-local chooses, pycni reports it, Docker's DNS knows it."""
    pycni.write_conflist("e2e-hl", {
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "bridge", "bridge": "pycni-e2ehl", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.13.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "firewall"},
        ],
    })
    net = e2e.network("pycni-e2e-hl", "-d", DRIVER, "--ipam-driver", "null",
                      "-o", "cni.network=e2e-hl")
    a = e2e.run("pycni-e2e-hl1", "--network", net, TEST_IMAGE, "sleep", "600")
    b = e2e.run("pycni-e2e-hl2", "--network", net, TEST_IMAGE, "sleep", "600")
    info = inspect_net(a, net)
    assert ipaddress.ip_address(info["IPAddress"]) in ipaddress.ip_network("10.200.13.0/24")
    assert info["Gateway"] == "10.200.13.1"
    reservation = f"/var/lib/cni/networks/e2e-hl/{info['IPAddress']}"
    with open(reservation) as f:
        assert f.read().split()[0] == info["EndpointID"]
    assert info["IPAddress"] in sh(b, "nslookup pycni-e2e-hl1 127.0.0.11")
    sh(b, "ping -c1 -W2 pycni-e2e-hl1")
    e2e.cleanup()
    # host-local released the addresses; the bridge belongs to the conflist's network, and
    # pycni created it, so it went with the Docker network.
    assert not os.path.exists(reservation)


def test_named_conflist_with_docker_ipam(e2e: Tracker, pycni: PycniServer) -> None:
    """Docker's IPAM chooses; the chain's host-local is told through CNI_ARGS IP=."""
    pycni.write_conflist("e2e-dk", {
        "cniVersion": "0.4.0",
        "plugins": [
            {"type": "bridge", "bridge": "pycni-e2edk", "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.14.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "firewall"},
        ],
    })
    net = e2e.network("pycni-e2e-dk", "-d", DRIVER, "--subnet", "10.200.14.0/24",
                      "-o", "cni.network=e2e-dk")
    a = e2e.run("pycni-e2e-dk1", "--network", net, "--ip", "10.200.14.77", TEST_IMAGE,
                "sleep", "600")
    assert inspect_net(a, net)["IPAddress"] == "10.200.14.77"
    assert "inet 10.200.14.77/24" in sh(a, "ip addr show eth0")
    with open("/var/lib/cni/networks/e2e-dk/10.200.14.77") as f:
        assert f.read().split()[0] == inspect_net(a, net)["EndpointID"]


def test_docker_ipam_outside_the_chains_range_is_refused(e2e: Tracker, pycni: PycniServer) -> None:
    pycni.write_conflist("e2e-out", {
        "cniVersion": "1.0.0",
        "plugins": [{"type": "bridge", "bridge": "pycni-e2eout",
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.15.0/24"}]]}}],
    })
    proc = docker("network", "create", "-d", DRIVER, "--subnet", "10.200.16.0/24",
                  "-o", "cni.network=e2e-out", "pycni-e2e-out", check=False)
    assert proc.returncode != 0
    assert "outside the chain's host-local ranges" in proc.stderr
    assert "--ipam-driver null" in proc.stderr


def test_unknown_conflist_and_option_are_clear_errors(e2e: Tracker) -> None:
    proc = docker("network", "create", "-d", DRIVER, "-o", "cni.network=nope",
                  "pycni-e2e-nope", check=False)
    assert proc.returncode != 0
    assert "no CNI network named 'nope'" in proc.stderr
    proc = docker("network", "create", "-d", DRIVER, "-o", "cni.brdige=x",
                  "pycni-e2e-typo", check=False)
    assert proc.returncode != 0
    assert "unknown option 'cni.brdige'" in proc.stderr


def test_macvlan_on_a_parent_the_test_makes(e2e: Tracker, pycni: PycniServer) -> None:
    """macvlan (bridge mode) over a veth the test creates: this kernel has no dummy links."""
    from tests.conftest import run

    run("ip", "link", "add", "pycni-mvp0", "type", "veth", "peer", "name", "pycni-mvp1")
    try:
        run("ip", "link", "set", "pycni-mvp0", "up")
        run("ip", "link", "set", "pycni-mvp1", "up")  # a veth has carrier only with both ends up
        pycni.write_conflist("e2e-mv", {
            "cniVersion": "1.0.0",
            "plugins": [{"type": "macvlan", "master": "pycni-mvp0", "mode": "bridge",
                         "ipam": {"type": "host-local",
                                  "ranges": [[{"subnet": "10.200.17.0/24",
                                               "gateway": "10.200.17.254"}]],
                                  "routes": [{"dst": "0.0.0.0/0"}]}}],
        })
        net = e2e.network("pycni-e2e-mv", "-d", DRIVER, "--ipam-driver", "null",
                          "-o", "cni.network=e2e-mv")
        a = e2e.run("pycni-e2e-mv1", "--network", net, TEST_IMAGE, "sleep", "600")
        b = e2e.run("pycni-e2e-mv2", "--network", net, TEST_IMAGE, "sleep", "600")
        ip_b = inspect_net(b, net)["IPAddress"]
        assert ipaddress.ip_address(ip_b) in ipaddress.ip_network("10.200.17.0/24")
        sh(a, f"ping -c1 -W2 {ip_b}")
    finally:
        e2e.cleanup()  # before the parent goes: macvlan's DEL needs its master
        e2e.containers.clear()
        e2e.networks.clear()
        run("ip", "link", "del", "pycni-mvp0", check=False)


def test_failing_plugin_names_itself_and_leaves_nothing(e2e: Tracker, pycni: PycniServer) -> None:
    pycni.write_conflist("e2e-fail", {
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "bridge", "bridge": "pycni-e2efl", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.18.0/24"}]]}},
            {"type": "firewall"},
            {"type": "pycni-test-fail"},
        ],
    })
    net = e2e.network("pycni-e2e-fail", "-d", DRIVER, "--ipam-driver", "null",
                      "-o", "cni.network=e2e-fail")
    netns_before = set(os.listdir("/run/netns"))
    proc = docker("run", "--rm", "--name", "pycni-e2e-fail1", "--network", net, TEST_IMAGE,
                  "true", check=False)
    e2e.containers.append("pycni-e2e-fail1")
    assert proc.returncode != 0
    assert 'CNI plugin "pycni-test-fail" failed (ADD)' in proc.stderr
    assert "pycni-test-fail refuses on purpose" in proc.stderr
    assert "Traceback" not in proc.stderr and "<html" not in proc.stderr.lower()
    # Undone already, before any docker rm: no endpoint record, no staging netns.
    assert not list((pycni.state_dir / "endpoints").glob("*.json"))
    assert set(os.listdir("/run/netns")) == netns_before


def test_plugin_restarted_between_run_and_rm(e2e: Tracker, pycni: PycniServer) -> None:
    net = e2e.network("pycni-e2e-rs", "-d", DRIVER, "--subnet", "10.200.19.0/24")
    a = e2e.run("pycni-e2e-rs1", "--network", net, TEST_IMAGE, "sleep", "600")
    pycni.restart(signal.SIGTERM)
    b = e2e.run("pycni-e2e-rs2", "--network", net, TEST_IMAGE, "sleep", "600")
    sh(b, "ping -c1 -W2 pycni-e2e-rs1")
    pycni.restart(signal.SIGKILL)
    docker("rm", "-f", a)
    docker("rm", "-f", b)
    docker("network", "rm", net)


def test_api_errors_are_json(pycni: PycniServer) -> None:
    status, body = call("NetworkDriver.CreateEndpoint", b"{not json")
    assert status == 400 and "Err" in json.loads(body)
    status, body = call("NetworkDriver.Nope")
    assert status == 404 and "Err" in json.loads(body)
    status, body = call("NetworkDriver.AllocateNetwork", json.dumps({"NetworkID": "a" * 64}).encode())
    assert status == 400 and "swarm" in json.loads(body)["Err"]
    status, body = call("NetworkDriver.DeleteEndpoint",
                        json.dumps({"NetworkID": "a" * 64, "EndpointID": "b" * 64}).encode())
    assert status == 200 and json.loads(body) == {}
    status, body = call("NetworkDriver.GetCapabilities")
    assert status == 200 and json.loads(body)["Scope"] == "local"
