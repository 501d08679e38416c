"""pycni's speed and memory, as ratios measured in one run (``make bench``; never a test).

P1  median ``docker run --rm IMAGE true`` on a zero-config pycni network
    ÷ the same on a Docker bridge network; runs alternate pycni/bridge.          goal ≤ 1.10
P2  one endpoint's lifecycle POSTed to the plugin socket as Docker sends it (CreateEndpoint,
    Join, Leave, DeleteEndpoint, on a zero-config network made with ``docker network create``)
    ÷ the same chain's ADD + DEL exec'd directly (the plugin binaries, with the config pycni
    stored for the network, into one namespace made for the purpose); interleaved.  goal ≤ 1.15
P3  100 containers from 10 parallel clients: the wall time of all their ``docker run -d``, then
    of all their ``docker rm -f``, on a zero-config pycni network ÷ on a Docker bridge network;
    rounds alternate pycni/bridge in ABBA order so drift hits both alike.    goal ≤ 1.10 each
P4  1000 endpoints kept on one zero-config network, made through the socket (CreateEndpoint +
    Join as Docker sends them): the median latency of the last 50 ÷ that of the first 50
    (goal ≤ 1.15), and pycni's RSS at the start and the end (goal ≤ 80 MiB). In the same loop,
    interleaved, the raw chain (the same bridge + static chain exec'd directly, each endpoint
    into a namespace of its own, on a bridge of its own) grows to the same size: its
    last-50 ÷ first-50 ratio is what the kernel and the plugins add as the host fills up
    (namespaces, bridge ports, links), so what pycni adds beyond it is pycni's own.
P1p P1 with a published port, ``docker run --rm -p 127.0.0.1::80``.                goal ≤ 1.10
P3p P3 with a published port each (``-p 127.0.0.1::80``), 60 containers from 10 clients by
    default.                                                                 goal ≤ 1.10 each
P5  on an overlay network across hosts (the three-host rig, tests/multihost.py): the median
    ping RTT from a container to one on another host ÷ to one on the same host
    (tests/bench_overlay.py); needs the run's own pycni serve (it restarts it with etcd).
                                                                             goal ≤ 1.50
P7  in the same run: a third host creates the network; the median time from its ``docker
    network create`` returning until the two others route its subnet, and from its ``docker
    network rm`` until they no longer do (etcd's watch; seconds, not a ratio). goal ≤ 0.5 s
P6  the ``--network none`` mode's controller: 50 labelled containers started and removed from 10
    clients while ``pycni watch`` attaches and detaches them (bridge isGateway + ipMasq,
    host-local, portmap, firewall), until the last is attached / the last record is gone, ÷ the
    same containers wired by exec'ing the raw chain into ``/proc/PID/ns/net`` right after each
    ``docker run`` and before each ``docker rm`` (tests/bench_controller.py).      goal ≤ 1.15

P2 and P4 make their networks through Docker: pycni's reconciliation removes a network Docker
doesn't know. P4's endpoints name a namespace of the benchmark's as their sandbox: pycni spares an
endpoint Docker doesn't list while its sandbox exists (Docker may be restoring it), and keeps
looking at it on each pass, as it does for any endpoint in the first minutes after it starts;
P4's CPU-per-endpoint line shows what that background work costs as the count grows.

Also: where P2's, P3's and P4's time goes (per request, per plugin exec, pycni's share of each P3
phase, from pycni's debug log), the RSS of ``pycni serve`` after the run, and a check that the run
left nothing behind (namespaces, links, iptables, libcni cache, pycni state, containers,
networks).

The benchmark starts its own ``pycni serve`` on a temporary state dir, unless one already answers
on the plugin socket (then it uses that one and says so). Timings never fail the run: the exit
status is 0 unless the benchmark itself breaks (a command fails, or it leaves something behind).
Traffic stays on this machine; the subnets are in 10.202.0.0/16.

Usage: python -m tests.bench [--only P1,P1p,P2,P3,P3p,P4,P5,P6] [--runs N] [--quick]
(P7 comes with P5)
                             [--containers N] [--clients N] [--rounds N] [--endpoints N]
                             [--labelled N] [--place staging|sandbox] [--keep-log]

``--place sandbox`` makes P1's, P2's and P3's pycni networks with ``-o cni.place=sandbox``: the
chain runs straight in the container's namespace (Docker ≥ 28 for P1 and P3; P2 makes a
namespace per endpoint itself, untimed, as Docker makes it before Join, and one per raw round
for the raw chain, which then runs in a namespace as young as pycni's).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ipaddress
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from shim.chains import zero_config
from shim.client import PluginClient
from shim.cni.invoke import format_cni_args
from shim.endpoint_chain import for_endpoint
from shim.errors import PycniError
from shim.protocol import CreateNetworkRequest, EndpointInterface
from tests import leaks
from tests.conftest import CNI_PATH, REPO, TEST_IMAGE
from tests.e2e.conftest import SOCKET, PycniServer, call, exclusive_engine

#: ``-o cni.place=sandbox`` on every pycni network the run makes (``--place sandbox``)
PLACE: tuple[str, ...] = ()
P1_PYCNI_NET = "pycni-bench-p1"
P1_BRIDGE_NET = "pycni-bench-p1-bridge"
P1_PYCNI_SUBNET = "10.202.1.0/24"
P1_BRIDGE_SUBNET = "10.202.2.0/24"
P2_NET = "pycni-bench-p2"
P2_SUBNET = "10.202.3"  # /24: .1 gateway, .2-.121 for pycni's endpoints, .130-.249 for raw
P3_PYCNI_NET = "pycni-bench-p3"
P3_BRIDGE_NET = "pycni-bench-p3-bridge"
P3_PYCNI_SUBNET = "10.202.8.0/22"
P3_BRIDGE_SUBNET = "10.202.12.0/22"
P4_NET = "pycni-bench-p4"
P4_SUBNET = "10.202.16.0/22"  # pycni's endpoints
P4_SANDBOX = "pycni-bench-sandbox"  # the namespace P4's endpoints name as their sandbox
P4_RAW_SUBNET = "10.202.20.0/22"  # the raw chain's, on a bridge of its own
P4_RAW_BRIDGE = "pcnbench-raw4"
P4_RAW_NETNS = "pycni-bench-p4-"
P4_WINDOW = 50  # P4 compares the median of the last this-many endpoints with the first
P4_WARMUP = 3  # endpoints made and removed first: the bridges' creation is a one-time cost
P1_GOAL = 1.10
P2_GOAL = 1.15
P3_GOAL = 1.10
P4_GOAL = 1.15
P4_RSS_GOAL_MIB = 80.0
P5_GOAL = 1.50
P6_GOAL = 1.15
#: seconds until a host that joins an overlay is routed on the others (and unrouted on leaving)
P7_GOAL = 0.5
MAX_RUNS = 1000  # every loop is bounded
#: A Linux bridge takes at most 1024 ports, and a /22 holds 1021 addresses.
MAX_CONTAINERS = 1000
MAX_ENDPOINTS = 1000
MAX_CLIENTS = 50
MAX_ROUNDS = 10
SETTLE = 3.0  # seconds between P3's phases: dockerd and the kernel finish removals in background
DEFAULT_STATE_DIR = "/var/lib/pycni"
CNI_CACHE_DIR = "/var/lib/cni"
#: The Options Docker 26.1 sends with CreateEndpoint for a container that publishes nothing
#: (captured from a real ``docker run``).
DOCKER_ENDPOINT_OPTIONS: dict[str, Any] = {
    "com.docker.network.endpoint.exposedports": [],
    "com.docker.network.portmap": [],
}


class BenchError(Exception):
    """The benchmark itself broke (not a slow result)."""


# --- small helpers -------------------------------------------------------------------------------


def sh(*args: str, timeout: float = 120) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(args)}: no answer after {timeout:g}s") from exc
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def quiet(*args: str) -> None:
    """Run a clean-up command whose failure is only worth a line."""
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    except subprocess.TimeoutExpired:
        print(f"bench: cleanup {' '.join(args)} timed out", file=sys.stderr)
        return
    if proc.returncode != 0:
        print(f"bench: cleanup {' '.join(args)}: {proc.stderr.strip()}", file=sys.stderr)


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def p90(samples: list[float]) -> float:
    """The nearest-rank 90th percentile."""
    ordered = sorted(samples)
    rank = max(1, -(-9 * len(ordered) // 10))  # ceil(0.9 n)
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def post(method: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the plugin socket as Docker does; the decoded answer, or BenchError."""
    try:
        status, answer = PluginClient(SOCKET).post(method, body)
    except PycniError as exc:
        raise BenchError(str(exc)) from exc
    if status != 200:
        raise BenchError(f"{method} answered {status}: {answer.get('Err', answer)}")
    return answer


