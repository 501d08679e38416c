"""pycni's speed and memory, as ratios measured in one run (``make bench``; never a test).

P1  median ``docker run --rm`` on a pycni zero-config network
    ÷ the same on a Docker bridge network, interleaved.                         goal ≤ 1.10
P2  one endpoint's lifecycle through the plugin socket (CreateEndpoint, Join, Leave,
    DeleteEndpoint, exactly as Docker sends them)
    ÷ the same chain's ADD + DEL exec'd directly into a namespace.               goal ≤ 1.15

Also: the RSS of ``pycni serve`` after the run. Traffic stays on this machine (10.202.0.0/16).
Usage: python -m tests.bench [--runs N] [--quick]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shim.chains import for_endpoint
from shim.protocol import EndpointInterface
from tests.conftest import CNI_PATH, REPO, TEST_IMAGE
from tests.e2e.conftest import SOCKET, PycniServer, call, exclusive_engine

IMAGE = TEST_IMAGE


def sh(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(0.9 * (len(ordered) - 1))]


def p1(runs: int) -> tuple[list[float], list[float]]:
    """docker run --rm on pycni vs Docker's bridge, alternating so drift hits both alike."""
    sh("docker", "network", "create", "-d", "pycni", "--subnet", "10.202.1.0/24", "pycni-bench")
    sh("docker", "network", "create", "--subnet", "10.202.2.0/24", "pycni-bench-bridge")
    try:
        def run_on(net: str) -> Callable[[], object]:
            return lambda: sh("docker", "run", "--rm", "--network", net, IMAGE, "true")

        for net in ("pycni-bench", "pycni-bench-bridge"):  # warm caches
            timed(run_on(net))
        ours: list[float] = []
        theirs: list[float] = []
        for _ in range(runs):
            ours.append(timed(run_on("pycni-bench")))
            theirs.append(timed(run_on("pycni-bench-bridge")))
        return ours, theirs
    finally:
        sh("docker", "network", "rm", "pycni-bench", "pycni-bench-bridge")


def post(method: str, body: dict[str, object]) -> dict[str, object]:
    status, data = call(method, json.dumps(body).encode())
    if status != 200:
        raise SystemExit(f"bench: {method} answered {status}: {data!r}")
    answer: dict[str, object] = json.loads(data)
    return answer


def raw_chain(config: dict[str, object], netns: str, cid: str, verb: str,
              prev: dict[str, object] | None) -> dict[str, object] | None:
    """One verb of the whole chain, each plugin exec'd as a CNI runtime would (no pycni)."""
    plugins = list(config["plugins"])  # type: ignore[call-overload]
    if verb == "DEL":
        plugins.reverse()
    env = {**os.environ, "CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH, "CNI_ARGS": "IgnoreUnknown=1"}
    for plugin in plugins:
        conf = {**plugin, "name": config["name"], "cniVersion": config["cniVersion"]}
        if prev is not None:
            conf["prevResult"] = prev
        binary = next(f"{d}/{plugin['type']}" for d in CNI_PATH.split(":")
                      if os.path.exists(f"{d}/{plugin['type']}"))
        proc = subprocess.run([binary], input=json.dumps(conf).encode(), env=env,
                              capture_output=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"bench: raw {plugin['type']} {verb} failed: {proc.stdout!r}")
        if verb == "ADD":
            prev = json.loads(proc.stdout)
    return prev


def p2(server: PycniServer, runs: int) -> tuple[list[float], list[float]]:
    network_id = secrets.token_hex(32)
    request = {
        "NetworkID": network_id,
        "Options": {"com.docker.network.generic": {}},
        "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.202.3.0/24",
                      "Gateway": "10.202.3.1/24"}],
        "IPv6Data": [],
    }
    post("NetworkDriver.CreateNetwork", request)
    template = json.loads((server.state_dir / "networks" / f"{network_id}.json").read_text())
    netns = f"pycni-bench-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", netns)
    ours: list[float] = []
    raw: list[float] = []
    try:
        for n in range(runs + 1):
            address = f"10.202.3.{10 + n % 200}/24"

            def lifecycle(address: str = address) -> None:
                endpoint = {"NetworkID": network_id, "EndpointID": secrets.token_hex(32)}
                post("NetworkDriver.CreateEndpoint",
                     {**endpoint, "Interface": {"Address": address}, "Options": {}})
                post("NetworkDriver.Join",
                     {**endpoint, "SandboxKey": "/var/run/docker/netns/bench", "Options": {}})
                post("NetworkDriver.Leave", endpoint)
                post("NetworkDriver.DeleteEndpoint", endpoint)

            # The identical per-endpoint chain pycni runs (static IPAM given the same address).
            chain = for_endpoint(copy.deepcopy(template["config"]), template["request"],
                                 template["address_via"],
                                 EndpointInterface.from_json({"Address": address}))

            def direct(chain: Any = chain) -> None:
                cid = secrets.token_hex(32)
                result = raw_chain(chain.config.raw, f"/run/netns/{netns}", cid, "ADD", None)
                raw_chain(chain.config.raw, f"/run/netns/{netns}", cid, "DEL", result)

            t_ours, t_raw = timed(lifecycle), timed(direct)
            if n:  # the first round warms caches
                ours.append(t_ours)
                raw.append(t_raw)
    finally:
        sh("ip", "netns", "delete", netns)
        post("NetworkDriver.DeleteNetwork", {"NetworkID": network_id})
    return ours, raw


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="samples per side (default 30)")
    parser.add_argument("--quick", action="store_true", help="5 samples per side")
    args = parser.parse_args()
    runs = 5 if args.quick else max(args.runs, 1)

    lock = exclusive_engine()
    sh("bash", str(REPO / "scripts" / "engine.sh"))
    if os.path.exists(SOCKET):
        raise SystemExit(f"bench: a pycni is already serving {SOCKET}; stop it first")
    server = PycniServer(Path(tempfile.mkdtemp(prefix="pycni-bench-")))
    server.start()
    try:
        print(f"bench: {runs} samples per side, interleaved")
        p1_ours, p1_bridge = p1(runs)
        p2_ours, p2_raw = p2(server, runs)
        assert server.proc is not None
        rss = rss_kib(server.proc.pid)
    finally:
        server.stop()
        os.close(lock)

    rows = []
    for label, ours, theirs, goal, what in (
        ("P1", p1_ours, p1_bridge, 1.10, "docker run --rm: pycni ÷ Docker bridge"),
        ("P2", p2_ours, p2_raw, 1.15, "endpoint lifecycle via socket ÷ raw chain ADD+DEL"),
    ):
        (m_ours, p90_ours), (m_theirs, p90_theirs) = summary(ours), summary(theirs)
        ratio = m_ours / m_theirs
        rows.append((label, what, m_ours, p90_ours, m_theirs, p90_theirs, ratio, goal))
    print()
    print(f"{'':4}{'measure':<52}{'ours ms':>10}{'p90':>8}{'base ms':>10}{'p90':>8}"
          f"{'ratio':>8}{'goal':>7}  verdict")
    for label, what, mo, po, mt, pt, ratio, goal in rows:
        verdict = "PASS" if ratio <= goal else "MISS"
        print(f"{label:<4}{what:<52}{mo * 1000:>10.1f}{po * 1000:>8.1f}{mt * 1000:>10.1f}"
              f"{pt * 1000:>8.1f}{ratio:>8.3f}{goal:>7.2f}  {verdict}")
    print(f"\npycni serve RSS after the run: {rss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
