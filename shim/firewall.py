"""Per-network iptables rules for zero-config networks, the way Docker's bridge driver does it.

A zero-config network masquerades its subnets, lets its bridge forward and keeps other networks
out once, for the whole network, instead of per container: the chain's bridge plugin runs
without ``ipMasq`` and without the firewall plugin, which saves several iptables runs on every
ADD and DEL. The rules live in chains of pycni's own, each jumped to from the top of its
built-in chain::

    filter PYCNI-FORWARD    -i BR -o BR -j ACCEPT                  (containers talk; DROP with
                                                                    enable_icc=false)
                            -i BR ! -o BR -j DOCKER-ISOLATION-STAGE-2   (not into Docker's bridges)
                            -i BR ! -o BR -j ACCEPT                 (they go out)
                            -o BR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
                            -o BR -m conntrack --ctstate DNAT -j ACCEPT  (published ports)
    mangle PYCNI-ISOLATION  ! -i BR -o BR -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP
    nat PYCNI-POSTROUTING   -s SUBNET ! -o BR -j MASQUERADE         (not with
                                                                    enable_ip_masquerade=false)

**Published ports** of a zero-config network are DNAT rules of pycni's own, as Docker's bridge
writes them, one per port and container address (:func:`publish`, tagged with the endpoint)::

    nat PREROUTING          -m addrtype --dst-type LOCAL -j PYCNI-DNAT
    nat OUTPUT              ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j PYCNI-DNAT
    nat PYCNI-DNAT          [-d HOSTIP] ! -i BR -p tcp -m tcp --dport HP -j DNAT --to CIP:CP

What comes for the host's loopback, and what the network's own containers send to a published
port (hairpin), goes to pycni's proxy instead (:mod:`shim.proxy`), as it goes to docker-proxy.
The chain stays while any rule is in it, and goes (with its jumps) with the last network.

**Isolation.** Docker keeps its bridge networks apart with DOCKER-ISOLATION-STAGE-1/2: a packet
that comes in on one network's bridge and leaves by another's is dropped, whichever two they
are. Docker's chains can't hold pycni's rules (dockerd deletes and rebuilds them when it
starts), and where pycni's jump sits in FORWARD is not pycni's to keep: Docker inserts each new
network's rules at the top, above it, and those accept whatever leaves that network. So pycni
stops each direction where Docker can't get in the way:

* *into* a pycni network, in the mangle table, which the filter table's FORWARD comes after
  and Docker leaves alone: nothing from another interface unless it answers the network's own
  traffic or was sent to a published port (what the network's filter rules accept anyway). That
  keeps out other pycni networks, Docker's networks, and whatever else forwards to it;
* *out of* a pycni network into Docker's bridges, in PYCNI-FORWARD, before the rule that lets
  the network out: a jump to Docker's own DOCKER-ISOLATION-STAGE-2, which drops ``-o`` each of
  Docker's bridges and returns otherwise — Docker keeps that list, as networks come and go.
  Where Docker made no such chain (no Docker, or Docker's iptables off) there is nothing of
  Docker's to keep out, and the rule is left out. (A Docker network created after the pycni
  network has its rules above pycni's, so a container port that network publishes stays
  reachable by the container's address, as it is through the host's port anyway.)

A container attached to two networks reaches both: its traffic to each leaves by that
network's own interface.

An ``--internal`` network lets nothing in or out but its own traffic (Docker's
``setupInternalNetworkRules``), in PYCNI-ISOLATION, and has no masquerading; the host still
reaches its containers through the bridge's address::

    filter PYCNI-FORWARD    -i BR -o BR -j ACCEPT                  (DROP with enable_icc=false)
    mangle PYCNI-ISOLATION  -i BR ! -o BR -j DROP
                            ! -i BR -o BR -j DROP

``enable_icc=false`` needs bridged frames to pass iptables (br_netfilter's
``net.bridge.bridge-nf-call-iptables``); without that a network asking for it is refused rather
than left talking.

**The host's loopback stays closed.** portmap's ``snat`` (its default) sets ``route_localnet=1``
on the interface that routes to a container, so that ``127.0.0.1:PORT`` can be DNAT'd to it;
from then on the kernel also accepts, on that interface, packets a container addresses to the
host's 127.0.0.0/8 - reaching services that listen only on the host's loopback (the class of
CVE-2020-8558). pycni guards it as kube-proxy does: every network whose chain may set it
(:func:`shim.plugins.opens_loopback`), and in the ``--network none`` mode every such attachment,
puts one rule of its own in ``PYCNI-LOCALNET``, jumped to from the top of ``INPUT``::

    filter PYCNI-LOCALNET   -d 127.0.0.0/8 ! -i lo -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT
                            -j DROP

Only what a published port's DNAT rewrote (or answers to the host's own connections) gets
through. IPv6 needs no guard: the kernel never accepts ``::1`` from outside ``lo``.

Every rule carries the comment ``pycni:<net12>`` so removal finds exactly its own; a chain left
empty is removed with its jump, so nothing of pycni's outlives its last network. iptables is run
with list arguments (never a shell) and ``-w``, through :data:`runner`, the module's one contact
with iptables (unit tests put a fake iptables there); :data:`bridged_frames_filtered` is its one
look at br_netfilter.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shlex
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .errors import FirewallError

log = logging.getLogger(__name__)

FORWARD_CHAIN = "PYCNI-FORWARD"
NAT_CHAIN = "PYCNI-POSTROUTING"
ISOLATION_CHAIN = "PYCNI-ISOLATION"
LOCALNET_CHAIN = "PYCNI-LOCALNET"
#: Docker's list of its bridges to keep out (moby ``IsolationChain2``): ``-o BR -j DROP`` each
DOCKER_ISOLATION = "DOCKER-ISOLATION-STAGE-2"
#: (table, chain) → the built-in chain that jumps to it
_PARENTS = {
    ("filter", FORWARD_CHAIN): "FORWARD",
    ("nat", NAT_CHAIN): "POSTROUTING",
    ("mangle", ISOLATION_CHAIN): "FORWARD",
    ("filter", LOCALNET_CHAIN): "INPUT",
}
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


def bridge_nf_call(version: int) -> bool:
    """Whether bridged frames of this IP version pass iptables (br_netfilter, and its
    ``net.bridge.bridge-nf-call-ip{,6}tables`` at 1)."""
    name = "iptables" if version == 4 else "ip6tables"
    try:
        with open(f"/proc/sys/net/bridge/bridge-nf-call-{name}") as f:
            return f.read().strip() == "1"
    except OSError:
        return False  # no br_netfilter


#: The module's one look at br_netfilter; replaced in unit tests.
bridged_frames_filtered: Callable[[int], bool] = bridge_nf_call


def _tool(version: int) -> str:
    return "iptables" if version == 4 else "ip6tables"


def _iptables(version: int, *args: str) -> tuple[int, str, str]:
    return runner([_tool(version), "-w", "10", *args])


def _run(version: int, *args: str, check: bool = True) -> bool:
    status, _out, err = _iptables(version, *args)
    if check and status != 0:
        raise FirewallError(f"{_tool(version)} {' '.join(args)}: {err.strip()}")
    return status == 0


def _has_chain(version: int, table: str, chain: str) -> bool:
    return _run(version, "-t", table, "-n", "-L", chain, check=False)


def _ensure_chain(version: int, table: str, chain: str, parent: str) -> None:
    if not _has_chain(version, table, chain):
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


Rule = tuple[int, str, str, list[str]]


def _rules(bridge: str, subnets: Iterable[str], internal: bool, tag: str, *, icc: bool = True,
           masquerade: bool = True, docker_isolation: Callable[[int], bool] = lambda v: True,
           peers: str = "", peer_subnet: str = "") -> list[Rule]:
    """(ip version, table, chain, rule args) for one network, in the order they go in.

    ``docker_isolation(version)`` says whether the jump to Docker's isolation chain belongs
    (whether Docker made that chain); removal takes it whenever it is there.

    An overlay network (:mod:`shim.overlay`) names its VTEP as ``peers`` and the whole overlay
    as ``peer_subnet``: what comes in on the VTEP is its own network's traffic (let through,
    before the isolation drop), and what goes to the overlay is not masqueraded::

        filter PYCNI-FORWARD    -i VTEP -o BR -j ACCEPT
        mangle PYCNI-ISOLATION  -i VTEP -o BR -j RETURN
        nat PYCNI-POSTROUTING   -s SUBNET -d OVERLAY -j RETURN
    """
    comment = ["-m", "comment", "--comment", f"pycni:{tag}"]
    versions = sorted({ipaddress.ip_network(s, strict=False).version for s in subnets}) or [4]
    rules: list[Rule] = []
    for v in versions:
        rules.append((v, "filter", FORWARD_CHAIN, ["-i", bridge, "-o", bridge, *comment,
                                                   "-j", "ACCEPT" if icc else "DROP"]))
        if peers and v == 4 and not internal:
            rules += [
                (v, "filter", FORWARD_CHAIN, ["-i", peers, "-o", bridge, *comment,
                                              "-j", "ACCEPT"]),
                (v, "mangle", ISOLATION_CHAIN, ["-i", peers, "-o", bridge, *comment,
                                                "-j", "RETURN"]),
            ]
        if internal:
            rules += [
                (v, "mangle", ISOLATION_CHAIN, ["-i", bridge, "!", "-o", bridge, *comment,
                                                "-j", "DROP"]),
                (v, "mangle", ISOLATION_CHAIN, ["!", "-i", bridge, "-o", bridge, *comment,
                                                "-j", "DROP"]),
            ]
            continue
        if docker_isolation(v):
            rules.append((v, "filter", FORWARD_CHAIN, ["-i", bridge, "!", "-o", bridge, *comment,
                                                       "-j", DOCKER_ISOLATION]))
        rules += [
            (v, "filter", FORWARD_CHAIN, ["-i", bridge, "!", "-o", bridge, *comment,
                                          "-j", "ACCEPT"]),
            (v, "filter", FORWARD_CHAIN, ["-o", bridge, "-m", "conntrack", "--ctstate",
                                          "RELATED,ESTABLISHED", *comment, "-j", "ACCEPT"]),
            (v, "filter", FORWARD_CHAIN, ["-o", bridge, "-m", "conntrack", "--ctstate", "DNAT",
                                          *comment, "-j", "ACCEPT"]),
            (v, "mangle", ISOLATION_CHAIN, ["!", "-i", bridge, "-o", bridge, "-m", "conntrack",
                                            "!", "--ctstate", "RELATED,ESTABLISHED,DNAT",
                                            *comment, "-j", "DROP"]),
        ]
    if masquerade and not internal:
        for subnet in subnets:
            v = ipaddress.ip_network(subnet, strict=False).version
            if peer_subnet and v == 4:
                rules.append((v, "nat", NAT_CHAIN, ["-s", subnet, "-d", peer_subnet, *comment,
                                                    "-j", "RETURN"]))
            rules.append((v, "nat", NAT_CHAIN, ["-s", subnet, "!", "-o", bridge, *comment,
                                                "-j", "MASQUERADE"]))
    return rules


def add_network(network_id: str, bridge: str, subnets: list[str], internal: bool, *,
                icc: bool = True, masquerade: bool = True, peers: str = "",
                peer_subnet: str = "") -> None:
    """Install a network's rules (idempotent). ``icc`` and ``masquerade`` are Docker's
    ``enable_icc`` and ``enable_ip_masquerade``; ``peers`` and ``peer_subnet`` an overlay's."""
    with _lock:
        if not icc:
            _require_bridged_frames_filtered(subnets)
        rules = _rules(bridge, subnets, internal, network_id[:12], icc=icc, masquerade=masquerade,
                       docker_isolation=lambda v: _has_chain(v, "filter", DOCKER_ISOLATION),
                       peers=peers, peer_subnet=peer_subnet)
        for v, table, chain, rule in rules:
            _ensure_chain(v, table, chain, _PARENTS[(table, chain)])
            if not _run(v, "-t", table, "-C", chain, *rule, check=False):
                _run(v, "-t", table, "-A", chain, *rule)


