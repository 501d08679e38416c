"""pycni as a managed plugin (``make test-plugin``): what Docker does with it that it never does
with a ``pycni serve`` it merely finds on a socket.

Run only with ``PYCNI_E2E_PLUGIN=1``, against the plugin ``make plugin`` enabled. Docker enables
a managed plugin before it restores containers, refuses to disable one that networks use, and
keeps its networks across the plugin's own restarts; pycni's state lives on the host
(/var/lib/pycni), so nothing is lost in between.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_IMAGE, docker
from tests.e2e.conftest import PLUGIN, PLUGIN_MODE, PycniServer, Tracker, call, plugin_id
from tests.e2e.test_engine_restart import engine_back, restart_engine, wait_running

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not PLUGIN_MODE, reason="managed plugin only (PYCNI_E2E_PLUGIN=1, make test-plugin)"),
]

__all__ = ["engine_back"]  # a fixture these tests use, defined with the engine-restart tests


def enabled() -> bool:
    return docker("plugin", "inspect", "-f", "{{.Enabled}}", PLUGIN).stdout.strip() == "true"


@pytest.fixture
def plugin_back(pycni: PycniServer) -> Iterator[None]:
    """Whatever a test does to the plugin, it is enabled and answering afterwards."""
    yield
    if not enabled():
        pycni.start()


def records(pycni: PycniServer, kind: str) -> set[str]:
    return {p.name for p in (pycni.state_dir / kind).glob("*.json")}


def ping(container: str, name: str) -> None:
    docker("exec", container, "ping", "-c1", "-W2", name)


def test_docker_knows_it_as_a_plugin(e2e: Tracker, pycni: PycniServer) -> None:
    listed = docker("plugin", "ls", "--format", "{{.Name}} {{.Enabled}}").stdout.split("\n")
    assert f"{PLUGIN} true" in listed
    # Docker gives the plugin a socket directory of its own, named by its id.
    assert call("Plugin.Activate", path=f"/run/docker/plugins/{plugin_id()}/pycni.sock")[0] == 200
    assert not os.path.exists("/run/docker/plugins/pycni.sock")
    net = e2e.network("pycni-e2e-pl", "-d", PLUGIN, "--subnet", "10.200.90.0/24")
    assert json.loads(docker("network", "inspect", net).stdout)[0]["Driver"] == PLUGIN
    # The state is the host's: the network's record is in /var/lib/pycni, not in the plugin.
    net_id = docker("network", "inspect", "-f", "{{.Id}}", net).stdout.strip()
    assert f"{net_id}.json" in records(pycni, "networks")


def test_disable_is_refused_while_a_network_uses_it(e2e: Tracker, plugin_back: None) -> None:
    net = e2e.network("pycni-e2e-pd", "-d", PLUGIN, "--subnet", "10.200.91.0/24")
    proc = docker("plugin", "disable", PLUGIN, check=False)
    assert proc.returncode != 0 and "in use" in proc.stderr, proc.stderr
    assert enabled()
    docker("network", "rm", net)
    e2e.networks.remove(net)


def test_restarted_plugin_keeps_networks_and_endpoints(
        e2e: Tracker, pycni: PycniServer, plugin_back: None) -> None:
    """What an upgrade does to a running plugin, as far as Docker allows it without a registry
    (``docker plugin upgrade`` pulls the new version from one): the plugin is disabled with its
    networks in place (``-f``; Docker refuses otherwise), started again, and carries on — a
    running container's endpoint is removed as usual later, a stopped container starts again
    and new containers join, all with the state that stayed on the host."""
    net = e2e.network("pycni-e2e-pu", "-d", PLUGIN, "--subnet", "10.200.92.0/24")
    up = e2e.run("pycni-e2e-pu1", "--network", net, TEST_IMAGE, "sleep", "900")
    down = e2e.run("pycni-e2e-pu2", "--network", net, TEST_IMAGE, "sleep", "900")
    docker("stop", "-t", "0", down)
    networks, endpoints = records(pycni, "networks"), records(pycni, "endpoints")
    assert networks and endpoints

    pycni.stop()  # docker plugin disable -f: SIGTERM
    assert not enabled()
    assert (records(pycni, "networks"), records(pycni, "endpoints")) == (networks, endpoints)
    pycni.start()

    docker("start", down)
    ping(down, up)
    ping(up, down)
    late = e2e.run("pycni-e2e-pu3", "--network", net, TEST_IMAGE, "sleep", "900")
    ping(late, up)
    docker("rm", "-f", up)  # an endpoint made before the restart goes as it should (leak audit)


def test_restart_always_containers_come_back_with_dockerd(
        engine_back: object, e2e: Tracker, pycni: PycniServer) -> None:
    """Docker enables the plugin before it restores containers: nothing waits, nothing fails."""
    net = e2e.network("pycni-e2e-pr", "-d", PLUGIN, "--subnet", "10.200.93.0/24")
    e2e.run("pycni-e2e-pr1", "--restart", "always", "--network", net, TEST_IMAGE, "sleep", "900")
    e2e.run("pycni-e2e-pr2", "--restart", "always", "--network", net, TEST_IMAGE, "sleep", "900")
    networks = records(pycni, "networks")
    restart_engine()
    assert enabled()
    wait_running("pycni-e2e-pr1", timeout=30)
    wait_running("pycni-e2e-pr2", timeout=30)
    ping("pycni-e2e-pr1", "pycni-e2e-pr2")
    ping("pycni-e2e-pr2", "pycni-e2e-pr1")
    assert networks <= records(pycni, "networks")
    # Started by Docker with the plugin already up: no failed start for pycni to make up for.
    for name in ("pycni-e2e-pr1", "pycni-e2e-pr2"):
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        assert not state["Error"], state


def test_no_state_inside_the_plugin() -> None:
    """Everything that must outlive the plugin is a host mount (plugin.json)."""
    info = json.loads(docker("plugin", "inspect", PLUGIN).stdout)[0]
    mounts = {m["Destination"]: m for m in info["Settings"]["Mounts"]}
    for path in ("/var/lib/pycni", "/var/lib/cni", "/run/netns", "/etc/cni/net.d", "/opt/cni/bin",
                 "/usr/lib/cni"):
        assert path in mounts and Path(mounts[path]["Source"]).exists(), path
    assert "rshared" in mounts["/run/netns"]["Options"]
    assert info["Config"]["PropagatedMount"]