def rss(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) of a process."""
    found: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0])
    return found


# --- the server ----------------------------------------------------------------------------------


@dataclass
class Server:
    """The ``pycni serve`` being measured: ours (``own``) or one that was already serving."""

    pid: int
    state_dir: Path | None  # None: an existing server whose state dir could not be found
    own: PycniServer | None = None

    @property
    def log_path(self) -> Path | None:
        return self.own.log_path if self.own else None


def _socket_inode(path: str) -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 8 and parts[7] == path:
                return parts[6]
    return None


def serving_pid(path: str = SOCKET) -> int | None:
    """The process that listens on the plugin socket (found through /proc; no ss needed)."""
    inode = _socket_inode(path)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (pid_dir / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == target:
                        return int(pid_dir.name)
    return None


def state_dir_of(pid: int) -> Path:
    """An existing server's state dir: its --state-dir flag, else PYCNI_STATE_DIR, else default."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    for n, arg in enumerate(argv):
        if arg == "--state-dir" and n + 1 < len(argv):
            return Path(argv[n + 1])
        if arg.startswith("--state-dir="):
            return Path(arg.split("=", 1)[1])
    with contextlib.suppress(OSError):
        for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if entry.startswith(b"PYCNI_STATE_DIR="):
                return Path(entry.split(b"=", 1)[1].decode())
    return Path(DEFAULT_STATE_DIR)


def answers() -> bool:
    try:
        return call("Plugin.Activate")[0] == 200
    except PycniError:
        return False


@contextlib.contextmanager
def pycni_server(keep_log: bool) -> Iterator[Server]:
    """Use the pycni already serving on the socket, or start our own on a temp state dir."""
    if os.path.exists(SOCKET) and answers():
        pid = serving_pid()
        if pid is None:
            raise BenchError(f"something answers on {SOCKET} but no process holds it")
        state = state_dir_of(pid)
        print(f"bench: using the pycni already serving {SOCKET} (pid {pid}, state {state})")
        yield Server(pid=pid, state_dir=state if state.is_dir() else None)
        return
    if os.path.exists(SOCKET):
        os.unlink(SOCKET)  # stale: nobody answers on it
    root = Path(tempfile.mkdtemp(prefix="pycni-bench-"))
    own = PycniServer(root)
    try:
        own.start()
    except AssertionError as exc:
        raise BenchError(str(exc)) from None
    assert own.proc is not None
    print(f"bench: started pycni serve (pid {own.proc.pid}, state {own.state_dir})")
    try:
        yield Server(pid=own.proc.pid, state_dir=own.state_dir, own=own)
    finally:
        if own.proc.poll() is None:
            try:
                code = own.stop()
            except AssertionError as exc:
                print(f"bench: {exc}", file=sys.stderr)
            else:
                if code != 0:
                    print(f"bench: pycni serve exited {code} on SIGTERM", file=sys.stderr)
        if keep_log:
            kept = Path(tempfile.gettempdir()) / f"pycni-bench-{time.strftime('%H%M%S')}.log"
            shutil.copy(own.log_path, kept)
            print(f"bench: pycni's debug log kept as {kept}")
        shutil.rmtree(root, ignore_errors=True)


# --- what the run must leave as it found ---------------------------------------------------------


@dataclass(frozen=True)
class HostState:
    host: leaks.Snapshot
    containers: frozenset[str]
    networks: frozenset[str]


def host_state(state_dir: Path | None) -> HostState:
    return HostState(
        host=leaks.snapshot(CNI_CACHE_DIR, str(state_dir) if state_dir else "/nonexistent"),
        containers=frozenset(sh("docker", "ps", "-a", "--format", "{{.Names}}").split()),
        networks=frozenset(sh("docker", "network", "ls", "--format", "{{.Name}}").split()),
    )


def changes(before: HostState, after: HostState) -> list[str]:
    found = [f"left behind: {x}" for x in leaks.diff(before.host, after.host)]
    found += [f"disappeared: {x}" for x in leaks.vanished(before.host, after.host)]
    found += [f"left behind: container {c}" for c in sorted(after.containers - before.containers)]
    found += [f"left behind: network {n}" for n in sorted(after.networks - before.networks)]
    return found


def remove_leftovers() -> None:
    """Containers and networks an aborted earlier run of the benchmark left."""
    names = sh("docker", "ps", "-a", "--format", "{{.Names}}").split()
    stale = [n for n in names if n.startswith("pycni-bench")]
    if stale:
        print(f"bench: removing containers an earlier run left: {', '.join(stale)}")
        quiet("docker", "rm", "-f", *stale)
    for name in sh("docker", "network", "ls", "--format", "{{.Name}}").split():
        if name.startswith("pycni-bench"):
            print(f"bench: removing network {name} an earlier run left")
            quiet("docker", "network", "rm", name)
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else ():
        if name.startswith("pycni-bench-"):
            print(f"bench: removing netns {name} an earlier run left")
            quiet("ip", "netns", "delete", name)
    if os.path.exists(f"/sys/class/net/{P4_RAW_BRIDGE}"):
        print(f"bench: removing bridge {P4_RAW_BRIDGE} an earlier run left")
        quiet("ip", "link", "delete", P4_RAW_BRIDGE)


# --- P1 ------------------------------------------------------------------------------------------


@dataclass
class Pair:
    """Interleaved samples (seconds) of pycni and of the baseline."""

    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return median(self.ours) / median(self.base)


#: what P1p and P3p publish: a port on the host's loopback, picked by the allocator
PUBLISH = ("-p", "127.0.0.1::80")


def p1(runs: int, warmup: int, publish: tuple[str, ...] = ()) -> Pair:
    """``docker run --rm`` on pycni vs Docker's bridge, alternating so drift hits both alike
    (P1p: with ``publish``)."""
    made: list[str] = []
    try:
        sh("docker", "network", "create", "-d", "pycni", *PLACE, "--subnet", P1_PYCNI_SUBNET,
           P1_PYCNI_NET)
        made.append(P1_PYCNI_NET)
        sh("docker", "network", "create", "--subnet", P1_BRIDGE_SUBNET, P1_BRIDGE_NET)
        made.append(P1_BRIDGE_NET)

        def run_on(net: str) -> float:
            return timed(lambda: sh("docker", "run", "--rm", "--network", net, *publish,
                                    TEST_IMAGE, "true"))

        pair = Pair()
        for n in range(warmup + runs):
            ours, base = run_on(P1_PYCNI_NET), run_on(P1_BRIDGE_NET)
            if n >= warmup:
                pair.ours.append(ours)
                pair.base.append(base)
        return pair
    finally:
        for name in reversed(made):
            quiet("docker", "network", "rm", name)


# --- P2 ------------------------------------------------------------------------------------------


@dataclass
class P2Result:
    pair: Pair = field(default_factory=Pair)
    #: per socket request, the client-side time of each measured lifecycle
    requests: dict[str, list[float]] = field(default_factory=dict)
    #: per "plugin VERB", the exec time of each measured raw round
    raw_execs: dict[str, list[float]] = field(default_factory=dict)
    endpoint_ids: list[str] = field(default_factory=list)
    config_source: str = ""
    chain: list[str] = field(default_factory=list)
    activate: list[float] = field(default_factory=list)  # an empty request's round trip


