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

Docker's own bridge options (``com.docker.network.driver.mtu``, ``com.docker.network.bridge.name``,
``enable_icc``, ``enable_ip_masquerade``, ``host_binding_ipv4``) mean on a zero-config network
what they mean on Docker's bridge (:func:`bridge_options`). A conflist decides for itself: such an
option is taken where the conflist says the same, and refused where it says otherwise or can't
say it at all — except ``host_binding_ipv4``, which only concerns publishing ports
(:func:`default_host_ip`). Options Docker's bridge honours and pycni can't are refused, never
ignored.

CreateNetwork also refuses a network that would hurt the host or another network
(:mod:`shim.collisions`), and each endpoint runs the network's chain with Docker's address in
it (:mod:`shim.endpoint_chain`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import plugins
from .cni.config import NetworkConfigList, conflist_from_dict
from .errors import ConfigError, InvalidRequest, Unsupported
from .protocol import CreateNetworkRequest
from .state import AddressVia, Ipam, Mode, NetworkRules

#: ``-o`` options pycni understands; any other ``cni.*`` option is a typo worth reporting.
OPT_NETWORK = "cni.network"
OPT_BRIDGE = "cni.bridge"
OPT_MTU = "cni.mtu"
#: where a container's chain runs (shim.sandbox), the default first
OPT_PLACE, PLACES = "cni.place", ("staging", "sandbox")
#: an overlay network's (shim.overlay.chain): cni.overlay=NAME, .subnet, .prefix, .vni
OVERLAY_OPTIONS = ("cni.overlay", "cni.overlay.subnet", "cni.overlay.prefix", "cni.overlay.vni")
KNOWN_OPTIONS = (OPT_NETWORK, OPT_BRIDGE, OPT_MTU, OPT_PLACE, *OVERLAY_OPTIONS)

#: Docker's bridge driver options (moby ``netlabel.DriverMTU`` and ``drivers/bridge``), which
#: compose files set; each means on a zero-config network what it means on Docker's bridge.
DOCKER_MTU = "com.docker.network.driver.mtu"
DOCKER_BRIDGE = "com.docker.network.bridge.name"
DOCKER_ICC = "com.docker.network.bridge.enable_icc"
DOCKER_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"
DOCKER_HOST_IP = "com.docker.network.bridge.host_binding_ipv4"
#: Options of Docker's bridge that pycni can't honour, with the value that asks for nothing
#: (Docker's default): any other value is refused.
DOCKER_UNSUPPORTED = {
    "com.docker.network.bridge.inhibit_ipv4": "false",
    "com.docker.network.bridge.default_bridge": "false",
    "com.docker.network.container_iface_prefix": "eth",
}
#: Go's ``strconv.ParseBool``, which Docker reads its boolean options with
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})

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
    mode: Mode
    ipam: Ipam
    address_via: AddressVia
    #: per-network rules pycni installs (its own chains); None for a user's conflist
    firewall: NetworkRules | None = None

    def bridges(self) -> list[str]:
        """Bridges the chain's plugins create (see :func:`shim.plugins.bridges`)."""
        return plugins.bridges(self.config)


def check_options(options: Mapping[str, str]) -> None:
    for key in options:
        if key.startswith("cni.") and key not in KNOWN_OPTIONS:
            raise InvalidRequest(
                f"unknown option {key!r}; pycni knows {', '.join(KNOWN_OPTIONS)}"
            )
    bridge_options(options)
    place_of(options)


def place_of(options: Mapping[str, str]) -> str:
    """Where the network's chains run (``cni.place``): ``staging`` unless asked otherwise."""
    place = options.get(OPT_PLACE, PLACES[0])
    if place not in PLACES:
        raise InvalidRequest(f"option {OPT_PLACE}={place!r}: pycni knows {' and '.join(PLACES)}")
    return place


