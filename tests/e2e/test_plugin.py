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
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_IMAGE, docker, run, unmet
from tests.e2e.conftest import PLUGIN, PLUGIN_MODE, PycniServer, Tracker, call, plugin_id
from tests.e2e.test_engine_restart import engine_back, restart_engine, wait_running
from tests.e2e.test_health import pycni_cli

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
    log_start = pycni.log_path.stat().st_size
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
    # pycni's lines reach dockerd's log at their own level: INFO as info, never as error
    with pycni.log_path.open(errors="replace") as log:
        log.seek(log_start)
        ours = [line for line in log if f"plugin={plugin_id()}" in line]
    infos = [line for line in ours if " INFO shim." in line]
    assert infos and all("level=info" in line for line in infos), ours[-5:]
    # pycni ls on the host names the network: it finds the plugin's driver name itself
    assert "PYCNI_DRIVER_NAME" not in os.environ
    assert net in pycni_cli(pycni, "ls").stdout.split()


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


@pytest.fixture
def registry() -> Iterator[str]:
    """A registry of the test's own on loopback (Debian's docker-registry), as ``host:port``.

    ``docker plugin upgrade`` only pulls; Docker talks plain HTTP to registries on 127.0.0.0/8.
    """
    binary = os.environ.get("PYCNI_E2E_REGISTRY") or shutil.which("docker-registry")
    if not binary:
        unmet("needs docker-registry (make test-plugin unpacks Debian's into build/)")
        raise AssertionError("unreachable")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = Path(tempfile.mkdtemp(prefix="pycni-e2e-registry-"))
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {root / 'data'}}}}}\n"
        f"http: {{addr: 127.0.0.1:{port}}}\n"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, f"docker-registry exited {proc.returncode}"
                assert time.monotonic() < deadline, "docker-registry did not answer within 20s"
                time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        shutil.rmtree(root, ignore_errors=True)


NEXT = "pycni: the next version (test_plugin.py)"


def push_next_version(registry: str) -> str:
    """The installed plugin's rootfs with a config marked as the next version, pushed to
    ``registry``; its reference."""
    ref = f"{registry}/pycni:next"
    data_root = docker("info", "-f", "{{.DockerRootDir}}").stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="pycni-e2e-next-"))
    try:
        run("cp", "-a", f"{data_root}/plugins/{plugin_id()}/rootfs", str(work / "rootfs"))
        config = json.loads((REPO / "plugin.json").read_text())
        config["description"] = NEXT
        (work / "config.json").write_text(json.dumps(config))
        docker("plugin", "create", ref, str(work), timeout=300)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        docker("plugin", "push", ref, timeout=300)
    finally:
        docker("plugin", "rm", "-f", ref, check=False)
    return ref


def test_upgrade_keeps_networks_and_endpoints(
        e2e: Tracker, pycni: PycniServer, plugin_back: None, registry: str) -> None:
    """``docker plugin upgrade`` as Docker allows it: the plugin disabled (``-f``, its networks
    stay), the new version pulled in place under the same name and id, enabled again. The
    networks, a running container's endpoint and a stopped container carry on with it, on
    the state that stayed on the host."""
    ref = push_next_version(registry)
    net = e2e.network("pycni-e2e-pg", "-d", PLUGIN, "--subnet", "10.200.95.0/24")
    up = e2e.run("pycni-e2e-pg1", "--network", net, "-p", "18195:80", TEST_IMAGE, "sh", "-c",
                 "echo hello >/tmp/index.html && exec httpd -f -p 80 -h /tmp")
    down = e2e.run("pycni-e2e-pg2", "--network", net, TEST_IMAGE, "sleep", "900")
    docker("stop", "-t", "0", down)
    before = plugin_id()

    pycni.stop()  # docker plugin disable -f: upgrade refuses an enabled plugin
    # The CLI asks before it upgrades from another reference than the plugin's own.
    proc = subprocess.run(["docker", "plugin", "upgrade", "--grant-all-permissions", PLUGIN, ref],
                          input="y\n", capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0 and "Upgraded plugin" in proc.stdout, proc.stdout + proc.stderr
    pycni.start()

    # The same plugin (name, id, socket directory) with the new rootfs.
    assert docker("plugin", "inspect", "-f", "{{.Id}}", PLUGIN).stdout.strip() == before
    assert docker("plugin", "inspect", "-f", "{{.Config.Description}}", PLUGIN).stdout.strip() == NEXT
    assert json.loads(docker("network", "inspect", net).stdout)[0]["Driver"] == PLUGIN
    docker("start", down)
    ping(down, up)
    got = docker("exec", down, "sh", "-c",
                 f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {up} 80").stdout
    assert "hello" in got, got
    with urllib.request.urlopen("http://127.0.0.1:18195/", timeout=5) as answer:
        assert answer.read() == b"hello\n"  # its published port, through the new version
    late = e2e.run("pycni-e2e-pg3", "--network", net, TEST_IMAGE, "sleep", "900")
    ping(late, up)
    docker("rm", "-f", up)  # made by the old version, removed by the new (leak audit)


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