def _network_request(network_id: str, pool: str) -> dict[str, Any]:
    """CreateNetwork exactly as Docker 26.1 sends it for ``--subnet POOL`` (gateway: first host)."""
    net = ipaddress.ip_network(pool)
    return {
        "NetworkID": network_id,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": f"{net[1]}/{net.prefixlen}",
                      "Pool": str(net)}],
        "IPv6Data": [],
    }


@contextlib.contextmanager
def pycni_network(name: str, subnet: str, *, place: bool = True
                  ) -> Iterator[tuple[str, dict[str, Any]]]:
    """A zero-config pycni network made through Docker, which sends CreateNetwork (and, when
    it is removed, DeleteNetwork) to the socket; its id and that CreateNetwork request.
    ``place``: with the run's ``--place``."""
    options = PLACE if place else ()
    network_id = sh("docker", "network", "create", "-d", "pycni", *options, "--subnet", subnet,
                    name).strip()
    request = _network_request(network_id, subnet)
    if options:
        request["Options"]["com.docker.network.generic"]["cni.place"] = "sandbox"
    try:
        yield network_id, request
    finally:
        quiet("docker", "network", "rm", name)


def _stored_network(server: Server, network_id: str, request: dict[str, Any]) -> tuple[
        dict[str, Any], str, str]:
    """The network's config template, how addresses reach it, and where it came from."""
    why = "the serving pycni's state dir is unknown"
    if server.state_dir is not None:
        path = server.state_dir / "networks" / f"{network_id}.json"
        if path.exists():
            record = json.loads(path.read_text())
            return record["config"], record["address_via"], f"pycni's record {path}"
        why = f"no record {path}"
    # Build the identical config the way CreateNetwork does.
    resolved = zero_config(CreateNetworkRequest.from_json(request))
    return (resolved.config.raw, resolved.address_via,
            f"rebuilt with shim.chains.zero_config: {why}")


def _plugin_binary(plugin_type: str) -> str:
    for directory in CNI_PATH.split(":"):
        candidate = os.path.join(directory, plugin_type)
        if os.access(candidate, os.X_OK):
            return candidate
    raise BenchError(f"no CNI plugin {plugin_type!r} in {CNI_PATH}")


def raw_chain(config: dict[str, Any], cni_args: str, caps: dict[str, Any], netns: str, cid: str,
              verb: str, prev: dict[str, Any] | None,
              execs: dict[str, float]) -> dict[str, Any] | None:
    """One verb of the whole chain, each plugin exec'd as libcni would (no pycni involved).

    ADD in order with each result as the next ``prevResult``; DEL in reverse with ADD's final
    result. ``execs`` gets each exec's time under ``"type VERB"``.
    """
    plugins = list(config["plugins"])
    if verb == "DEL":
        plugins.reverse()
    env = {**os.environ, "CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH, "CNI_ARGS": cni_args}
    for plugin in plugins:
        conf = {**plugin, "name": config["name"], "cniVersion": config["cniVersion"]}
        runtime = {k: v for k, v in caps.items() if plugin.get("capabilities", {}).get(k)}
        if runtime:
            conf["runtimeConfig"] = runtime
        if prev is not None:
            conf["prevResult"] = prev
        binary = _plugin_binary(plugin["type"])
        start = time.perf_counter()
        proc = subprocess.run([binary], input=json.dumps(conf).encode(), env=env,
                              capture_output=True, timeout=60, check=False)
        execs[f"{plugin['type']} {verb}"] = time.perf_counter() - start
        if proc.returncode != 0:
            raise BenchError(f"raw {plugin['type']} {verb} failed: {proc.stdout!r} {proc.stderr!r}")
        if verb == "ADD":
            prev = json.loads(proc.stdout)
    return prev


def p2(server: Server, runs: int, warmup: int) -> P2Result:
    with pycni_network(P2_NET, f"{P2_SUBNET}.0/24") as (network_id, request):
        return _p2(server, runs, warmup, network_id, request)


def _p2(server: Server, runs: int, warmup: int, network_id: str,
        request: dict[str, Any]) -> P2Result:
    out = P2Result()
    netns = f"pycni-bench-{secrets.token_hex(4)}"
    netns_path = f"/run/netns/{netns}"
    netns_made = False
    try:
        template, address_via, out.config_source = _stored_network(server, network_id, request)
        out.chain = [p["type"] for p in template["plugins"]]
        sh("ip", "netns", "add", netns)
        netns_made = True

        for n in range(warmup + runs):
            # Docker's IPAM hands out the next free address; each endpoint is gone before the
            # next, so a small rotating range is enough.
            ours_addr = f"{P2_SUBNET}.{2 + n % 120}/24"
            raw_addr = f"{P2_SUBNET}.{130 + n % 120}/24"
            eid = secrets.token_hex(32)
            endpoint = {"NetworkID": network_id, "EndpointID": eid}
            sandbox_key = f"/var/run/docker/netns/{eid[:12]}"
            if PLACE:
                # the container's namespace, which Docker (≥ 28) makes before Join: not timed
                sandbox_key = f"/run/netns/{netns}-{n}"
                sh("ip", "netns", "add", f"{netns}-{n}")
            calls: list[tuple[str, dict[str, Any]]] = [
                ("CreateEndpoint", {**endpoint, "Interface": {
                    "Address": ours_addr, "AddressIPv6": "", "MacAddress": ""},
                    "Options": DOCKER_ENDPOINT_OPTIONS}),
                ("Join", {**endpoint, "SandboxKey": sandbox_key,
                          "Options": DOCKER_ENDPOINT_OPTIONS}),
                ("Leave", endpoint),
                ("DeleteEndpoint", endpoint),
            ]
            # The identical per-endpoint chain pycni builds (static IPAM given the address).
            chain = for_endpoint(template, request, address_via,
                                 EndpointInterface.from_json({"Address": raw_addr}))
            cni_args = format_cni_args(chain.cni_args)
            caps = dict(chain.capability_args)

            per_call: dict[str, float] = {}
            start = time.perf_counter()
            for method, body in calls:
                began = time.perf_counter()
                post(f"NetworkDriver.{method}", body)
                per_call[method] = time.perf_counter() - began
            t_ours = time.perf_counter() - start
            if PLACE:
                sh("ip", "netns", "delete", f"{netns}-{n}")

            execs: dict[str, float] = {}
            raw_netns = netns_path
            if PLACE:
                # a fresh namespace for the raw chain too, as pycni's has (a young namespace
                # makes the bridge plugin's DEL several ms slower): not timed
                sh("ip", "netns", "add", f"{netns}-raw")
                raw_netns = f"/run/netns/{netns}-raw"
            start = time.perf_counter()
            cid = secrets.token_hex(32)
            added = raw_chain(chain.config.raw, cni_args, caps, raw_netns, cid, "ADD", None, execs)
            raw_chain(chain.config.raw, cni_args, caps, raw_netns, cid, "DEL", added, execs)
            t_raw = time.perf_counter() - start
            if PLACE:
                sh("ip", "netns", "delete", f"{netns}-raw")

            start = time.perf_counter()
            post("Plugin.Activate", {})
            t_activate = time.perf_counter() - start
            if n < warmup:
                continue
            out.pair.ours.append(t_ours)
            out.pair.base.append(t_raw)
            out.activate.append(t_activate)
            out.endpoint_ids.append(eid)
            for method, took in per_call.items():
                out.requests.setdefault(method, []).append(took)
            for key, took in execs.items():
                out.raw_execs.setdefault(key, []).append(took)
        return out
    finally:
        if netns_made:
            quiet("ip", "netns", "delete", netns)


_EXEC_LINE = re.compile(r"shim\.cni\.api: (\S+) (ADD|DEL|CHECK) ([0-9a-f]{64}) took ([\d.]+) ms")


def pycni_execs(log_text: str, endpoint_ids: list[str]) -> dict[str, list[float]]:
    """Per "plugin VERB", pycni's own timing of each plugin exec (seconds) for these endpoints."""
    wanted = set(endpoint_ids)
    found: dict[str, list[float]] = {}
    for match in _EXEC_LINE.finditer(log_text):
        plugin, verb, cid, took = match.groups()
        if cid in wanted:
            found.setdefault(f"{plugin} {verb}", []).append(float(took) / 1000)
    return found


# --- P3 ------------------------------------------------------------------------------------------


@dataclass
class Burst:
    """One network's round of P3: each phase's wall time and each command's own time (s)."""

    run: float
    rm: float
    run_calls: list[float]
    rm_calls: list[float]
    #: each phase's (start, end) on the wall clock, to find its lines in pycni's log
    run_window: tuple[float, float] = (0.0, 0.0)
    rm_window: tuple[float, float] = (0.0, 0.0)


@dataclass
class P3Result:
    containers: int
    clients: int
    ours: list[Burst] = field(default_factory=list)
    base: list[Burst] = field(default_factory=list)

    def pair(self, phase: str) -> Pair:
        return Pair(ours=[getattr(b, phase) for b in self.ours],
                    base=[getattr(b, phase) for b in self.base])


def in_parallel(clients: int, commands: list[list[str]]) -> tuple[float, list[float]]:
    """Run the commands from ``clients`` threads at once: the wall time, and each one's time.

    Every command runs even when another fails; then the first failure is raised.
    """
    def one(cmd: list[str]) -> float:
        return timed(lambda: sh(*cmd))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(one, cmd) for cmd in commands]
    wall = time.perf_counter() - start
    failed = [exc for exc in (f.exception() for f in futures) if exc is not None]
    if failed:
        raise BenchError(f"{len(failed)} of {len(commands)} commands failed; first: {failed[0]}")
    return wall, [f.result() for f in futures]


