"""One VXLAN tunnel endpoint (VTEP) per overlay on this host, and its per-peer entries.

The way flannel's vxlan backend lays it out, with the kernel's own VXLAN and no learning: the
VTEP ``pycni.<VNI>`` (``vxlan id VNI dstport 4789 nolearning local UNDERLAY``) carries this
host's subnet's network address as a /32 and a MAC derived from the overlay and the host's
underlay address (the same after any restart, so peers' entries stay right). For each peer, three entries::

    route   PEER_SUBNET via PEER_SUBNET.0 dev pycni.VNI onlink
    neigh   PEER_SUBNET.0 lladdr PEER_MAC dev pycni.VNI nud permanent
    fdb     PEER_MAC dev pycni.VNI dst PEER_UNDERLAY self permanent

A packet for a container of the peer's is routed to the peer VTEP's address, which resolves to
its MAC without ARP, which the fdb sends to the peer's underlay address in UDP. Entries live on
the VTEP, so deleting the VTEP removes them all.

This module is the overlay's boundary with netlink: pyroute2's errors become
:class:`~shim.errors.NetlinkFailure` here.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import socket
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import NetlinkFailure

PORT = 4789  # IANA's VXLAN port, as flannel and Docker's overlay use
PREFIX = "pycni."
NUD_PERMANENT = 0x80
NTF_SELF = 0x02
RTNH_F_ONLINK = 0x04
AF_BRIDGE = 7


@dataclass(frozen=True)
class HostRoute:
    """A route of this host that is not an overlay's: what a peer's subnet must not take."""

    dst: ipaddress.IPv4Network
    dev: str

    def __str__(self) -> str:
        return f"{self.dst} dev {self.dev}"


@dataclass(frozen=True)
class Entry:
    """One peer, as the VTEP needs it."""

    subnet: ipaddress.IPv4Network
    underlay: str
    mac: str

    @property
    def vtep_address(self) -> str:
        return str(self.subnet.network_address)


class Vteps(Protocol):
    """What the overlay manager does with VTEPs (a fake in unit tests)."""

    def ensure(self, name: str, vni: int, underlay: str, address: str, mac: str,
               mtu: int) -> None: ...

    def sync(self, name: str, peers: Iterable[Entry]) -> None: ...

    def delete(self, name: str) -> None: ...

    def entries(self, name: str) -> list[Entry]: ...

    def host_routes(self) -> list[HostRoute]: ...


def name_for(vni: int) -> str:
    return f"{PREFIX}{vni}"


def mac_for(overlay: str, underlay: str) -> str:
    """A locally administered unicast MAC, the same for one host (its underlay address) on one
    overlay after any restart."""
    digest = hashlib.sha256(f"{overlay}/{underlay}".encode()).digest()
    return ":".join(f"{b:02x}" for b in bytes([0x0E]) + digest[:5])


@contextlib.contextmanager
def _ipr(what: str) -> Iterator[IPRoute]:
    try:
        with IPRoute() as ipr:
            yield ipr
    except NetlinkError as exc:
        raise NetlinkFailure(f"{what}: {exc.args[1] if len(exc.args) > 1 else exc}") from exc
    except OSError as exc:
        raise NetlinkFailure(f"{what}: {exc}") from exc


def _index(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def ensure(name: str, vni: int, underlay: str, address: str, mac: str, mtu: int) -> None:
    """Make the VTEP, or make the one there right (idempotent; a wrong one is replaced)."""
    with _ipr(f"VTEP {name}") as ipr:
        index = _index(ipr, name)
        if index is not None and not _matches(ipr, index, vni, underlay, mac):
            ipr.link("del", index=index)
            index = None
        if index is None:
            ipr.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_port=PORT,
                     vxlan_local=underlay, vxlan_learning=0, address=mac, mtu=mtu)
            index = _index(ipr, name)
            assert index is not None
        ipr.link("set", index=index, mtu=mtu)
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=socket.AF_INET)}
        if address not in have:
            ipr.addr("add", index=index, address=address, prefixlen=32)
        ipr.link("set", index=index, state="up")


def _matches(ipr: IPRoute, index: int, vni: int, underlay: str, mac: str) -> bool:
    link = ipr.get_links(index)[0]
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return False
    data = info.get_attr("IFLA_INFO_DATA")
    return bool(
        data.get_attr("IFLA_VXLAN_ID") == vni
        and data.get_attr("IFLA_VXLAN_LOCAL") == underlay
        and data.get_attr("IFLA_VXLAN_PORT") == PORT
        and link.get_attr("IFLA_ADDRESS") == mac
    )


def entries(name: str) -> list[Entry]:
    """The peers the VTEP is programmed for now: its routes, with their neighbour and fdb
    entries (a route whose entries are missing shows with what is there)."""
    with _ipr(f"VTEP {name}") as ipr:
        index = _index(ipr, name)
        if index is None:
            return []
        macs = {n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR")
                for n in ipr.get_neighbours(ifindex=index, family=socket.AF_INET)}
        dsts = {f.get_attr("NDA_LLADDR"): f.get_attr("NDA_DST")
                for f in ipr.fdb("dump", ifindex=index) if f.get_attr("NDA_DST")}
        found = []
        for route in ipr.get_routes(oif=index, family=socket.AF_INET):
            gw = route.get_attr("RTA_GATEWAY")
            if not gw or not route.get_attr("RTA_DST"):
                continue
            subnet = ipaddress.IPv4Network(f"{route.get_attr('RTA_DST')}/{route['dst_len']}")
            mac = macs.get(gw, "")
            found.append(Entry(subnet, dsts.get(mac, ""), mac))
        return found


def host_routes() -> list[HostRoute]:
    """This host's IPv4 routes in the main table, but the default ones and those through
    pycni's VTEPs (they are the peers': etcd keeps them apart)."""
    with _ipr("cannot read this host's routes") as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        found = []
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            dst, oif = route.get_attr("RTA_DST"), route.get_attr("RTA_OIF")
            dev = str(names.get(oif, oif))
            if not dst or route["dst_len"] == 0 or dev.startswith(PREFIX):
                continue
            found.append(HostRoute(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}",
                                                         strict=False), dev))
        return found


def colliding(routes: Iterable[HostRoute], subnet: ipaddress.IPv4Network) -> HostRoute | None:
    """The first of ``routes`` that overlaps ``subnet``, which an overlay must then not take."""
    return next((r for r in routes if r.dst.overlaps(subnet)), None)


def sync(name: str, peers: Iterable[Entry]) -> None:
    """Program exactly ``peers`` on the VTEP: add what is missing, remove what is not a peer."""
    wanted = {p.subnet: p for p in peers}
    with _ipr(f"VTEP {name}") as ipr:
        index = _index(ipr, name)
        if index is None:
            raise NetlinkFailure(f"VTEP {name} is missing")
        present = entries(name)
        for old in present:
            if wanted.get(old.subnet) != old:
                _remove(ipr, index, old)
        for peer in wanted.values():
            if peer not in present:
                _add(ipr, index, peer)


def _add(ipr: IPRoute, index: int, peer: Entry) -> None:
    gw = peer.vtep_address
    ipr.neigh("replace", dst=gw, lladdr=peer.mac, ifindex=index, state=NUD_PERMANENT)
    ipr.neigh("replace", family=AF_BRIDGE, ifindex=index, lladdr=peer.mac, dst=peer.underlay,
              flags=NTF_SELF, state=NUD_PERMANENT)
    ipr.route("replace", dst=str(peer.subnet), gateway=gw, oif=index, flags=RTNH_F_ONLINK)


def _remove(ipr: IPRoute, index: int, peer: Entry) -> None:
    gw = peer.vtep_address
    steps: list[Callable[[], object]] = [
        lambda: ipr.route("del", dst=str(peer.subnet), gateway=gw, oif=index),
        lambda: ipr.neigh("del", dst=gw, ifindex=index),
    ]
    if peer.mac and peer.underlay:
        steps.append(lambda: ipr.neigh("del", family=AF_BRIDGE, ifindex=index, lladdr=peer.mac,
                                       dst=peer.underlay, flags=NTF_SELF))
    for step in steps:
        try:
            step()
        except NetlinkError as exc:
            if exc.code not in (2, 3):  # ENOENT, ESRCH: gone already
                raise


def delete(name: str) -> None:
    """Remove the VTEP and with it every entry on it; gone already is fine."""
    with _ipr(f"VTEP {name}") as ipr:
        index = _index(ipr, name)
        if index is not None:
            try:
                ipr.link("del", index=index)
            except NetlinkError as exc:
                if exc.code != 19:  # ENODEV
                    raise


def default_underlay() -> str:
    """The source address of this host's default route (IPv4), "" if it has none."""
    with _ipr("default route") as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            src = route.get_attr("RTA_PREFSRC")
            if src:
                return str(src)
            oif = route.get_attr("RTA_OIF")
            for addr in ipr.get_addr(index=oif, family=socket.AF_INET) if oif else []:
                return str(addr.get_attr("IFA_ADDRESS"))
    return ""


def underlay_mtu(address: str) -> int:
    """The MTU of the link that carries ``address``; 1500 when no link does."""
    with _ipr(f"underlay {address}") as ipr:
        for addr in ipr.get_addr(family=socket.AF_INET):
            if addr.get_attr("IFA_ADDRESS") == address:
                links = ipr.get_links(addr["index"])
                if links:
                    return int(links[0].get_attr("IFLA_MTU"))
    return 1500
