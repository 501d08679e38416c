"""The host as pycni's core sees it: typed seams for links and namespaces, and for firewall rules.

The driver and the reconciler reach the host only through these two Protocols. The real
implementations are the modules :mod:`shim.netlink` and :mod:`shim.firewall` (a module satisfies a
Protocol through its functions); unit tests pass fakes (``tests/fakelinks.py``) that mypy checks
against the same Protocols, so a fake can't drift from what it stands in for.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .netlink import LinkInfo


class Links(Protocol):
    """Namespaces and links (:mod:`shim.netlink`)."""

    def netns_path(self, name: str) -> str: ...
    def create_netns(self, name: str) -> str: ...
    def remove_netns(self, name: str) -> None: ...
    def netns_exists(self, name: str) -> bool: ...
    def list_netns(self, prefix: str = "") -> list[str]: ...
    def link_info(self, name: str, ns: str | None = None) -> LinkInfo | None: ...
    def link_names(self, ns: str | None = None) -> list[str]: ...
    def move_to_host(self, ns_name: str, ifname: str, host_name: str) -> LinkInfo: ...
    def delete_link(self, name: str, ns: str | None = None) -> bool: ...
    def delete_by_mac(self, ns: str, mac: str) -> bool: ...
    def restore_for_delete(
        self,
        ns_name: str,
        ifname: str,
        *,
        host_name: str,
        mac: str,
        addresses: Iterable[str],
        sandbox: str = "",
    ) -> str: ...
    def bridge_ports(self, name: str) -> list[str]: ...
    def addresses(self, ns: str, ifname: str) -> tuple[str, list[str]]: ...
    def routes(self, ns: str, ifname: str) -> list[dict[str, str]]: ...


class Rules(Protocol):
    """Per-network iptables rules (:mod:`shim.firewall`)."""

    def add_network(
        self, network_id: str, bridge: str, subnets: list[str], internal: bool, *,
        icc: bool = True, masquerade: bool = True, peers: str = "", peer_subnet: str = "",
    ) -> None: ...
    def remove_network(
        self, network_id: str, bridge: str, subnets: list[str], internal: bool, *,
        icc: bool = True, masquerade: bool = True, peers: str = "", peer_subnet: str = "",
    ) -> None: ...
