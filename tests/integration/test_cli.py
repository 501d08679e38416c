"""``pycni cni`` as a user runs it: a subprocess, configured like cnitool through the environment.

CNI_PATH, NETCONFPATH, CNI_IFNAME, CNI_CONTAINERID, CNI_ARGS and CAP_ARGS mean what they mean to
cnitool; PYCNI_CACHE_DIR points the libcni cache at the test's own dir.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from .helpers import (
    FakePlugin,
    assert_private_dirs_clean,
    cache_files,
    comment_for,
    links_in,
    reservations,
    rules_tagged,
    sh,
)

pytestmark = pytest.mark.integration

SUBNET = ipaddress.ip_network("10.201.5.0/24")
PYCNI = str(Path(sys.executable).with_name("pycni"))
CNITOOL_ENV = ("CNI_PATH", "NETCONFPATH", "CNI_IFNAME", "CNI_CONTAINERID", "CNI_ARGS", "CAP_ARGS")


class Pycni:
    """Runs ``pycni cni …`` with a clean cnitool environment plus per-call overrides."""

    def __init__(self, env: dict[str, str], conf_dir: Path) -> None:
        self.env = env
        self.conf_dir = conf_dir

    def write_conf(self, name: str, plugins: list[dict[str, Any]], version: str = "1.0.0") -> str:
        conf = {"cniVersion": version, "name": name, "plugins": plugins}
        (self.conf_dir / f"10-{name}.conflist").write_text(json.dumps(conf))
        return name

    def __call__(
        self, *args: str, cwd: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PYCNI, "cni", *args],
            env={**self.env, **env},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


@pytest.fixture
def pycni(tmp_path: Path, cni_root: Path, cni_path: str, fake_plugin: FakePlugin) -> Pycni:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in CNITOOL_ENV}
    env.update(
        CNI_PATH=f"{fake_plugin.bin_dir}:{cni_path}",
        NETCONFPATH=str(conf_dir),
        PYCNI_CACHE_DIR=str(cni_root),
    )
    return Pycni(env, conf_dir)


def bridge(bridge_name: str, cni_root: Path, subnet: str = str(SUBNET)) -> dict[str, Any]:
    """bridge without ipMasq: its DEL then cleans up fully even after the netns is gone."""
    return {
        "type": "bridge",
        "bridge": bridge_name,
        "isGateway": True,
        "ipam": {
            "type": "host-local",
            "dataDir": str(cni_root / "networks"),
            "ranges": [[{"subnet": subnet}]],
        },
    }


def cnitool_id(netns_path: str) -> str:
    """cnitool's container id: "cnitool-" + the first 10 bytes of sha512(netns path), in hex."""
    return "cnitool-" + hashlib.sha512(netns_path.encode()).hexdigest()[:20]


def ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return proc


def test_add_check_del_like_cnitool(
    pycni: Pycni, cni_root: Path, ns: Callable[[], str], links: Callable[[str], str]
) -> None:
    net = pycni.write_conf(
        f"pycni-it-{secrets.token_hex(3)}",
        [bridge(links("br"), cni_root), {"type": "firewall"}],
    )
    path = ns()
    record = f"{net}-{cnitool_id(path)}-eth0"

    # a relative NETNS is made absolute first, so the id is the same as for the full path
    added = ok(pycni("add", net, os.path.basename(path), cwd=os.path.dirname(path)))

    result = json.loads(added.stdout)
    assert result["cniVersion"] == "1.0.0"
    (ip,) = result["ips"]
    assert ipaddress.ip_interface(ip["address"]).network == SUBNET
    assert cache_files(cni_root) == [record]
    assert "eth0" in links_in(path)

    ok(pycni("check", net, path))
    ok(pycni("del", net, path))
    assert "eth0" not in links_in(path)
    assert_private_dirs_clean(cni_root)
    ok(pycni("del", net, path))  # again: nothing left to delete is success


