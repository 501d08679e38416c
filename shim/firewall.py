"""Per-network iptables rules for zero-config networks, the way Docker's bridge driver does it.

A zero-config network masquerades its subnets and lets its bridge forward once, for the whole
network, instead of per container: the chain's bridge plugin runs without ``ipMasq`` and without
the firewall plugin, which saves several iptables runs on every ADD and DEL. The rules live in
two chains of pycni's own, jumped to from the top of FORWARD and POSTROUTING::

    filter PYCNI-FORWARD   -i BR -o BR -j ACCEPT                       (containers talk)
                           -i BR ! -o BR -j ACCEPT                      (they go out)
                           -o BR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
                           -o BR -m conntrack --ctstate DNAT -j ACCEPT  (published ports)
    nat PYCNI-POSTROUTING  -s SUBNET ! -o BR -j MASQUERADE

An internal network gets only the first rule. Every rule carries the comment ``pycni:<net12>`` so
removal finds exactly its own; a chain left empty is removed with its jump, so nothing of pycni's
outlives its last network. iptables is run with list arguments (never a shell) and ``-w``, through
:data:`runner`, the module's one contact with the system (unit tests put a fake iptables there).
"""

from __future__ import annotations

import ipaddress
import subprocess
import threading
from collections.abc import Callable, Iterable

from .errors import FirewallError

FORWARD_CHAIN = "PYCNI-FORWARD"
NAT_CHAIN = "PYCNI-POSTROUTING"
_lock = threading.Lock()

#: Runs one command line (``iptables``/``ip6tables`` and its arguments) and answers
#: ``(exit status, stdout, stderr)``; raises :class:`FirewallError` if it cannot run at all.
Runner = Callable[[list[str]], tuple[int, str, str]]


def run_subprocess(argv: list[str]) -> tuple[int, str, str]:
    """The real runner: the command as a child process, bounded in time."""
    try:
        proc = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"{' '.join(argv)}: {exc}") from exc
    return proc.returncode, proc.stdout, proc.stderr


#: What every iptables command goes through; replaced by a fake in unit tests.
runner: Runner = run_subprocess


def _tool(version: int) -> str:
    return "iptables" if version == 4 else "ip6tables"


def _iptables(version: int, *args: str) -> tuple[int, str, str]:
    return runner([_tool(version), "-w", "10", *args])


def _run(version: int, *args: str, check: bool = True) -> bool:
    status, _out, err = _iptables(version, *args)
    if check and status != 0:
        raise FirewallError(f"{_tool(version)} {' '.join(args)}: {err.strip()}")
    return status == 0


def _ensure_chain(version: int, table: str, chain: str, parent: str) -> None:
    if not _run(version, "-t", table, "-n", "-L", chain, check=False):
        _run(version, "-t", table, "-N", chain)
    if not _run(version, "-t", table, "-C", parent, "-j", chain, check=False):
        _run(version, "-t", table, "-I", parent, "1", "-j", chain)


def _drop_chain_if_empty(version: int, table: str, chain: str, parent: str) -> None:
    status, out, _err = _iptables(version, "-t", table, "-S", chain)
    if status != 0:
        return  # no such chain
    if any(line.startswith("-A ") for line in out.splitlines()):
        return
    _run(version, "-t", table, "-D", parent, "-j", chain, check=False)
    _run(version, "-t", table, "-X", chain, check=False)


def _rules(bridge: str, subnets: Iterable[str], internal: bool, tag: str
           ) -> list[tuple[int, str, str, list[str]]]:
    """(ip version, table, chain, rule args) for one network."""
    comment = ["-m", "comment", "--comment", f"pycni:{tag}"]
    versions = sorted({ipaddress.ip_network(s, strict=False).version for s in subnets}) or [4]
    rules: list[tuple[int, str, str, list[str]]] = []
    for v in versions:
        rules.append((v, "filter", FORWARD_CHAIN, ["-i", bridge, "-o", bridge, *comment,
                                                   "-j", "ACCEPT"]))
        if internal:
            continue
        rules += [
            (v, "filter", FORWARD_CHAIN, ["-i", bridge, "!", "-o", bridge, *comment,
                                          "-j", "ACCEPT"]),
            (v, "filter", FORWARD_CHAIN, ["-o", bridge, "-m", "conntrack", "--ctstate",
                                          "RELATED,ESTABLISHED", *comment, "-j", "ACCEPT"]),
            (v, "filter", FORWARD_CHAIN, ["-o", bridge, "-m", "conntrack", "--ctstate", "DNAT",
                                          *comment, "-j", "ACCEPT"]),
        ]
    if not internal:
        for subnet in subnets:
            v = ipaddress.ip_network(subnet, strict=False).version
            rules.append((v, "nat", NAT_CHAIN, ["-s", subnet, "!", "-o", bridge, *comment,
                                                "-j", "MASQUERADE"]))
    return rules


_PARENTS = {FORWARD_CHAIN: "FORWARD", NAT_CHAIN: "POSTROUTING"}


def add_network(network_id: str, bridge: str, subnets: list[str], internal: bool) -> None:
    """Install a network's rules (idempotent)."""
    with _lock:
        for v, table, chain, rule in _rules(bridge, subnets, internal, network_id[:12]):
            _ensure_chain(v, table, chain, _PARENTS[chain])
            if not _run(v, "-t", table, "-C", chain, *rule, check=False):
                _run(v, "-t", table, "-A", chain, *rule)


def remove_network(network_id: str, bridge: str, subnets: list[str], internal: bool) -> None:
    """Remove a network's rules, and pycni's chains once they are empty. Repeat-safe."""
    with _lock:
        touched = set()
        for v, table, chain, rule in _rules(bridge, subnets, internal, network_id[:12]):
            while _run(v, "-t", table, "-D", chain, *rule, check=False):
                pass
            touched.add((v, table, chain))
        for v, table, chain in touched:
            _drop_chain_if_empty(v, table, chain, _PARENTS[chain])