def remove_network(network_id: str, bridge: str, subnets: list[str], internal: bool, *,
                   icc: bool = True, masquerade: bool = True, peers: str = "",
                   peer_subnet: str = "") -> None:
    """Remove a network's rules, and pycni's chains once they are empty. Repeat-safe."""
    with _lock:
        touched = set()
        for v, table, chain, rule in _rules(bridge, subnets, internal, network_id[:12], icc=icc,
                                            masquerade=masquerade, peers=peers,
                                            peer_subnet=peer_subnet):
            while _run(v, "-t", table, "-D", chain, *rule, check=False):
                pass
            touched.add((v, table, chain))
        for v, table, chain in sorted(touched):
            _drop_chain_if_empty(v, table, chain, _PARENTS[(table, chain)])
        for v in sorted({v for v, _table, _chain in touched}):
            _drop_dnat_chain_if_empty(v)


def _guard_rule(tag: str) -> list[str]:
    return ["-d", "127.0.0.0/8", "!", "-i", "lo", "-m", "conntrack", "!", "--ctstate",
            "RELATED,ESTABLISHED,DNAT", "-m", "comment", "--comment", f"pycni:{tag}", "-j", "DROP"]


def add_guard(tag: str) -> None:
    """Keep containers off the host's 127.0.0.0/8 for the network (or attachment) ``tag``
    (idempotent): see the module's docstring."""
    with _lock:
        _ensure_chain(4, "filter", LOCALNET_CHAIN, "INPUT")
        rule = _guard_rule(tag)
        if not _run(4, "-t", "filter", "-C", LOCALNET_CHAIN, *rule, check=False):
            _run(4, "-t", "filter", "-A", LOCALNET_CHAIN, *rule)


def remove_guard(tag: str) -> bool:
    """Remove ``tag``'s guard, and the chain with its jump once no guard is left. Repeat-safe.
    Answers whether the chain is gone (no pycni network or attachment needs a guard any more)."""
    with _lock:
        rule = _guard_rule(tag)
        while _run(4, "-t", "filter", "-D", LOCALNET_CHAIN, *rule, check=False):
            pass
        _drop_chain_if_empty(4, "filter", LOCALNET_CHAIN, "INPUT")
        return not _has_chain(4, "filter", LOCALNET_CHAIN)


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
    if not _has_chain(version, "nat", DNAT_CHAIN):
        _run(version, "-t", "nat", "-N", DNAT_CHAIN)
    for parent, match in _DNAT_JUMPS[version]:
        jump = [*match, "-j", DNAT_CHAIN]
        if not _run(version, "-t", "nat", "-C", parent, *jump, check=False):
            _run(version, "-t", "nat", "-I", parent, "1", *jump)
    _dnat_ready.add(version)


def publish(tag: str, rules: Iterable[PortRule]) -> None:
    """Put in the DNAT rules of one endpoint's published ports (``tag``: the endpoint's), one
    iptables run each: portmap's ADD and DEL cost ~130 ms a container, these ~10 ms a port.
    Idempotent with ``check``; undone in full if one is refused."""
    done: list[PortRule] = []
    with _lock:
        try:
            for rule in rules:
                _ensure_dnat_chain(rule.version)
                args = rule.args(tag)
                if not _run(rule.version, "-t", "nat", "-A", DNAT_CHAIN, *args, check=False):
                    # the chain went (an admin's flush): make it again, once
                    _dnat_ready.discard(rule.version)
                    _ensure_dnat_chain(rule.version)
                    _run(rule.version, "-t", "nat", "-A", DNAT_CHAIN, *args)
                done.append(rule)
        except BaseException:
            for rule in done:
                _run(rule.version, "-t", "nat", "-D", DNAT_CHAIN, *rule.args(tag), check=False)
            raise


