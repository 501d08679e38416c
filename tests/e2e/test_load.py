"""Load and injected faults, with counts (timings belong to ``make bench``).

Short forms run in ``make test``; ``make soak`` sets the issue's full counts:
``PYCNI_LOAD_CONTAINERS=100 PYCNI_LOAD_CLIENTS=10 PYCNI_CHURN_CYCLES=500``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import TEST_IMAGE, docker
from tests.e2e.conftest import DRIVER, PycniServer, Tracker, not_with_plugin

pytestmark = pytest.mark.e2e

CONTAINERS = int(os.environ.get("PYCNI_LOAD_CONTAINERS", "24"))
CLIENTS = int(os.environ.get("PYCNI_LOAD_CLIENTS", "6"))
CYCLES = int(os.environ.get("PYCNI_CHURN_CYCLES", "40"))
FAIL_PERCENT = 5

FLAKY_PLUGIN = """#!/bin/sh
# Pass-through CNI plugin that fails about %(pct)d%% of ADDs, logging each failure it injects.
stdin=$(cat)
case "$CNI_COMMAND" in
VERSION) echo '{"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]}'; exit 0 ;;
ADD)
    roll=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
    if [ $((roll %% 100)) -lt %(pct)d ]; then
        echo "$CNI_CONTAINERID" >> %(log)s
        echo '{"code":11,"msg":"pycni-test-flaky injected a failure"}'
        exit 1
    fi
    printf '%%s' "$stdin" | python3 -c 'import json,sys; c=json.load(sys.stdin); r=c.get("prevResult") or {}; r["cniVersion"]=c["cniVersion"]; print(json.dumps(r))' ;;
esac
exit 0
"""


def test_many_containers_from_parallel_clients(e2e: Tracker) -> None:
    net = e2e.network("pycni-e2e-load", "-d", DRIVER, "--subnet", "10.200.48.0/22")
    names = [f"pycni-e2e-ld{n:03d}" for n in range(CONTAINERS)]
    e2e.containers.extend(names)

    def start(name: str) -> str:
        proc = docker("run", "-d", "--name", name, "--network", net, TEST_IMAGE, "sleep", "900",
                      check=False, timeout=300)
        return proc.stderr if proc.returncode else ""

    with ThreadPoolExecutor(CLIENTS) as pool:
        errors = [e for e in pool.map(start, names) if e]
    assert errors == [], f"{len(errors)} of {CONTAINERS} failed: {errors[:3]}"
    data = json.loads(docker("inspect", *names).stdout)
    addresses = [c["NetworkSettings"]["Networks"][net]["IPAddress"] for c in data]
    assert len(set(addresses)) == CONTAINERS
    assert all(ipaddress.ip_address(a) in ipaddress.ip_network("10.200.48.0/22") for a in addresses)
    # Every container is reachable from the first one (one probe each, bounded).
    script = " ; ".join(f"ping -c1 -W1 {a} >/dev/null || echo unreachable {a}" for a in addresses)
    assert "unreachable" not in docker("exec", names[0], "sh", "-c", script, timeout=600).stdout

    def remove(name: str) -> None:
        docker("rm", "-f", name, timeout=300)

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(remove, names))
    e2e.containers.clear()


@not_with_plugin("the flaky plugin counts its failures in the host's /run, and a managed "
                 "plugin's /run is its own")
def test_churn_with_injected_failures(e2e: Tracker, pycni: PycniServer, tmp_path: Path) -> None:
    log = Path("/run/pycni-test-flaky.log")
    log.unlink(missing_ok=True)
    plugin = pycni.plugin_dir / "pycni-test-flaky"
    plugin.write_text(FLAKY_PLUGIN % {"pct": FAIL_PERCENT, "log": log})
    plugin.chmod(0o755)
    pycni.write_conflist("e2e-flaky", {
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "bridge", "bridge": "pycni-e2efk", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.52.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "firewall"},
            {"type": "pycni-test-flaky"},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    })
    net = e2e.network("pycni-e2e-flaky", "-d", DRIVER, "--ipam-driver", "null",
                      "-o", "cni.network=e2e-flaky")
    failures: list[str] = []
    lock = threading.Lock()

    def cycle(n: int) -> None:
        name = f"pycni-e2e-ch{n:04d}"
        proc = docker("run", "--rm", "--name", name, "--network", net, TEST_IMAGE, "true",
                      check=False, timeout=300)
        if proc.returncode != 0:
            with lock:
                failures.append(proc.stderr)
            docker("rm", "-f", name, check=False)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(cycle, range(CYCLES)))
    injected = log.read_text().split() if log.exists() else []
    log.unlink(missing_ok=True)
    # Every failure is a clean docker error naming the plugin, one per injected fault.
    assert len(failures) == len(injected), (failures[:3], injected[:3])
    for message in failures:
        assert 'CNI plugin "pycni-test-flaky" failed (ADD)' in message, message
        assert "injected a failure" in message and "Traceback" not in message
    print(f"churn: {CYCLES} cycles, {len(injected)} faults injected, {len(failures)} clean errors")
    assert list((pycni.state_dir / "endpoints").glob("*.json")) == []
    # (the leak audit then checks reservations, netns, links, iptables, cache for zero leaks)