@dataclass(frozen=True)
class BridgeOptions:
    """What a network asked of its bridge, Docker's defaults where it asked nothing."""

    #: the bridge's name (``cni.bridge`` or Docker's ``bridge.name``); "" for pycni's own
    bridge: str = ""
    #: the MTU (``cni.mtu`` or Docker's ``driver.mtu``); 0 for the plugin's default
    mtu: int = 0
    #: containers of the network may talk to each other (``enable_icc``)
    icc: bool = True
    #: traffic leaving the network is masqueraded (``enable_ip_masquerade``)
    masquerade: bool = True
    #: the host address ports are published on when ``-p`` names none (``host_binding_ipv4``)
    host_ip: str = ""


def bridge_options(options: Mapping[str, str]) -> BridgeOptions:
    """Parse and validate the bridge options; refuse what pycni can't honour."""
    for key, default in DOCKER_UNSUPPORTED.items():
        if key in options and not _same_value(options[key], default):
            raise Unsupported(
                f"option {key}={options[key]} is an option of Docker's bridge driver that pycni "
                f"can't honour; leave it out (or at {default}, Docker's default)"
            )
    bridge = _one_of(options, OPT_BRIDGE, DOCKER_BRIDGE)
    for key in (OPT_BRIDGE, DOCKER_BRIDGE):
        if key in options and not _valid_link_name(options[key]):
            raise InvalidRequest(
                f"option {key}={options[key]!r} is not a valid interface name "
                "(1 to 15 bytes, not '.' or '..', no '/', ':' or whitespace)"
            )
    mtu = 0
    for key in (OPT_MTU, DOCKER_MTU):
        if key in options:
            try:
                mtu = int(options[key])
            except ValueError:
                mtu = 0
            if not 68 <= mtu <= 65535:
                raise InvalidRequest(f"option {key} must be a number from 68 to 65535")
    _one_of(options, OPT_MTU, DOCKER_MTU, same=lambda a, b: int(a) == int(b))
    host_ip = options.get(DOCKER_HOST_IP, "")
    if host_ip:
        try:
            host_ip = str(ipaddress.ip_address(host_ip))
        except ValueError as exc:
            raise InvalidRequest(
                f"option {DOCKER_HOST_IP}={host_ip!r} is not an IP address") from exc
    return BridgeOptions(
        bridge=bridge,
        mtu=mtu,
        icc=_bool(options, DOCKER_ICC, True),
        masquerade=_bool(options, DOCKER_MASQUERADE, True),
        host_ip=host_ip,
    )


def default_host_ip(req: CreateNetworkRequest) -> str:
    """The host address a network publishes ports on when ``-p`` names none: Docker's
    ``host_binding_ipv4`` option, else "" (every address). The port publisher asks this."""
    return bridge_options(req.driver_options).host_ip


def _bool(options: Mapping[str, str], key: str, default: bool) -> bool:
    if key not in options:
        return default
    value = options[key]
    if value not in _TRUE | _FALSE:
        raise InvalidRequest(f"option {key}={value!r} must be true or false")
    return value in _TRUE


def _same_value(value: str, default: str) -> bool:
    if default in _FALSE:
        return value in _FALSE
    return value == default


def _one_of(options: Mapping[str, str], key: str, alias: str,
            same: Callable[[str, str], bool] = str.__eq__) -> str:
    """The value of ``key`` or of its Docker ``alias``; both given must agree."""
    if key in options and alias in options and not same(options[key], options[alias]):
        raise InvalidRequest(
            f"options {key}={options[key]} and {alias}={options[alias]} disagree; give one"
        )
    return options.get(key) or options.get(alias) or ""


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



def gateway_bridge(bridge: str, ipam: dict[str, Any], mtu: int | None = None) -> dict[str, Any]:
    """The bridge plugin of pycni's own chains: the bridge is the gateway; masquerading and
    forwarding are pycni's per-network rules (:mod:`shim.firewall`), not ``ipMasq``."""
    main: dict[str, Any] = {"type": "bridge", "bridge": bridge, "isGateway": True,
                            "ipMasq": False, "hairpinMode": True, "ipam": ipam}
    if mtu:
        main["mtu"] = mtu
    return main


