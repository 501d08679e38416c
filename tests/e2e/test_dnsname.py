"""A plugin nobody here wrote: Debian's ``golang-github-containernetworking-plugin-dnsname``,
which serves the names of a network's containers through a dnsmasq of its own, as podman used
it. It names its hosts entries after ``K8S_POD_NAME`` and removes them by it at DEL, and stops
its dnsmasq when none is left: it works only if the runtime says whom each ADD and DEL serves.

The chain is what users write: bridge with ``isGateway`` + ``ipMasq``, portmap, firewall, then
dnsname. Subnet 10.201.240.0/24 (none mode), 10.201.241.0/24 (driver mode); answers come from
dnsname's dnsmasq on the bridge, never from beyond the host (only its own domain is asked).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_IMAGE, docker, run, unmet
from tests.e2e.conftest import DRIVER, PLUGIN_MODE, PycniServer, Tracker
from tests.e2e.test_none_mode import bridge_removed, exec_out
from tests.e2e.test_sandbox_place import needs_engine
from tests.e2e.test_watch import Start, cid, records, wait_for, watcher  # noqa: F401

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(PLUGIN_MODE, reason="plugin mode: the --network none mode runs no driver"),
]

DNSNAME = "/usr/lib/cni/dnsname"  # where the Debian package puts it
DOMAIN = "dns.pycni.test"
DNSNAME_DIR = Path("/run/containers/cni/dnsname")
BRIDGES = ("pcndns0", "pcndns1")  # the none mode's, the driver mode's
GATEWAY_D = "10.201.241.1"  # the driver mode's bridge, where dnsname's dnsmasq listens


def chain(bridge: str, subnet: str) -> dict[str, object]:
    return {"cniVersion": "1.0.0", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
        {"type": "dnsname", "domainName": DOMAIN}]}


def drop_dns_accepts(bridge: str) -> None:
    """dnsname's ADD opens DNS to its dnsmasq with ``-A INPUT -i BRIDGE -p udp --dport 53 -j
    ACCEPT`` and no DEL takes it out (its own leak): the test's cleanup does."""
    for line in run("iptables", "-S", "INPUT").stdout.splitlines():
        if f"-i {bridge} " in f"{line} " and "--dport 53" in line:
            run("iptables", *line.replace("-A", "-D", 1).split())


@pytest.fixture
def dnsname(pycni: PycniServer) -> Iterator[None]:
    """dnsname beside the plugins pycni runs (whichever set this run tests); at the end, its
    directory of the test's networks must be gone with their last container."""
    if not os.access(DNSNAME, os.X_OK):
        unmet(f"needs Debian's dnsname plugin at {DNSNAME} (make deps)")
    link = pycni.plugin_dir / "dnsname"
    if not link.exists():
        link.symlink_to(DNSNAME)
    before = set(os.listdir(DNSNAME_DIR)) if DNSNAME_DIR.exists() else set()
    yield
    for bridge in BRIDGES:
        drop_dns_accepts(bridge)
    left = (set(os.listdir(DNSNAME_DIR)) if DNSNAME_DIR.exists() else set()) - before
    for name in left:  # whatever a failed test left, so the next run starts clean
        pidfile = DNSNAME_DIR / name / "pidfile"
        if pidfile.exists():
            run("kill", pidfile.read_text().strip(), check=False)
        shutil.rmtree(DNSNAME_DIR / name, ignore_errors=True)
    assert not left, f"dnsname's state of {sorted(left)} outlived the network's containers"


def hosts(network: str) -> dict[str, str]:
    """dnsname's hosts file of ``network``: name → address ("" for a line without a name, as
    a runtime that passes no K8S_POD_NAME leaves)."""
    path = DNSNAME_DIR / network / "addnhosts"
    lines = [line.split() for line in path.read_text().splitlines()] if path.exists() else []
    return {(words[1] if len(words) > 1 else ""): words[0] for words in lines if words}


