"""What pycni knows about particular CNI plugins, in one table.

CNI lets a runtime treat every plugin alike, and pycni does wherever it can. The few places where a
plugin's behaviour shapes what pycni must do are written down here, one row per plugin, so a new
quirk is one line in one file. Everything else in pycni asks this module instead of naming plugins:

* **DEL finds its work on the interface** (``del_needs_link``): bridge and ptp remove their
  masquerade rules only for the addresses they find on the container's interface at DEL time, so
  DeleteEndpoint must put the link back into the staging netns first (a ~30 ms kernel move that
  plugins without this trait are spared). bridge needs it only when it masquerades (``ipMasq``).
* **Idle without a capability** (``idle_without``): portmap does nothing without ``portMappings``,
  yet runs iptables on every ADD and DEL; an attachment that doesn't use the capability skips it.
* **IPAM that reads CNI_ARGS** (``ip_arg``): how Docker's chosen address reaches an IPAM plugin
  that declares no ``ips`` capability — ``IP=`` as a bare address (host-local) or a CIDR, with
  ``GATEWAY=`` (static).
* **Creates a bridge** (``default_bridge``): the bridge plugin creates ``cni0`` unless told a name;
  pycni removes a bridge with the network that made it.
* **Opens the host's loopback** (``opens_loopback``): portmap's ``snat`` (on unless ``false``)
  sets ``route_localnet=1`` on the interface that routes to the container, after which the
  kernel accepts packets for 127.0.0.0/8 arriving there (the CVE-2020-8558 class). A chain with
  such a plugin, or with one pycni has no row for, gets pycni's loopback guard
  (:func:`shim.firewall.add_guard`).
* **CHECK quirks** (``check_quirks``): CHECK failures that are known limitations of the plugin
  version Debian ships, reported as warnings by ``pycni check``.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .cni.config import NetworkConfigList
from .errors import CNIError

#: how an IPAM plugin takes an address through CNI_ARGS ``IP=``
IPArg = Literal["", "bare", "cidr"]


@dataclass(frozen=True)
class CheckQuirk:
    """A CHECK failure that is a known limitation, recognised by text in the plugin's error."""

    marker: str
    #: why it is not a fault; ``{plugin}``, ``{add_ifname}`` and ``{ifname}`` are filled in
    explanation: str
    #: only when CHECK runs under another interface name than ADD did
    only_when_renamed: bool = False
    #: only in the plugin's own error (not one of a plugin that delegated to it)
    own_error_only: bool = False
    #: only when ADD ran in a namespace the link left afterwards (the driver's staging one)
    only_when_moved: bool = False


@dataclass(frozen=True)
class Traits:
    del_needs_link: Callable[[Mapping[str, Any]], bool] = lambda conf: False
    idle_without: str = ""
    ip_arg: IPArg = ""
    default_bridge: str = ""
    opens_loopback: Callable[[Mapping[str, Any]], bool] = lambda conf: False
    check_quirks: tuple[CheckQuirk, ...] = ()


#: portmap ≤ 1.1.1 checks its DNAT rules in ip6tables too, even for IPv4-only mappings, and fails.
PORTMAP_V6_BUG = "could not check ipv6 dnat"
#: host-local's CHECK looks its reservation up by (container id, CNI_IFNAME); ADD ran with eth0 in
#: the staging netns, so under any other name Docker gave the interface it finds none.
HOST_LOCAL_BY_IFNAME = "host-local: Failed to find address added by container"

#: tuning's CHECK finds a sysctl it set at another value ("Tuning configured value of /proc/sys/…
#: is 1, current value is 0"; lower-case from 1.2 on)
TUNING_SYSCTL = "uning configured value of /proc/sys/"

_HOST_LOCAL_QUIRK = CheckQuirk(
    HOST_LOCAL_BY_IFNAME,
    "{plugin}'s CHECK stopped at host-local, which looks its reservation up by the interface "
    "name ADD used ({add_ifname}), not the one Docker gave it ({ifname}); {plugin} was not "
    "checked beyond that, the link and addresses above were",
    only_when_renamed=True,
)

TRAITS: dict[str, Traits] = {
    "bridge": Traits(
        del_needs_link=lambda conf: bool(conf.get("ipMasq")),
        default_bridge="cni0",
    ),
    "ptp": Traits(del_needs_link=lambda conf: True),
    "macvlan": Traits(),
    "ipvlan": Traits(),
    "portmap": Traits(
        idle_without="portMappings",
        opens_loopback=lambda conf: conf.get("snat") is not False,
        check_quirks=(
            CheckQuirk(
                PORTMAP_V6_BUG,
                f"portmap's CHECK failed with {PORTMAP_V6_BUG!r}: a known limitation of portmap "
                "≤ 1.1.1 with IPv4-only port mappings, not a fault; its rules were not checked",
                own_error_only=True,
            ),
        ),
    ),
    "firewall": Traits(),
    "bandwidth": Traits(),
    "tuning": Traits(
        check_quirks=(
            CheckQuirk(
                TUNING_SYSCTL,
                "tuning's sysctls are not the container's: ADD set them in pycni's staging "
                "namespace, and the kernel resets a link's own sysctls when it changes "
                "namespace (namespace-wide ones stay behind) - a known limit of driver mode "
                "(README, Limits), not a fault, and restarting won't change it; the --network "
                "none mode (pycni run) runs the chain in the container's own namespace",
                own_error_only=True,
                only_when_moved=True,
            ),
        ),
    ),
    "host-local": Traits(ip_arg="bare", check_quirks=(_HOST_LOCAL_QUIRK,)),
    "static": Traits(ip_arg="cidr"),
}

