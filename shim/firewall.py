"""Per-network iptables rules for zero-config networks, the way Docker's bridge driver does it.

A zero-config network masquerades its subnets, lets its bridge forward and keeps other networks
out once, for the whole network, instead of per container: the chain's bridge plugin runs
without ``ipMasq`` and without the firewall plugin, which saves several iptables runs on every
ADD and DEL. The rules live in chains of pycni's own, each jumped to from the top of its
built-in chain::

    filter PYCNI-FORWARD    -i BR ! -o BR -j DOCKER-ISOLATION-STAGE-1   (into Docker's networks
                            -i BR ! -o BR -j DOCKER-ISOLATION-STAGE-2    only as Docker lets
                            -i BR ! -o BR -j DOCKER-INTERNAL             what comes from
                            -i BR ! -o BR -j DOCKER-BRIDGE               elsewhere: those there)
                            -i BR -o BR -j ACCEPT                  (containers talk; DROP with
                                                                    enable_icc=false)
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
* *out of* a pycni network into Docker's networks, in PYCNI-FORWARD, above the rule that lets
  the network out (inserted at the chain's top, so they stay above it whenever they come):
  jumps to the chains in which Docker judges what comes into its networks from elsewhere
  (:data:`DOCKER_ISOLATION`): an ``--internal`` network's drops, the drop ``-o`` each of its
  other bridges, and from 28 the published-port ACCEPTs and default DROP per bridge. Each
  returns what it has no word on, and Docker keeps them as networks come and go. pycni's
  ACCEPT must not stand in for Docker's drops: whether pycni's jump in FORWARD sits above
  Docker's depends on who started last (Docker 28 puts DOCKER-FORWARD at the top when dockerd
  starts; pycni its jump when its first network is made, right below DOCKER-USER, whose rules
  the admin means to come first, for pycni's networks as for Docker's). Where Docker made no such chain (no
  Docker, an older or newer Docker, or Docker's iptables off) its rule is left out. (A Docker network created after the pycni network has its rules above
  pycni's on engines ≤ 27, so a container port that network publishes stays reachable by the
  container's address, as it is through the host's port anyway.)

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
through :mod:`shim.iptables` (list arguments, never a shell, ``-w``; unit tests put a fake
iptables there); :data:`bridged_frames_filtered` is this module's one look at br_netfilter. The
published ports' rules are :mod:`shim.dnat`'s; this module is the ``Rules`` seam for both.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Callable, Iterable

from . import dnat, iptables
from .dnat import publish, restore_published, unpublish
from .errors import FirewallError
from .state import NetworkRules

log = logging.getLogger(__name__)

# This module is the Rules seam (shim.seams): the published ports' rules are dnat's.
__all__ = [
    "add_guard", "add_network", "close_localnet", "publish", "remove_guard", "remove_network",
    "restore_published", "unpublish",
]

FORWARD_CHAIN = "PYCNI-FORWARD"
NAT_CHAIN = "PYCNI-POSTROUTING"
ISOLATION_CHAIN = "PYCNI-ISOLATION"
LOCALNET_CHAIN = "PYCNI-LOCALNET"
#: The admin's rules that Docker asks before its own (moby's ``userChain``): pycni's jump in
#: filter FORWARD goes below it
DOCKER_USER = "DOCKER-USER"
#: Docker's chains that judge what comes into its networks from elsewhere, in the order Docker
#: asks them: ``-o BR -j DROP`` for an ``--internal`` network's bridge when the sender is outside
#: its range (STAGE-1 up to 28, DOCKER-INTERNAL from 29), for each other bridge (STAGE-2, up to
#: 28), and from 28 the per-bridge published-port ACCEPTs and default DROP (DOCKER-BRIDGE, then
#: DOCKER). Each returns what it has no word on.
DOCKER_ISOLATION = ("DOCKER-ISOLATION-STAGE-1", "DOCKER-ISOLATION-STAGE-2", "DOCKER-INTERNAL",
                    "DOCKER-BRIDGE")
#: (table, chain) → the built-in chain that jumps to it
_PARENTS = {
    ("filter", FORWARD_CHAIN): "FORWARD",
    ("nat", NAT_CHAIN): "POSTROUTING",
    ("mangle", ISOLATION_CHAIN): "FORWARD",
    ("filter", LOCALNET_CHAIN): "INPUT",
}
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


Rule = tuple[int, str, str, list[str]]


def _rules(spec: NetworkRules, tag: str, *,
           docker_isolation: Callable[[int, str], bool] = lambda v, c: True) -> list[Rule]:
    """(ip version, table, chain, rule args) for one network, in the order they go in.

    ``docker_isolation(version, chain)`` says whether the jump to that isolation chain of
    Docker's belongs (whether Docker made it); removal takes it whenever it is there.

    An overlay network (:mod:`shim.overlay`) names its VTEP as ``peers`` and the whole overlay
    as ``peer_subnet``: what comes in on the VTEP is its own network's traffic (let through,
    before the isolation drop), and what goes to the overlay is not masqueraded::

        filter PYCNI-FORWARD    -i VTEP -o BR -j ACCEPT
        mangle PYCNI-ISOLATION  -i VTEP -o BR -j RETURN
        nat PYCNI-POSTROUTING   -s SUBNET -d OVERLAY -j RETURN
    """
    bridge, subnets, internal = spec.bridge, spec.subnets, spec.internal
    icc, masquerade, peers, peer_subnet = spec.icc, spec.masquerade, spec.peers, spec.peer_subnet
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
        rules += [(v, "filter", FORWARD_CHAIN, ["-i", bridge, "!", "-o", bridge, *comment,
                                                "-j", docker])
                  for docker in DOCKER_ISOLATION if docker_isolation(v, docker)]
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


def add_network(network_id: str, spec: NetworkRules) -> None:
    """Install a network's rules (idempotent)."""
    with iptables.lock:
        if not spec.icc:
            _require_bridged_frames_filtered(list(spec.subnets))
        rules = _rules(spec, network_id[:12],
                       docker_isolation=lambda v, c: iptables.has_chain(v, "filter", c))
        for v, table, chain, rule in rules:
            iptables.ensure_chain(v, table, chain, _PARENTS[(table, chain)],
                                  below=DOCKER_USER if chain == FORWARD_CHAIN else None)
            if rule[-1] not in DOCKER_ISOLATION:
                iptables.ensure_rule(v, table, chain, rule)
        # Docker's judges above anything of the network's own that accepts, in Docker's order
        for v, table, chain, rule in reversed(rules):
            if rule[-1] in DOCKER_ISOLATION:
                iptables.ensure_rule(v, table, chain, rule, first=True)


