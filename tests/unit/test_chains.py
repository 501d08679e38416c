"""Which chain a network runs and how Docker's addresses reach it (:mod:`shim.chains`).

Pure functions on Docker's requests and CNI config dicts: no plugins run, nothing on the host.
"""

from __future__ import annotations

import copy
import ipaddress
from typing import Any

import pytest

from shim import chains, collisions, endpoint_chain
from shim.cni.config import NetworkConfigList, conflist_from_dict
from shim.dockerview import DockerNetwork
from shim.errors import ConfigError, InvalidRequest, Unsupported
from shim.protocol import CreateNetworkRequest, EndpointInterface
from shim.state import AddressVia, Ipam, Mode, NetworkRules
from tests.fakelinks import FakeLinks

pytestmark = pytest.mark.unit

NET = "cd" * 32
V4 = {"AddressSpace": "LocalDefault", "Pool": "10.200.9.0/24", "Gateway": "10.200.9.1/24"}
V6 = {"AddressSpace": "LocalDefault", "Pool": "fd00:200:9::/64", "Gateway": "fd00:200:9::1/64"}
NULL = {"AddressSpace": "null", "Pool": "0.0.0.0/0"}
ADDR4 = ipaddress.IPv4Interface("10.200.9.7/24")
ADDR6 = ipaddress.IPv6Interface("fd00:200:9::7/64")
MAC = "02:42:0a:c8:09:07"


def request(ipv4: list[dict[str, Any]] | None = None, ipv6: list[dict[str, Any]] | None = None,
            internal: bool = False, opts: dict[str, str] | None = None,
            **options: str) -> dict[str, Any]:
    """Docker's CreateNetwork request, as received (``-o cni.bridge=x`` → ``cni_bridge="x"``;
    ``opts`` as they are, for Docker's option names, which have ``_`` in them)."""
    generic = {k.replace("_", "."): v for k, v in options.items()} | (opts or {})
    return {
        "NetworkID": NET,
        "Options": {"com.docker.network.generic": generic,
                    "com.docker.network.internal": internal},
        "IPv4Data": [V4] if ipv4 is None else ipv4,
        "IPv6Data": ipv6 or [],
    }


def parsed(body: dict[str, Any]) -> CreateNetworkRequest:
    return CreateNetworkRequest.from_json(body)


def conflist(*plugins: dict[str, Any]) -> NetworkConfigList:
    return conflist_from_dict({"cniVersion": "1.0.0", "name": "mynet", "plugins": list(plugins)},
                              source="/etc/cni/net.d/mynet.conflist")


def host_local(*subnets: str) -> dict[str, Any]:
    return {"type": "host-local", "ranges": [[{"subnet": s}] for s in subnets]}


# --- options -------------------------------------------------------------------------------------


def test_known_and_foreign_options_pass() -> None:
    chains.check_options({"cni.network": "mynet", "cni.bridge": "br-test0", "cni.mtu": "1400",
                          "com.example.label": "x"})


def test_an_unknown_cni_option_is_a_typo() -> None:
    with pytest.raises(InvalidRequest, match="unknown option 'cni.brige'; pycni knows cni.network"):
        chains.check_options({"cni.brige": "br0"})


@pytest.mark.parametrize("mtu", ["67", "65536", "abc", "", "1400.5"])
def test_an_mtu_out_of_range_is_refused(mtu: str) -> None:
    with pytest.raises(InvalidRequest, match="cni.mtu must be a number from 68 to 65535"):
        chains.check_options({"cni.mtu": mtu})


@pytest.mark.parametrize("name", ["br0", "a", "x" * 15, "\u00e9" * 7 + "x", "br-test.0", "br_0"])
def test_bridge_names_the_kernel_takes(name: str) -> None:
    chains.check_options({"cni.bridge": name})