def portmap() -> dict[str, Any]:
    """portmap as pycni's own chains use it: Docker's ``-p`` through ``portMappings``."""
    return {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True}

def zero_config(req: CreateNetworkRequest) -> Resolved:
    """pycni's own bridge chain for a network created with no CNI config named."""
    if not docker_ipam(req):
        raise InvalidRequest(
            "a pycni network without -o cni.network=NAME takes its addresses from Docker's IPAM; "
            "--ipam-driver null needs a CNI config whose IPAM chooses them"
        )
    asked = bridge_options(req.driver_options)
    bridge = asked.bridge or default_bridge_name(req.network_id)
    internal = req.internal
    # Masquerading, forwarding and isolation are set up once per network by pycni
    # (shim.firewall), as Docker's bridge driver does, not per container by ipMasq and the
    # firewall plugin: that saves several iptables runs on every ADD and DEL. The bridge has the
    # gateway address on an --internal network too, as Docker's has: the host reaches the
    # containers, and they get no route out (for_endpoint).
    # Published ports are pycni's DNAT rules too (shim.firewall.publish), as Docker's bridge
    # writes its own: portmap's ADD and DEL cost ~130 ms a container, and its snat would open
    # route_localnet.
    main = gateway_bridge(bridge, {"type": "static"}, asked.mtu)
    plugins: list[dict[str, Any]] = [main]
    raw = {
        "cniVersion": ZERO_CONFIG_VERSION,
        "name": cni_network_name(req.network_id),
        "plugins": plugins,
    }
    return Resolved(
        config=conflist_from_dict(raw, source=f"pycni zero-config network {req.network_id[:12]}"),
        mode=Mode.ZERO_CONFIG,
        ipam=Ipam.DOCKER,
        address_via=AddressVia.CONFIG,
        firewall=NetworkRules(
            bridge=bridge,
            subnets=tuple(str(p.pool) for p in req.ipv4_data + req.ipv6_data if not p.is_null),
            internal=internal, icc=asked.icc, masquerade=asked.masquerade,
        ),
    )


def ipam_plugin(net: NetworkConfigList) -> tuple[int, dict[str, Any]] | None:
    for n, plugin in enumerate(net.plugins):
        ipam = plugin.raw.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type"):
            return n, ipam
    return None


