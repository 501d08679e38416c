"""Every netlink call pycni makes: namespaces, and moving links between them.

All of it goes through pyroute2 sockets opened inside the namespace concerned (see
:func:`netns_socket`): the server's own threads never change namespace. pyroute2 and OS errors are translated into
:class:`~shim.errors.NetlinkFailure` here and nowhere else.

The staging dance these functions serve (see :mod:`shim.driver`):

* CreateEndpoint: the CNI chain creates ``eth0`` in pycni's staging netns; :func:`move_to_host`
  takes it out under a temporary name, which Docker then moves into the container at Join.
* DeleteEndpoint: Docker has moved the link back to the host (or it is still in the sandbox, or
  gone); :func:`restore_for_delete` puts it back into the staging netns as ``eth0`` with its
  addresses, because bridge and ptp tear down their masquerade rules only for the addresses they
  find on that interface at DEL time.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .cni.types import Route
from .errors import NetlinkFailure
from .netns import (
    NETNS_DIR,
    create_netns,
    is_netns,
    list_netns,
    netns_exists,
    netns_path,
    netns_socket,
    ns_file,
    pin_netns,
    remove_netns,
)

log = logging.getLogger(__name__)

# This module is the Links seam (shim.seams); its namespace half is shim.netns.
__all__ = [
    "NETNS_DIR", "LinkInfo", "LiveLink", "addresses", "bridge_ports", "create_netns",
    "delete_by_mac", "delete_link", "hand_over_default_routes", "is_netns", "link_info", "link_names", "links_in",
    "list_netns", "move_to_host", "netns_exists", "netns_path", "netns_socket", "pin_netns",
    "remove_netns", "restore_for_delete",
]



@dataclass(frozen=True)
class LinkInfo:
    name: str
    mac: str
    mtu: int
    #: the link type (``bridge``, ``veth``…; "" for a physical device or loopback)
    kind: str = ""


@dataclass(frozen=True)
class LiveLink:
    """A link as it is right now inside some netns, with its global addresses (CIDR)."""

    name: str
    mac: str
    addresses: tuple[str, ...] = ()


@contextmanager
def _ipr(ns: str | None = None, what: str = "netlink") -> Iterator[IPRoute]:
    """An IPRoute socket (in ``ns``, a netns name or path), with errors translated."""
    try:
        if ns:
            ipr = IPRoute(fileno=netns_socket(ns).detach())
        else:
            ipr = IPRoute()
        with ipr:
            yield ipr
    except NetlinkError as exc:
        raise NetlinkFailure(f"{what}: {os.strerror(exc.code)}") from exc
    except OSError as exc:
        raise NetlinkFailure(f"{what}: {exc.strerror or exc}") from exc


def _lookup(ipr: IPRoute, name: str) -> int | None:
    link = _get(ipr, name)
    return None if link is None else int(link["index"])


def _get(ipr: IPRoute, name: str) -> Any | None:
    """The link called ``name``, asked for by name (one request, whatever the link count)."""
    try:
        found = ipr.link("get", ifname=name)
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:
            return None
        raise
    return found[0] if found else None


def _as_info(link: Any) -> LinkInfo:
    return LinkInfo(
        name=str(link.get("ifname")), mac=str(link.get("address")), mtu=int(link.get("mtu") or 0),
        kind=str(link.get(("linkinfo", "kind")) or ""),
    )


def link_info(name: str, ns: str | None = None) -> LinkInfo | None:
    with _ipr(ns, f"cannot look up link {name}") as ipr:
        link = _get(ipr, name)
        return None if link is None else _as_info(link)


def _made_by_chain(ipr: IPRoute, ifname: str, ns: str) -> tuple[Any, int, list[Route]]:
    """The link the chain made as ``ifname`` in ``ns`` (the socket's namespace), its index and
    the routes through it; NetlinkFailure if the chain made none."""
    link = _get(ipr, ifname)
    if link is None:
        raise NetlinkFailure(f"the CNI chain created no interface {ifname} in {ns}")
    index = int(link["index"])
    return link, index, _routes(ipr, index)


def move_to_host(ns_name: str, ifname: str, host_name: str) -> tuple[LinkInfo, list[Route]]:
    """Take ``ifname`` out of the staging netns into ours, renamed ``host_name`` (and down), with
    the routes the chain set through it there (moving the link loses them)."""
    with _ipr(ns_name, f"cannot move {ifname} out of {ns_name}") as ipr:
        link, index, found = _made_by_chain(ipr, ifname, ns_name)
        # One request: the kernel takes the link down to move it, and names it on arrival.
        ipr.link("set", index=index, net_ns_pid=os.getpid(), ifname=host_name)
    info = _as_info(link)
    return LinkInfo(name=host_name, mac=info.mac, mtu=info.mtu, kind=info.kind), found


def delete_link(name: str, ns: str | None = None, *, macs: Collection[str] = ()) -> bool:
    """Delete a link by name - only if its MAC is one of ``macs``, when given; ``False`` if there
    was none (or another, or its netns is gone)."""
    if ns and not is_netns(ns_file(ns)):
        return False
    with _ipr(ns, f"cannot delete link {name}") as ipr:
        link = _get(ipr, name)
        if link is None or (macs and str(link.get("address", "")).lower() not in macs):
            return False
        try:
            ipr.link("del", index=int(link["index"]))
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return False  # gone meanwhile
            raise
        return True


def _find_by_mac(ns: str, mac: str) -> int | None:
    with _ipr(ns, f"cannot list links in {ns}") as ipr:
        for link in ipr.get_links():
            if str(link.get("address", "")).lower() == mac.lower():
                return int(link["index"])
    return None


def _add_addresses(ipr: IPRoute, index: int, addresses: Iterable[str]) -> None:
    for cidr in addresses:
        iface = ipaddress.ip_interface(cidr)
        try:
            ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except NetlinkError as exc:
            if exc.code != errno.EEXIST:
                raise


def restore_for_delete(
    ns_name: str,
    ifname: str,
    *,
    host_name: str,
    mac: str,
    addresses: Iterable[str],
    sandbox: str = "",
) -> str:
    """Make sure ``ifname`` with ``addresses`` is in the staging netns before CNI DEL.

    Looks for the link where it can be, in order: already in the staging netns; in the host
    under ``host_name`` (where Docker leaves it after the container is gone); still in the
    container's sandbox (found by MAC). If it is nowhere (the container's netns died with it), a
    veth stand-in carrying the same addresses lets the plugins' DEL find what to tear down.
    Returns where the link was found: ``staging``, ``host``, ``sandbox`` or ``stand-in``.
    """
    addresses = list(addresses)
    what = f"cannot restore {ifname} into {ns_name}"
    with _ipr(ns_name, what) as ipr:
        if _lookup(ipr, ifname) is not None:
            return "staging"
    found = "stand-in"
    with _ipr(None, what) as host:
        link = _get(host, host_name)
        if link is not None and mac and _as_info(link).mac.lower() != mac.lower():
            link = None  # same name, not our link: leave it alone
        if link is not None:
            host.link("set", index=link["index"], state="down")
            host.link("set", index=link["index"], net_ns_fd=ns_name)
            found = "host"
    if found == "stand-in" and sandbox and mac and is_netns(sandbox):
        try:
            index = _find_by_mac(sandbox, mac)
        except NetlinkFailure:
            index = None
        if index is not None:
            with _ipr(sandbox, what) as sbox:
                sbox.link("set", index=index, state="down")
                sbox.link("set", index=index, net_ns_fd=ns_name)
            found = "sandbox"
    with _ipr(ns_name, what) as ipr:
        if found == "stand-in":
            ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": "pycni-standin"})
            index = _lookup(ipr, ifname)
        else:
            # The link keeps its name from wherever it was; find it by MAC.
            index = None
            for link in ipr.get_links():
                if str(link.get("address", "")).lower() == mac.lower():
                    index = int(link["index"])
            if index is None:
                raise NetlinkFailure(f"{what}: link with MAC {mac} vanished during the move")
            ipr.link("set", index=index, ifname=ifname)
        assert index is not None
        _add_addresses(ipr, index, addresses)
        ipr.link("set", index=index, state="up")
    log.debug("restored %s into %s from %s", ifname, ns_name, found)
    return found


def addresses(ns: str, ifname: str) -> tuple[str, list[str]]:
    """The MAC and global addresses (CIDR) of ``ifname`` in netns ``ns``; ("", []) if absent."""
    if not is_netns(ns_file(ns)):
        return "", []
    with _ipr(ns, f"cannot read addresses of {ifname}") as ipr:
        link = _get(ipr, ifname)
        if link is None:
            return "", []
        return _as_info(link).mac, _global_addresses(ipr, int(link["index"]))


def hand_over_default_routes(ns: str, ifname: str) -> list[Route]:
    """The routes through ``ifname`` in netns ``ns`` (a path), its default routes removed: Docker
    adds them back from Join's ``Gateway``/``GatewayIPv6``, and fails where one exists."""
    with _ipr(ns, f"cannot read routes of {ifname} in {ns}") as ipr:
        _link, index, found = _made_by_chain(ipr, ifname, ns)
        for route in found:
            if route.is_default:
                family = socket.AF_INET if route.dst.version == 4 else socket.AF_INET6
                try:
                    ipr.route("del", family=family, dst=str(route.dst), oif=index, table=254)
                except NetlinkError as exc:
                    if exc.code != errno.ESRCH:
                        raise
    return found


