"""P5 of ``make bench``: an overlay network's round trip across hosts ÷ on one host.

On the two-host rig (:mod:`tests.multihost`): one pycni overlay network on both hosts, two
containers on host A and one on host B. Each sample is the average RTT of a burst of pings from
A's first container, alternately to A's second (same host: through the bridge) and to B's
(across: bridge, VXLAN over the underlay veth, B's bridge). The ratio is what the overlay's
encapsulation costs relative to the local path on this machine; both hosts share one kernel, so
it measures pycni's data path, not a network.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

from tests.multihost import UNDERLAY_A, Rig

NET = "pycni-bench-p5"
CREATE = ("-d", "pycni", "--ipam-driver", "null", "-o", "cni.overlay=bench",
          "-o", "cni.overlay.subnet=10.202.0.0/16")
IMAGE = "pycni-test:busybox"
PINGS = 10  # per sample
_RTT = re.compile(r"round-trip min/avg/max = [\d.]+/([\d.]+)/")


def _avg_rtt(out: str) -> float:
    found = _RTT.search(out)
    if found is None:
        raise AssertionError(f"no round-trip summary in: {out!r}")
    return float(found.group(1)) / 1000  # seconds


def p5(restart_server: Callable[[dict[str, str]], None], runs: int,
       sh: Callable[..., Any], quiet: Callable[..., Any]) -> tuple[list[float], list[float]]:
    """(cross-host samples, same-host samples) in seconds; ``restart_server(env)`` restarts the
    bench's pycni with ``env`` added (etcd for the run, nothing after)."""
    rig = Rig()
    b = rig.b.docker_cli()
    try:
        rig.up()
        assert rig.etcd is not None
        restart_server({"PYCNI_ETCD": rig.etcd.url, "PYCNI_UNDERLAY_ADDRESS": UNDERLAY_A})
        sh("docker", "network", "create", *CREATE, NET)
        rig.b.docker("network", "create", *CREATE, NET)
        for name in ("pycni-bench-p5-a1", "pycni-bench-p5-a2"):
            sh("docker", "run", "-d", "--name", name, "--network", NET, IMAGE, "sleep", "3600")
        rig.b.docker("run", "-d", "--name", "pycni-bench-p5-b1", "--network", NET, IMAGE,
                     "sleep", "3600")
        fmt = f'{{{{(index .NetworkSettings.Networks "{NET}").IPAddress}}}}'
        same = sh("docker", "inspect", "-f", fmt, "pycni-bench-p5-a2").strip()
        cross = rig.b.docker("inspect", "-f", fmt, "pycni-bench-p5-b1").stdout.strip()

        def burst(target: str) -> float:
            return _avg_rtt(sh("docker", "exec", "pycni-bench-p5-a1", "ping", "-q", "-c",
                               str(PINGS), "-i", "0.05", "-W", "2", target))

        # until the peer's routes are there (etcd's watch), and warm caches
        for _ in range(40):
            probe = subprocess.run(["docker", "exec", "pycni-bench-p5-a1", "ping", "-c", "1",
                                    "-W", "1", cross], capture_output=True, timeout=10,
                                   check=False)
            if probe.returncode == 0:
                break
        burst(cross)
        burst(same)
        crossed, local = [], []
        for n in range(runs):
            first, second = (cross, same) if n % 2 == 0 else (same, cross)
            a, b_ = burst(first), burst(second)
            crossed.append(a if first == cross else b_)
            local.append(b_ if first == cross else a)
        return crossed, local
    finally:
        quiet("docker", "rm", "-f", "pycni-bench-p5-a1", "pycni-bench-p5-a2")
        quiet("docker", "network", "rm", NET)
        if rig.b.holder is not None:
            quiet(*b, "rm", "-f", "pycni-bench-p5-b1")
            quiet(*b, "network", "rm", NET)
        restart_server({})
        rig.down()
        os.environ.pop("PYCNI_ETCD", None)