def restore_published(tag: str, rules: Iterable[PortRule]) -> None:
    """Put back whichever of an endpoint's DNAT rules are missing (a reboot, a flush)."""
    with _lock:
        for rule in rules:
            _ensure_dnat_chain(rule.version)
            args = rule.args(tag)
            if not _run(rule.version, "-t", "nat", "-C", DNAT_CHAIN, *args, check=False):
                _run(rule.version, "-t", "nat", "-A", DNAT_CHAIN, *args)


def unpublish(tag: str, rules: Iterable[PortRule] | None) -> None:
    """Remove an endpoint's DNAT rules; those already gone are fine (DEL semantics). ``None``:
    whatever rules carry the endpoint's tag (a leftover whose network record is gone)."""
    with _lock:
        if rules is not None:
            for rule in rules:
                _run(rule.version, "-t", "nat", "-D", DNAT_CHAIN, *rule.args(tag), check=False)
            return
        for v in (4, 6):
            status, out, _err = _iptables(v, "-t", "nat", "-S", DNAT_CHAIN)
            for line in out.splitlines() if status == 0 else []:
                words = shlex.split(line)
                if words[:2] == ["-A", DNAT_CHAIN] and f"pycni:{tag}" in words:
                    _run(v, "-t", "nat", "-D", *words[1:], check=False)


def _drop_dnat_chain_if_empty(version: int) -> None:
    status, out, _err = _iptables(version, "-t", "nat", "-S", DNAT_CHAIN)
    if status != 0 or any(line.startswith("-A ") for line in out.splitlines()):
        return
    for parent, match in _DNAT_JUMPS[version]:
        _run(version, "-t", "nat", "-D", parent, *match, "-j", DNAT_CHAIN, check=False)
    _run(version, "-t", "nat", "-X", DNAT_CHAIN, check=False)
    _dnat_ready.discard(version)


def close_localnet(interfaces: Iterable[str], root: str = "/proc/sys/net/ipv4/conf") -> None:
    """Put ``route_localnet`` back to 0 on ``interfaces`` that still exist, once no pycni network
    or attachment uses them: portmap never does. Best effort (a managed plugin's ``/proc/sys``
    may be read-only): the guard has kept the loopback closed all along."""
    for name in interfaces:
        path = os.path.join(root, name, "route_localnet")
        try:
            with open(path) as f:
                if f.read().strip() == "0":
                    continue
            with open(path, "w") as f:
                f.write("0")
        except FileNotFoundError:
            continue  # the interface is gone, and the setting with it
        except OSError as exc:
            log.warning("cannot reset %s: %s", path, exc)


def _require_bridged_frames_filtered(subnets: Iterable[str]) -> None:
    versions = sorted({ipaddress.ip_network(s, strict=False).version for s in subnets}) or [4]
    for v in versions:
        if not bridged_frames_filtered(v):
            setting = f"net.bridge.bridge-nf-call-{_tool(v)}"
            raise FirewallError(
                "com.docker.network.bridge.enable_icc=false needs frames bridged between "
                f"containers to pass {_tool(v)}, and they don't on this host: load br_netfilter "
                f"(modprobe br_netfilter) and set {setting}=1, as Docker's bridge driver does"
            )
