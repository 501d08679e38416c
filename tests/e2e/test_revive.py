"""Restart-policy containers when pycni starts after Docker.

dockerd restores ``--restart always`` / ``unless-stopped`` containers as it starts. Those on a
pycni network fail while pycni is not serving (Docker gives up after its ~30 s plugin lookup,
``plugin "pycni" not found``) and stay Exited; Docker's bridge has no such gap. When pycni
starts, it starts them (``shim.revive``); ``pycni doctor`` names any it could not start.

The engine is restarted as in ``test_engine_restart.py``, and put back by ``engine_back``.
Subnets are 10.201.171.0/24 to 10.201.173.0/24; no traffic leaves the test's containers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_IMAGE, docker
from tests.e2e.conftest import DRIVER, PLUGIN_MODE, PycniServer, Tracker
from tests.e2e.test_engine_restart import engine_back, restart_engine, wait_running
from tests.e2e.test_health import pycni_cli, report

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(PLUGIN_MODE, reason="plugin mode: Docker enables a managed plugin before it restores containers: nothing to revive (test_plugin.py restarts dockerd under restart-policy containers)"),
]

__all__ = ["engine_back"]  # the fixture, used by name

#: A pass-through CNI plugin whose ADD fails while the gate file exists.
GATE_PLUGIN = """#!/bin/sh
stdin=$(cat)
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'; exit 0 ;;
ADD)
    if [ -e %(gate)s ]; then
        echo '{"code":11,"msg":"pycni-test-gate is closed"}'
        exit 1
    fi
    printf '%%s' "$stdin" | python3 -c 'import json,sys; c=json.load(sys.stdin); r=c.get("prevResult") or {}; r["cniVersion"]=c["cniVersion"]; print(json.dumps(r))' ;;
esac
exit 0
"""
GATE = Path("/run/pycni-test-gate")


def state(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(docker("inspect", name).stdout)[0]["State"]
    return data


def wait_failed(name: str, timeout: float = 120) -> dict[str, Any]:
    """Until Docker has given up starting ``name`` (not running, the failure on record)."""
    deadline = time.monotonic() + timeout
    while True:
        now = state(name)
        if not now["Running"] and not now["Restarting"] and now["Error"]:
            return now
        assert time.monotonic() < deadline, f"{name}: Docker did not give up: {now}"
        time.sleep(1)


def test_restart_policy_containers_come_back_when_pycni_starts_after_docker(
    engine_back: object, e2e: Tracker, pycni: PycniServer
) -> None:
    gate = pycni.plugin_dir / "pycni-test-gate"
    gate.write_text(GATE_PLUGIN % {"gate": GATE})
    gate.chmod(0o755)
    GATE.unlink(missing_ok=True)
    pycni.write_conflist("e2e-rvgate", {
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "bridge", "bridge": "pycni-e2ervg", "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.173.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "firewall"},
            {"type": "pycni-test-gate"},
        ],
    })
    bridge = e2e.network("pycni-e2e-rvb", "-d", "bridge", "--subnet", "10.201.171.0/24")
    net = e2e.network("pycni-e2e-rvp", "-d", DRIVER, "--subnet", "10.201.172.0/24")
    gated = e2e.network("pycni-e2e-rvg", "-d", DRIVER, "--ipam-driver", "null",
                        "-o", "cni.network=e2e-rvgate")
    sleep = (TEST_IMAGE, "sleep", "900")
    on_bridge = e2e.run("pycni-e2e-rvb1", "--restart", "always", "--network", bridge, *sleep)
    always = e2e.run("pycni-e2e-rvp1", "--restart", "always", "--network", net, *sleep)
    unless = e2e.run("pycni-e2e-rvp2", "--restart", "unless-stopped", "--network", net, *sleep)
    by_user = e2e.run("pycni-e2e-rvp3", "--restart", "unless-stopped", "--network", net, *sleep)
    blocked = e2e.run("pycni-e2e-rvp4", "--restart", "always", "--network", gated, *sleep)
    docker("stop", "-t", "1", by_user)  # its user stopped it: Docker leaves it stopped

    pycni.stop()
    try:
        restart_engine()  # without live-restore: containers stop, then Docker restores them
        wait_running(on_bridge, timeout=30)  # the bridge: Docker restarts it by itself
        for name in (always, unless, blocked):
            failed = wait_failed(name)
            assert failed["Status"] == "exited", failed
        assert state(by_user)["Error"] == ""
        # pycni down: doctor names what Docker could not start
        proc = pycni_cli(pycni, "doctor")
        for name in (always, unless, blocked):
            assert f"FAIL container {name}: " in proc.stdout, report(proc)
        assert by_user not in proc.stdout and on_bridge not in proc.stdout, report(proc)
        GATE.touch()  # this one pycni won't be able to start either
        log_start = pycni.log_path.stat().st_size
    finally:
        pycni.start()
    try:
        started = time.monotonic()
        wait_running(always, timeout=60)
        wait_running(unless, timeout=60)
        print(f"revive: both running {time.monotonic() - started:.1f}s after pycni started")
        docker("exec", always, "ping", "-c1", "-W2", unless)  # networked, and by name
        docker("exec", unless, "ping", "-c1", "-W2", always)
        assert not state(by_user)["Running"]  # what its user stopped stays stopped
        assert not state(blocked)["Running"]
        proc = pycni_cli(pycni, "doctor")
        assert f"FAIL container {blocked}: " in proc.stdout, report(proc)
        assert "pycni-test-gate is closed" in proc.stdout, report(proc)
        for name in (always, unless, by_user, on_bridge):
            assert name not in proc.stdout, report(proc)
        log = pycni.log_path.read_text(errors="replace")[log_start:]
        assert f"container {always} (restart policy always): Docker could not start it" in log
        assert f"container {unless} started" in log
        # Docker's own words around the plugin's differ by engine ("failed to create endpoint
        # …" up to 27, "failed to set up container networking: …" on 28): the plugin's reason
        # is in both
        [start_error] = [line for line in log.splitlines() if f"container {blocked}: " in line]
        assert "start failed: " in start_error and "pycni-test-gate is closed" in start_error, \
            start_error
        assert by_user not in log
    finally:
        GATE.unlink(missing_ok=True)
