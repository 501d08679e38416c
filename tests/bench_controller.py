"""P6: the ``--network none`` mode's controller (``pycni watch``) against the raw chain.

Both sides start the same ``containers`` with ``--network none`` from ``clients`` parallel docker
clients, wire each to the chain users write (bridge isGateway + ipMasq, host-local, portmap,
firewall; subnet 10.202.24.0/24), then remove them:

* **pycni**: the containers carry the label ``pycni.networks=bench6``; a ``pycni watch`` of this
  run (its own state, cache and conf dirs) attaches them as they start and detaches them as they
  go. Attach: from the first ``docker run`` until every container's attachment is recorded with
  its result; detach: from the first ``docker rm -f`` until no record is left.
* **raw**: each client, right after its ``docker run -d``, asks Docker for the container's pid and
  execs the chain's ADD into ``/proc/PID/ns/net`` as libcni would (each result the next
  ``prevResult``); before its ``docker rm -f``, the chain's DEL in reverse.

P6 = (attach + detach) pycni ÷ (attach + detach) raw, in ABBA rounds. Both sides pay Docker's own
run and rm; the difference is what the controller adds over a runtime that execs the chain by
hand. Each side must leave no host-local reservation, CNI iptables chain or record behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NETWORK = "bench6"
SUBNET = "10.202.24.0/24"
BRIDGE = "pcnbench6"
CONFLIST: dict[str, Any] = {
    "cniVersion": "1.0.0", "name": NETWORK, "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]],
                  "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
    ]}
RESERVATIONS = Path("/var/lib/cni/networks") / NETWORK
POLL = 0.02


@dataclass
class P6Result:
    containers: int
    clients: int
    #: per round: (attach, detach) wall seconds
    ours: list[tuple[float, float]] = field(default_factory=list)
    base: list[tuple[float, float]] = field(default_factory=list)


def _cni_chains() -> set[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=False).stdout
    return set(re.findall(r"^:(CNI-[0-9a-f]{24}) ", out, re.MULTILINE))


def _reserved() -> list[str]:
    return sorted(p.name for p in RESERVATIONS.glob("10.*")) if RESERVATIONS.exists() else []


def _records(state: Path) -> list[dict[str, Any]]:
    found = []
    for path in (state / "containers").glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being written
    return found


def _wait(what: str, done: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"P6: {what} not within {timeout:.0f} s")
        time.sleep(POLL)


class Controller:
    """A ``pycni watch`` of this run's own, on its own dirs."""

    def __init__(self, pycni: str, cni_path: str) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pycni-bench6-"))
        self.state = self.tmp / "state"
        (self.tmp / "net.d").mkdir()
        (self.tmp / "net.d" / f"{NETWORK}.conflist").write_text(json.dumps(CONFLIST))
        env = {**os.environ, "PYCNI_STATE_DIR": str(self.state),
               "PYCNI_CONF_DIR": str(self.tmp / "net.d"), "CNI_PATH": cni_path,
               "PYCNI_CACHE_DIR": str(self.tmp / "cache")}
        self.log = open(self.tmp / "watch.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([pycni, "watch"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def attached(self) -> int:
        return sum(1 for r in _records(self.state) if r.get("result"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _parallel(clients: int, work: Callable[[str], object], names: list[str]) -> None:
    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(work, n) for n in names]
    failed = [exc for exc in (f.exception() for f in futures) if exc is not None]
    if failed:
        raise RuntimeError(f"P6: {len(failed)} of {len(names)} failed; first: {failed[0]}")


def _ours(controller: Controller, names: list[str], clients: int, image: str,
          sh: Callable[..., str]) -> tuple[float, float]:
    def up(name: str) -> None:
        sh("docker", "run", "-d", "--name", name, "--network", "none", "--label",
           f"pycni.networks={NETWORK}", image, "sleep", "600")

    def down(name: str) -> None:
        sh("docker", "rm", "-f", name)

    start = time.perf_counter()
    _parallel(clients, up, names)
    _wait("every container attached", lambda: controller.attached() == len(names))
    attach = time.perf_counter() - start
    start = time.perf_counter()
    _parallel(clients, down, names)
    _wait("every attachment gone", lambda: not _records(controller.state))
    return attach, time.perf_counter() - start


def _raw(names: list[str], clients: int, image: str, sh: Callable[..., str],
         raw_chain: Callable[..., dict[str, Any] | None]) -> tuple[float, float]:
    added: dict[str, tuple[str, str, dict[str, Any] | None]] = {}

    def up(name: str) -> None:
        cid = sh("docker", "run", "-d", "--name", name, "--network", "none", image, "sleep",
                 "600").split()[-1]
        pid = sh("docker", "inspect", "-f", "{{.State.Pid}}", cid).strip()
        netns = f"/proc/{pid}/ns/net"
        added[name] = (cid, netns, raw_chain(CONFLIST, "", {}, netns, cid, "ADD", None, {}))

    def down(name: str) -> None:
        cid, netns, result = added[name]
        raw_chain(CONFLIST, "", {}, netns, cid, "DEL", result, {})
        sh("docker", "rm", "-f", name)

    start = time.perf_counter()
    _parallel(clients, up, names)
    attach = time.perf_counter() - start
    start = time.perf_counter()
    _parallel(clients, down, names)
    return attach, time.perf_counter() - start


def p6(containers: int, clients: int, rounds: int, image: str, pycni: str, cni_path: str,
       sh: Callable[..., str], quiet: Callable[..., None],
       raw_chain: Callable[..., dict[str, Any] | None]) -> P6Result:
    """Rounds of P6, pycni first in odd rounds; raises if either side leaves anything."""
    out = P6Result(containers=containers, clients=clients)
    chains, reserved = _cni_chains(), _reserved()
    controller = Controller(pycni, cni_path)
    names: list[str] = []
    try:
        for n in range(rounds):
            sides = [("pycni", out.ours), ("raw", out.base)]
            for tag, into in (sides if n % 2 == 0 else sides[::-1]):
                names = [f"pycni-bench-p6-{tag}-{i:03d}" for i in range(containers)]
                if tag == "pycni":
                    took = _ours(controller, names, clients, image, sh)
                else:
                    took = _raw(names, clients, image, sh, raw_chain)
                into.append(took)
                print(f"bench: P6 round {n + 1} on {tag}: {containers} attached in "
                      f"{took[0]:.1f}s, detached in {took[1]:.1f}s")
                left = sorted(_cni_chains() - chains), [r for r in _reserved() if r not in reserved]
                if any(left):
                    raise RuntimeError(f"P6: {tag} left CNI chains {left[0]} and reservations "
                                       f"{left[1]}")
    finally:
        controller.stop()
        listed = set(sh("docker", "ps", "-a", "--format", "{{.Names}}").split())
        stray = [n for n in listed if n.startswith("pycni-bench-p6-")]
        if stray:
            quiet("docker", "rm", "-f", *stray)
        quiet("ip", "link", "delete", BRIDGE)
    return out