def resolves(client: str, name: str, server: str = "") -> str:
    """The address ``client`` gets for ``name`` in dnsname's domain ("" if none), from its
    resolv.conf's server or ``server``."""
    proc = docker("exec", client, "nslookup", f"{name}.{DOMAIN}", *([server] if server else []),
                  check=False)
    lines = proc.stdout.splitlines()
    answer = lines[lines.index(next(line for line in lines if line.startswith("Name:"))) + 1:] \
        if any(line.startswith("Name:") for line in lines) else []
    return next((line.split()[-1] for line in answer if line.startswith("Address")), "")


def answers(client: str, name: str, address: str) -> Callable[[], bool]:
    return lambda: resolves(client, name) == address


def test_compose_replicas_resolve_each_other_and_one_removed_leaves_the_others(
        e2e: Tracker, pycni: PycniServer, watcher: Start, dnsname: None,  # noqa: F811
        tmp_path: Path) -> None:
    """The none mode through ``pycni watch``: each replica under its own name, the compose
    project as namespace; ``docker rm -f`` of one replica takes its name only."""
    pycni.write_conflist("e2e-dns", chain("pcndns0", "10.201.240.0/24"))
    compose_file = tmp_path / "compose.yaml"
    compose_file.write_text(
        "services:\n"
        "  web:\n"
        f"    image: {TEST_IMAGE}\n"
        "    command: sleep 900\n"
        "    network_mode: none\n"
        "    deploy: {replicas: 2}\n"
        "    labels: {pycni.networks: e2e-dns}\n"
        "  client:\n"
        f"    image: {TEST_IMAGE}\n"
        "    command: sleep 900\n"
        "    network_mode: none\n"
        "    labels: {pycni.networks: e2e-dns}\n")
    compose = ["docker", "compose", "-f", str(compose_file), "-p", "pycni-e2e-dns"]
    web1, web2, client = ("pycni-e2e-dns-web-1", "pycni-e2e-dns-web-2",
                          "pycni-e2e-dns-client-1")
    with bridge_removed("pcndns0"):
        proc = watcher()
        try:
            run(*compose, "up", "-d", timeout=300)
            ids = [cid(c) for c in (web1, web2, client)]
            wait_for("all three named",
                     lambda: sorted(hosts("e2e-dns")) == sorted((web1, web2, client)))
            addresses = hosts("e2e-dns")
            for name in (web1, web2):
                wait_for(f"{name} resolves", answers(client, name, addresses[name]))
            assert f"search {DOMAIN}" in exec_out(client, "cat", "/etc/resolv.conf")
            args = dict(json.loads(records(pycni, ids[0])[0].read_text())["cni_args"])
            assert (args["K8S_POD_NAMESPACE"], args["K8S_POD_NAME"]) == ("pycni-e2e-dns", web1)

            docker("rm", "-f", web2)
            wait_for("web-2's name gone", lambda: web2 not in hosts("e2e-dns"))
            assert sorted(hosts("e2e-dns")) == sorted((web1, client))
            assert resolves(client, web1) == addresses[web1]  # dnsmasq still serves the rest
            assert resolves(web1, client) == addresses[client]
            assert resolves(client, web2) == ""
        finally:
            run(*compose, "down", "-t", "1", timeout=300, check=False)
        wait_for("all detached", lambda: not any(records(pycni, i) for i in ids))
        proc.terminate()
        proc.wait(20)
    # the last DEL stopped dnsname's dnsmasq
    assert subprocess.run(["pgrep", "-f", "cni/dnsname/e2e-dns/"], check=False).returncode != 0


def endpoint_args(pycni: PycniServer) -> list[dict[str, str]]:
    """The CNI_ARGS pycni's endpoint records hold (what ADD ran with, and DEL will)."""
    return [dict(json.loads(p.read_text())["cni_args"])
            for p in sorted((pycni.state_dir / "endpoints").glob("*.json"))]


