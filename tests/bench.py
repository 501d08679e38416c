"""pycni's speed and memory, as ratios measured in one run (``make bench``; never a test).

P1  median ``docker run --rm IMAGE true`` on a zero-config pycni network
    ÷ the same on a Docker bridge network; runs alternate pycni/bridge.          goal ≤ 1.10
P2  one endpoint's lifecycle POSTed to the plugin socket as Docker sends it (CreateEndpoint,
    Join, Leave, DeleteEndpoint, on a network made by CreateNetwork through the socket)
    ÷ the same chain's ADD + DEL exec'd directly (the plugin binaries, with the config pycni
    stored for the network, into one namespace made for the purpose); interleaved.  goal ≤ 1.15

Also: where P2's time goes (per request, per plugin exec, from pycni's debug log), the RSS of
``pycni serve`` after the run, and a check that the run left nothing behind (namespaces, links,
iptables, libcni cache, pycni state, containers, networks).

The benchmark starts its own ``pycni serve`` on a temporary state dir, unless one already answers
on the plugin socket (then it uses that one and says so). Timings never fail the run: the exit
status is 0 unless the benchmark itself breaks (a command fails, or it leaves something behind).
Traffic stays on this machine; the subnets are in 10.202.0.0/16.

Usage: python -m tests.bench [--runs N] [--quick] [--only p1|p2] [--keep-log]
"""

from __future__ import annotations

import argparse
import contextlib
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shim.chains import for_endpoint, zero_config
from shim.client import PluginClient
from shim.cni.invoke import format_cni_args
from shim.errors import PycniError
from shim.protocol import CreateNetworkRequest, EndpointInterface
from tests import leaks
from tests.conftest import CNI_PATH, REPO, TEST_IMAGE
from tests.e2e.conftest import SOCKET, PycniServer, call, exclusive_engine

P1_PYCNI_NET = "pycni-bench-p1"
P1_BRIDGE_NET = "pycni-bench-p1-bridge"
P1_PYCNI_SUBNET = "10.202.1.0/24"
P1_BRIDGE_SUBNET = "10.202.2.0/24"
P2_SUBNET = "10.202.3"  # /24: .1 gateway, .2-.121 for pycni's endpoints, .130-.249 for raw
P1_GOAL = 1.10
P2_GOAL = 1.15
MAX_RUNS = 1000  # every loop is bounded
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


# --- P1 ------------------------------------------------------------------------------------------


@dataclass
class Pair:
    """Interleaved samples (seconds) of pycni and of the baseline."""

    ours: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return median(self.ours) / median(self.base)


def p1(runs: int, warmup: int) -> Pair:
    """``docker run --rm`` on pycni vs Docker's bridge, alternating so drift hits both alike."""
    made: list[str] = []
    try:
        sh("docker", "network", "create", "-d", "pycni", "--subnet", P1_PYCNI_SUBNET, P1_PYCNI_NET)
        made.append(P1_PYCNI_NET)
        sh("docker", "network", "create", "--subnet", P1_BRIDGE_SUBNET, P1_BRIDGE_NET)
        made.append(P1_BRIDGE_NET)

        def run_on(net: str) -> float:
            return timed(lambda: sh("docker", "run", "--rm", "--network", net, TEST_IMAGE, "true"))

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


