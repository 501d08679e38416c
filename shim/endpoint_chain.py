"""The chain one endpoint runs: its network's template, with Docker's address and MAC in it, and
two ways of behaving like Docker's bridge (:func:`for_endpoint`)."""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass
from typing import Any

from . import plugins, podargs
from .chains import ipam_plugin
from .cni.config import NetworkConfigList, conflist_from_dict
from .errors import InvalidRequest
from .protocol import EndpointInterface

#: portmap ``conditionsV6`` that keep ``::1`` out of its DNAT (see :func:`for_endpoint`)
NO_LOOPBACK6_DNAT = ["!", "-d", "::1/128"]


def docker_mac(addresses: list[Any]) -> str:
    """The MAC Docker's bridge gives an endpoint: ``02:42`` and the four bytes of its IPv4
    address (libnetwork ``netutils.GenerateMACFromIP``); "" without an IPv4 address."""
    v4 = next((a.ip for a in addresses if a.version == 4), None)
    if v4 is None:
        return ""
    return ":".join(f"{b:02x}" for b in b"\x02\x42" + v4.packed)


def _has_run(items: list[Any], run: list[str]) -> bool:
    return any(items[n:n + len(run)] == run for n in range(len(items) - len(run) + 1))


@dataclass(frozen=True)
class EndpointChain:
    """What one endpoint's ADD runs with."""

    config: NetworkConfigList
    cni_args: tuple[tuple[str, str], ...]
    capability_args: dict[str, Any]


def _gateways(req_data: dict[str, Any]) -> dict[int, str]:
    """Docker's gateway per IP family, from the stored CreateNetwork request."""
    gws: dict[int, str] = {}
    for key in ("IPv4Data", "IPv6Data"):
        for pool in req_data.get(key) or []:
            gw = pool.get("Gateway") if isinstance(pool, dict) else None
            if gw:
                iface = ipaddress.ip_interface(gw)
                gws.setdefault(iface.version, str(iface.ip))
    return gws


def for_endpoint(
    template: dict[str, Any],
    network_request: dict[str, Any],
    address_via: str,
    iface: EndpointInterface,
    *,
    internal: bool = False,
    user: tuple[podargs.Pairs, dict[str, Any]] = ((), {}),
) -> EndpointChain:
    """The chain one endpoint runs: the network's template plus Docker's address, if any.

    Two more things make it behave like Docker's bridge:

    * On a zero-config network the MAC is derived from the IPv4 address (``02:42`` + its four
      bytes, :func:`docker_mac`) unless ``--mac-address`` gave one, as Docker's bridge does: a
      container restarted with its address keeps its MAC, so neighbours' entries stay right.
    * Every ``portmap`` leaves ``::1`` alone (:data:`NO_LOOPBACK6_DNAT` in ``conditionsV6``), as
      Docker's own ``OUTPUT`` rule does: the kernel drops a packet from ``::1`` DNAT'd to a
      container, so pycni's userland proxy answers there instead (:mod:`shim.proxy`).
    """
    raw = copy.deepcopy(template)
    _spare_loopback6(raw)
    addresses = [a for a in (iface.address, iface.address_ipv6) if a is not None]
    gateways = _gateways(network_request)
    args = list(podargs.join(user[0]))  # the endpoint's driver-opts cni.args and cni.caps
    caps: dict[str, Any] = dict(user[1])
    if address_via and not addresses:
        raise InvalidRequest("Docker's IPAM gave this endpoint no address to hand to the chain")
    if address_via == "config":
        _into_static_ipam(raw, addresses, gateways, internal=internal)
    elif address_via == "ips":
        caps["ips"] = [str(a) for a in addresses]
    elif address_via == "args":
        args += _ip_args(raw, addresses, gateways)
    mac = iface.mac_address
    if not mac and address_via == "config":
        mac = docker_mac(addresses)
    if mac:
        # Docker sets a MAC it was given itself when it moves the link in; telling the chain
        # too keeps what plugins record (and see at DEL) consistent. bridge reads CNI_ARGS MAC=.
        caps["mac"] = mac
        args.append(("MAC", mac))
    return EndpointChain(
        config=conflist_from_dict(raw, source="endpoint config"),
        cni_args=tuple(args),
        capability_args=caps,
    )


Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def _spare_loopback6(raw: dict[str, Any]) -> None:
    """Every ``portmap`` leaves ``::1`` to pycni's userland proxy (see :func:`for_endpoint`)."""
    for plugin in raw.get("plugins") or []:
        if isinstance(plugin, dict) and plugin.get("type") == "portmap":
            conditions = list(plugin.get("conditionsV6") or [])
            if not _has_run(conditions, NO_LOOPBACK6_DNAT):
                plugin["conditionsV6"] = conditions + NO_LOOPBACK6_DNAT


def _into_static_ipam(raw: dict[str, Any], addresses: list[Address], gateways: dict[int, str],
                      *, internal: bool) -> None:
    """Zero config: Docker's addresses (and default routes, unless internal) become the static
    IPAM's configuration."""
    ipam = raw["plugins"][0]["ipam"]
    ipam["addresses"] = []
    routes = []
    for addr in addresses:
        entry = {"address": str(addr)}
        gw = gateways.get(addr.version)
        if gw:
            entry["gateway"] = gw
            if not internal:
                routes.append({"dst": "0.0.0.0/0" if addr.version == 4 else "::/0", "gw": gw})
        ipam["addresses"].append(entry)
    if routes:
        ipam["routes"] = routes


def _ip_args(raw: dict[str, Any], addresses: list[Address], gateways: dict[int, str]
             ) -> list[tuple[str, str]]:
    """CNI_ARGS ``IP=`` (and ``GATEWAY=``) the way the chain's IPAM reads them."""
    found = ipam_plugin(conflist_from_dict(raw))
    ipam_type = str(found[1].get("type")) if found else ""
    if plugins.ip_arg(ipam_type) == "cidr":  # static: CIDRs, and gateways
        args = [("IP", ",".join(str(a) for a in addresses))]
        gws = [gateways[a.version] for a in addresses if a.version in gateways]
        return args + ([("GATEWAY", ",".join(gws))] if gws else [])
    return [("IP", ",".join(str(a.ip) for a in addresses))]  # host-local: bare addresses
