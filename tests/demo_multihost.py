"""``make demo-multihost``: one pycni overlay network on two Docker hosts, a ping across.

Brings the two-host rig up (:mod:`tests.multihost`), runs host A's ``pycni serve --etcd`` on the
machine's dockerd, creates the overlay network on both hosts, starts a container on each, shows
their addresses and the ping both ways, and tears everything down again. Run under the machine's
e2e lock (scripts/multihost.sh takes it): it uses the machine's dockerd and plugin socket.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from shim.client import PluginClient
from shim.errors import PycniError
from tests import leaks
from tests.multihost import REPO, UNDERLAY_A, Rig, sh

SOCKET_A = "/run/docker/plugins/pycni.sock"
NET = "pycni-demo-overlay"
CREATE = ("-d", "pycni", "--ipam-driver", "null", "-o", "cni.overlay=demo",
          "-o", "cni.overlay.subnet=10.202.0.0/16")
IMAGE = "pycni-test:busybox"


def say(text: str) -> None:
    print(f"\n\033[1m### {text}\033[0m", flush=True)


def show(args: list[str], prefix: str = "$ ") -> str:
    print(prefix + " ".join(args), flush=True)
    out = sh(*args).stdout
    print(out.rstrip(), flush=True)
    return out


def _pycni_a(url: str, state: Path) -> subprocess.Popen[bytes]:
    try:
        PluginClient(SOCKET_A).post_raw("Plugin.Activate", b"{}")
    except PycniError:
        pass
    else:
        raise SystemExit(f"another pycni is serving {SOCKET_A}; stop it first")
    log = open(state / "pycni-a.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [str(REPO / ".venv/bin/pycni"), "serve", "--state-dir", str(state / "state"),
         "--etcd", url, "--underlay-address", UNDERLAY_A],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if PluginClient(SOCKET_A).post_raw("Plugin.Activate", b"{}")[0] == 200:
                return proc
        except PycniError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("host A's pycni did not answer")


def run(rig: Rig) -> int:
    state = Path("/run/pycni-demo-multihost")
    state.mkdir(exist_ok=True)
    pycni_a: subprocess.Popen[bytes] | None = None
    b = rig.b.docker_cli()
    before = leaks.snapshot(state_dir=str(state / "state"))
    try:
        say("two Docker hosts: this machine (A) and a namespace with its own dockerd (B), "
            "a veth underlay 10.203.253.1 <-> .2, etcd on A's underlay address")
        rig.up()
        assert rig.etcd is not None
        pycni_a = _pycni_a(rig.etcd.url, state)
        say("the same command on both hosts")
        show(["docker", "network", "create", *CREATE, NET], "A$ ")
        show([*b, "network", "create", *CREATE, NET], "B$ ")
        show(["docker", "run", "-d", "--name", "pycni-demo-a", "--network", NET, IMAGE,
              "sleep", "300"], "A$ ")
        show([*b, "run", "-d", "--name", "pycni-demo-b", "--network", NET, IMAGE,
              "sleep", "300"], "B$ ")
        fmt = f'{{{{(index .NetworkSettings.Networks "{NET}").IPAddress}}}}'
        ip_a = sh("docker", "inspect", "-f", fmt, "pycni-demo-a").stdout.strip()
        ip_b = sh(*b, "inspect", "-f", fmt, "pycni-demo-b").stdout.strip()
        say(f"each host leased its own /24 of 10.202.0.0/16: A's container {ip_a}, "
            f"B's {ip_b}")
        show([str(REPO / ".venv/bin/pycni"), "ls", "--state-dir", str(state / "state")], "A$ ")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sh(
                "docker", "exec", "pycni-demo-a", "ping", "-c", "1", "-W", "1", ip_b,
                check=False).returncode != 0:
            pass
        say("ping across, both ways (VXLAN over the underlay)")
        show(["docker", "exec", "pycni-demo-a", "ping", "-c", "3", ip_b], "A$ ")
        show([*b, "exec", "pycni-demo-b", "ping", "-c", "3", ip_a], "B$ ")
    finally:
        say("tearing everything down")
        sh("docker", "rm", "-f", "pycni-demo-a", check=False)
        if rig.b.holder is not None:
            sh(*b, "rm", "-f", "pycni-demo-b", check=False)
            sh(*b, "network", "rm", NET, check=False)
        sh("docker", "network", "rm", NET, check=False)
        if pycni_a is not None:
            pycni_a.terminate()
            pycni_a.wait(timeout=20)
        rig.down()
        after = leaks.snapshot(state_dir=str(state / "state"))
        sh("rm", "-rf", str(state))
        left = leaks.diff(before, after) + leaks.vanished(before, after)
        if left:
            print("the demo left the host changed:\n  " + "\n  ".join(left), flush=True)
        else:
            print("done: the host is as before (links, VTEPs and their entries, namespaces, "
                  "iptables, CNI cache and reservations, pycni state)", flush=True)
    return 1 if left else 0
