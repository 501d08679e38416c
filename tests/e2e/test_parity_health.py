"""Health output that is right: ``pycni check``, ``doctor``, ``ls``, ``inspect`` and the serving
log, against real containers and the session's ``pycni serve``.

Where Docker's bridge has an equivalent (a healthy container is healthy; parallel ``docker run``
just works), the same scenario runs on a bridge network beside the pycni one. Subnets are
10.201.165.0/24 to 10.201.199.0/24; no traffic leaves the test's own containers.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_IMAGE, docker
from tests.e2e.conftest import DRIVER, PycniServer, Tracker
from tests.e2e.test_health import PYCNI, pycni_cli, report, write

pytestmark = pytest.mark.e2e


def net_info(container: str, network: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(docker("inspect", container).stdout)[0]
    info: dict[str, Any] = data["NetworkSettings"]["Networks"][network]
    return info


def test_check_passes_for_a_healthy_ptp_container(e2e: Tracker, pycni: PycniServer) -> None:
    """ptp routes its subnet through the host, so pycni gives the container a host address
    (/32) on purpose. That container is as healthy as one on Docker's bridge, and `pycni check`
    says so."""
    pycni.write_conflist("e2e-hptp", {
        "cniVersion": "1.0.0",
        "plugins": [
            {"type": "ptp", "ipMasq": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.165.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "firewall"},
        ],
    })
    bridge = e2e.network("pycni-e2e-hpb", "-d", "bridge", "--subnet", "10.201.166.0/24")
    ptp = e2e.network("pycni-e2e-hpp", "-d", DRIVER, "--ipam-driver", "null",
                      "-o", "cni.network=e2e-hptp")
    for net, name in ((bridge, "pycni-e2e-hpb1"), (ptp, "pycni-e2e-hpp1")):
        e2e.run(name, "--network", net, TEST_IMAGE, "sleep", "600")
        gateway = net_info(name, net)["Gateway"]
        docker("exec", name, "ping", "-c1", "-W2", gateway)  # both are networked
    assert net_info("pycni-e2e-hpp1", ptp)["IPPrefixLen"] == 32

    proc = pycni_cli(pycni, "check", "pycni-e2e-hpp1")
    assert proc.returncode == 0, report(proc)
    assert "FAIL" not in proc.stdout, report(proc)
    assert "CNI CHECK passed (" in proc.stdout, report(proc)
    address = net_info("pycni-e2e-hpp1", ptp)["IPAddress"]
    assert f"carries {address}/32" in proc.stdout, report(proc)


def test_doctor_trusts_pycnis_own_rules_on_zero_config_networks(
    e2e: Tracker, pycni: PycniServer, tmp_path: Path
) -> None:
    """A zero-config network's bridge chain has no firewall plugin: pycni puts the forwarding
    rules in itself (as Docker's bridge driver does), and its containers reach each other."""
    net = e2e.network("pycni-e2e-hzc", "-d", DRIVER, "--subnet", "10.201.167.0/24")
    e2e.run("pycni-e2e-hzc1", "--network", net, TEST_IMAGE, "sleep", "600")
    e2e.run("pycni-e2e-hzc2", "--network", net, TEST_IMAGE, "sleep", "600")
    docker("exec", "pycni-e2e-hzc1", "ping", "-c1", "-W2", "pycni-e2e-hzc2")
    proc = pycni_cli(pycni, "doctor", conf_dir=tmp_path)
    assert proc.returncode == 0, report(proc)
    assert "no firewall plugin" not in proc.stdout, report(proc)
    assert "warn" not in proc.stdout.replace("warning(s)", ""), report(proc)


def test_doctor_names_the_file_whose_ipam_type_holds_a_slash_and_goes_on(
    pycni: PycniServer, tmp_path: Path
) -> None:
    write(tmp_path / "10-good.conflist",
          {"cniVersion": "1.0.0", "name": "hs-good", "plugins": [{"type": "firewall"}]})
    write(tmp_path / "20-slash.conflist",
          {"cniVersion": "1.0.0", "name": "hs-slash",
           "plugins": [{"type": "bridge", "ipam": {"type": "../host-local"}}]})
    proc = pycni_cli(pycni, "doctor", conf_dir=tmp_path)
    assert proc.returncode == 1, report(proc)
    assert proc.stderr == "", report(proc)
    slash = tmp_path / "20-slash.conflist"
    assert f"FAIL {slash} (network hs-slash): plugins[0].ipam.type: invalid plugin type " \
        "'../host-local'" in proc.stdout, report(proc)
    assert "ok   dockerd: reachable" in proc.stdout, report(proc)  # the rest of the report
    assert "pycni serve answers" in proc.stdout, report(proc)
    assert "doctor: 1 problem(s)" in proc.stdout, report(proc)


def test_doctor_as_a_user_says_run_as_root(pycni: PycniServer) -> None:
    """The plugin socket is 0600, iptables needs CAP_NET_ADMIN: a user is told to be root,
    not that pycni serve is missing or iptables not installed."""
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PYCNI, "doctor"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "PYCNI_STATE_DIR": str(pycni.state_dir)},
    )
    assert proc.returncode == 1, report(proc)
    assert "FAIL user: pycni doctor runs as uid 65534" in proc.stdout, report(proc)
    assert "run it as root" in proc.stdout, report(proc)
    assert "start `pycni serve`" not in proc.stdout, report(proc)
    assert "is iptables installed" not in proc.stdout, report(proc)


