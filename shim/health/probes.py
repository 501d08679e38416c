"""What ``pycni doctor`` asks of the world, behind one seam: :class:`Probes`.

The host's forwarding set-up is read here: iptables' FORWARD policy (``iptables -S FORWARD``, with
an argument list and a timeout, never through a shell), whether br_netfilter is loaded and
``net.ipv4.ip_forward`` (both from ``/proc/sys``). This is a boundary like ``netlink.py``:
``OSError`` and ``subprocess`` timeouts end here, as "can't tell" (``None``). Docker's and the
plugin socket's probes come from their own boundaries, :mod:`shim.dockerview` and
:mod:`shim.client`. Tests replace any probe with a plain function.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import dockerstart, dockerview
from ..cni.config import NetworkConfigList
from ..cni.invoke import find_in_path

#: (status, parsed JSON answer) of a POST to the plugin socket, as :meth:`PluginClient.post
#: <shim.client.PluginClient.post>` gives them; raises PycniError if nothing answers
Post = Callable[[str, dict[str, Any], float], tuple[int, dict[str, Any]]]


def iptables_forward_policy(timeout: float = 10.0) -> str | None:
    """FORWARD's policy (``-P FORWARD DROP`` → ``DROP``); None if iptables can't tell."""
    try:
        proc = subprocess.run(
            ["iptables", "-S", "FORWARD"],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_forward_policy(proc.stdout) if proc.returncode == 0 else None


def parse_forward_policy(rules: str) -> str | None:
    """The policy in ``iptables -S FORWARD`` output (its ``-P FORWARD DROP`` line)."""
    for line in rules.splitlines():
        words = line.split()
        if words[:2] == ["-P", "FORWARD"] and len(words) == 3:
            return words[2]
    return None


def bridge_netfilter_loaded() -> bool:
    """br_netfilter makes bridged packets traverse iptables; it shows as /proc/sys/net/bridge."""
    return os.path.isdir("/proc/sys/net/bridge")


def ip_forward_setting() -> str | None:
    try:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            return f.read()
    except OSError:
        return None


@dataclass
class Probes:
    """Everything doctor asks of the world; tests replace any of it."""

    docker_ping: Callable[[], None] = dockerview.ping
    #: Docker's name for each of the driver's network ids ({} when Docker can't be asked)
    network_names: Callable[[str], dict[str, str]] = dockerview.network_names
    #: every network Docker has (None when Docker can't be asked)
    docker_networks: Callable[[], list[dockerview.DockerNetwork] | None] = dockerview.networks
    euid: Callable[[], int] = os.geteuid
    #: the exited containers on the driver's networks (PycniError if Docker can't be asked)
    stopped: Callable[[str], list[dockerstart.Stopped]] = dockerstart.stopped_containers
    #: None: the plugin socket of the settings doctor runs with
    post: Post | None = None
    forward_policy: Callable[[], str | None] = iptables_forward_policy
    bridge_netfilter: Callable[[], bool] = bridge_netfilter_loaded
    ip_forward: Callable[[], str | None] = ip_forward_setting
    find: Callable[[str, Sequence[str]], str] = find_in_path
    #: the --network none mode's gc dry run (None: that of the settings doctor runs with)
    none_mode_gc: Callable[[], list[str]] | None = None
    #: CNI STATUS of a chain (None: the plugins on the settings' CNI_PATH)
    status: Callable[[NetworkConfigList], bool] | None = None