def test_sandbox_network_containers_resolve_each_other_through_dnsname(
        e2e: Tracker, pycni: PycniServer, dnsname: None) -> None:
    """Driver mode with ``-o cni.place=sandbox`` (Docker >= 28): the chain runs at Join, when
    Docker can say which container the endpoint serves; an endpoint's ``driver-opt cni.args``
    goes with it."""
    needs_engine(sandbox_first=True)
    pycni.write_conflist("e2e-dnsd", chain("pcndns1", "10.201.241.0/24"))
    net = e2e.network("pycni-e2e-dnsd", "-d", DRIVER, "--subnet", "10.201.241.0/24",
                      "-o", "cni.network=e2e-dnsd", "-o", "cni.place=sandbox")
    names = ["pycni-e2e-dnsd-a", "pycni-e2e-dnsd-b", "pycni-e2e-dnsd-c"]
    with bridge_removed("pcndns1"):
        for name in names:
            e2e.run(name, "--network", f"name={net},driver-opt=cni.args=team=blue",
                    TEST_IMAGE, "sleep", "900")
        assert sorted(hosts("e2e-dnsd")) == sorted(names)
        for args in endpoint_args(pycni):
            assert args["team"] == "blue" and args["K8S_POD_NAME"] in names
            assert args["K8S_POD_NAMESPACE"] == "default"
        addresses = hosts("e2e-dnsd")
        a, b, c = names
        assert resolves(a, b, server=GATEWAY_D) == addresses[b]
        docker("rm", "-f", c)
        assert sorted(hosts("e2e-dnsd")) == sorted((a, b))  # c's name only
        assert resolves(b, a, server=GATEWAY_D) == addresses[a]
        assert resolves(a, c, server=GATEWAY_D) == ""
        for name in (a, b):
            docker("rm", "-f", name)
        docker("network", "rm", net)
    assert subprocess.run(["pgrep", "-f", "cni/dnsname/e2e-dnsd/"], check=False).returncode != 0


def test_the_staging_path_passes_an_endpoints_driver_opt_cni_args(
        e2e: Tracker, pycni: PycniServer, dnsname: None) -> None:
    """On the staging path the chain runs at CreateEndpoint, before Docker names the
    container: the endpoint's own args reach it, the container's identity cannot (README), so
    a chain with dnsname is refused there."""
    net = e2e.network("pycni-e2e-dnsa", "-d", DRIVER, "--subnet", "10.201.242.0/24")
    # Docker's CLI lowercases driver-opts (key and value): "TEAM=Blue" arrives as "team=blue"
    e2e.run("pycni-e2e-dnsa-c", "--network", f"name={net},driver-opt=cni.args=TEAM=Blue;x=1",
            TEST_IMAGE, "sleep", "900")
    [args] = endpoint_args(pycni)
    assert (args["IgnoreUnknown"], args["team"], args["x"]) == ("1", "blue", "1")
    proc = docker("run", "--rm", "--network", f"name={net},driver-opt=cni.args=K8S_POD_NAME=x",
                  TEST_IMAGE, "true", check=False)
    assert proc.returncode != 0
    assert "driver-opt cni.args 'k8s_pod_name=x': pycni sets K8S_POD_NAME itself" in proc.stderr
    # a chain with dnsname is refused there: nameless, its containers would go all at once
    pycni.write_conflist("e2e-dnss", chain("pcndns2", "10.201.243.0/24"))
    proc = docker("network", "create", "-d", DRIVER, "--subnet", "10.201.243.0/24",
                  "-o", "cni.network=e2e-dnss", "pycni-e2e-dnss", check=False)
    assert proc.returncode != 0, proc.stdout
    assert "plugins[3]: plugin dnsname serves each container under its name" in proc.stderr, \
        proc.stderr
    assert docker("network", "inspect", "pycni-e2e-dnss", check=False).returncode != 0