@pytest.mark.parametrize("name", [
    "", ".", "..", "x" * 16,
    "\u00e9" * 8,  # 8 characters, 16 bytes
    "br 0", "br\t0", "br\n0", "br\r0", "br\x0b0", "br\x0c0",  # the kernel's isspace
    "b\u00e0",  # 'à' is C3 A0 and the kernel reads the byte 0xA0 as a space
    "br/0", "br:0", "br\x000", "br\u20030",
])
def test_bridge_names_the_kernel_refuses(name: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        chains.check_options({"cni.bridge": name})
    assert str(caught.value) == (
        f"option cni.bridge={name!r} is not a valid interface name "
        "(1 to 15 bytes, not '.' or '..', no '/', ':' or whitespace)"
    )


def test_names_made_from_the_network_id_fit_the_kernel() -> None:
    assert chains.cni_network_name(NET) == "pycni-" + NET[:12]
    assert chains.default_bridge_name(NET) == "pycni-" + NET[:9]
    assert len(chains.default_bridge_name(NET).encode()) == 15


@pytest.mark.parametrize(("options", "match"), [
    ({"com.docker.network.driver.mtu": "9"},
     "option com.docker.network.driver.mtu must be a number from 68 to 65535"),
    ({"com.docker.network.bridge.name": "a/b"},
     "option com.docker.network.bridge.name='a/b' is not a valid interface name"),
    ({"com.docker.network.bridge.enable_icc": "no"},
     "option com.docker.network.bridge.enable_icc='no' must be true or false"),
    ({"com.docker.network.bridge.enable_ip_masquerade": ""}, "must be true or false"),
    ({"com.docker.network.bridge.host_binding_ipv4": "localhost"},
     "host_binding_ipv4='localhost' is not an IP address"),
    ({"cni.bridge": "br0", "com.docker.network.bridge.name": "br1"},
     "options cni.bridge=br0 and com.docker.network.bridge.name=br1 disagree"),
    ({"cni.mtu": "1400", "com.docker.network.driver.mtu": "1500"}, "disagree"),
])
def test_bad_docker_options(options: dict[str, str], match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        chains.check_options(options)


@pytest.mark.parametrize(("key", "value"), [
    ("com.docker.network.bridge.inhibit_ipv4", "true"),
    ("com.docker.network.bridge.default_bridge", "1"),
    ("com.docker.network.container_iface_prefix", "ens"),
])
def test_docker_options_pycni_cannot_honour_are_refused(key: str, value: str) -> None:
    with pytest.raises(Unsupported) as caught:
        chains.check_options({key: value})
    assert str(caught.value).startswith(
        f"option {key}={value} is an option of Docker's bridge driver that pycni can't honour")


def test_agreeing_aliases_and_the_default_host_ip() -> None:
    asked = chains.bridge_options({"cni.mtu": "1400", "com.docker.network.driver.mtu": "01400",
                                   "cni.bridge": "br0", "com.docker.network.bridge.name": "br0",
                                   "com.docker.network.bridge.host_binding_ipv4": "::0001"})
    assert (asked.mtu, asked.bridge, asked.host_ip) == (1400, "br0", "::1")
    assert asked.icc and asked.masquerade
    body = request(opts={"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"})
    assert chains.default_host_ip(parsed(body)) == "127.0.0.1"
    assert chains.default_host_ip(parsed(request())) == ""


# --- Docker's IPAM or the chain's ----------------------------------------------------------------


@pytest.mark.parametrize(("ipv4", "ipv6", "docker"), [
    ([V4], [], True),
    ([], [V6], True),
    ([NULL], [], False),
    ([], [], False),
    ([NULL], [V6], True),
])
def test_whose_ipam_chooses(ipv4: list[dict[str, Any]], ipv6: list[dict[str, Any]],
                            docker: bool) -> None:
    assert chains.docker_ipam(parsed(request(ipv4=ipv4, ipv6=ipv6))) is docker


# --- zero config ---------------------------------------------------------------------------------


def test_zero_config_is_a_gateway_bridge_with_static_ipam() -> None:
    resolved = chains.zero_config(parsed(request(ipv6=[V6])))
    bridge = "pycni-" + NET[:9]
    assert resolved.config.raw == {
        "cniVersion": "1.0.0",
        "name": "pycni-" + NET[:12],
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": False,
             "hairpinMode": True, "ipam": {"type": "static"}},
        ],  # no portmap: published ports are pycni's DNAT rules (shim.firewall.publish)
    }
    assert (resolved.mode, resolved.ipam, resolved.address_via) == ("zero-config", "docker",
                                                                    "config")
    assert resolved.firewall == NetworkRules(bridge, ("10.200.9.0/24", "fd00:200:9::/64"))
    assert resolved.bridges() == [bridge]
    assert resolved.config.source == f"pycni zero-config network {NET[:12]}"


def test_zero_config_takes_the_bridge_name_and_mtu_options() -> None:
    resolved = chains.zero_config(parsed(request(cni_bridge="br-test0", cni_mtu="1400")))
    main = resolved.config.plugins[0].raw
    assert (main["bridge"], main["mtu"]) == ("br-test0", 1400)
    assert resolved.firewall is not None and resolved.firewall.bridge == "br-test0"
    assert resolved.bridges() == ["br-test0"]


def test_an_internal_zero_config_network_has_a_gateway_bridge_but_no_ports() -> None:
    """As Docker's: the bridge has the gateway address, so the host reaches the containers
    (they get no route out: see the endpoint's chain below)."""
    resolved = chains.zero_config(parsed(request(internal=True)))
    assert resolved.config.plugin_types() == ["bridge"]
    assert resolved.config.plugins[0].raw["isGateway"] is True
    assert resolved.firewall is not None and resolved.firewall.internal


def test_dockers_bridge_options_mean_what_they_mean_on_dockers_bridge() -> None:
    resolved = chains.zero_config(parsed(request(opts={
        "com.docker.network.driver.mtu": "1400",
        "com.docker.network.bridge.name": "mybr0",
        "com.docker.network.bridge.enable_icc": "false",
        "com.docker.network.bridge.enable_ip_masquerade": "0",
        "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1",
    })))
    main = resolved.config.plugins[0].raw
    assert (main["bridge"], main["mtu"]) == ("mybr0", 1400)
    assert resolved.firewall == NetworkRules("mybr0", ("10.200.9.0/24",), icc=False,
                                             masquerade=False)


def test_docker_options_at_their_defaults_change_nothing() -> None:
    resolved = chains.zero_config(parsed(request(opts={
        "com.docker.network.bridge.enable_icc": "true",
        "com.docker.network.bridge.enable_ip_masquerade": "True",
        "com.docker.network.bridge.inhibit_ipv4": "false",
        "com.docker.network.container_iface_prefix": "eth",
    })))
    assert resolved.firewall == chains.zero_config(parsed(request())).firewall
    assert resolved.config.raw == chains.zero_config(parsed(request())).config.raw


def test_zero_config_needs_dockers_ipam() -> None:
    with pytest.raises(InvalidRequest, match="--ipam-driver null needs a CNI config"):
        chains.zero_config(parsed(request(ipv4=[NULL])))


# --- a named conflist ----------------------------------------------------------------------------


def test_with_null_ipam_the_chain_chooses() -> None:
    net = conflist({"type": "macvlan", "master": "eth0", "ipam": {"type": "host-local"}})
    resolved = chains.from_conflist(parsed(request(ipv4=[NULL])), net)
    assert (resolved.mode, resolved.ipam, resolved.address_via) == ("conflist", "cni", "")
    assert resolved.config is net and resolved.firewall is None


@pytest.mark.parametrize(("plugin", "via"), [
    ({"type": "bridge", "capabilities": {"ips": True}, "ipam": {"type": "whereabouts"}}, "ips"),
    ({"type": "bridge", "capabilities": {"ips": True}, "ipam": host_local("10.200.0.0/16")},
     "ips"),
    ({"type": "bridge", "ipam": host_local("10.200.0.0/16")}, "args"),
    ({"type": "bridge", "ipam": {"type": "static"}}, "args"),
])
def test_how_dockers_address_reaches_the_chain(plugin: dict[str, Any], via: str) -> None:
    resolved = chains.from_conflist(parsed(request()), conflist(plugin))
    assert (resolved.mode, resolved.ipam, resolved.address_via) == ("conflist", "docker", via)


def test_a_chain_with_no_ipam_cannot_take_dockers_address() -> None:
    with pytest.raises(ConfigError) as caught:
        chains.from_conflist(parsed(request()), conflist({"type": "bridge"}, {"type": "portmap"}))
    assert str(caught.value).startswith("/etc/cni/net.d/mynet.conflist: no plugin in the chain")
    assert "--ipam-driver null" in str(caught.value)


def test_an_ipam_that_reads_neither_ips_nor_args_is_refused() -> None:
    net = conflist({"type": "tuning"}, {"type": "macvlan", "ipam": {"type": "some-ipam"}})
    with pytest.raises(ConfigError) as caught:
        chains.from_conflist(parsed(request()), net)
    assert caught.value.field == "plugins[1].ipam"
    assert "IPAM 'some-ipam' cannot be given Docker's address" in str(caught.value)


@pytest.mark.parametrize("ipv4", [None, [NULL]])
def test_the_dhcp_ipam_is_refused_on_the_staging_path_naming_what_keeps_its_lease(
        ipv4: Any) -> None:
    """Its daemon renews from the namespace ADD ran in: the staging one, which the link leaves."""
    net = conflist({"type": "macvlan", "master": "eth0", "ipam": {"type": "dhcp"}})
    with pytest.raises(ConfigError) as caught:
        chains.from_conflist(parsed(request(ipv4=ipv4)), net)
    assert caught.value.field == "plugins[0].ipam"
    assert "the dhcp IPAM cannot keep its lease on the staging path" in str(caught.value)
    assert "-o cni.place=sandbox --ipam-driver null" in str(caught.value)
    assert "--network none mode (`pycni run`" in str(caught.value)


def test_a_plugin_that_needs_the_containers_name_is_refused_on_the_staging_path() -> None:
    """dnsname removes entries by name: nameless containers would all go with the first DEL."""
    net = conflist({"type": "bridge", "ipam": host_local("10.200.9.0/24")},
                   {"type": "dnsname", "domainName": "x.test"})
    with pytest.raises(ConfigError) as caught:
        chains.from_conflist(parsed(request(ipv4=[NULL])), net)
    assert caught.value.field == "plugins[1]"
    assert "plugin dnsname serves each container under its name" in str(caught.value)
    assert "-o cni.place=sandbox" in str(caught.value)
    assert "--network none mode" in str(caught.value)
    chains.from_conflist(parsed(request(ipv4=[NULL], cni_place="sandbox")), net)


def test_the_dhcp_ipam_runs_in_the_sandbox_when_docker_hands_out_no_address() -> None:
    net = conflist({"type": "macvlan", "master": "eth0", "ipam": {"type": "dhcp"}})
    with pytest.raises(ConfigError, match="create the network with --ipam-driver null"):
        chains.from_conflist(parsed(request(cni_place="sandbox")), net)
    resolved = chains.from_conflist(parsed(request(ipv4=[NULL], cni_place="sandbox")), net)
    assert resolved.address_via is AddressVia.NONE and resolved.ipam is Ipam.CNI


@pytest.mark.parametrize(("ipv4", "ipv6", "ipam"), [
    ([V4], [], host_local("10.200.0.0/16")),
    ([V4], [], host_local("10.200.9.0/24")),
    ([V4], [V6], host_local("10.200.9.0/24", "fd00:200::/32")),
    ([V4], [], {"type": "host-local", "subnet": "10.200.0.0/16"}),  # the old single-subnet form
    ([V4], [], {"type": "host-local"}),  # no ranges at all: nothing to check against
])
def test_dockers_subnet_inside_the_host_local_ranges(ipv4: list[dict[str, Any]],
                                                     ipv6: list[dict[str, Any]],
                                                     ipam: dict[str, Any]) -> None:
    chains.from_conflist(parsed(request(ipv4=ipv4, ipv6=ipv6)),
                         conflist({"type": "bridge", "ipam": ipam}))


@pytest.mark.parametrize(("ipv4", "ipv6", "ipam", "outside"), [
    ([V4], [], host_local("10.201.0.0/16"), "10.200.9.0/24"),
    ([V4], [], host_local("10.200.9.0/25"), "10.200.9.0/24"),
    ([V4], [V6], host_local("10.200.9.0/24"), "fd00:200:9::/64"),
])
def test_dockers_subnet_outside_the_host_local_ranges(ipv4: list[dict[str, Any]],
                                                      ipv6: list[dict[str, Any]],
                                                      ipam: dict[str, Any], outside: str) -> None:
    with pytest.raises(ConfigError, match=f"Docker's subnet {outside} is outside"):
        chains.from_conflist(parsed(request(ipv4=ipv4, ipv6=ipv6)),
                             conflist({"type": "bridge", "ipam": ipam}))


BRIDGE_CONF = {"type": "bridge", "bridge": "br9", "mtu": 1450, "ipMasq": True,
               "ipam": host_local("10.200.9.0/24")}


@pytest.mark.parametrize("options", [
    {"com.docker.network.bridge.name": "br9", "cni.bridge": "br9"},
    {"com.docker.network.driver.mtu": "1450"},
    {"com.docker.network.bridge.enable_ip_masquerade": "true"},
    {"com.docker.network.bridge.enable_icc": "true"},
    {"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"},
])
def test_a_conflist_takes_docker_options_that_say_what_it_says(options: dict[str, str]) -> None:
    chains.from_conflist(parsed(request(opts=options)), conflist(BRIDGE_CONF))


@pytest.mark.parametrize(("plugin", "option", "says"), [
    (BRIDGE_CONF, "com.docker.network.bridge.name=br0", "uses bridge br9"),
    (BRIDGE_CONF, "cni.bridge=br0", "uses bridge br9"),
    ({"type": "macvlan", "master": "eth9", "ipam": host_local("10.200.9.0/24")},
     "com.docker.network.bridge.name=br0", "makes no bridge"),
    (BRIDGE_CONF, "com.docker.network.driver.mtu=1400", "sets mtu 1450"),
    ({"type": "bridge", "ipam": host_local("10.200.9.0/24")}, "cni.mtu=1400", "sets no mtu"),
    (BRIDGE_CONF, "com.docker.network.bridge.enable_icc=false",
     "decides how its containers reach each other"),
    (BRIDGE_CONF, "com.docker.network.bridge.enable_ip_masquerade=false", "masquerades"),
    ({"type": "bridge", "ipam": host_local("10.200.9.0/24")},
     "com.docker.network.bridge.enable_ip_masquerade=true", "does not masquerade"),
])
def test_a_conflist_refuses_docker_options_it_contradicts(plugin: dict[str, Any], option: str,
                                                          says: str) -> None:
    key, value = option.split("=")
    with pytest.raises(ConfigError) as caught:
        chains.from_conflist(parsed(request(opts={key: value})), conflist(plugin))
    assert str(caught.value) == (f"/etc/cni/net.d/mynet.conflist: option {option}: the "
                                 f"conflist {says}; on a conflist network, the conflist decides")


def test_the_bridges_a_chain_makes() -> None:
    net = conflist({"type": "bridge", "ipam": {"type": "static"}}, {"type": "bridge",
                                                                   "bridge": "br9"},
                   {"type": "portmap"})
    assert chains.Resolved(config=net, mode=Mode.CONFLIST, ipam=Ipam.CNI,
                           address_via=AddressVia.NONE).bridges() == ["cni0", "br9"]


# --- one endpoint's chain ------------------------------------------------------------------------


def zero_template(**request_options: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    body = request(**request_options)
    return chains.zero_config(parsed(body)).config.raw, body


def test_config_gives_the_static_ipam_dockers_address_gateway_and_default_route() -> None:
    template, body = zero_template()
    before = copy.deepcopy(template)
    chain = endpoint_chain.for_endpoint(template, body, "config", EndpointInterface(address=ADDR4))
    assert chain.config.plugins[0].raw["ipam"] == {
        "type": "static",
        "addresses": [{"address": "10.200.9.7/24", "gateway": "10.200.9.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.9.1"}],
    }
    # Docker's bridge MAC for the address (02:42 + its four bytes); see test_endpoint_chain.py
    mac = "02:42:0a:c8:09:07"
    assert (chain.cni_args, chain.capability_args) == (
        (("IgnoreUnknown", "1"), ("MAC", mac)), {"mac": mac})
    assert template == before  # the network's template is never written to
    assert chain.config.source == "endpoint config"


def test_config_dual_stack() -> None:
    template, body = zero_template(ipv6=[V6])
    chain = endpoint_chain.for_endpoint(template, body, "config",
                                EndpointInterface(address=ADDR4, address_ipv6=ADDR6))
    ipam = chain.config.plugins[0].raw["ipam"]
    assert ipam["addresses"] == [{"address": "10.200.9.7/24", "gateway": "10.200.9.1"},
                                 {"address": "fd00:200:9::7/64", "gateway": "fd00:200:9::1"}]
    assert ipam["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.200.9.1"},
                              {"dst": "::/0", "gw": "fd00:200:9::1"}]


def test_config_on_an_internal_network_has_a_gateway_but_no_way_out() -> None:
    template, body = zero_template(internal=True)
    chain = endpoint_chain.for_endpoint(template, body, "config", EndpointInterface(address=ADDR4),
                                internal=True)
    ipam = chain.config.plugins[0].raw["ipam"]
    assert ipam["addresses"] == [{"address": "10.200.9.7/24", "gateway": "10.200.9.1"}]
    assert "routes" not in ipam


def test_config_without_a_gateway_from_docker() -> None:
    template, body = zero_template(ipv4=[{"AddressSpace": "LocalDefault",
                                          "Pool": "10.200.9.0/24"}])
    chain = endpoint_chain.for_endpoint(template, body, "config", EndpointInterface(address=ADDR4))
    assert chain.config.plugins[0].raw["ipam"] == {"type": "static",
                                                   "addresses": [{"address": "10.200.9.7/24"}]}


def test_ips_hands_the_addresses_over_as_a_capability() -> None:
    net = conflist({"type": "bridge", "capabilities": {"ips": True},
                    "ipam": host_local("10.200.9.0/24")})
    chain = endpoint_chain.for_endpoint(net.raw, request(ipv6=[V6]), "ips",
                                EndpointInterface(address=ADDR4, address_ipv6=ADDR6))
    assert chain.capability_args == {"ips": ["10.200.9.7/24", "fd00:200:9::7/64"]}
    assert chain.cni_args == (("IgnoreUnknown", "1"),)
    assert chain.config.raw == net.raw


def test_args_give_host_local_bare_addresses() -> None:
    net = conflist({"type": "bridge", "ipam": host_local("10.200.9.0/24", "fd00:200:9::/64")})
    chain = endpoint_chain.for_endpoint(net.raw, request(ipv6=[V6]), "args",
                                EndpointInterface(address=ADDR4, address_ipv6=ADDR6))
    assert chain.cni_args == (("IgnoreUnknown", "1"), ("IP", "10.200.9.7,fd00:200:9::7"))
    assert chain.capability_args == {}


def test_args_give_static_addresses_in_cidr_form_and_gateways() -> None:
    net = conflist({"type": "tuning"}, {"type": "bridge", "ipam": {"type": "static"}})
    chain = endpoint_chain.for_endpoint(net.raw, request(ipv6=[V6]), "args",
                                EndpointInterface(address=ADDR4, address_ipv6=ADDR6))
    assert chain.cni_args == (("IgnoreUnknown", "1"),
                              ("IP", "10.200.9.7/24,fd00:200:9::7/64"),
                              ("GATEWAY", "10.200.9.1,fd00:200:9::1"))


def test_args_to_static_without_gateways() -> None:
    net = conflist({"type": "bridge", "ipam": {"type": "static"}})
    chain = endpoint_chain.for_endpoint(net.raw, request(ipv4=[{"Pool": "10.200.9.0/24"}]), "args",
                                EndpointInterface(address=ADDR4))
    assert chain.cni_args == (("IgnoreUnknown", "1"), ("IP", "10.200.9.7/24"))


def test_a_mac_goes_to_the_chain_both_ways() -> None:
    net = conflist({"type": "bridge", "ipam": host_local("10.200.9.0/24")})
    chain = endpoint_chain.for_endpoint(net.raw, request(), "args",
                                EndpointInterface(address=ADDR4, mac_address=MAC))
    assert chain.capability_args == {"mac": MAC}
    assert chain.cni_args == (("IgnoreUnknown", "1"), ("IP", "10.200.9.7"), ("MAC", MAC))


def test_when_the_chain_chooses_only_the_mac_is_passed() -> None:
    net = conflist({"type": "macvlan", "master": "eth0", "ipam": {"type": "dhcp"}})
    chain = endpoint_chain.for_endpoint(net.raw, request(ipv4=[NULL]), "",
                                EndpointInterface(mac_address=MAC))
    assert chain.cni_args == (("IgnoreUnknown", "1"), ("MAC", MAC))
    assert chain.capability_args == {"mac": MAC}
    assert endpoint_chain.for_endpoint(net.raw, request(ipv4=[NULL]), "",
                               EndpointInterface()).cni_args == (("IgnoreUnknown", "1"),)


@pytest.mark.parametrize("via", ["config", "ips", "args"])
def test_dockers_ipam_must_have_given_an_address(via: str) -> None:
    template, body = zero_template()
    with pytest.raises(InvalidRequest, match="gave this endpoint no address"):
        endpoint_chain.for_endpoint(template, body, via, EndpointInterface(mac_address=MAC))


# --- what a new network must not collide with ----------------------------------------------------


def neighbour(name: str, bridges: tuple[str, ...] = (), *subnets: str) -> collisions.Neighbour:
    return collisions.Neighbour(name, bridges, tuple(ipaddress.ip_network(n) for n in subnets))


def collide(body: dict[str, Any], *others: collisions.Neighbour, links: FakeLinks | None = None,
            net: NetworkConfigList | None = None) -> None:
    req = parsed(body)
    resolved = chains.zero_config(req) if net is None else chains.from_conflist(req, net)
    collisions.refuse_collisions(req, resolved, resolved.config, links=links or FakeLinks(),
                             others=others)


@pytest.mark.parametrize(("kind", "called"), [("", "network device"), ("veth", "veth")])
def test_a_link_that_is_no_bridge_is_refused(kind: str, called: str) -> None:
    links = FakeLinks()
    links.add_link("eth0", kind=kind)
    with pytest.raises(InvalidRequest) as caught:
        collide(request(cni_bridge="eth0"), links=links)
    assert str(caught.value) == (
        f"option cni.bridge: 'eth0' is an existing {called} link, not a bridge; name a bridge of "
        "the network's own (or one that doesn't exist yet)")


def test_an_existing_bridge_nobody_else_uses_is_taken() -> None:
    links = FakeLinks()
    links.add_link("br-admin", kind="bridge")
    collide(request(cni_bridge="br-admin"), neighbour("Docker network 'bridge'", ("docker0",)),
            links=links)


@pytest.mark.parametrize("name", ["docker0", "br-0123456789ab"])
def test_dockers_bridges_are_refused_even_when_docker_cannot_be_asked(name: str) -> None:
    links = FakeLinks()
    links.add_link(name, kind="bridge")
    with pytest.raises(InvalidRequest, match=f"option com.docker.network.bridge.name: bridge "
                                             f"'{name}' is one of Docker's"):
        collide(request(opts={"com.docker.network.bridge.name": name}), links=links)


def test_another_networks_bridge_is_refused_made_yet_or_not() -> None:
    with pytest.raises(InvalidRequest) as caught:
        collide(request(cni_bridge="pycni-web"),
                neighbour("pycni network 'web'", ("pycni-web",), "10.200.1.0/24"))
    assert str(caught.value) == ("option cni.bridge: bridge 'pycni-web' is the bridge of pycni "
                                 "network 'web'; each network needs a bridge of its own")