def test_container_id_ifname_args_and_capability_args_from_the_environment(
    pycni: Pycni, cni_root: Path, ns: Callable[[], str], links: Callable[[str], str]
) -> None:
    net = pycni.write_conf(
        f"pycni-it-{secrets.token_hex(3)}",
        [
            bridge(links("br"), cni_root),
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "firewall"},
        ],
    )
    path = ns()
    cid = f"pycni-it-{secrets.token_hex(4)}"
    ports = [{"hostPort": 20000 + secrets.randbelow(10000), "containerPort": 80, "protocol": "tcp"}]
    env = {"CNI_CONTAINERID": cid, "CNI_IFNAME": "net1", "CNI_ARGS": "IgnoreUnknown=1;TEST=x"}

    ok(pycni("add", net, path, CAP_ARGS=json.dumps({"portMappings": ports}), **env))

    assert cache_files(cni_root) == [f"{net}-{cid}-net1"]
    record = json.loads((cni_root / "results" / f"{net}-{cid}-net1").read_text())
    assert record["cniArgs"] == [["IgnoreUnknown", "1"], ["TEST", "x"]]
    assert record["capabilityArgs"] == {"portMappings": ports}
    assert "net1" in links_in(path)
    (reserved,) = reservations(cni_root)
    assert (cni_root / "networks" / reserved).read_text().split() == [cid, "net1"]
    dnat = rules_tagged("nat", "CNI-HOSTPORT-DNAT", "dnat " + comment_for(net, cid))
    assert len(dnat) == 1 and f"--dports {ports[0]['hostPort']}" in dnat[0]

    # DEL without CAP_ARGS: the cached capability args reach portmap, which removes its chain
    ok(pycni("del", net, path, **env))

    assert rules_tagged("nat", "CNI-HOSTPORT-DNAT", "dnat " + comment_for(net, cid)) == []
    assert "net1" not in links_in(path)
    assert_private_dirs_clean(cni_root)


def test_status_and_gc(
    pycni: Pycni,
    fake_plugin: FakePlugin,
    cni_root: Path,
    ns: Callable[[], str],
    links: Callable[[str], str],
) -> None:
    net = pycni.write_conf(f"pycni-it-{secrets.token_hex(3)}", [bridge(links("br"), cni_root)])
    assert "has no STATUS verb" in ok(pycni("status", net)).stdout
    ready = pycni.write_conf("pycni-it-110", [{"type": fake_plugin.name}], version="1.1.0")
    assert ok(pycni("status", ready)).stdout.strip() == "pycni-it-110: ready"
    fake_plugin.status_flag.write_text("warming up")
    failed = pycni("status", ready)
    assert failed.returncode == 4
    assert f'CNI plugin "{fake_plugin.name}" failed (STATUS): [code 50] warming up' in failed.stderr

    live, gone = ns(), ns()
    for path in (live, gone):
        ok(pycni("add", net, path))
    assert len(reservations(cni_root)) == 2
    sh("ip", "netns", "delete", os.path.basename(gone))

    # default valid set: the attachments whose netns still exists
    collected = ok(pycni("gc", net))

    assert collected.stdout.strip() == f"removed stale attachment {cnitool_id(gone)}/eth0"
    assert cache_files(cni_root) == [f"{net}-{cnitool_id(live)}-eth0"]
    (reserved,) = reservations(cni_root)
    assert (cni_root / "networks" / reserved).read_text().split()[0] == cnitool_id(live)
    # --keep names what is still in use; here nothing is
    assert ok(pycni("gc", net, "--keep", "someone-else")).stdout.strip() == (
        f"removed stale attachment {cnitool_id(live)}/eth0"
    )
    assert "eth0" not in links_in(live)
    assert_private_dirs_clean(cni_root)


def test_a_failing_plugin_exits_non_zero_with_its_name_and_message(
    pycni: Pycni, cni_root: Path, ns: Callable[[], str], links: Callable[[str], str]
) -> None:
    bad = pycni.write_conf(
        f"pycni-it-{secrets.token_hex(3)}", [bridge(links("br"), cni_root, "10.201.5.0/33")]
    )
    path = ns()

    failed = pycni("add", bad, path)

    assert failed.returncode == 4  # CNIError's exit code
    assert failed.stdout == ""
    # bridge runs host-local and relays its error
    assert 'CNI plugin "bridge" failed (ADD)' in failed.stderr
    assert "invalid CIDR address: 10.201.5.0/33" in failed.stderr
    assert_private_dirs_clean(cni_root)

    missing = pycni.write_conf("pycni-it-missing", [{"type": "pycni-no-such-plugin"}])
    failed = pycni("add", missing, path)
    assert failed.returncode == 4
    assert 'CNI plugin "pycni-no-such-plugin" failed (ADD)' in failed.stderr
    assert "failed to find plugin" in failed.stderr

    unknown = pycni("add", "pycni-it-no-such-network", path)
    assert unknown.returncode == 3  # NotFound
    assert "no CNI network named 'pycni-it-no-such-network'" in unknown.stderr
