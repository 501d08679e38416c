"""Crashes and restarts: SIGKILL ``pycni serve`` in the middle of CreateEndpoint or DeleteEndpoint,
start it again, and nothing may be left behind (the e2e fixture's leak audit).

A test plugin (``pycni-test-block``, last in the chain) blocks its ADD or DEL while a flag file
exists, so the kill lands while the chain's other plugins have done their part: bridge has made
the veth and host-local has reserved the address, firewall has added its rules.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TEST_IMAGE, docker
from tests.e2e.conftest import DRIVER, PycniServer, Tracker, not_with_plugin

pytestmark = pytest.mark.e2e

FLAGS = Path("/run/pycni-test-block")

BLOCK_PLUGIN = """#!/bin/sh
# Pass-through CNI plugin that blocks ADD/DEL while $FLAGS/block-<VERB> exists (60 s at most).
stdin=$(cat)
flags=%(flags)s
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'; exit 0 ;;
esac
if [ -e "$flags/block-$CNI_COMMAND" ]; then
    touch "$flags/in-$CNI_COMMAND"
    i=0
    while [ -e "$flags/block-$CNI_COMMAND" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
fi
if [ "$CNI_COMMAND" = ADD ]; then
    printf '%%s' "$stdin" | python3 -c 'import json,sys; c=json.load(sys.stdin); r=c.get("prevResult") or {}; r["cniVersion"]=c["cniVersion"]; print(json.dumps(r))'
fi
exit 0
""".replace("%(flags)s", str(FLAGS)).replace("%%", "%")


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Whether ``check`` holds within ``timeout`` seconds (reconciliation runs beside serving,
    so a test can't know the moment it is done)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture
def blocking_network(e2e: Tracker, pycni: PycniServer) -> str:
    plugin = pycni.plugin_dir / "pycni-test-block"
    plugin.write_text(BLOCK_PLUGIN)
    plugin.chmod(0o755)
    FLAGS.mkdir(exist_ok=True)
    for f in FLAGS.iterdir():
        f.unlink()
    pycni.write_conflist("e2e-block", {
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "bridge", "bridge": "pycni-e2ebk", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.40.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "firewall"},
            {"type": "pycni-test-block"},
        ],
    })
    return e2e.network("pycni-e2e-block", "-d", DRIVER, "--ipam-driver", "null",
                       "-o", "cni.network=e2e-block")


def wait_for(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def records(pycni: PycniServer) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in (pycni.state_dir / "endpoints").glob("*.json")]


SIGKILL_ONLY_A_CHILD = not_with_plugin(
    "pycni is killed with SIGKILL mid-request, and the blocking plugin's flags live in the "
    "host's /run: Docker stops a managed plugin only with SIGTERM, and its /run is its own")


@SIGKILL_ONLY_A_CHILD
def test_sigkill_during_create_endpoint(blocking_network: str, e2e: Tracker,
                                        pycni: PycniServer) -> None:
    (FLAGS / "block-ADD").touch()
    e2e.containers.append("pycni-e2e-kc")
    run = subprocess.Popen(
        ["docker", "run", "-d", "--name", "pycni-e2e-kc", "--network", blocking_network,
         TEST_IMAGE, "sleep", "600"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(FLAGS / "in-ADD")
        # bridge and firewall are done, the chain's last plugin is running: kill pycni now.
        [rec] = records(pycni)
        assert rec["phase"] == "creating"
        pycni.stop(signal.SIGKILL)
    finally:
        (FLAGS / "block-ADD").unlink()
    pycni.start()  # reconciles at start, beside serving: the half-made endpoint is torn down
    run.communicate(timeout=120)
    assert eventually(lambda: "half-made" in pycni.log()), pycni.log()
    # Whether Docker's retry went through or the run failed, removing it leaves nothing.
    docker("rm", "-f", "pycni-e2e-kc", check=False)
    assert eventually(lambda: records(pycni) == []), records(pycni)


@SIGKILL_ONLY_A_CHILD
def test_sigkill_during_delete_endpoint(blocking_network: str, e2e: Tracker,
                                        pycni: PycniServer) -> None:
    e2e.run("pycni-e2e-kd", "--network", blocking_network, TEST_IMAGE, "sleep", "600")
    (FLAGS / "block-DEL").touch()
    rm = subprocess.Popen(["docker", "rm", "-f", "pycni-e2e-kd"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(FLAGS / "in-DEL")
        [rec] = records(pycni)
        assert rec["phase"] == "deleting"
        pycni.stop(signal.SIGKILL)
    finally:
        (FLAGS / "block-DEL").unlink()
    pycni.start()  # reconciles at start, beside serving: the half-deleted endpoint goes
    rm.communicate(timeout=120)
    docker("rm", "-f", "pycni-e2e-kd", check=False)
    assert eventually(lambda: records(pycni) == []), records(pycni)


def test_gc_removes_orphans_and_says_so(e2e: Tracker, pycni: PycniServer) -> None:
    """Leftovers pycni has no record of: a staging netns, a temporary link, a CNI cache entry."""
    from tests.conftest import run

    orphan = "ab" * 32
    run("ip", "netns", "add", f"pycni-{orphan[:12]}")
    run("ip", "link", "add", f"pcn{orphan[:12]}", "type", "veth", "peer", "name", "pycni-orph1")
    pcli = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "pycni")
    env = {**os.environ, "PYCNI_STATE_DIR": str(pycni.state_dir)}
    dry = subprocess.run([pcli, "gc", "--dry-run"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert dry.returncode == 0, dry.stderr
    assert f"netns pycni-{orphan[:12]}" in dry.stdout and f"link pcn{orphan[:12]}" in dry.stdout
    assert "would remove 2 leftover(s)" in dry.stdout
    assert os.path.exists(f"/run/netns/pycni-{orphan[:12]}")  # a dry run removes nothing
    real = subprocess.run([pcli, "gc"], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert real.returncode == 0, real.stderr
    assert "removed 2 leftover(s)" in real.stdout
    assert not os.path.exists(f"/run/netns/pycni-{orphan[:12]}")
    again = subprocess.run([pcli, "gc"], capture_output=True, text=True, env=env, timeout=60,
                           check=False)
    assert "nothing to remove" in again.stdout


def test_gc_in_process_keeps_networks_docker_was_not_asked_about(
        e2e: Tracker, pycni: PycniServer, tmp_path: Path) -> None:
    """With nothing on --socket, gc runs in process; a socket named cni.sock once made it ask
    Docker about driver "cni", find nothing, and tear down every live pycni network."""
    net = e2e.network("pycni-e2e-gcname", "-d", DRIVER, "--subnet", "10.201.78.0/24")
    e2e.run("pycni-e2e-gcname1", "--network", net, TEST_IMAGE, "sleep", "600")
    pcli = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "pycni")
    env = {**os.environ, "PYCNI_STATE_DIR": str(pycni.state_dir)}
    proc = subprocess.run([pcli, "gc", "--socket", str(tmp_path / "cni.sock")],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to remove" in proc.stdout, proc.stdout
    assert len(list((pycni.state_dir / "networks").iterdir())) >= 1
    out = docker("exec", "pycni-e2e-gcname1", "ip", "-4", "addr", "show", "eth0").stdout
    assert "10.201.78." in out


def test_a_container_removed_while_pycni_was_down_frees_its_port(
        e2e: Tracker, pycni: PycniServer) -> None:
    """Docker can't tell a stopped driver that a container went; once pycni is back, the
    leftover is reconciled within seconds of Docker dropping its sandbox (no `pycni gc`), and
    until then the port's error names the leftover and `pycni gc`."""
    net = e2e.network("pycni-e2e-gone", "-d", DRIVER, "--subnet", "10.201.77.0/24")
    e2e.run("pycni-e2e-gone1", "--network", net, "-p", "127.0.0.1:28090:80",
            TEST_IMAGE, "sleep", "600")
    started = time.monotonic()
    pycni.stop(signal.SIGKILL)
    try:
        docker("rm", "-f", "pycni-e2e-gone1", check=False, timeout=120)
    finally:
        pycni.start()
    e2e.containers.append("pycni-e2e-gone2")
    deadline = time.monotonic() + 90
    while True:
        proc = docker("run", "-d", "--name", "pycni-e2e-gone2", "--network", net,
                      "-p", "127.0.0.1:28090:80", TEST_IMAGE, "sleep", "600", check=False)
        if proc.returncode == 0:
            break
        docker("rm", "-f", "pycni-e2e-gone2", check=False)
        assert "28090" in proc.stderr and "pycni gc" in proc.stderr, proc.stderr
        assert time.monotonic() < deadline, "the leftover kept its port for 90 s"
        time.sleep(2)
    took = time.monotonic() - started
    print(f"port free again {took:.0f} s after the container was created")


FAIL_PLUGIN = """#!/bin/sh
# Fails ADD and DEL (the DEL until $FLAGS/del-ok exists), as a broken third-party plugin does.
cat >/dev/null
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'; exit 0 ;;
DEL) [ -e %(flags)s/del-ok ] && exit 0 ;;
esac
echo '{"cniVersion":"1.0.0","code":11,"msg":"pycni-test-faildel refuses '"$CNI_COMMAND"'"}'
exit 1
""".replace("%(flags)s", str(FLAGS))


@not_with_plugin("the failing plugin's flag lives in the host's /run")
def test_a_plugin_failing_add_and_del_leaves_nothing_but_what_gc_removes(
    e2e: Tracker, pycni: PycniServer
) -> None:
    """The chain users write (bridge isGateway + ipMasq, host-local, portmap, firewall) and a
    last plugin whose ADD and DEL both fail: every other plugin is still undone (address,
    masquerade, firewall rules), the error names both failures, and what is left is libcni's
    cache entry alone, which ``pycni gc`` DELs once the plugin works again."""
    plugin = pycni.plugin_dir / "pycni-test-faildel"  # not the session's pycni-test-fail
    plugin.write_text(FAIL_PLUGIN)
    plugin.chmod(0o755)
    FLAGS.mkdir(exist_ok=True)
    (FLAGS / "del-ok").unlink(missing_ok=True)
    pycni.write_conflist("e2e-fail", {"cniVersion": "1.0.0", "plugins": [
        {"type": "bridge", "bridge": "pycni-e2efl", "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.41.0/24"}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
        {"type": "pycni-test-faildel"}]})
    net = e2e.network("pycni-e2e-fail", "-d", DRIVER, "--ipam-driver", "null",
                      "-o", "cni.network=e2e-fail")
    cache = Path("/var/lib/cni/results")
    before = set(cache.glob("e2e-fail-*")) if cache.exists() else set()
    for n in range(2):  # a retry leaks nothing either
        e2e.containers.append(f"pycni-e2e-fail-{n}")
        proc = docker("run", "-d", "--name", f"pycni-e2e-fail-{n}", "--network", net,
                      TEST_IMAGE, "sleep", "60", check=False)
        assert proc.returncode != 0
        assert 'CNI plugin "pycni-test-faildel" failed (ADD)' in proc.stderr, proc.stderr
        assert "undoing it failed too" in proc.stderr and "pycni gc" in proc.stderr
        docker("rm", "-f", f"pycni-e2e-fail-{n}", check=False)
    left = set(cache.glob("e2e-fail-*")) - before
    assert len(left) == 2, left  # what could not be undone, kept for gc
    reserved = list(Path("/var/lib/cni/networks/e2e-fail").glob("10.*"))
    assert reserved == []  # host-local was undone past the failing DEL
    pcli = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "pycni")
    env = {**os.environ, "PYCNI_STATE_DIR": str(pycni.state_dir)}
    try:
        # what is left is shown, naming the plugin whose DEL failed
        dry = subprocess.run([pcli, "gc", "--dry-run"], capture_output=True, text=True, env=env,
                             timeout=120, check=False)
        assert dry.returncode == 0, dry.stderr
        assert dry.stdout.count("CNI attachment e2e-fail/") == 2, dry.stdout
        assert 'its undo failed (CNI plugin "pycni-test-faildel" failed (DEL)' in dry.stdout
        (FLAGS / "del-ok").touch()
        # gc DELs it now (or the server's own reconciler did, if it was looking again anyway)
        gc = subprocess.run([pcli, "gc"], capture_output=True, text=True, env=env, timeout=120,
                            check=False)
        assert gc.returncode == 0, gc.stderr
        assert eventually(lambda: set(cache.glob("e2e-fail-*")) - before == set(), 10), \
            gc.stdout
    finally:
        (FLAGS / "del-ok").unlink(missing_ok=True)
        plugin.unlink(missing_ok=True)
        subprocess.run(["ip", "link", "del", "pycni-e2efl"], capture_output=True, check=False)