def _network_request(network_id: str) -> dict[str, Any]:
    """CreateNetwork exactly as Docker 26.1 sends it for ``--subnet 10.202.3.0/24``."""
    return {
        "NetworkID": network_id,
        "Options": {"com.docker.network.enable_ipv6": False, "com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Gateway": f"{P2_SUBNET}.1/24",
                      "Pool": f"{P2_SUBNET}.0/24"}],
        "IPv6Data": [],
    }


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
    out = P2Result()
    network_id = secrets.token_hex(32)
    request = _network_request(network_id)
    netns = f"pycni-bench-{secrets.token_hex(4)}"
    netns_path = f"/run/netns/{netns}"
    network_made = netns_made = False
    try:
        post("NetworkDriver.CreateNetwork", request)
        network_made = True
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
            calls: list[tuple[str, dict[str, Any]]] = [
                ("CreateEndpoint", {**endpoint, "Interface": {
                    "Address": ours_addr, "AddressIPv6": "", "MacAddress": ""},
                    "Options": DOCKER_ENDPOINT_OPTIONS}),
                ("Join", {**endpoint, "SandboxKey": f"/var/run/docker/netns/{eid[:12]}",
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

            execs: dict[str, float] = {}
            start = time.perf_counter()
            cid = secrets.token_hex(32)
            added = raw_chain(chain.config.raw, cni_args, caps, netns_path, cid, "ADD", None, execs)
            raw_chain(chain.config.raw, cni_args, caps, netns_path, cid, "DEL", added, execs)
            t_raw = time.perf_counter() - start

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
        if network_made:
            try:
                post("NetworkDriver.DeleteNetwork", {"NetworkID": network_id})
            except (BenchError, OSError) as exc:
                print(f"bench: cleanup DeleteNetwork: {exc}", file=sys.stderr)


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


def print_summary(rows: list[tuple[str, str, Pair, float]]) -> None:
    print()
    header = (f"{'':4}{'measure':<50}{'n':>4}{'ours':>9}{'p90':>8}{'base':>9}{'p90':>8}"
              f"{'ratio':>8}{'goal':>7}  verdict")
    print(header)
    print("-" * len(header))
    for label, what, pair, goal in rows:
        verdict = "PASS" if pair.ratio <= goal else "MISS"
        print(f"{label:<4}{what:<50}{len(pair.ours):>4}{ms(median(pair.ours)):>9}"
              f"{ms(p90(pair.ours)):>8}{ms(median(pair.base)):>9}{ms(p90(pair.base)):>8}"
              f"{pair.ratio:>8.3f}{'≤ ' + format(goal, '.2f'):>7}  {verdict}")
    print("(times in ms: medians and nearest-rank p90; ratio = median ÷ median)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--runs", type=int, default=30,
                        help="measured samples per side for P1 and P2 (default 30)")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 5 samples per side, 1 warm-up round")
    parser.add_argument("--only", choices=("p1", "p2"), help="run one measure only")
    parser.add_argument("--keep-log", action="store_true",
                        help="keep pycni's debug log (of a server this run starts) in /tmp")
    args = parser.parse_args(argv)
    if args.quick:
        runs, warmup = 5, 1
    else:
        runs, warmup = min(max(args.runs, 1), MAX_RUNS), 2
    if os.geteuid() != 0:
        print("bench: needs root (dockerd, namespaces, CNI plugins)", file=sys.stderr)
        return 2

    lock = exclusive_engine()
    rows: list[tuple[str, str, Pair, float]] = []
    p2_result: P2Result | None = None
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
            print(f"bench: {runs} measured samples per side (+{warmup} warm-up), interleaved")
            load = os.getloadavg()[0]
            if load >= 0.5:
                print(f"bench: note: load average {load:.2f} before the run; something else is "
                      "busy on this machine, so the figures will be noisier")
            try:
                if args.only in (None, "p1"):
                    started = time.monotonic()
                    pair = p1(runs, warmup)
                    rows.append(("P1", "docker run --rm: pycni ÷ Docker bridge", pair, P1_GOAL))
                    print(f"bench: P1 done in {time.monotonic() - started:.0f}s")
                if args.only in (None, "p2"):
                    started = time.monotonic()
                    p2_result = p2(server, runs, warmup)
                    rows.append(("P2", "endpoint lifecycle via socket ÷ raw ADD+DEL",
                                 p2_result.pair, P2_GOAL))
                    print(f"bench: P2 done in {time.monotonic() - started:.0f}s")
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
