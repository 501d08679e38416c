"""An in-memory stand-in for :mod:`shim.netlink`: namespaces and links as sets and dicts.

``Driver(settings, links=FakeLinks())`` runs the staging-namespace dance without root, so unit
tests can assert what exists afterwards ("no staging netns, no pcn* link") and make any one
operation fail (``fail["move_to_host"] = NetlinkFailure(...)``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

from shim.errors import NetlinkFailure
from shim.netlink import LinkInfo

HOST = ""  # the host namespace's key


@dataclass
class FakeLinks:
    #: namespace name ("" = host) -> {link name: mac}
    spaces: dict[str, dict[str, str]] = field(default_factory=lambda: {HOST: {}})
    addrs: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    fail: dict[str, Exception] = field(default_factory=dict)
    _macs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    LinkInfo = LinkInfo

    def _check(self, op: str) -> None:
        if op in self.fail:
            raise self.fail[op]

    def _ns(self, ns: str | None) -> str:
        if not ns:
            return HOST
        return ns.rsplit("/", 1)[-1] if ns.startswith("/run/netns/") else ns

    # what the chain's plugins would have done: put an interface into a namespace
    def plugin_adds(self, ns: str, ifname: str, addresses: Iterable[str] = ()) -> str:
        high, low = divmod(next(self._macs), 256)
        mac = f"02:00:00:00:{high:02x}:{low:02x}"
        self.spaces[self._ns(ns)][ifname] = mac
        self.addrs[(self._ns(ns), ifname)] = list(addresses)
        return mac

    # --- the shim.netlink functions the driver calls ---------------------------------------------

    def netns_path(self, name: str) -> str:
        return f"/run/netns/{name}"

    def create_netns(self, name: str) -> str:
        self._check("create_netns")
        self.spaces.setdefault(name, {})
        return self.netns_path(name)

    def remove_netns(self, name: str) -> None:
        self._check("remove_netns")
        self.spaces.pop(name, None)

    def netns_exists(self, name: str) -> bool:
        return name in self.spaces

    def list_netns(self, prefix: str = "") -> list[str]:
        return sorted(n for n in self.spaces if n and n.startswith(prefix))

    def link_info(self, name: str, ns: str | None = None) -> LinkInfo | None:
        mac = self.spaces.get(self._ns(ns), {}).get(name)
        return LinkInfo(name=name, mac=mac, mtu=1500) if mac else None

    def link_names(self, ns: str | None = None) -> list[str]:
        return list(self.spaces.get(self._ns(ns), {}))

    def move_to_host(self, ns_name: str, ifname: str, host_name: str) -> LinkInfo:
        self._check("move_to_host")
        space = self.spaces[ns_name]
        if ifname not in space:
            raise NetlinkFailure(f"the CNI chain created no interface {ifname} in {ns_name}")
        mac = space.pop(ifname)
        self.spaces[HOST][host_name] = mac
        return LinkInfo(name=host_name, mac=mac, mtu=1500)

    def delete_link(self, name: str, ns: str | None = None) -> bool:
        self._check("delete_link")
        return self.spaces.get(self._ns(ns), {}).pop(name, None) is not None

    def delete_by_mac(self, ns: str, mac: str) -> bool:
        space = self.spaces.get(self._ns(ns), {})
        for name, m in list(space.items()):
            if m == mac:
                del space[name]
                return True
        return False

    def restore_for_delete(self, ns_name: str, ifname: str, *, host_name: str, mac: str,
                           addresses: Iterable[str], sandbox: str = "") -> str:
        self._check("restore_for_delete")
        space = self.spaces.setdefault(ns_name, {})
        if ifname in space:
            return "staging"
        if self.spaces[HOST].get(host_name) == mac:
            space[ifname] = self.spaces[HOST].pop(host_name)
            return "host"
        space[ifname] = mac or "02:ff:ff:ff:ff:ff"
        return "stand-in"

    def bridge_ports(self, name: str) -> list[str]:
        return []

    def addresses(self, ns: str, ifname: str) -> tuple[str, list[str]]:
        mac = self.spaces.get(self._ns(ns), {}).get(ifname, "")
        return mac, list(self.addrs.get((self._ns(ns), ifname), [])) if mac else []

    def routes(self, ns: str, ifname: str) -> list[dict[str, str]]:
        return []


@dataclass
class FakeRules:
    """An in-memory stand-in for :mod:`shim.firewall`: which networks have their rules."""

    networks: dict[str, dict[str, object]] = field(default_factory=dict)

    def add_network(self, network_id: str, **rules: object) -> None:
        self.networks[network_id] = rules

    def remove_network(self, network_id: str, **rules: object) -> None:
        self.networks.pop(network_id, None)