#: a plugin pycni has no row for: DEL may need anything, so it gets the link back; it may open
#: the host's loopback as portmap does, so it gets the guard
UNKNOWN = Traits(del_needs_link=lambda conf: True, opens_loopback=lambda conf: True)


def traits(plugin_type: str) -> Traits:
    return TRAITS.get(plugin_type, UNKNOWN)


def del_needs_link(config: NetworkConfigList) -> bool:
    """Whether any plugin's DEL needs the container's interface back in its netns."""
    return any(traits(p.type).del_needs_link(p.raw) for p in config.plugins)


def opens_loopback(config: NetworkConfigList) -> bool:
    """Whether any plugin may set ``route_localnet`` (and so needs pycni's loopback guard)."""
    return any(traits(p.type).opens_loopback(p.raw) for p in config.plugins)


def effective(config: NetworkConfigList, capability_args: Mapping[str, Any]) -> NetworkConfigList:
    """The chain as one attachment runs it: without plugins idle for lack of a capability.

    Published ports come later (ProgramExternalConnectivity runs portmap by itself, on top of the
    cached result), and the final DEL includes portmap again once ports were published.
    """
    keep = [
        p for p in config.plugins
        if not traits(p.type).idle_without or traits(p.type).idle_without in capability_args
    ]
    if len(keep) == len(config.plugins):
        return config
    trimmed = copy.copy(config)
    trimmed.plugins = keep
    return trimmed


#: the IPAMs that hand out an address by asking on the interface (a DHCP server), and renew it
#: from the namespace ADD ran in
ASK_ON_THE_LINK = frozenset({"dhcp"})


def asks_on_the_link(ipam: dict[str, Any]) -> bool:
    """Whether the IPAM section ``ipam`` asks on the interface for its address (dhcp)."""
    return ipam.get("type") in ASK_ON_THE_LINK


#: the plugins that serve each container under its name (``K8S_POD_NAME``) and remove entries
#: by it: given none, every container is the same nameless entry, and one DEL removes them all
#: (dnsname's hosts file, and its dnsmasq with the last)
NAME_EVERY_CONTAINER = frozenset({"dnsname"})


def needs_the_name(config: NetworkConfigList) -> int | None:
    """The index of the first plugin of the chain that needs the container's name, if any."""
    return next((i for i, p in enumerate(config.plugins) if p.type in NAME_EVERY_CONTAINER),
                None)


def ip_arg(ipam_type: str) -> IPArg:
    return traits(ipam_type).ip_arg


def bridges(config: NetworkConfigList) -> list[str]:
    """The bridges a chain's plugins create (their configured name, or the plugin's default)."""
    return [
        str(p.raw.get("bridge") or traits(p.type).default_bridge)
        for p in config.plugins
        if traits(p.type).default_bridge
    ]


def known_check_limitation(exc: CNIError, *, add_ifname: str, ifname: str,
                           moved: bool = False) -> str | None:
    """Why a CHECK failure is a known limitation rather than a fault; None if it is a fault.

    ``add_ifname`` is the interface name ADD ran with, ``ifname`` the one CHECK runs with;
    ``moved``: ADD ran in a namespace the link left (the driver's staging one). Every row's quirks
    are looked at: an IPAM plugin's shows in the error of the main plugin that delegated to it.
    """
    text = f"{exc.msg} {exc.details}"
    for plugin, row in TRAITS.items():
        for quirk in row.check_quirks:
            if quirk.own_error_only and exc.plugin != plugin:
                continue
            if quirk.only_when_moved and not moved:
                continue
            if quirk.marker in text and (not quirk.only_when_renamed or ifname != add_ifname):
                return quirk.explanation.format(
                    plugin=exc.plugin, add_ifname=add_ifname, ifname=ifname)
    return None


# --- host-local's books ---------------------------------------------------------------------------

#: where host-local keeps its reservations when its config names no ``dataDir``
HOST_LOCAL_DATA_DIR = "/var/lib/cni/networks"


def host_local_dirs(config: NetworkConfigList) -> list[str]:
    """host-local's directories of ``config``: ``<dataDir>/<network name>``, one per IPAM."""
    dirs = []
    for plugin in config.plugins:
        ipam = plugin.raw.get("ipam")
        if isinstance(ipam, dict) and ipam.get("type") == "host-local":
            data_dir = ipam.get("dataDir")
            dirs.append(os.path.join(str(data_dir or HOST_LOCAL_DATA_DIR), config.name))
    return dirs


def forget_host_local(config: NetworkConfigList, own_name: str) -> list[str]:
    """Remove host-local's directories of a network pycni named itself (``own_name``) once they
    hold no reservation - only host-local's ``lock`` and ``last_reserved_ip.N`` - as the network
    goes; what it removed. A conflist's directory is named after the conflist, which others may
    use too: it stays."""
    removed = []
    for directory in host_local_dirs(config) if config.name == own_name else []:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            continue
        if all(n == "lock" or n.startswith("last_reserved_ip") for n in names):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed

