"""What a new network must not collide with: the host's links, and every other network's bridge
and addresses, pycni's and Docker's own.

CreateNetwork refuses a network that would hurt the host or another network
(:func:`refuse_collisions`): a bridge name that is an existing link but no bridge (``eth0``,
``lo``), or another network's bridge (pycni's or Docker's); addresses that overlap another
network's subnet. The other order - a Docker network created later inside a range only a
chain's IPAM knows - can't be refused by a remote driver: :func:`clashes_with_docker` finds it
for ``pycni doctor`` and the reconciler's log.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import plugins
from .chains import (
    DOCKER_BRIDGE,
    OPT_BRIDGE,
    Resolved,
    host_local_subnets,
    ipam_plugin,
)
from .cni.config import NetworkConfigList
from .dockerview import DockerNetwork
from .errors import InvalidRequest
from .protocol import CreateNetworkRequest

if TYPE_CHECKING:
    from .seams import Links

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_DOCKER_BRIDGE = re.compile(r"docker0|br-[0-9a-f]{12}")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Neighbour:
    """Another network on this host, as far as a new one could collide with it."""

    #: how an error names it ("pycni network 'web'", "Docker network 'bridge'")
    name: str
    bridges: tuple[str, ...] = ()
    subnets: tuple[IPNetwork, ...] = ()


def address_ranges(req: CreateNetworkRequest, config: NetworkConfigList, ipam: str
                   ) -> list[IPNetwork]:
    """The subnets a network hands addresses from: Docker's pools where Docker's IPAM chooses,
    else the chain's IPAM ranges (host-local's ranges, static's addresses)."""
    if ipam == "docker":
        return [p.pool for p in req.ipv4_data + req.ipv6_data if not p.is_null]
    found = ipam_plugin(config)
    if found is None:
        return []
    ipam_conf = found[1]
    subnets = host_local_subnets(ipam_conf)
    for entry in ipam_conf.get("addresses") or []:
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            try:
                subnets.append(ipaddress.ip_interface(entry["address"]).network)
            except ValueError:
                continue
    return subnets


def neighbours(pycni: Iterable[tuple[str, CreateNetworkRequest, NetworkConfigList, str]],
               docker: Iterable[DockerNetwork] | None) -> list[Neighbour]:
    """Every other network: pycni's (id, Docker's request, config, ipam), and Docker's own
    (None when Docker can't be asked), each named as Docker names it."""
    pycni, docker = list(pycni), list(docker or [])
    names = {d.id: d.name for d in docker}
    found = [
        Neighbour(f"pycni network {names.get(nid, nid[:12])!r}", tuple(plugins.bridges(config)),
                  tuple(address_ranges(req, config, ipam)))
        for nid, req, config, ipam in pycni
    ]
    ours = {nid for nid, *_ in pycni}
    for d in docker:
        if d.id in ours:
            continue  # named above, as pycni's
        subnets = []
        for subnet in d.subnets:
            try:
                subnets.append(ipaddress.ip_network(subnet, strict=False))
            except ValueError:
                continue
        found.append(Neighbour(f"Docker network {d.name!r}", (d.bridge,) if d.bridge else (),
                               tuple(subnets)))
    return found


def clashes_with_docker(pycni: Iterable[tuple[str, CreateNetworkRequest, NetworkConfigList, str]],
                        docker: Iterable[DockerNetwork]) -> list[tuple[str, str]]:
    """Where a pycni network's addresses overlap a subnet of one of Docker's own networks, as
    (the pycni network's name, what overlaps what): Docker's IPAM doesn't know a range a chain's
    IPAM hands out, so it may give it to a network created later."""
    pycni = list(pycni)
    found = neighbours(pycni, docker)
    mine, theirs = found[:len(pycni)], found[len(pycni):]
    return [
        (m.name, f"its range {r} overlaps {s}, the subnet of {t.name}")
        for m in mine for r in m.subnets for t in theirs for s in t.subnets
        if r.version == s.version and r.overlaps(s)
    ]


def refuse_collisions(req: CreateNetworkRequest, resolved: Resolved, config: NetworkConfigList,
                      *, links: Links, others: Iterable[Neighbour]) -> None:
    """Refuse a network that would hurt the host or another network.

    * Its bridge must be a bridge: a name that is an existing link of another kind (``eth0``,
      ``lo``) would have pycni's forwarding rules accept whatever comes in on that link.
    * It must not be another network's bridge, pycni's or Docker's (``docker0``, ``br-…``):
      the two would share their containers, and removing one would break the other.
    * Its addresses must not overlap another network's subnet: two bridges with one subnet
      route it twice, and the two IPAMs hand out the same addresses.
    """
    others = list(others)
    key = next((k for k in (OPT_BRIDGE, DOCKER_BRIDGE) if k in req.driver_options), "")
    where = f"option {key}" if resolved.mode == "zero-config" and key else config.source
    for bridge in plugins.bridges(config):
        for other in others:
            if bridge in other.bridges:
                raise InvalidRequest(f"{where}: bridge {bridge!r} is the bridge of {other.name}; "
                                     "each network needs a bridge of its own")
        link = links.link_info(bridge)
        if link is not None and link.kind != "bridge":
            raise InvalidRequest(
                f"{where}: {bridge!r} is an existing {link.kind or 'network device'} link, not "
                "a bridge; name a bridge of the network's own (or one that doesn't exist yet)")
        if link is not None and _DOCKER_BRIDGE.fullmatch(bridge):
            raise InvalidRequest(f"{where}: bridge {bridge!r} is one of Docker's; each network "
                                 "needs a bridge of its own")
    mine = address_ranges(req, config, resolved.ipam)
    what = "subnet" if resolved.ipam == "docker" else f"{config.source}: the chain's range"
    for subnet in mine:
        for other in others:
            clash = next((s for s in other.subnets
                          if s.version == subnet.version and s.overlaps(subnet)), None)
            if clash is not None:
                raise InvalidRequest(
                    f"{what} {subnet} overlaps {clash}, the subnet of {other.name}: their "
                    "addresses would be handed out twice; choose a range no other network uses")




class ClashLog:
    """Logs, once each, where a pycni network's addresses overlap a network Docker created
    later inside a range only the chain's IPAM knew (``pycni doctor`` FAILs on it too). A remote
    driver never hears of other drivers' networks: the reconciler asks."""

    def __init__(self) -> None:
        self.told: set[tuple[str, str]] = set()

    def tell(self, pycni: Iterable[tuple[str, CreateNetworkRequest, NetworkConfigList, str]],
             docker: Iterable[DockerNetwork] | None) -> None:
        if docker is None:
            return  # Docker can't be asked
        found = set(clashes_with_docker(pycni, docker))
        for name, what in sorted(found - self.told):
            log.warning("%s: %s; their addresses are handed out twice (pycni doctor)", name, what)
        self.told = found
