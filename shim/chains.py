"""Which CNI chain a Docker network runs, and how Docker's addresses reach it.

Two sources of config:

* **zero config** (``docker network create -d pycni NET``): a chain like Docker's own bridge
  network — ``bridge`` (gateway) with ``static`` IPAM, then ``portmap`` — with masquerading and
  forwarding set up once per network (:mod:`shim.firewall`). Docker's IPAM stays the authority:
  each endpoint's chain gets the address and gateway Docker chose, written into the static
  IPAM's ``addresses``.
* **a named conflist** (``-o cni.network=NAME``) from the conf dir. With ``--ipam-driver null`` the
  chain's IPAM chooses and pycni reports its choice to Docker. With Docker's IPAM, Docker's address
  goes to the chain through the ``ips`` capability (when the plugin declares it) or CNI_ARGS ``IP=``
  (host-local, static); a chain that can honour neither is refused at CreateNetwork.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from . import plugins
from .cni.config import NetworkConfigList, conflist_from_dict
from .errors import ConfigError, InvalidRequest
from .protocol import CreateNetworkRequest, EndpointInterface

#: ``-o`` options pycni understands; any other ``cni.*`` option is a typo worth reporting.
OPT_NETWORK = "cni.network"
OPT_BRIDGE = "cni.bridge"
OPT_MTU = "cni.mtu"
KNOWN_OPTIONS = (OPT_NETWORK, OPT_BRIDGE, OPT_MTU)

ZERO_CONFIG_VERSION = "1.0.0"
NULL_IPAM_HINT = "create the network with --ipam-driver null to let the chain's IPAM choose"


def cni_network_name(network_id: str) -> str:
    """The CNI network name of a zero-config network (names cache files and iptables chains)."""
    return "pycni-" + network_id[:12]


def default_bridge_name(network_id: str) -> str:
    return "pycni-" + network_id[:9]  # 15 characters, the kernel's limit


@dataclass(frozen=True)
class Resolved:
    """What CreateNetwork settles: the config template and how addresses reach it."""

    config: NetworkConfigList
    mode: str  # "zero-config" | "conflist"
    ipam: str  # "docker" | "cni"
    address_via: str  # "config" | "ips" | "args" | ""
    #: per-network rules pycni installs (zero-config): {"bridge", "subnets", "internal"}
    firewall: dict[str, Any] = field(default_factory=dict)

    def bridges(self) -> list[str]:
        """Bridges the chain's plugins create (see :func:`shim.plugins.bridges`)."""
        return plugins.bridges(self.config)



def check_options(options: dict[str, str]) -> None:
    for key in options:
        if key.startswith("cni.") and key not in KNOWN_OPTIONS:
            raise InvalidRequest(
                f"unknown option {key!r}; pycni knows {', '.join(KNOWN_OPTIONS)}"
            )
    if OPT_MTU in options:
        try:
            mtu = int(options[OPT_MTU])
        except ValueError:
            mtu = 0
        if not 68 <= mtu <= 65535:
            raise InvalidRequest(f"option {OPT_MTU} must be a number from 68 to 65535")
    if OPT_BRIDGE in options and not _valid_link_name(options[OPT_BRIDGE]):
        raise InvalidRequest(
            f"option {OPT_BRIDGE}={options[OPT_BRIDGE]!r} is not a valid interface name "
            "(1 to 15 bytes, not '.' or '..', no '/', ':' or whitespace)"
        )


#: The kernel's ``isspace`` (lib/ctype.c) on a byte: \t \n \v \f \r, space, and 0xA0, which
#: is also the second byte of some UTF-8 letters ('à' is C3 A0: the kernel refuses "pycni-tà").
_KERNEL_SPACE = frozenset(b"\t\n\v\f\r \xa0")


def _valid_link_name(name: str) -> bool:
    """Whether the kernel takes ``name`` for a link (``dev_valid_name`` in net/core/dev.c).

    The kernel counts bytes: under IFNAMSIZ (16) with the terminating NUL, so 15 bytes of UTF-8,
    which may be fewer than 15 characters. It refuses "." and "..", and '/', ':' and its own
    whitespace in any byte. A NUL would cut the name short on its way to the kernel, and names
    with other Unicode whitespace (which the kernel takes) are refused too: nobody means them.
    """
    raw = name.encode("utf-8", "surrogateescape")
    return (
        0 < len(raw) <= 15
        and name not in (".", "..")
        and not any(c in "/:\x00" or c.isspace() for c in name)
        and not _KERNEL_SPACE.intersection(raw)
    )


def docker_ipam(req: CreateNetworkRequest) -> bool:
    """Whether Docker's IPAM hands out addresses (anything but ``--ipam-driver null``)."""
    pools = req.ipv4_data + req.ipv6_data
    return bool(pools) and not all(p.is_null for p in pools)


def zero_config(req: CreateNetworkRequest) -> Resolved:
    """pycni's own bridge chain for a network created with no CNI config named."""
    options = req.driver_options
    if not docker_ipam(req):
        raise InvalidRequest(
            "a pycni network without -o cni.network=NAME takes its addresses from Docker's IPAM; "
            "--ipam-driver null needs a CNI config whose IPAM chooses them"
        )
    bridge = options.get(OPT_BRIDGE) or default_bridge_name(req.network_id)
    internal = req.internal
    # Masquerading and forwarding are set up once per network by pycni (shim.firewall), as
    # Docker's bridge driver does, not per container by ipMasq and the firewall plugin: that
    # saves several iptables runs on every ADD and DEL.
    main: dict[str, Any] = {
        "type": "bridge",
        "bridge": bridge,
        "isGateway": not internal,
        "ipMasq": False,
        "hairpinMode": True,
        "ipam": {"type": "static"},
    }
    if OPT_MTU in options:
        main["mtu"] = int(options[OPT_MTU])
    plugins: list[dict[str, Any]] = [main]
    if not internal:
        plugins.append({"type": "portmap", "capabilities": {"portMappings": True}, "snat": True})
    raw = {
        "cniVersion": ZERO_CONFIG_VERSION,
        "name": cni_network_name(req.network_id),
        "plugins": plugins,
    }
    return Resolved(
        config=conflist_from_dict(raw, source=f"pycni zero-config network {req.network_id[:12]}"),
        mode="zero-config",
        ipam="docker",
        address_via="config",
        firewall={
            "bridge": bridge,
            "subnets": [str(p.pool) for p in req.ipv4_data + req.ipv6_data if not p.is_null],
            "internal": internal,
        },
    )


def _ipam_plugin(net: NetworkConfigList) -> tuple[int, dict[str, Any]] | None:
    for n, plugin in enumerate(net.plugins):
        ipam = plugin.raw.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type"):
            return n, ipam
    return None


def _host_local_subnets(ipam: dict[str, Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    subnets = []
    ranges = ipam.get("ranges")
    if isinstance(ranges, list):
        for rangeset in ranges:
            for r in rangeset if isinstance(rangeset, list) else []:
                if isinstance(r, dict) and isinstance(r.get("subnet"), str):
                    subnets.append(ipaddress.ip_network(r["subnet"], strict=False))
    if isinstance(ipam.get("subnet"), str):
        subnets.append(ipaddress.ip_network(ipam["subnet"], strict=False))
    return subnets


def from_conflist(req: CreateNetworkRequest, net: NetworkConfigList) -> Resolved:
    """Settle how a named conflist gets its addresses; refuse what can't work."""
    if not docker_ipam(req):
        return Resolved(config=net, mode="conflist", ipam="cni", address_via="")
    found = _ipam_plugin(net)
    if found is None:
        raise ConfigError(
            "no plugin in the chain has an IPAM section to take Docker's address; "
            + NULL_IPAM_HINT,
            source=net.source,
        )
    index, ipam = found
    plugin = net.plugins[index]
    if plugin.capabilities.get("ips"):
        via = "ips"
    elif plugins.ip_arg(str(ipam.get("type"))):
        via = "args"
    else:
        raise ConfigError(
            f"IPAM {ipam.get('type')!r} cannot be given Docker's address (it declares no 'ips' "
            "capability and reads no CNI_ARGS IP=); " + NULL_IPAM_HINT,
            source=net.source,
            field=f"plugins[{index}].ipam",
        )
    if ipam.get("type") == "host-local":
        subnets = _host_local_subnets(ipam)
        for pool in req.ipv4_data + req.ipv6_data:
            if pool.is_null:
                continue
            if subnets and not any(
                pool.pool.version == s.version and pool.pool.subnet_of(s)  # type: ignore[arg-type]
                for s in subnets
            ):
                raise ConfigError(
                    f"Docker's subnet {pool.pool} is outside the chain's host-local ranges "
                    f"({', '.join(map(str, subnets))}); create the network with a matching "
                    "--subnet, or " + NULL_IPAM_HINT.replace("create the network ", ""),
                    source=net.source,
                    field=f"plugins[{index}].ipam",
                )
    return Resolved(config=net, mode="conflist", ipam="docker", address_via=via)


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
) -> EndpointChain:
    """The chain one endpoint runs: the network's template plus Docker's address, if any."""
    raw = copy.deepcopy(template)
    addresses = [a for a in (iface.address, iface.address_ipv6) if a is not None]
    gateways = _gateways(network_request)
    args: list[tuple[str, str]] = [("IgnoreUnknown", "1")]
    caps: dict[str, Any] = {}
    if address_via and not addresses:
        raise InvalidRequest("Docker's IPAM gave this endpoint no address to hand to the chain")
    if address_via == "config":
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
    elif address_via == "ips":
        caps["ips"] = [str(a) for a in addresses]
    elif address_via == "args":
        found = _ipam_plugin(conflist_from_dict(raw))
        ipam_type = str(found[1].get("type")) if found else ""
        if plugins.ip_arg(ipam_type) == "cidr":
            args.append(("IP", ",".join(str(a) for a in addresses)))
            gws = [gateways[a.version] for a in addresses if a.version in gateways]
            if gws:
                args.append(("GATEWAY", ",".join(gws)))
        else:  # host-local takes bare addresses
            args.append(("IP", ",".join(str(a.ip) for a in addresses)))
    if iface.mac_address:
        # Docker sets this MAC itself when it moves the link in; telling the chain too keeps
        # what plugins record (and see at DEL) consistent. bridge reads CNI_ARGS MAC=.
        caps["mac"] = iface.mac_address
        args.append(("MAC", iface.mac_address))
    return EndpointChain(
        config=conflist_from_dict(raw, source="endpoint config"),
        cni_args=tuple(args),
        capability_args=caps,
    )