def _existing_containers(names: list[str]) -> list[str]:
    try:
        listed = set(sh("docker", "ps", "-a", "--format", "{{.Names}}").split())
    except BenchError as exc:
        print(f"bench: cleanup: {exc}", file=sys.stderr)
        return list(names)
    return [n for n in names if n in listed]


def p3_round(net: str, tag: str, containers: int, clients: int,
             publish: tuple[str, ...] = ()) -> Burst:
    """Start ``containers`` containers on ``net`` from ``clients`` clients, then remove them."""
    names = [f"pycni-bench-p3-{tag}-{n:04d}" for n in range(containers)]
    try:
        began = time.time()
        run, run_calls = in_parallel(clients, [
            ["docker", "run", "-d", "--name", name, "--network", net, *publish, TEST_IMAGE,
             "sleep", "600"]
            for name in names])
        run_window = (began, time.time())
        time.sleep(SETTLE)
        began = time.time()
        rm, rm_calls = in_parallel(clients, [["docker", "rm", "-f", name] for name in names])
        rm_window = (began, time.time())
    finally:
        left = _existing_containers(names)
        if left:
            quiet("docker", "rm", "-f", *left)
    return Burst(run=run, rm=rm, run_calls=run_calls, rm_calls=rm_calls,
                 run_window=run_window, rm_window=rm_window)


def p3(containers: int, clients: int, rounds: int, publish: tuple[str, ...] = ()) -> P3Result:
    """Rounds of P3 on pycni and on Docker's bridge, in ABBA order (pycni first in odd rounds)."""
    out = P3Result(containers=containers, clients=clients)
    made: list[str] = []
    try:
        sh("docker", "network", "create", "-d", "pycni", *PLACE, "--subnet", P3_PYCNI_SUBNET,
           P3_PYCNI_NET)
        made.append(P3_PYCNI_NET)
        sh("docker", "network", "create", "--subnet", P3_BRIDGE_SUBNET, P3_BRIDGE_NET)
        made.append(P3_BRIDGE_NET)
        sides = [("pycni", P3_PYCNI_NET, out.ours), ("bridge", P3_BRIDGE_NET, out.base)]
        for n in range(rounds):
            for tag, net, into in (sides if n % 2 == 0 else sides[::-1]):
                time.sleep(SETTLE)
                burst = p3_round(net, tag, containers, clients, publish)
                into.append(burst)
                print(f"bench: P3{'p' if publish else ''} round {n + 1} on {tag}: {containers}× run -d {burst.run:.1f}s, "
                      f"rm -f {burst.rm:.1f}s")
        return out
    finally:
        for name in reversed(made):
            quiet("docker", "network", "rm", name)


# --- P4 ------------------------------------------------------------------------------------------


@dataclass
class OurEndpoint:
    """One endpoint made through the socket, with its timings."""

    eid: str
    sent: float = 0.0  # wall clock (time.time) when CreateEndpoint went out
    answered: float = 0.0  # wall clock when its answer came back
    create: float = 0.0  # seconds
    join: float = 0.0


@dataclass
class RawEndpoint:
    """One endpoint of the raw chain: its own namespace, ADD's result for DEL."""

    netns: str
    cid: str
    config: dict[str, Any]
    cni_args: str
    caps: dict[str, Any]
    result: dict[str, Any] | None = None
    netns_add: float = 0.0
    execs: dict[str, float] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/run/netns/{self.netns}"


@dataclass
class P4Result:
    n: int
    window: int
    ours: list[OurEndpoint] = field(default_factory=list)
    raw: list[RawEndpoint] = field(default_factory=list)
    chain: list[str] = field(default_factory=list)
    raw_chain: list[str] = field(default_factory=list)
    config_source: str = ""
    bridges: list[str] = field(default_factory=list)
    #: (endpoints so far, VmRSS KiB, CPU seconds used so far) of pycni serve along the way
    checkpoints: list[tuple[int, int, float]] = field(default_factory=list)
    host_before: dict[str, int] = field(default_factory=dict)
    host_after: dict[str, int] = field(default_factory=dict)
    proc_before: dict[str, int] = field(default_factory=dict)
    proc_after: dict[str, int] = field(default_factory=dict)
    proc_final: dict[str, int] = field(default_factory=dict)
    #: per endpoint, in creation order: Leave + DeleteEndpoint; raw DEL + ip netns delete
    teardown_ours: list[float] = field(default_factory=list)
    teardown_raw: list[float] = field(default_factory=list)

    def latencies(self) -> list[float]:
        return [e.create + e.join for e in self.ours]

    def raw_latencies(self) -> list[float]:
        return [r.netns_add + sum(r.execs.values()) for r in self.raw]

    def growth(self, samples: list[float]) -> Pair:
        """The first window as the baseline, the last as ours: ``ratio`` is last ÷ first."""
        return Pair(ours=samples[-self.window:], base=samples[:self.window])