def host_local_subnets(ipam: dict[str, Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
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
    _conflist_decides(req.driver_options, net)
    _no_lease_to_strand(net, sandbox=place_of(req.driver_options) == "sandbox",
                        docker_ipam=docker_ipam(req))
    _no_nameless_containers(net, sandbox=place_of(req.driver_options) == "sandbox")
    if not docker_ipam(req):
        return Resolved(config=net, mode=Mode.CONFLIST, ipam=Ipam.CNI, address_via=AddressVia.NONE)
    found = ipam_plugin(net)
    if found is None:
        raise ConfigError(
            "no plugin in the chain has an IPAM section to take Docker's address; "
            + NULL_IPAM_HINT,
            source=net.source,
        )
    index, ipam = found
    plugin = net.plugins[index]
    if plugin.capabilities.get("ips"):
        via = AddressVia.IPS
    elif plugins.ip_arg(str(ipam.get("type"))):
        via = AddressVia.ARGS
    else:
        raise ConfigError(
            f"IPAM {ipam.get('type')!r} cannot be given Docker's address (it declares no 'ips' "
            "capability and reads no CNI_ARGS IP=); " + NULL_IPAM_HINT,
            source=net.source,
            field=f"plugins[{index}].ipam",
        )
    if ipam.get("type") == "host-local":
        subnets = host_local_subnets(ipam)
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
    return Resolved(config=net, mode=Mode.CONFLIST, ipam=Ipam.DOCKER, address_via=via)


def _no_lease_to_strand(net: NetworkConfigList, *, sandbox: bool, docker_ipam: bool) -> None:
    """Refuse the dhcp IPAM where it would lose its lease: its daemon renews from the namespace
    ADD ran in, which on the staging path the link leaves. In Docker's sandbox it keeps it, if
    Docker hands out no address of its own."""
    found = ipam_plugin(net)
    if found is None or not plugins.asks_on_the_link(found[1]) or (sandbox and not docker_ipam):
        return
    raise ConfigError(
        "the dhcp IPAM hands out the address itself, when the chain runs in the container's "
        "namespace at Join: create the network with --ipam-driver null" if sandbox else
        "the dhcp IPAM cannot keep its lease on the staging path: its daemon renews the lease "
        "from the namespace ADD ran in, and pycni runs the chain in a staging namespace whose "
        "link moves into the container, so every renewal would fail and the DHCP server would "
        "hand the address to someone else; on Docker 28 or later create the network with "
        f"-o {OPT_PLACE}=sandbox --ipam-driver null (the chain then runs in the container's "
        "namespace and renews; Docker is told no address), or attach such containers in the "
        "--network none mode (`pycni run`, or the pycni.networks label with `pycni watch`)",
        source=net.source, field=f"plugins[{found[0]}].ipam")


def _no_nameless_containers(net: NetworkConfigList, *, sandbox: bool) -> None:
    """Refuse a plugin that needs the container's name where the chain can't be told it: the
    staging path runs ADD at CreateEndpoint, and Docker says which container an endpoint
    serves only at Join."""
    index = plugins.needs_the_name(net)
    if index is None or sandbox:
        return
    name = net.plugins[index].type
    raise ConfigError(
        f"plugin {name} serves each container under its name (K8S_POD_NAME), and on the "
        "staging path pycni runs the chain at CreateEndpoint, before Docker says which "
        f"container the endpoint is for: every container would be nameless to {name}, and "
        "removing one would remove them all; on Docker 28 or later create the network with "
        f"-o {OPT_PLACE}=sandbox (the chain runs at Join and gets the name), or attach such "
        "containers in the --network none mode (`pycni run`, or the pycni.networks label with "
        "`pycni watch`)",
        source=net.source, field=f"plugins[{index}]")


def _conflist_decides(options: Mapping[str, str], net: NetworkConfigList) -> None:
    """Refuse a bridge option the conflist contradicts, or can't express at all."""
    asked = bridge_options(options)

    def refuse(key: str, says: str) -> ConfigError:
        return ConfigError(f"option {key}={options[key]}: the conflist {says}; on a conflist "
                           "network, the conflist decides", source=net.source)

    for key in (OPT_BRIDGE, DOCKER_BRIDGE):
        if key in options and asked.bridge not in plugins.bridges(net):
            made = plugins.bridges(net)
            raise refuse(key, f"uses bridge {', '.join(made)}" if made else "makes no bridge")
    for key in (OPT_MTU, DOCKER_MTU):
        mtus = {p.raw["mtu"] for p in net.plugins if isinstance(p.raw.get("mtu"), int)}
        if key in options and mtus != {asked.mtu}:
            raise refuse(key, f"sets mtu {', '.join(map(str, sorted(mtus)))}" if mtus
                         else "sets no mtu")
    if DOCKER_ICC in options and not asked.icc:
        raise refuse(DOCKER_ICC, "decides how its containers reach each other")
    if DOCKER_MASQUERADE in options:
        masquerades = any(p.raw.get("ipMasq") is True for p in net.plugins)
        if masquerades != asked.masquerade:
            raise refuse(DOCKER_MASQUERADE, "masquerades" if masquerades else "does not masquerade")


# --- what a new network must not collide with ----------------------------------------------------

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: the names Docker gives its bridges: the default one, and br-<network id[:12]>