def test_a_conflists_bridge_is_checked_the_same_way() -> None:
    net = conflist({"type": "bridge", "bridge": "docker0", "ipam": host_local("10.200.9.0/24")})
    with pytest.raises(InvalidRequest, match="^/etc/cni/net.d/mynet.conflist: bridge 'docker0' "
                                             "is the bridge of Docker network 'bridge'"):
        collide(request(ipv4=[NULL]), neighbour("Docker network 'bridge'", ("docker0",)), net=net)


@pytest.mark.parametrize(("mine", "theirs"), [
    ("10.200.9.0/24", "10.200.9.0/24"),
    ("10.200.9.0/24", "10.200.0.0/16"),
    ("10.200.9.0/24", "10.200.9.128/25"),
])
def test_a_conflist_range_overlapping_another_network_is_refused(mine: str, theirs: str) -> None:
    net = conflist({"type": "bridge", "bridge": "br9", "ipam": host_local(mine)})
    with pytest.raises(InvalidRequest) as caught:
        collide(request(ipv4=[NULL]), neighbour("Docker network 'db'", (), theirs), net=net)
    assert str(caught.value) == (
        f"/etc/cni/net.d/mynet.conflist: the chain's range {mine} overlaps {theirs}, the subnet "
        "of Docker network 'db': their addresses would be handed out twice; choose a range no "
        "other network uses")


def test_dockers_subnet_overlapping_a_conflist_range_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="^subnet 10.200.9.0/24 overlaps 10.200.0.0/16, the "
                                             "subnet of pycni network 'hl'"):
        collide(request(), neighbour("pycni network 'hl'", ("cni0",), "10.200.0.0/16"))


def test_ranges_that_do_not_overlap_pass() -> None:
    net = conflist({"type": "bridge", "bridge": "br9",
                    "ipam": host_local("10.200.9.0/24", "fd00:200:9::/64")})
    collide(request(ipv4=[NULL]), neighbour("a", ("br8",), "10.200.8.0/24", "fd00:200:8::/64"),
            neighbour("b", (), "fd00:200::/48", "0a00::/8"), net=net)


def test_the_ranges_a_network_hands_addresses_from() -> None:
    body = parsed(request(ipv6=[V6]))
    hl = conflist({"type": "bridge", "ipam": {"type": "host-local", "subnet": "10.200.7.0/24",
                                              "ranges": [[{"subnet": "10.200.8.0/24"}]]}})
    static = conflist({"type": "macvlan", "ipam": {"type": "static", "addresses": [
        {"address": "10.200.6.5/24"}, {"address": "nonsense"}, "nonsense"]}})
    assert collisions.address_ranges(body, hl, "docker") == [
        ipaddress.ip_network("10.200.9.0/24"), ipaddress.ip_network("fd00:200:9::/64")]
    assert collisions.address_ranges(body, hl, "cni") == [
        ipaddress.ip_network("10.200.8.0/24"), ipaddress.ip_network("10.200.7.0/24")]
    assert collisions.address_ranges(body, static, "cni") == [ipaddress.ip_network("10.200.6.0/24")]
    assert collisions.address_ranges(body, conflist({"type": "macvlan"}), "cni") == []


def test_neighbours_are_named_as_docker_names_them() -> None:
    other = "ab" * 32
    config = conflist({"type": "bridge", "bridge": "br9", "ipam": host_local("10.200.8.0/24")})
    docker = [
        DockerNetwork(other, "web", "pycni", ("10.200.8.0/24",)),
        DockerNetwork("ef" * 32, "bridge", "bridge", ("172.17.0.0/16", "bad"), "docker0"),
        DockerNetwork("12" * 32, "host", "host"),
    ]
    found = collisions.neighbours([(other, parsed(request(ipv4=[NULL])), config, "cni")], docker)
    assert found == [
        neighbour("pycni network 'web'", ("br9",), "10.200.8.0/24"),
        neighbour("Docker network 'bridge'", ("docker0",), "172.17.0.0/16"),
        neighbour("Docker network 'host'"),
    ]
    # Docker can't be asked: pycni's own networks, by id
    assert collisions.neighbours([(other, parsed(request(ipv4=[NULL])), config, "cni")], None) == [
        neighbour(f"pycni network '{other[:12]}'", ("br9",), "10.200.8.0/24")]