def remove_network(network_id: str, spec: NetworkRules) -> None:
    """Remove a network's rules, and pycni's chains once they are empty. Repeat-safe."""
    with iptables.lock:
        touched = set()
        for v, table, chain, rule in _rules(spec, network_id[:12]):
            iptables.delete_rule(v, table, chain, rule)
            touched.add((v, table, chain))
        for v, table, chain in sorted(touched):
            iptables.drop_chain_if_empty(v, table, chain, _PARENTS[(table, chain)])
        for v in sorted({v for v, _table, _chain in touched}):
            dnat.drop_dnat_chain_if_empty(v)


def _guard_rule(tag: str) -> list[str]:
    return ["-d", "127.0.0.0/8", "!", "-i", "lo", "-m", "conntrack", "!", "--ctstate",
            "RELATED,ESTABLISHED,DNAT", "-m", "comment", "--comment", f"pycni:{tag}", "-j", "DROP"]


def add_guard(tag: str) -> None:
    """Keep containers off the host's 127.0.0.0/8 for the network (or attachment) ``tag``
    (idempotent): see the module's docstring."""
    with iptables.lock:
        iptables.ensure_chain(4, "filter", LOCALNET_CHAIN, "INPUT")
        iptables.ensure_rule(4, "filter", LOCALNET_CHAIN, _guard_rule(tag))


def remove_guard(tag: str) -> None:
    """Remove ``tag``'s guard, and the chain with its jump once no guard is left. Repeat-safe."""
    with iptables.lock:
        iptables.delete_rule(4, "filter", LOCALNET_CHAIN, _guard_rule(tag))
        iptables.drop_chain_if_empty(4, "filter", LOCALNET_CHAIN, "INPUT")


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
            setting = f"net.bridge.bridge-nf-call-{iptables.tool(v)}"
            raise FirewallError(
                "com.docker.network.bridge.enable_icc=false needs frames bridged between "
                f"containers to pass {iptables.tool(v)}, and they don't on this host: load br_netfilter "
                f"(modprobe br_netfilter) and set {setting}=1, as Docker's bridge driver does"
            )
