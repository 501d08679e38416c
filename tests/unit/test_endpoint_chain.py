"""One endpoint's chain behaving like Docker's bridge (:func:`shim.endpoint_chain.for_endpoint`): the MAC
derived from the address, and portmap leaving ``::1`` to pycni's userland proxy.

Pure functions on config dicts: no plugins run, nothing on the host.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from shim import chains, endpoint_chain
from shim.protocol import CreateNetworkRequest, EndpointInterface

pytestmark = pytest.mark.unit

NET = "cd" * 32
V4 = {"AddressSpace": "LocalDefault", "Pool": "10.201.120.0/24", "Gateway": "10.201.120.1/24"}
V6 = {"AddressSpace": "LocalDefault", "Pool": "fd00:201:120::/64",
      "Gateway": "fd00:201:120::1/64"}
ADDR4 = ipaddress.IPv4Interface("10.201.120.7/24")
ADDR6 = ipaddress.IPv6Interface("fd00:201:120::7/64")
DERIVED = "02:42:0a:c9:78:07"  # 02:42 + 10.201.120.7


def request(ipv6: bool = False) -> dict[str, Any]:
    return {"NetworkID": NET, "Options": {"com.docker.network.generic": {}},
            "IPv4Data": [V4], "IPv6Data": [V6] if ipv6 else []}


def zero_config(ipv6: bool = False) -> dict[str, Any]:
    return chains.zero_config(CreateNetworkRequest.from_json(request(ipv6))).config.raw


def conflist(*plugins: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "mynet", "plugins": list(plugins)}


@pytest.mark.parametrize(("address", "mac"), [
    ("10.201.120.7/24", "02:42:0a:c9:78:07"),
    ("172.17.0.2/16", "02:42:ac:11:00:02"),  # what docker0's first container gets
    ("255.255.255.254/31", "02:42:ff:ff:ff:fe"),
])
def test_dockers_mac_is_02_42_and_the_ipv4_address(address: str, mac: str) -> None:
    assert endpoint_chain.docker_mac([ADDR6, ipaddress.ip_interface(address)]) == mac


def test_no_ipv4_address_no_derived_mac() -> None:
    assert endpoint_chain.docker_mac([ADDR6]) == endpoint_chain.docker_mac([]) == ""


def test_a_zero_config_endpoint_is_given_dockers_mac() -> None:
    chain = endpoint_chain.for_endpoint(zero_config(True), request(True), "config",
                                EndpointInterface(address=ADDR4, address_ipv6=ADDR6))
    assert chain.cni_args == (("IgnoreUnknown", "1"), ("MAC", DERIVED))
    assert chain.capability_args == {"mac": DERIVED}


def test_mac_address_wins_over_the_derived_one() -> None:
    chain = endpoint_chain.for_endpoint(zero_config(), request(), "config",
                                EndpointInterface(address=ADDR4, mac_address="02:00:00:00:00:09"))
    assert dict(chain.cni_args)["MAC"] == "02:00:00:00:00:09"


@pytest.mark.parametrize("via", ["ips", "args", ""])
def test_a_conflist_endpoint_keeps_the_chains_mac(via: str) -> None:
    """The chain may not honour MAC=; its endpoints announce their MAC instead (staging)."""
    template = conflist({"type": "bridge", "capabilities": {"ips": True},
                         "ipam": {"type": "host-local", "subnet": "10.201.120.0/24"}})
    iface = EndpointInterface(address=ADDR4) if via else EndpointInterface()
    chain = endpoint_chain.for_endpoint(template, request(), via, iface)
    assert "MAC" not in dict(chain.cni_args) and "mac" not in chain.capability_args


def test_portmap_leaves_ipv6_loopback_alone() -> None:
    """Docker's OUTPUT rule skips ::1 (its docker-proxy answers there); so does portmap."""
    template = conflist(
        {"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.201.120.0/24"}},
        {"type": "portmap", "capabilities": {"portMappings": True}})
    before = copy.deepcopy(template)
    chain = endpoint_chain.for_endpoint(template, request(), "", EndpointInterface())
    [portmap] = [p.raw for p in chain.config.plugins if p.type == "portmap"]
    assert portmap["conditionsV6"] == ["!", "-d", "::1/128"]
    assert "conditionsV4" not in portmap
    assert template == before  # the network's template is never written to


def test_a_conflists_own_portmap_conditions_are_kept() -> None:
    template = conflist(
        {"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.201.120.0/24"}},
        {"type": "portmap", "capabilities": {"portMappings": True},
         "conditionsV6": ["-s", "fd00:201:120::/64"]},
        {"type": "portmap", "conditionsV6": ["!", "-d", "::1/128"]},
    )
    chain = endpoint_chain.for_endpoint(template, request(), "", EndpointInterface())
    first, second = (p.raw for p in chain.config.plugins if p.type == "portmap")
    assert first["conditionsV6"] == ["-s", "fd00:201:120::/64", "!", "-d", "::1/128"]
    assert second["conditionsV6"] == ["!", "-d", "::1/128"]  # there already: not twice