def host_counts(bridges: list[str]) -> dict[str, int]:
    """What grows on the host as endpoints pile up."""
    counts = {
        "network namespaces": len(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else 0,
        "host links": len(sh("ip", "-o", "link", "show").splitlines()),
        "iptables rules": sum(line.startswith("-A ")
                              for table in leaks.IPTABLES_TABLES
                              for line in sh("iptables-save", "-t", table).splitlines()),
    }
    for bridge in bridges:
        brif = Path(f"/sys/class/net/{bridge}/brif")
        counts[f"ports on {bridge}"] = len(list(brif.iterdir())) if brif.is_dir() else 0
    return counts


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (its threads included)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    # after "pid (comm)": state is field 3, utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_counts(pid: int) -> dict[str, int]:
    """RSS (KiB), threads and open files of a process."""
    found = {"VmRSS": rss(pid).get("VmRSS", 0)}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                found["threads"] = int(line.split()[1])
        found["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return found


def _raw_template(template: dict[str, Any]) -> dict[str, Any]:
    """pycni's chain on a bridge of its own, as pycni runs it for an endpoint that publishes
    nothing: plugins that act only on a capability the endpoint doesn't use (portmap) are left
    out, as pycni leaves them out."""
    raw = copy.deepcopy(template)
    raw["name"] = "pycni-bench-raw4"
    raw["plugins"] = [p for p in raw["plugins"] if not p.get("capabilities")]
    if not raw["plugins"] or raw["plugins"][0].get("type") != "bridge":
        raise BenchError(f"P4 expects a zero-config chain starting with bridge, got {template}")
    raw["plugins"][0]["bridge"] = P4_RAW_BRIDGE
    return raw


def _endpoint_address(pool: str, index: int) -> str:
    net = ipaddress.ip_network(pool)
    return f"{net[2 + index]}/{net.prefixlen}"


def _ours_add(network_id: str, index: int, alive: list[str]) -> OurEndpoint:
    """CreateEndpoint + Join as Docker 26.1 sends them for a container that publishes nothing.

    The id goes into ``alive`` first: DeleteEndpoint of an endpoint that never was is fine.
    """
    ep = OurEndpoint(eid=secrets.token_hex(32))
    alive.append(ep.eid)
    body = {"NetworkID": network_id, "EndpointID": ep.eid}
    ep.sent = time.time()
    start = time.perf_counter()
    post("NetworkDriver.CreateEndpoint", {**body, "Interface": {
        "Address": _endpoint_address(P4_SUBNET, index), "AddressIPv6": "", "MacAddress": ""},
        "Options": DOCKER_ENDPOINT_OPTIONS})
    ep.create = time.perf_counter() - start
    ep.answered = time.time()
    start = time.perf_counter()
    post("NetworkDriver.Join", {**body, "SandboxKey": f"/run/netns/{P4_SANDBOX}",
                                "Options": DOCKER_ENDPOINT_OPTIONS})
    ep.join = time.perf_counter() - start
    return ep


def _ours_delete(network_id: str, eid: str) -> float:
    body = {"NetworkID": network_id, "EndpointID": eid}
    start = time.perf_counter()
    post("NetworkDriver.Leave", body)
    post("NetworkDriver.DeleteEndpoint", body)
    return time.perf_counter() - start


def _raw_add(template: dict[str, Any], request: dict[str, Any], index: int,
             made: list[RawEndpoint]) -> RawEndpoint:
    """A namespace of its own and the raw chain's ADD into it (appended to ``made`` first)."""
    chain = for_endpoint(template, request, "config", EndpointInterface.from_json(
        {"Address": _endpoint_address(P4_RAW_SUBNET, index)}))
    ep = RawEndpoint(netns=f"{P4_RAW_NETNS}{index:04d}", cid=secrets.token_hex(32),
                     config=chain.config.raw, cni_args=format_cni_args(chain.cni_args),
                     caps=dict(chain.capability_args))
    made.append(ep)
    ep.netns_add = timed(lambda: sh("ip", "netns", "add", ep.netns))
    ep.result = raw_chain(ep.config, ep.cni_args, ep.caps, ep.path, ep.cid, "ADD", None, ep.execs)
    return ep


def _raw_delete(ep: RawEndpoint) -> float:
    start = time.perf_counter()
    if ep.result is not None and os.path.exists(ep.path):
        raw_chain(ep.config, ep.cni_args, ep.caps, ep.path, ep.cid, "DEL", ep.result, {})
    if os.path.exists(ep.path):
        sh("ip", "netns", "delete", ep.netns)
    return time.perf_counter() - start


def p4(server: Server, n: int) -> P4Result:
    """N endpoints on one network through the socket, and N of the raw chain, interleaved."""
    sh("ip", "netns", "add", P4_SANDBOX)
    try:
        with pycni_network(P4_NET, P4_SUBNET, place=False) as (network_id, request):
            return _p4(server, n, network_id, request)
    finally:
        quiet("ip", "netns", "delete", P4_SANDBOX)


def _p4(server: Server, n: int, network_id: str, request: dict[str, Any]) -> P4Result:
    out = P4Result(n=n, window=min(P4_WINDOW, n // 2))
    raw_request = _network_request(secrets.token_hex(32), P4_RAW_SUBNET)
    ours: list[str] = []  # endpoint ids alive in pycni
    raws: list[RawEndpoint] = []  # raw endpoints whose namespace may exist
    try:
        template, _address_via, out.config_source = _stored_network(server, network_id, request)
        raw_template = _raw_template(template)
        out.chain = [p["type"] for p in template["plugins"]]
        out.raw_chain = [p["type"] for p in raw_template["plugins"]]
        out.bridges = [template["plugins"][0].get("bridge", "cni0"), P4_RAW_BRIDGE]

        for index in range(P4_WARMUP):
            _ours_add(network_id, index, ours)
            _raw_add(raw_template, raw_request, index, raws)
        while ours:
            _ours_delete(network_id, ours[-1])
            ours.pop()
        while raws:
            _raw_delete(raws[-1])
            raws.pop()

        out.host_before = host_counts(out.bridges)
        out.proc_before = proc_counts(server.pid)
        out.checkpoints.append((0, out.proc_before["VmRSS"], cpu_seconds(server.pid)))
        started = time.monotonic()
        for index in range(n):
            # Alternate which goes first, so neither always runs right after the other.
            for side in ((0, 1) if index % 2 == 0 else (1, 0)):
                if side == 0:
                    out.ours.append(_ours_add(network_id, index, ours))
                else:
                    out.raw.append(_raw_add(raw_template, raw_request, index, raws))
            if (index + 1) % 100 == 0 or index + 1 == n:
                out.checkpoints.append((index + 1, rss(server.pid).get("VmRSS", 0),
                                        cpu_seconds(server.pid)))
                print(f"bench: P4 {index + 1}/{n} endpoints each side "
                      f"({time.monotonic() - started:.0f}s)")
        out.host_after = host_counts(out.bridges)
        out.proc_after = proc_counts(server.pid)

        # Tear down in creation order, interleaved the same way, timing both sides.
        for index in range(n):
            for side in ((0, 1) if index % 2 == 0 else (1, 0)):
                if side == 0:
                    out.teardown_ours.append(_ours_delete(network_id, ours[0]))
                    ours.pop(0)
                else:
                    out.teardown_raw.append(_raw_delete(raws[0]))
                    raws.pop(0)
        out.proc_final = proc_counts(server.pid)
        return out
    finally:
        for eid in ours:
            with contextlib.suppress(BenchError, OSError):
                _ours_delete(network_id, eid)
        for ep in raws:
            try:
                _raw_delete(ep)
            except BenchError as exc:
                print(f"bench: cleanup {ep.netns}: {exc}", file=sys.stderr)
                quiet("ip", "netns", "delete", ep.netns)
        if os.path.exists(f"/sys/class/net/{P4_RAW_BRIDGE}"):
            quiet("ip", "link", "delete", P4_RAW_BRIDGE)


_STAMP = r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) "
_EXEC_AT = re.compile(
    _STAMP + r".*?shim\.cni\.api: (\S+) (ADD|DEL|CHECK) ([0-9a-f]{64}) took ([\d.]+) ms$",
    re.MULTILINE)
_ENDPOINT_AT = re.compile(_STAMP + r".*?: endpoint ([0-9a-f]{12}) on [0-9a-f]{12}: ",
                          re.MULTILINE)
_DELETED_AT = re.compile(_STAMP + r".*?: endpoint ([0-9a-f]{12}) deleted$", re.MULTILINE)


def _log_time(stamp: str) -> float:
    """A log line's wall-clock time; logging truncates to the millisecond, so + 0.5 ms."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() + 0.0005


@dataclass
class Work:
    """pycni's endpoint work during one phase, from its debug log (seconds).

    A span runs from the first plugin exec's start to the endpoint's "on …" (ADD) or "deleted"
    (DEL) line. When ``union`` is about ``spans``, no two endpoints were in it at once.
    """

    endpoints: int
    spans: float
    union: float
    execs: float


def endpoint_work(log_text: str, window: tuple[float, float], verb: str) -> Work | None:
    start, end = window
    execs: dict[str, list[tuple[float, float]]] = {}
    for match in _EXEC_AT.finditer(log_text):
        stamp, _plugin, logged_verb, cid, took = match.groups()
        at = _log_time(stamp)
        if logged_verb == verb and start <= at <= end:
            execs.setdefault(cid[:12], []).append((at, float(took) / 1000))
    finished = _ENDPOINT_AT if verb == "ADD" else _DELETED_AT
    done = {m.group(2): _log_time(m.group(1)) for m in finished.finditer(log_text)}
    spans = sorted((min(at - took for at, took in ran), done[key])
                   for key, ran in execs.items() if key in done)
    if not spans:
        return None
    union, (low, high) = 0.0, spans[0]
    for begin, finish in spans[1:]:
        if begin > high:
            union += high - low
            low, high = begin, finish
        else:
            high = max(high, finish)
    union += high - low
    return Work(endpoints=len(spans), spans=sum(b - a for a, b in spans), union=union,
                execs=sum(took for key, ran in execs.items() if key in done for _at, took in ran))


def own_time(result: P4Result, steps: dict[str, list[float]]) -> list[float]:
    """Per endpoint, CreateEndpoint + Join less the chain's execs: pycni's own time."""
    return [lat - chain for lat, chain in zip(result.latencies(), steps["the chain's execs"],
                                              strict=True)]


def create_steps(log_text: str, endpoints: list[OurEndpoint]) -> dict[str, list[float]] | None:
    """Where each CreateEndpoint's time went, from the client's clock and pycni's debug log.

    before the chain: the request, the record, the staging netns (``ip netns add``);
    the chain: first plugin exec's start to the last one's end; after the chain: routes, the
    link out to the host, the record; the answer: the log line to the client's receipt.
    None when the log lacks the lines for some endpoint (another log format).
    """
    execs: dict[str, list[tuple[float, float]]] = {}
    for match in _EXEC_AT.finditer(log_text):
        stamp, _plugin, verb, cid, took = match.groups()
        if verb == "ADD":
            execs.setdefault(cid, []).append((_log_time(stamp), float(took) / 1000))
    done = {m.group(2): _log_time(m.group(1)) for m in _ENDPOINT_AT.finditer(log_text)}
    steps: dict[str, list[float]] = {"before the chain": [], "the chain's execs": [],
                                     "after the chain": [], "the answer": []}
    for ep in endpoints:
        ran = execs.get(ep.eid)
        end = done.get(ep.eid[:12])
        if not ran or end is None:
            return None
        first = min(at - took for at, took in ran)
        last = max(at for at, _took in ran)
        steps["before the chain"].append(first - ep.sent)
        steps["the chain's execs"].append(last - first)
        steps["after the chain"].append(end - last)
        steps["the answer"].append(ep.answered - end)
    return steps


# --- the report ----------------------------------------------------------------------------------


def print_breakdown(result: P2Result, log_text: str | None) -> None:
    n = len(result.pair.ours)
    print(f"\nP2 breakdown (medians of {n} lifecycles, ms):")
    print(f"  chain stored for the network: {'+'.join(result.chain)} ({result.config_source})")
    print(f"  pycni via the socket: {ms(median(result.pair.ours))} total")
    for method, samples in result.requests.items():
        print(f"    {method:<16}{ms(median(samples)):>8}")
    print(f"    (an empty request, Plugin.Activate: {ms(median(result.activate))})")
    plugin_total = 0.0
    if log_text is not None:
        execs = pycni_execs(log_text, result.endpoint_ids)
        for key, samples in sorted(execs.items()):
            if len(samples) != n:
                print(f"    note: {key} logged for {len(samples)} of {n} endpoints")
            print(f"    plugin exec {key:<14}{ms(median(samples)):>8}")
        # Per-lifecycle sums, so the median matches one lifecycle's work.
        sums = [sum(v[i] for v in execs.values() if len(v) == n) for i in range(n)]
        plugin_total = median(sums) if sums else 0.0
        print(f"    all plugin execs  {ms(plugin_total):>8}   "
              f"→ pycni outside plugin execs: {ms(median(result.pair.ours) - plugin_total)}")
    else:
        print("    (plugin exec times need the debug log of a pycni this run started)")
    print(f"  raw chain exec'd directly: {ms(median(result.pair.base))} total")
    for key, samples in result.raw_execs.items():
        print(f"    exec {key:<21}{ms(median(samples)):>8}")
    if log_text is not None:
        ran = set(pycni_execs(log_text, result.endpoint_ids))
        same = [k for k in result.raw_execs if k in ran]
        if same and len(same) < len(result.raw_execs):
            sums = [sum(result.raw_execs[k][i] for k in same) for i in range(n)]
            skipped = sorted(set(result.raw_execs) - ran)
            print(f"    of which the execs pycni also ran ({', '.join(same)}): "
                  f"{ms(median(sums))}; pycni skips {', '.join(skipped)}")
            print(f"  like for like (same plugin execs): "
                  f"{median(result.pair.ours) / median(sums):.2f}× (informational)")


def print_p3(result: P3Result, log_text: str | None) -> None:
    print(f"\nP3 breakdown ({result.containers} containers from {result.clients} clients, "
          f"{len(result.ours)} rounds per side; wall time per round, s; per command, ms):")
    for side, bursts in (("pycni", result.ours), ("bridge", result.base)):
        for phase in ("run", "rm"):
            walls = " ".join(f"{getattr(b, phase):.1f}" for b in bursts)
            calls = [t for b in bursts for t in getattr(b, f"{phase}_calls")]
            verb = "run -d" if phase == "run" else "rm -f"
            print(f"  {side:<7}{verb:<8}rounds {walls:<14} per command median {ms(median(calls))}, "
                  f"p90 {ms(p90(calls))}, max {ms(max(calls))}")
    if log_text is None:
        print("  (pycni's share of each phase needs the debug log of a pycni this run started)")
        return
    print("  pycni's endpoint work per phase (from its debug log; a span runs from the chain's "
          "first exec to\n  the endpoint's done line; spans' union ≈ their sum: one endpoint at a "
          "time):")
    for n, burst in enumerate(result.ours):
        for verb, window, what in (("ADD", burst.run_window, "run -d"),
                                   ("DEL", burst.rm_window, "rm -f")):
            work = endpoint_work(log_text, window, verb)
            wall = window[1] - window[0]
            if work is None:
                print(f"    round {n + 1} {what}: no {verb} lines in the log")
                continue
            print(f"    round {n + 1} {what:<7} {work.endpoints} endpoints: spans {work.spans:.1f}s, "
                  f"union {work.union:.1f}s of the phase's {wall:.1f}s "
                  f"({work.union / wall:.0%}); plugin execs {work.execs:.1f}s")


def _step_line(name: str, pair: Pair) -> str:
    return (f"    {name:<44}{ms(median(pair.base)):>9}{ms(median(pair.ours)):>9}"
            f"{pair.ratio:>8.2f}")


def print_p4(result: P4Result, log_text: str | None) -> None:
    w = result.window
    print(f"\nP4 breakdown ({result.n} endpoints each side; medians of the first and last {w}, ms):")
    print(f"  pycni's chain: {'+'.join(result.chain)} ({result.config_source}); raw chain: "
          f"{'+'.join(result.raw_chain)} on {P4_RAW_BRIDGE}, each endpoint in a netns of its own")
    print(f"    {'':<44}{'first':>9}{'last':>9}{'ratio':>8}")
    print(_step_line("pycni: CreateEndpoint + Join", result.growth(result.latencies())))
    print(_step_line("  CreateEndpoint", result.growth([e.create for e in result.ours])))
    steps = create_steps(log_text, result.ours) if log_text is not None else None
    if steps is not None:
        for name, samples in steps.items():
            print(_step_line(f"    {name}", result.growth(samples)))
        print(_step_line("  pycni outside the chain's execs", result.growth(own_time(result, steps))))
    elif log_text is None:
        print("      (its steps need the debug log of a pycni this run started)")
    else:
        print("      (its steps: the debug log lacks the exec or endpoint lines for some endpoint)")
    print(_step_line("  Join", result.growth([e.join for e in result.ours])))
    print(_step_line("raw: ip netns add + the chain's ADD", result.growth(result.raw_latencies())))
    print(_step_line("  ip netns add", result.growth([r.netns_add for r in result.raw])))
    for key in result.raw[0].execs if result.raw else ():
        print(_step_line(f"  exec {key}", result.growth([r.execs[key] for r in result.raw])))
    print(_step_line("teardown: pycni Leave + DeleteEndpoint", result.growth(result.teardown_ours)))
    print(_step_line("teardown: raw DEL + ip netns delete", result.growth(result.teardown_raw)))
    print("  host before → after the endpoints: " + ", ".join(
        f"{key} {result.host_before.get(key, 0)} → {value}"
        for key, value in result.host_after.items()))
    before, after, final = result.proc_before, result.proc_after, result.proc_final
    print(f"  pycni serve: threads {before.get('threads')} → {after.get('threads')}, open files "
          f"{before.get('fds')} → {after.get('fds')} (after teardown: {final.get('fds')}); "
          f"RSS after teardown {final.get('VmRSS', 0) / 1024:.1f} MiB")
    marks = result.checkpoints
    print("  pycni serve RSS (MiB) by endpoints alive: " + ", ".join(
        f"{count}: {kib / 1024:.1f}" for count, kib, _cpu in marks))
    # CPU per endpoint that grows while the requests' own time doesn't is work done beside them.
    print("  pycni serve CPU ms per endpoint made, by stretch: " + ", ".join(
        f"{a}-{b}: {(cb - ca) * 1000 / (b - a):.0f}"
        for (a, _ra, ca), (b, _rb, cb) in pairwise(marks)))


@dataclass
class Row:
    """One line of the summary: a measured figure against its goal (None: informational)."""

    label: str
    what: str
    n: int
    ours: str
    ours_p90: str
    base: str
    base_p90: str
    value: float
    shown: str
    goal: float | None
    goal_shown: str = ""


def pair_row(label: str, what: str, pair: Pair, goal: float | None, *,
             seconds: bool = False, micro: bool = False) -> Row:
    def fmt(x: float) -> str:
        if micro:  # a ping's round trip: tens of microseconds
            return f"{x * 1e6:.0f} µs"
        return f"{x:.1f} s" if seconds else f"{ms(x)} ms"

    return Row(label=label, what=what, n=len(pair.ours),
               ours=fmt(median(pair.ours)), ours_p90="" if seconds else fmt(p90(pair.ours)),
               base=fmt(median(pair.base)), base_p90="" if seconds else fmt(p90(pair.base)),
               value=pair.ratio, shown=f"{pair.ratio:.3f}", goal=goal,
               goal_shown=f"≤ {goal:.2f}" if goal is not None else "")


def seconds_row(label: str, what: str, samples: list[float], goal: float) -> Row:
    """A figure in seconds against an absolute goal (no baseline to divide by)."""
    value = median(samples)
    return Row(label=label, what=what, n=len(samples), ours=f"{ms(value)} ms",
               ours_p90=f"{ms(p90(samples))} ms", base="", base_p90="", value=value,
               shown=f"{value:.3f}", goal=goal, goal_shown=f"≤ {goal:.2f}")


def p4_rows(result: P4Result, log_text: str | None) -> list[Row]:
    w = result.window
    start_kib, end_kib = result.checkpoints[0][1], result.checkpoints[-1][1]
    steps = create_steps(log_text, result.ours) if log_text is not None else None
    own = ([pair_row("", "  pycni less its plugin execs, last ÷ first",
                     result.growth(own_time(result, steps)), None)] if steps else [])
    return [
        pair_row("P4", f"Create+Join, last {w} ÷ first {w} of {result.n}",
                 result.growth(result.latencies()), P4_GOAL),
        *own,
        pair_row("", f"  raw chain (netns add + ADD), last {w} ÷ first {w}",
                 result.growth(result.raw_latencies()), None),
        Row(label="", what=f"  pycni serve RSS: after {result.n} endpoints", n=result.n,
            ours=f"{end_kib / 1024:.1f} MiB", ours_p90="", base=f"{start_kib / 1024:.1f} MiB",
            base_p90="", value=end_kib / 1024, shown=f"{end_kib / 1024:.1f}", goal=P4_RSS_GOAL_MIB,
            goal_shown=f"≤ {P4_RSS_GOAL_MIB:.0f} MiB"),
    ]


def print_summary(rows: list[Row]) -> None:
    print()
    header = (f"{'':4}{'measure':<52}{'n':>5}{'ours':>12}{'p90':>11}{'base':>12}{'p90':>11}"
              f"{'result':>8}{'goal':>11}  verdict")
    print(header)
    print("-" * len(header))
    for row in rows:
        verdict = "info" if row.goal is None else "PASS" if row.value <= row.goal else "MISS"
        print(f"{row.label:<4}{row.what:<52}{row.n:>5}{row.ours:>12}{row.ours_p90:>11}"
              f"{row.base:>12}{row.base_p90:>11}{row.shown:>8}{row.goal_shown:>11}  {verdict}")
    print("P1, P2: medians and nearest-rank p90, result = median ÷ median. P3: n rounds per side,"
          " mean wall\ntime of a round, result = ÷. P4: ours = the last endpoints' median, base ="
          " the first ones'; RSS: ours = at\nthe end, base = at the start, result in MiB.")


MEASURES = ("P1", "P1p", "P2", "P3", "P3p", "P4", "P5", "P6")


def _measures(text: str) -> list[str]:
    named = {m.upper(): m for m in MEASURES}
    chosen = [named.get(m.strip().upper(), m.strip()) for m in text.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in MEASURES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a comma-separated list of {', '.join(MEASURES)}")
    return chosen


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--only", type=_measures, default=list(MEASURES),
                        metavar="P1,P1p,P2,P3,P3p,P4,P5,P6",
                        help="the measures to run, comma-separated (default: all)")
    parser.add_argument("--runs", type=_bounded(1, MAX_RUNS), default=None,
                        help="measured samples per side for P1 and P2 (default 30)")
    parser.add_argument("--quick", action="store_true",
                        help="a small run: P1/P2 5 samples per side and 1 warm-up round, "
                        "P3 20 containers from 4 clients, P4 100 endpoints (flags given win)")
    parser.add_argument("--containers", type=_bounded(1, MAX_CONTAINERS), default=None,
                        help="P3: containers per network and round (default 100)")
    parser.add_argument("--clients", type=_bounded(1, MAX_CLIENTS), default=None,
                        help="P3: parallel docker clients (default 10)")
    parser.add_argument("--rounds", type=_bounded(1, MAX_ROUNDS), default=2,
                        help="P3: rounds per network, alternating which goes first (default 2)")
    parser.add_argument("--port-containers", type=_bounded(1, MAX_CONTAINERS), default=None,
                        help="P3p: containers per network and round (default 60)")
    parser.add_argument("--labelled", type=_bounded(1, MAX_CONTAINERS), default=None,
                        help="P6: labelled containers per side and round (default 50)")
    parser.add_argument("--endpoints", type=_bounded(2, MAX_ENDPOINTS), default=None,
                        help="P4: endpoints kept on one network, and raw ones (default 1000)")
    parser.add_argument("--place", choices=("staging", "sandbox"), default="staging",
                        help="where pycni's networks run their chains (-o cni.place; sandbox "
                        "needs Docker 28 for P1 and P3, P2 makes the sandboxes itself)")
    parser.add_argument("--keep-log", action="store_true",
                        help="keep pycni's debug log (of a server this run starts) in /tmp")
    args = parser.parse_args(argv)
    quick = args.quick
    args.warmup = 1 if quick else 2
    args.runs = args.runs or (5 if quick else 30)
    args.containers = args.containers or (20 if quick else 100)
    args.port_containers = args.port_containers or (20 if quick else 60)
    args.clients = args.clients or (4 if quick else 10)
    args.endpoints = args.endpoints or (100 if quick else 1000)
    args.labelled = args.labelled or (10 if quick else 50)
    return args


def p5_rows(server: Server, runs: int) -> list[Row]:
    """P5 and P7 (tests/bench_overlay.py), on this run's own pycni restarted with etcd
    meanwhile."""
    from tests.bench_overlay import overlay

    own = server.own
    if own is None:
        raise BenchError("P5 restarts pycni serve with etcd: stop the pycni already serving "
                         f"{SOCKET} (or leave P5 out)")

    def restart(env: dict[str, str]) -> None:
        for key in ("PYCNI_ETCD", "PYCNI_UNDERLAY_ADDRESS"):
            os.environ.pop(key, None)
        os.environ.update(env)
        own.restart()
        server.pid = own.proc.pid if own.proc else server.pid

    got = overlay(restart, runs, sh, quiet)
    print(f"bench: P5 median RTT across hosts {median(got.crossed) * 1e3:.3f} ms, on one host "
          f"{median(got.local) * 1e3:.3f} ms; the kernel's VXLAN alone "
          f"{median(got.raw_crossed) * 1e3:.3f} ms and {median(got.raw_local) * 1e3:.3f} ms")
    print(f"bench: P7 a host that joins is routed on the two others in {ms(median(got.learnt))} "
          f"ms (p90 {ms(p90(got.learnt))}), unrouted after it leaves in "
          f"{ms(median(got.forgotten))} ms (p90 {ms(p90(got.forgotten))})")
    return [pair_row("P5", "overlay ping RTT: across hosts ÷ same host",
                     Pair(ours=got.crossed, base=got.local), P5_GOAL, micro=True),
            pair_row("", "  kernel VXLAN alone: across ÷ same (the floor)",
                     Pair(ours=got.raw_crossed, base=got.raw_local), None, micro=True),
            pair_row("", "  across hosts: pycni ÷ kernel VXLAN alone",
                     Pair(ours=got.crossed, base=got.raw_crossed), None, micro=True),
            seconds_row("P7", "a host joins: routed on the others (s)", got.learnt, P7_GOAL),
            seconds_row("", "  a host leaves: unrouted on the others (s)", got.forgotten,
                        P7_GOAL)]


def p6_row(containers: int, clients: int, rounds: int) -> Row:
    """P6 (tests/bench_controller.py): the none mode's controller ÷ the raw chain."""
    from tests.bench_controller import p6

    result = p6(containers, clients, rounds, TEST_IMAGE, str(REPO / ".venv" / "bin" / "pycni"),
                CNI_PATH, sh, quiet, raw_chain)
    return pair_row("P6", f"{containers} labelled: attach+detach, watch ÷ raw chain",
                    Pair(ours=[a + d for a, d in result.ours],
                         base=[a + d for a, d in result.base]), P6_GOAL, seconds=True)


def p3_rows(label: str, what: str, result: P3Result) -> list[Row]:
    return [pair_row(label, f"{what}: run -d, pycni ÷ bridge", result.pair("run"), P3_GOAL,
                     seconds=True),
            pair_row("", f"{what}: rm -f, pycni ÷ bridge", result.pair("rm"), P3_GOAL,
                     seconds=True)]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (dockerd, namespaces, CNI plugins)", file=sys.stderr)
        return 2

    global PLACE
    PLACE = ("-o", "cni.place=sandbox") if args.place == "sandbox" else ()
    lock = exclusive_engine()
    rows: list[Row] = []
    p2_result: P2Result | None = None
    p3_result: P3Result | None = None
    p4_result: P4Result | None = None
    log_text: str | None = None
    memory: dict[str, int] = {}
    left: list[str] = []
    try:
        sh("bash", str(REPO / "scripts" / "engine.sh"), timeout=300)
        # One audited thing at a time on this host: integration tests would see our links as
        # theirs, and we theirs.
        with leaks.exclusive(), pycni_server(args.keep_log) as server:
            remove_leftovers()
            before = host_state(server.state_dir)
            plan = {"P1": f"P1/P2 {args.runs} samples per side (+{args.warmup} warm-up)",
                    "P3p": f"P3p {args.port_containers} containers with -p from {args.clients} "
                           f"clients × {args.rounds} rounds per side",
                    "P3": f"P3 {args.containers} containers from {args.clients} clients × "
                          f"{args.rounds} rounds per side",
                    "P4": f"P4 {args.endpoints} endpoints per side",
                    "P5": f"P5 {args.runs} ping bursts per side, P7 {args.runs} joins and "
                          "leaves",
                    "P6": f"P6 {args.labelled} labelled containers from {args.clients} clients "
                          f"× {args.rounds} rounds per side"}
            for same in ("P1p", "P2"):
                plan[same] = plan["P1"]
            print("bench: " + "; ".join(dict.fromkeys(plan[m] for m in args.only)))
            load = os.getloadavg()[0]
            if load >= 0.5:
                print(f"bench: note: load average {load:.2f} before the run; something else is "
                      "busy on this machine, so the figures will be noisier")
            try:
                if "P1" in args.only:
                    started = time.monotonic()
                    pair = p1(args.runs, args.warmup)
                    rows.append(pair_row("P1", "docker run --rm: pycni ÷ Docker bridge", pair,
                                         P1_GOAL))
                    print(f"bench: P1 done in {time.monotonic() - started:.0f}s")
                if "P1p" in args.only:
                    started = time.monotonic()
                    pair = p1(args.runs, args.warmup, PUBLISH)
                    rows.append(pair_row("P1p", "docker run --rm -p 127.0.0.1::80: ÷ bridge",
                                         pair, P1_GOAL))
                    print(f"bench: P1p done in {time.monotonic() - started:.0f}s")
                if "P2" in args.only:
                    started = time.monotonic()
                    p2_result = p2(server, args.runs, args.warmup)
                    rows.append(pair_row("P2", "endpoint lifecycle via socket ÷ raw ADD+DEL",
                                         p2_result.pair, P2_GOAL))
                    print(f"bench: P2 done in {time.monotonic() - started:.0f}s")
                if "P3" in args.only:
                    started = time.monotonic()
                    p3_result = p3(args.containers, args.clients, args.rounds)
                    rows += p3_rows("P3", f"{args.containers} containers, {args.clients} "
                                    "clients", p3_result)
                    print(f"bench: P3 done in {time.monotonic() - started:.0f}s")
                if "P3p" in args.only:
                    started = time.monotonic()
                    ported = p3(args.port_containers, args.clients, args.rounds, PUBLISH)
                    rows += p3_rows("P3p", f"{args.port_containers} with -p, {args.clients} "
                                    "clients", ported)
                    print(f"bench: P3p done in {time.monotonic() - started:.0f}s")
                if "P4" in args.only:
                    started = time.monotonic()
                    p4_result = p4(server, args.endpoints)
                    print(f"bench: P4 done in {time.monotonic() - started:.0f}s")
                if "P5" in args.only:
                    started = time.monotonic()
                    rows += p5_rows(server, args.runs)
                    print(f"bench: P5 done in {time.monotonic() - started:.0f}s")
                if "P6" in args.only:
                    started = time.monotonic()
                    try:
                        rows.append(p6_row(args.labelled, args.clients, args.rounds))
                    except RuntimeError as exc:
                        raise BenchError(str(exc)) from exc
                    print(f"bench: P6 done in {time.monotonic() - started:.0f}s")
                memory = rss(server.pid)
                if server.log_path is not None:
                    log_text = server.log_path.read_text(errors="replace")
            finally:
                after = host_state(server.state_dir)
                left = changes(before, after)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        os.close(lock)

    if p2_result is not None:
        print_breakdown(p2_result, log_text)
    if p3_result is not None:
        print_p3(p3_result, log_text)
    if p4_result is not None:
        print_p4(p4_result, log_text)
        rows += p4_rows(p4_result, log_text)
    print_summary(rows)
    if memory:
        print(f"\npycni serve RSS after the run: {memory.get('VmRSS', 0) / 1024:.1f} MiB "
              f"(peak {memory.get('VmHWM', 0) / 1024:.1f} MiB)")
    if left:
        print("\nbench: the run did not leave the host as it found it:", file=sys.stderr)
        for line in left:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("host state after the run: as before (namespaces, links, iptables, CNI cache, "
          "pycni state, containers, networks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
