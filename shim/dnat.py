"""Published ports of zero-config networks as DNAT rules of pycni's own, as Docker's bridge
writes them (see :mod:`shim.firewall`'s docstring for the chain's shape)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass

from . import iptables

DNAT_CHAIN = "PYCNI-DNAT"
#: the jumps to PYCNI-DNAT (Docker's to its DOCKER chain): what is addressed to the host, from
#: outside and from the host itself - but not to its loopback, which pycni's proxy serves
_DNAT_JUMPS = {
    4: (("PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL"]),
        ("OUTPUT", ["!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type", "LOCAL"])),
    6: (("PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL"]),
        ("OUTPUT", ["!", "-d", "::1/128", "-m", "addrtype", "--dst-type", "LOCAL"])),
}
#: the IP versions whose PYCNI-DNAT and jumps this process knows are in place
_dnat_ready: set[int] = set()


@dataclass(frozen=True)
class PortRule:
    """One published port of a zero-config network, as a DNAT rule (Docker's bridge writes the
    same): what comes for the host's ``host_ip`` (all its addresses when "") on ``host_port``,
    from anywhere but the network's own bridge, goes to the container. The container's own
    network reaches the port through pycni's proxy instead, as with docker-proxy (hairpin)."""

    version: int
    protocol: str
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int
    bridge: str

    def args(self, tag: str) -> list[str]:
        to = (f"[{self.container_ip}]:{self.container_port}" if self.version == 6
              else f"{self.container_ip}:{self.container_port}")
        dest = ["-d", self.host_ip] if self.host_ip else []
        return [*dest, "!", "-i", self.bridge, "-p", self.protocol, "-m", self.protocol,
                "--dport", str(self.host_port), "-m", "comment", "--comment", f"pycni:{tag}",
                "-j", "DNAT", "--to-destination", to]


def _ensure_dnat_chain(version: int) -> None:
    if version in _dnat_ready:
        return
    if not iptables.has_chain(version, "nat", DNAT_CHAIN):
        iptables.run(version, "-t", "nat", "-N", DNAT_CHAIN)
    for parent, match in _DNAT_JUMPS[version]:
        jump = [*match, "-j", DNAT_CHAIN]
        if not iptables.run(version, "-t", "nat", "-C", parent, *jump, check=False):
            iptables.run(version, "-t", "nat", "-I", parent, "1", *jump)
    _dnat_ready.add(version)


def publish(tag: str, rules: Iterable[PortRule]) -> None:
    """Put in the DNAT rules of one endpoint's published ports (``tag``: the endpoint's), one
    iptables run each: portmap's ADD and DEL cost ~130 ms a container, these ~10 ms a port.
    Idempotent with ``check``; undone in full if one is refused."""
    done: list[PortRule] = []
    with iptables.lock:
        try:
            for rule in rules:
                _ensure_dnat_chain(rule.version)
                args = rule.args(tag)
                if not iptables.run(rule.version, "-t", "nat", "-A", DNAT_CHAIN, *args, check=False):
                    # the chain went (an admin's flush): make it again, once
                    _dnat_ready.discard(rule.version)
                    _ensure_dnat_chain(rule.version)
                    iptables.run(rule.version, "-t", "nat", "-A", DNAT_CHAIN, *args)
                done.append(rule)
        except BaseException:
            for rule in done:
                iptables.run(rule.version, "-t", "nat", "-D", DNAT_CHAIN, *rule.args(tag), check=False)
            raise


def restore_published(tag: str, rules: Iterable[PortRule]) -> None:
    """Put back whichever of an endpoint's DNAT rules are missing (a reboot, a flush)."""
    with iptables.lock:
        for rule in rules:
            _ensure_dnat_chain(rule.version)
            iptables.ensure_rule(rule.version, "nat", DNAT_CHAIN, rule.args(tag))


def unpublish(tag: str, rules: Iterable[PortRule] | None) -> None:
    """Remove an endpoint's DNAT rules; those already gone are fine (DEL semantics). ``None``:
    whatever rules carry the endpoint's tag (a leftover whose network record is gone)."""
    with iptables.lock:
        if rules is not None:
            for rule in rules:
                iptables.run(rule.version, "-t", "nat", "-D", DNAT_CHAIN, *rule.args(tag), check=False)
            return
        for v in (4, 6):
            status, out, _err = iptables.call(v, "-t", "nat", "-S", DNAT_CHAIN)
            for line in out.splitlines() if status == 0 else []:
                words = shlex.split(line)
                if words[:2] == ["-A", DNAT_CHAIN] and f"pycni:{tag}" in words:
                    iptables.run(v, "-t", "nat", "-D", *words[1:], check=False)


def drop_dnat_chain_if_empty(version: int) -> None:
    status, out, _err = iptables.call(version, "-t", "nat", "-S", DNAT_CHAIN)
    if status != 0 or any(line.startswith("-A ") for line in out.splitlines()):
        return
    for parent, match in _DNAT_JUMPS[version]:
        iptables.run(version, "-t", "nat", "-D", parent, *match, "-j", DNAT_CHAIN, check=False)
    iptables.run(version, "-t", "nat", "-X", DNAT_CHAIN, check=False)
    _dnat_ready.discard(version)