def test_ls_inspect_and_doctor_name_what_docker_names(
    e2e: Tracker, pycni: PycniServer, tmp_path: Path
) -> None:
    net = e2e.network("pycni-e2e-hnm", "-d", DRIVER, "--subnet", "10.201.168.0/24")
    c = e2e.run("pycni-e2e-hnm1", "--network", net, TEST_IMAGE, "sleep", "600")
    info = net_info(c, net)
    network_id = info["NetworkID"]

    proc = pycni_cli(pycni, "ls")
    assert proc.returncode == 0, report(proc)
    line = next(x for x in proc.stdout.splitlines() if info["EndpointID"][:12] in x)
    assert c in line and info["IPAddress"] in line, report(proc)
    assert any(net in x and network_id[:12] in x for x in proc.stdout.splitlines())

    proc = pycni_cli(pycni, "inspect", net)
    assert proc.returncode == 0, report(proc)
    data = json.loads(proc.stdout)
    assert data["name"] == net
    [endpoint] = data["endpoints"]
    container_id = json.loads(docker("inspect", c).stdout)[0]["Id"]
    assert endpoint["container"] == {"id": container_id, "name": c}

    proc = pycni_cli(pycni, "doctor", conf_dir=tmp_path)
    assert f"pycni network {net} ({network_id[:12]})" in proc.stdout, report(proc)


def test_parallel_runs_leave_no_queue_warnings(e2e: Tracker, pycni: PycniServer) -> None:
    """Parallel `docker run -d`, then parallel `docker rm -f`, on a bridge network and on a
    pycni one: every command succeeds on both, and pycni's log has no waitress "Task queue
    depth" warning (a pool sized for Docker's parallel calls)."""
    count = 24
    bridge = e2e.network("pycni-e2e-hqb", "-d", "bridge", "--subnet", "10.201.169.0/24")
    pycni_net = e2e.network("pycni-e2e-hqp", "-d", DRIVER, "--subnet", "10.201.170.0/24")
    log_start = pycni.log_path.stat().st_size

    def each(commands: list[list[str]]) -> list[str]:
        def one(args: list[str]) -> str:
            proc = docker(*args, check=False, timeout=300)
            return proc.stderr if proc.returncode else ""

        with ThreadPoolExecutor(count) as pool:
            return [e for e in pool.map(one, commands) if e]

    for network, prefix in ((bridge, "pycni-e2e-hqb"), (pycni_net, "pycni-e2e-hqp")):
        names = [f"{prefix}{n:02d}" for n in range(count)]
        e2e.containers.extend(names)
        errors = each([["run", "-d", "--name", n, "--network", network, TEST_IMAGE,
                        "sleep", "600"] for n in names])
        assert errors == [], f"{network}: {len(errors)} of {count} failed: {errors[:2]}"
        errors = each([["rm", "-f", n] for n in names])
        assert errors == [], f"{network}: {len(errors)} of {count} failed: {errors[:2]}"
    with open(pycni.log_path, errors="replace") as f:
        f.seek(log_start)
        log = f.read()
    assert "Task queue depth" not in log, log[-3000:]