def _routes(ipr: IPRoute, index: int) -> list[Route]:
    found: list[Route] = []
    for route in ipr.get_routes(family=socket.AF_UNSPEC, oif=index, table=254):
        if route.get("type") != 1:  # RTN_UNICAST
            continue
        width = route["dst_len"]
        default = "0.0.0.0" if route["family"] == socket.AF_INET else "::"
        net = ipaddress.ip_network(f"{route.get('RTA_DST') or default}/{width}", strict=False)
        if net.is_link_local or net.is_multicast:
            continue
        gw = route.get("RTA_GATEWAY")
        found.append(Route(dst=net, gw=ipaddress.ip_address(gw) if gw else None))
    return found


def delete_by_mac(ns: str, mac: str) -> bool:
    """Delete the link with ``mac`` in netns ``ns`` (a path); False if neither exists."""
    if not is_netns(ns_file(ns)):
        return False
    try:
        index = _find_by_mac(ns, mac)
    except NetlinkFailure:
        return False
    if index is None:
        return False
    with _ipr(ns, f"cannot delete link {mac} in {ns}") as ipr:
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise
    return True


def links_in(ns: str) -> list[LiveLink]:
    """Every link in netns ``ns`` (a name or a path), with its global addresses; only reads."""
    with _ipr(ns, f"cannot list links in {ns}") as ipr:
        return [
            LiveLink(
                str(link.get("ifname")),
                str(link.get("address") or ""),
                tuple(_global_addresses(ipr, int(link["index"]))),
            )
            for link in ipr.get_links()
        ]


def _global_addresses(ipr: IPRoute, index: int) -> list[str]:
    """The addresses (CIDR) on link ``index``, link-local ones left out."""
    found = []
    for addr in ipr.get_addr(index=index):
        ip = ipaddress.ip_interface(f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}")
        if not ip.is_link_local:
            found.append(str(ip))
    return found


def link_names(ns: str | None = None) -> list[str]:
    with _ipr(ns, "cannot list links") as ipr:
        return [str(link.get("ifname")) for link in ipr.get_links()]


def bridge_ports(name: str) -> list[str]:
    """Names of the links enslaved to bridge ``name`` (empty if it doesn't exist)."""
    with _ipr(None, f"cannot list ports of {name}") as ipr:
        index = _lookup(ipr, name)
        if index is None:
            return []
        return [str(link.get("ifname")) for link in ipr.get_links() if link.get("master") == index]
