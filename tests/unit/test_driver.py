"""The CNM→CNI driver on fakes: networks, the staging dance, every undo path, Join's answer,
DeleteEndpoint's mirror of ADD, retries and restarts.

Plugins are :class:`~tests.fakelinks.FakeMainPlugin` behaviours in a
:class:`~tests.fakes.FakeExec`; links and namespaces are a :class:`~tests.fakelinks.FakeLinks`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

import pytest

from shim import reconcile
from shim.answers import way_out
from shim.cni import AddFailed
from shim.dnat import PortRule
from shim.dockerview import DockerNetwork
from shim.driver import Driver
from shim.errors import (
    CNIError,
    ConfigError,
    FirewallError,
    InvalidRequest,
    NetlinkFailure,
    NotFound,
    Unsupported,
)
from shim.protocol import EndpointRequest
from shim.state import EndpointRecord, NetworkRules, Phase
from tests.fakelinks import FakeMainPlugin
from tests.fakes import cni_args
from tests.world import EP, NET, NULL_IPAM, SANDBOX, World, docker_pool

pytestmark = pytest.mark.unit

EP2 = "12" * 32
NET2 = "34" * 32
DOCKER_MAC = "02:42:0a:c8:09:07"
STAGING = f"pycni-{EP[:12]}"
STAGING_PATH = f"/run/netns/{STAGING}"
HOST_LINK = f"pcn{EP[:12]}"


def host_local(subnet: str = "10.200.20.0/24", **extra: Any) -> dict[str, Any]:
    return {"type": "host-local", "ranges": [[{"subnet": subnet}]], **extra}


def cache_entry(w: World) -> dict[str, Any]:
    [name] = w.cache_files()
    data: dict[str, Any] = json.loads((w.root / "cache" / "results" / name).read_text())
    return data


# --- CreateNetwork -------------------------------------------------------------------------------


def test_zero_config_network_is_a_bridge_chain_with_static_ipam(world: World) -> None:
    req = world.create_network()
    rec = world.driver.networks[NET]
    bridge = f"pycni-{NET[:9]}"
    assert (rec.mode, rec.ipam, rec.address_via) == ("zero-config", "docker", "config")
    assert rec.request == req  # Docker's request as received
    assert rec.config.name == f"pycni-{NET[:12]}" and rec.config.cni_version == "1.0.0"
    [main] = rec.config.raw["plugins"]  # published ports are pycni's DNAT rules
    assert main["type"] == "bridge" and main["bridge"] == bridge
    assert main["ipam"] == {"type": "static"} and main["isGateway"] is True
    # Masquerade and forwarding are pycni's per-network rules (the chain's "firewall" part),
    # not ipMasq or a firewall plugin run per container.
    assert main["ipMasq"] is False
    assert rec.firewall == NetworkRules(bridge, ("10.200.9.0/24",))
    assert rec.firewall is not None and world.rules.networks[NET] == rec.firewall.to_json()
    assert rec.owned_links == [bridge]  # not there yet: the chain will make it, we remove it
    assert world.records() == ([NET], [])
    # Every plugin was asked its versions before the config was settled.
    assert {c.plugin for c in world.exec.calls_for("VERSION")} == {"bridge"}
    assert world.rules.guards == set()  # no portmap: route_localnet stays 0


def test_zero_config_options_and_internal(world: World) -> None:
    world.create_network(cni_bridge="br-mine", cni_mtu="1400", internal=True)
    rec = world.driver.networks[NET]
    [main] = rec.config.raw["plugins"]  # internal: no portmap, no route out, no masquerade
    assert (main["bridge"], main["mtu"], main["isGateway"]) == ("br-mine", 1400, True)
    assert rec.firewall is not None and rec.firewall.internal


def test_create_network_twice_keeps_the_first(world: World) -> None:
    world.create_network()
    world.create_network(cni_bridge="br-other")
    assert world.driver.networks[NET].config.raw["plugins"][0]["bridge"] == f"pycni-{NET[:9]}"


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"cni_nework": "x"}, "unknown option 'cni.nework'"),
        ({"cni_mtu": "9"}, "cni.mtu must be a number from 68 to 65535"),
        ({"cni_mtu": "big"}, "cni.mtu must be a number"),
        ({"cni_bridge": "a-name-far-too-long"}, "not a valid interface name"),
        ({"cni_bridge": "a/b"}, "not a valid interface name"),
    ],
)
def test_bad_options_are_invalid_requests(world: World, options: dict[str, str],
                                          match: str) -> None:
    with pytest.raises(InvalidRequest, match=match):
        world.create_network(**options)
    assert world.driver.networks == {} and world.records() == ([], [])


@pytest.mark.parametrize("name", [".", "..", "br\r0", "br\x0b0", "\u00e9" * 8])
def test_bridge_names_the_kernel_refuses_are_invalid(world: World, name: str) -> None:
    with pytest.raises(InvalidRequest, match="not a valid interface name"):
        world.create_network(cni_bridge=name)


def test_null_ipam_without_a_conflist_is_refused(world: World) -> None:
    with pytest.raises(InvalidRequest, match="--ipam-driver null needs a CNI config"):
        world.create_network(ipv4=NULL_IPAM)
    assert world.rules.networks == {} and world.records() == ([], [])


def test_host_local_outside_dockers_subnet_points_at_null_ipam(world: World) -> None:
    world.conflist("hl", {"type": "bridge", "ipam": host_local("10.200.20.0/24")})
    with pytest.raises(ConfigError, match="outside the chain's host-local ranges") as exc:
        world.create_network(cni_network="hl")  # Docker's pool is 10.200.9.0/24
    assert "--ipam-driver null" in str(exc.value) and "plugins[0].ipam" in str(exc.value)
    assert world.driver.networks == {} and world.records() == ([], [])


def test_a_dhcp_chain_is_refused_with_the_mode_that_keeps_its_lease(world: World) -> None:
    world.conflist("dh", {"type": "macvlan", "master": "eth0", "ipam": {"type": "dhcp"}})
    for ipv4 in (None, NULL_IPAM):
        with pytest.raises(ConfigError, match="cannot keep its lease on the staging path") as exc:
            world.create_network(cni_network="dh", ipv4=ipv4)
        assert "--network none mode" in str(exc.value)
    assert world.driver.networks == {} and world.leftovers() == {}


def test_an_endpoints_driver_opt_cni_args_reaches_its_chain_at_add_and_del(
        world: World) -> None:
    """``docker run --network name=NET,driver-opt=cni.args=K=V;…``: Docker passes the
    endpoint's driver-opts in CreateEndpoint's options."""
    world.conflist("bw", {"type": "bridge", "bridge": "cni0", "ipam": {
        "type": "host-local", "ranges": [[{"subnet": "10.200.9.0/24"}]]}},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}})
    world.create_network(cni_network="bw")
    world.create_endpoint(options={"cni.args": "TEAM=blue;TIER=web",
                                   "cni.caps": '{"bandwidth": {"ingressRate": 8000}}',
                                   "com.docker.network.portmap": []})
    world.join()
    world.leave()
    world.delete_endpoint()
    for verb in ("ADD", "DEL"):
        args = cni_args(world.exec.calls_for(verb, "bridge")[0].env)
        assert (args["IgnoreUnknown"], args["TEAM"], args["TIER"]) == ("1", "blue", "web")
        # libcni hands a capability only to the plugins that declare it
        [shaper] = world.exec.calls_for(verb, "bandwidth")
        assert shaper.stdin["runtimeConfig"] == {"bandwidth": {"ingressRate": 8000}}
        assert "runtimeConfig" not in world.exec.calls_for(verb, "bridge")[0].stdin


@pytest.mark.parametrize(("options", "says"), [
    ({"cni.args": "TEAM"}, "driver-opt cni.args 'TEAM': 'TEAM' is not KEY=VALUE"),
    ({"cni.args": "K8S_POD_NAME=x"}, "pycni sets K8S_POD_NAME itself"),
    ({"cni.arg": "A=1"}, "driver-opt cni.arg: pycni knows cni.args and cni.caps on an endpoint"),
    ({"cni.caps": "[1]"}, "driver-opt cni.caps '[1]': not a JSON object"),
    ({"cni.caps": '{"portMappings": []}'}, "pycni fills portMappings itself (from -p)"),
])
def test_an_endpoints_bad_driver_opts_are_refused_with_nothing_made(
        world: World, options: dict[str, str], says: str) -> None:
    world.create_network()
    with pytest.raises(InvalidRequest, match=re.escape(says)):
        world.create_endpoint(options=options)
    assert world.exec.calls_for("ADD") == [] and world.leftovers() == {}


def test_unknown_conflist_is_not_found(world: World) -> None:
    with pytest.raises(NotFound, match="no CNI network named 'nope'"):
        world.create_network(cni_network="nope")


def test_firewall_failure_leaves_no_network(world: World) -> None:
    world.rules.fail["add_network"] = FirewallError("iptables: no chain")
    with pytest.raises(FirewallError):
        world.create_network()
    assert world.driver.networks == {} and world.rules.networks == {}
    assert world.records() == ([], [])


def test_allocate_network_is_unsupported(world: World) -> None:
    with pytest.raises(Unsupported, match="swarm"):
        world.driver.allocate_network()


# --- CreateEndpoint ------------------------------------------------------------------------------


def test_dockers_address_and_gateway_reach_static_ipam(world: World) -> None:
    world.create_network()
    answer = world.create_endpoint(address="10.200.9.7/24")
    [add] = world.exec.calls_for("ADD")  # portmap is skipped: no ports published
    assert add.plugin == "bridge"
    assert add.stdin["ipam"] == {
        "type": "static",
        "addresses": [{"address": "10.200.9.7/24", "gateway": "10.200.9.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.9.1"}],
    }
    assert add.env["CNI_CONTAINERID"] == EP and add.env["CNI_IFNAME"] == "eth0"
    assert add.env["CNI_NETNS"] == STAGING_PATH
    # The link is on the host under its temporary name; the staging netns stays for DEL.
    link = world.links.find(None, HOST_LINK)
    assert link is not None and world.links.find(STAGING, "eth0") is None
    assert world.links.list_netns() == [STAGING]
    # Docker chose the address: only the MAC (which it left empty) comes back.
    assert answer == {"Interface": {"MacAddress": link.mac}}
    rec = world.driver.endpoints[EP]
    assert (rec.phase, rec.addresses, rec.mac) == ("ready", ["10.200.9.7/24"], link.mac)
    assert world.records() == ([NET], [EP]) and len(world.cache_files()) == 1
    world.consistent()


def test_a_zero_config_endpoint_gets_dockers_mac_from_its_address(world: World) -> None:
    """As Docker's bridge: 02:42 + the IPv4 address, so a container restarted with its
    address keeps its MAC and its neighbours' entries stay right."""
    world.create_network()
    answer = world.create_endpoint(address="10.200.9.7/24")
    assert answer == {"Interface": {"MacAddress": DOCKER_MAC}}
    [add] = world.exec.calls_for("ADD")
    assert add.env["CNI_ARGS"] == f"IgnoreUnknown=1;MAC={DOCKER_MAC}"
    assert world.driver.endpoints[EP].mac == DOCKER_MAC


def test_every_endpoint_announces_its_addresses_from_the_staging_netns(world: World) -> None:
    """A conflist's chain picks its own MAC: neighbours learn it before the container starts."""
    world.conflist("hl", {"type": "bridge", "bridge": "br-hl", "ipam": host_local()})
    world.create_network(cni_network="hl", ipv4=NULL_IPAM)
    world.create_endpoint(address="")
    assert world.announced == [(STAGING_PATH, "eth0", ["10.200.20.2/24"])]
    assert world.driver.endpoints[EP].mac not in ("", DOCKER_MAC)


def test_an_announcement_that_fails_is_no_failure(world: World,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    def refuse(ns: str, ifname: str, addresses: object) -> None:
        raise NetlinkFailure("no packet sockets here")

    world.driver.lifecycle.announce = refuse
    world.create_network()
    assert world.create_endpoint() == {"Interface": {"MacAddress": DOCKER_MAC}}
    assert "neighbours not told the MAC of eth0: no packet sockets here" in caplog.text
    assert world.driver.endpoints[EP].phase == "ready"


def test_answer_is_empty_when_docker_chose_everything(world: World) -> None:
    world.create_network()
    answer = world.create_endpoint(address="10.200.9.7/24", mac=DOCKER_MAC)
    assert answer == {}
    [add] = world.exec.calls_for("ADD")
    assert add.env["CNI_ARGS"] == f"IgnoreUnknown=1;MAC={DOCKER_MAC}"
    assert world.links.find(None, HOST_LINK).mac == DOCKER_MAC  # type: ignore[union-attr]


def test_null_ipam_answer_carries_the_chains_address_and_mac(world: World) -> None:
    world.conflist("hl", {"type": "bridge", "bridge": "br-hl", "ipam": host_local()})
    world.create_network(cni_network="hl", ipv4=NULL_IPAM)
    answer = world.create_endpoint(address="")
    [add] = world.exec.calls_for("ADD")
    assert "addresses" not in add.stdin["ipam"] and "runtimeConfig" not in add.stdin
    assert add.env["CNI_ARGS"] == "IgnoreUnknown=1"  # nothing asked: the IPAM chooses
    mac = world.links.find(None, HOST_LINK).mac  # type: ignore[union-attr]
    assert answer == {"Interface": {"Address": "10.200.20.2/24", "MacAddress": mac}}


def test_dockers_address_through_the_ips_capability_and_cni_args(world: World) -> None:
    world.conflist("caps", {"type": "bridge", "capabilities": {"ips": True},
                            "ipam": host_local("10.200.9.0/24")})
    world.conflist("args", {"type": "bridge", "bridge": "cni1",
                            "ipam": host_local("10.200.10.0/24")})
    world.create_network(NET, cni_network="caps")
    world.create_network(NET2, cni_network="args",
                         ipv4=docker_pool("10.200.10.0/24", "10.200.10.1"))
    assert world.create_endpoint(EP, NET, address="10.200.9.7/24", mac=DOCKER_MAC) == {}
    assert world.create_endpoint(EP2, NET2, address="10.200.10.8/24", mac=DOCKER_MAC) == {}
    caps, args = world.exec.calls_for("ADD")
    assert caps.stdin["runtimeConfig"] == {"ips": ["10.200.9.7/24"]}
    assert args.env["CNI_ARGS"] == f"IgnoreUnknown=1;IP=10.200.10.8;MAC={DOCKER_MAC}"


def test_chain_assigning_another_address_is_refused_and_undone(world: World) -> None:
    world.bridge.force = ["10.200.9.99/24"]
    world.create_network()
    with pytest.raises(CNIError, match="the chain assigned 10.200.9.99/24 but Docker's IPAM "
                                       "assigned 10.200.9.7/24"):
        world.create_endpoint(address="10.200.9.7/24")
    # The link went back into the staging netns for DEL, then everything went.
    assert world.exec.commands()[-1] == ("bridge", "DEL")
    [seen] = world.bridge.deletes
    assert (seen.netns, seen.addresses) == (STAGING_PATH, ["10.200.9.99/24"])
    assert world.leftovers() == {}


def test_plugin_failing_mid_add_is_undone_with_the_partial_result(world: World) -> None:
    world.conflist("fw", {"type": "bridge", "bridge": "br-fw", "ipam": host_local()},
                   {"type": "tuning"}, {"type": "firewall"})
    world.create_network(cni_network="fw", ipv4=NULL_IPAM)
    world.exec.on("firewall", "ADD", CNIError("no room", code=11))
    with pytest.raises(AddFailed, match=r'CNI plugin "firewall" failed \(ADD\): \[code 11\] no '
                                        r"room") as exc:
        world.create_endpoint(address="")
    assert exc.value.partial is not None
    partial = exc.value.partial.to_json()
    assert [ip["address"] for ip in partial["ips"]] == ["10.200.20.2/24"]
    # DEL ran for the whole chain in reverse, each with what had been done as prevResult.
    dels = world.exec.calls_for("DEL")
    assert [c.plugin for c in dels] == ["firewall", "tuning", "bridge"]
    assert all(c.stdin["prevResult"] == partial for c in dels)
    assert world.bridge.deletes[0].addresses == ["10.200.20.2/24"]  # found where ADD left it
    assert world.bridge.leases == {}  # host-local's reservation released
    assert world.leftovers() == {}  # netns, record, cache file: all gone


def test_failing_move_to_host_is_undone(world: World) -> None:
    world.links.fail["move_to_host"] = NetlinkFailure("cannot move eth0: device busy")
    world.create_network()
    with pytest.raises(NetlinkFailure, match="device busy"):
        world.create_endpoint()
    assert world.exec.commands()[-1] == ("bridge", "DEL")
    assert world.bridge.deletes[0].addresses == ["10.200.9.7/24"]
    assert world.leftovers() == {}


def test_failing_netns_creation_runs_no_plugin(world: World) -> None:
    world.links.fail["create_netns"] = NetlinkFailure("ip netns add: no space left")
    world.create_network()
    with pytest.raises(NetlinkFailure):
        world.create_endpoint()
    assert world.exec.calls_for("ADD") == [] and world.leftovers() == {}


def test_create_endpoint_on_an_unknown_network(world: World) -> None:
    with pytest.raises(NotFound):
        world.create_endpoint()
    assert world.leftovers() == {}


def test_zero_config_endpoint_without_an_address_is_refused(world: World) -> None:
    world.create_network()
    with pytest.raises(InvalidRequest, match="gave this endpoint no address"):
        world.create_endpoint(address="")
    assert world.leftovers() == {} and world.exec.calls_for("ADD") == []


def test_retried_create_endpoint_deletes_then_recreates(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    first = world.driver.endpoints[EP].link_mac
    world.create_endpoint()
    assert [c for c in world.exec.commands() if c[1] != "VERSION"] == [
        ("bridge", "ADD"), ("bridge", "DEL"), ("bridge", "ADD")]
    assert list(world.driver.endpoints) == [EP]
    # A new link, with the same MAC: Docker's, from the address.
    assert world.driver.endpoints[EP].link_mac == first == DOCKER_MAC
    world.consistent()


# --- Join ----------------------------------------------------------------------------------------


def test_join_hands_docker_the_link_and_gateway(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    answer = world.join()
    assert re.fullmatch(r"pcn[0-9a-f]{12}", answer["InterfaceName"]["SrcName"])
    assert answer == {
        "InterfaceName": {"SrcName": HOST_LINK, "DstPrefix": "eth"},
        "Gateway": "10.200.9.1",
        "DisableGatewayService": True,  # always: the chain alone gives the way out
    }  # the route to 10.200.9.0/24 is the interface's own: left to the kernel
    assert way_out(world.driver.endpoints[EP]) == "via 10.200.9.1"
    rec = world.restart().endpoints[EP]  # the sandbox is on disk
    assert (rec.phase, rec.sandbox_key) == ("joined", SANDBOX)


def test_join_static_routes_via_a_gateway(world: World) -> None:
    world.conflist("hl", {"type": "bridge", "ipam": host_local(routes=[
        {"dst": "0.0.0.0/0"},
        {"dst": "10.201.0.0/16", "gw": "10.200.20.254"},
        {"dst": "10.200.20.0/24"},
    ])})
    world.create_network(cni_network="hl", ipv4=NULL_IPAM)
    world.create_endpoint(address="")
    answer = world.join()
    assert answer["Gateway"] == "10.200.20.1" and answer["DisableGatewayService"] is True
    assert answer["StaticRoutes"] == [
        {"Destination": "10.201.0.0/16", "RouteType": 0, "NextHop": "10.200.20.254"}]


def test_join_without_a_default_route_has_no_gateway(world: World) -> None:
    world.conflist("st", {"type": "macvlan", "master": "eth0", "ipam": {
        "type": "static",
        "addresses": [{"address": "10.200.30.5/24"}],
        "routes": [{"dst": "10.203.0.0/16", "gw": "10.200.30.254"}, {"dst": "10.202.0.0/16"},
                   {"dst": "10.200.30.0/24"}],
    }})
    FakeMainPlugin(world.links, kind="macvlan").install(world.exec)
    world.create_network(cni_network="st", ipv4=NULL_IPAM)
    assert world.create_endpoint(address="")["Interface"]["Address"] == "10.200.30.5/24"
    answer = world.join()
    # No default route: no way out, and never a docker_gwbridge leg Docker would add for one.
    assert "Gateway" not in answer and answer["DisableGatewayService"] is True
    assert way_out(world.driver.endpoints[EP]) == "none"
    assert answer["StaticRoutes"] == [  # on-link first: the next hop must be reachable
        {"Destination": "10.202.0.0/16", "RouteType": 1},
        {"Destination": "10.203.0.0/16", "RouteType": 0, "NextHop": "10.200.30.254"},
    ]


def test_join_on_an_internal_network_has_no_gateway(world: World) -> None:
    world.create_network(internal=True)
    world.create_endpoint()
    answer = world.join()
    assert "Gateway" not in answer and "StaticRoutes" not in answer
    assert answer["DisableGatewayService"] is True
    assert way_out(world.driver.endpoints[EP]) == "none"


def test_ptp_gets_a_host_address_and_its_routes(world: World) -> None:
    """ptp routes its subnet via the gateway: Docker gets a /32 and the routes as they were."""
    FakeMainPlugin(world.links, kind="ptp").install(world.exec)
    world.conflist("p2p", {"type": "ptp", "ipam": host_local(routes=[{"dst": "0.0.0.0/0"}])})
    world.create_network(cni_network="p2p", ipv4=NULL_IPAM)
    assert world.create_endpoint(address="")["Interface"]["Address"] == "10.200.20.2/32"
    answer = world.join()
    assert answer["Gateway"] == "10.200.20.1"
    assert answer["StaticRoutes"] == [
        {"Destination": "10.200.20.1/32", "RouteType": 1},
        {"Destination": "10.200.20.0/24", "RouteType": 0, "NextHop": "10.200.20.1"},
    ]


def test_ptp_with_dockers_ipam_gets_no_route_to_its_own_subnet(world: World) -> None:
    FakeMainPlugin(world.links, kind="ptp").install(world.exec)
    world.conflist("p2p", {"type": "ptp", "ipam": host_local("10.200.9.0/24",
                                                             routes=[{"dst": "0.0.0.0/0"}])})
    world.create_network(cni_network="p2p")
    assert world.create_endpoint(address="10.200.9.7/24") != {}  # Docker keeps its /24
    answer = world.join()
    assert answer["Gateway"] == "10.200.9.1"
    destinations = [r["Destination"] for r in answer.get("StaticRoutes", [])]
    assert "10.200.9.0/24" not in destinations, answer


def test_join_of_an_unknown_endpoint(world: World) -> None:
    world.create_network()
    with pytest.raises(NotFound):
        world.join()


# --- DeleteEndpoint ------------------------------------------------------------------------------


def masquerading_chain(world: World) -> None:
    """A chain whose DEL needs the link back (bridge ipMasq), with capability args and
    CNI_ARGS that DEL must repeat."""
    world.conflist(
        "masq",
        {"type": "bridge", "bridge": "br-masq", "ipMasq": True,
         "capabilities": {"ips": True, "mac": True}, "ipam": host_local("10.200.9.0/24")},
        {"type": "tuning", "capabilities": {"mac": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    )
    world.create_network(cni_network="masq")


def publish(world: World, port: int = 80) -> None:
    world.driver.program_external(EndpointRequest.from_json({
        "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": port, "HostIP": "127.0.0.1", "HostPort": 0,
             "HostPortEnd": 0}]}}))


def test_delete_endpoint_restores_the_link_and_mirrors_add(world: World) -> None:
    masquerading_chain(world)
    world.create_endpoint(address="10.200.9.7/24", mac=DOCKER_MAC)
    publish(world)
    world.join()
    world.leave()  # Docker leaves the link on the host under its SrcName
    cached = cache_entry(world)
    adds = {c.plugin: c for c in world.exec.calls_for("ADD")}
    world.delete_endpoint()
    assert ("restore_for_delete", (STAGING, "eth0", HOST_LINK, DOCKER_MAC, SANDBOX)) in \
        world.links.calls
    # bridge found eth0 in the staging netns with its address: it can undo its masquerade.
    [seen] = world.bridge.deletes
    assert (seen.netns, seen.ifname, seen.mac) == (STAGING_PATH, "eth0", DOCKER_MAC)
    assert seen.addresses == ["10.200.9.7/24"]
    dels = world.exec.calls_for("DEL")
    assert [c.plugin for c in dels] == ["portmap", "tuning", "bridge"]
    for call in dels:
        add = adds[call.plugin]
        assert call.stdin["prevResult"] == cached["result"]  # the cached result
        assert call.env["CNI_ARGS"] == add.env["CNI_ARGS"] == f"IgnoreUnknown=1;MAC={DOCKER_MAC}"
        assert call.stdin.get("runtimeConfig") == add.stdin.get("runtimeConfig")
        assert (call.env["CNI_CONTAINERID"], call.env["CNI_NETNS"]) == (EP, STAGING_PATH)
    assert adds["bridge"].stdin["runtimeConfig"] == {"ips": ["10.200.9.7/24"],
                                                     "mac": DOCKER_MAC}
    assert adds["portmap"].stdin["runtimeConfig"]["portMappings"][0]["containerPort"] == 80
    assert world.leftovers() == {}
    assert world.links.find(None, "br-masq") is not None  # the network's, until DeleteNetwork


def test_delete_while_the_link_is_still_in_the_sandbox(world: World) -> None:
    masquerading_chain(world)
    world.create_endpoint(address="10.200.9.7/24", mac=DOCKER_MAC)
    world.join()  # no Leave: the link is in the container
    world.delete_endpoint()
    assert world.bridge.deletes[0].addresses == ["10.200.9.7/24"]
    assert world.links.spaces[SANDBOX] == {} and world.leftovers() == {}


def test_delete_after_the_container_netns_died_uses_a_stand_in(world: World) -> None:
    masquerading_chain(world)
    world.create_endpoint(address="10.200.9.7/24", mac=DOCKER_MAC)
    world.join()
    world.links.destroy_namespace(SANDBOX)  # the link died with it
    world.delete_endpoint()
    [seen] = world.bridge.deletes
    assert seen.addresses == ["10.200.9.7/24"] and seen.mac != DOCKER_MAC  # a stand-in
    assert world.leftovers() == {}


def test_zero_config_delete_needs_no_link_back(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    world.join()
    world.leave()
    world.delete_endpoint()
    assert "restore_for_delete" not in world.links.ops()  # DEL of bridge without ipMasq
    [delete] = world.exec.calls_for("DEL")
    assert delete.stdin["prevResult"]["ips"][0]["address"] == "10.200.9.7/24"
    assert world.leftovers() == {}


def test_delete_endpoint_twice_and_unknown_succeed(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    world.delete_endpoint()
    calls = len(world.exec.calls)
    world.delete_endpoint()
    world.delete_endpoint(EP2)
    world.delete_endpoint(EP2, NET2)
    assert len(world.exec.calls) == calls and world.leftovers() == {}


def test_failed_del_keeps_the_record_for_a_retry(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    world.exec.on("bridge", "DEL", CNIError("iptables is locked", code=11))
    with pytest.raises(CNIError, match="iptables is locked"):
        world.delete_endpoint()
    assert world.records()[1] == [EP]
    world.bridge.install(world.exec)
    world.delete_endpoint()
    assert world.leftovers() == {}


def test_mac_ignoring_plugin_deleted_before_join_leaves_nothing(world: World) -> None:
    FakeMainPlugin(world.links, kind="ptp", honour_mac=False).install(world.exec)
    world.conflist("p2p", {"type": "ptp", "ipam": host_local("10.200.9.0/24")})
    world.create_network(cni_network="p2p")
    world.create_endpoint(address="10.200.9.7/24", mac=DOCKER_MAC)
    world.delete_endpoint()  # e.g. the container failed to start
    assert world.leftovers() == {}


# --- published ports -----------------------------------------------------------------------------


def test_a_conflists_ports_are_published_through_portmap_and_revoked(world: World) -> None:
    masquerading_chain(world)
    world.create_endpoint()
    publish(world, 8080)
    [add] = world.exec.calls_for("ADD", "portmap")
    [mapping] = add.stdin["runtimeConfig"]["portMappings"]
    assert (mapping["containerPort"], mapping["hostIP"], mapping["protocol"]) == (
        8080, "127.0.0.1", "tcp")
    assert 32768 <= mapping["hostPort"] <= 60999
    publish(world, 8080)  # Docker retried: nothing more
    assert len(world.exec.calls_for("ADD", "portmap")) == 1
    world.driver.revoke_external(EndpointRequest.from_json({"NetworkID": NET,
                                                            "EndpointID": EP}))
    [delete] = world.exec.calls_for("DEL", "portmap")
    assert delete.stdin["runtimeConfig"]["portMappings"] == [mapping]
    world.delete_endpoint()
    assert [c.plugin for c in world.exec.calls_for("DEL")] == ["portmap", "tuning", "bridge"]
    assert world.rules.dnat == {}


def test_a_zero_config_networks_ports_are_pycnis_own_dnat_rules(world: World) -> None:
    """As Docker's bridge: a rule per port and container address of the host address's family,
    none for the host's loopback (the proxy serves it), removed at Revoke; no plugin runs."""
    world.create_network(ipv6=[{"AddressSpace": "LocalDefault", "Pool": "fd00:200:9::/64",
                                "Gateway": "fd00:200:9::1/64"}])
    world.create_endpoint(address_ipv6="fd00:200:9::7/64")
    world.exec.reset()
    world.driver.program_external(EndpointRequest.from_json({
        "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "Port": 80, "HostPort": 8080},
            {"Proto": 17, "Port": 53, "HostIP": "0.0.0.0", "HostPort": 5353},
            {"Proto": 6, "Port": 81, "HostIP": "127.0.0.1", "HostPort": 8081}]}}))
    bridge = f"pycni-{NET[:9]}"
    assert world.rules.dnat == {EP[:12]: [
        PortRule(4, "tcp", "", 8080, "10.200.9.7", 80, bridge),
        PortRule(6, "tcp", "", 8080, "fd00:200:9::7", 80, bridge),
        PortRule(4, "udp", "", 5353, "10.200.9.7", 53, bridge)]}  # 0.0.0.0: IPv4 alone
    assert world.exec.calls == []
    assert len(world.driver.endpoints[EP].capability_args["portMappings"]) == 3
    world.rules.dnat.clear()  # a reboot, or an admin's iptables -F
    world.restart()
    assert len(world.rules.dnat[EP[:12]]) == 3
    world.driver.revoke_external(EndpointRequest.from_json({"NetworkID": NET, "EndpointID": EP}))
    assert world.rules.dnat == {} and world.driver.ports.held() == {}
    assert "portMappings" not in world.driver.endpoints[EP].capability_args


def test_deleting_an_endpoint_removes_its_dnat_rules(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    publish(world, 8080)
    world.driver.program_external(EndpointRequest.from_json({
        "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "Port": 80, "HostPort": 0}]}}))
    assert list(world.rules.dnat) == [EP[:12]]
    world.delete_endpoint()  # without a Revoke first
    assert world.rules.dnat == {} and world.proxies.serving() == {}


def test_published_ports_get_a_userland_proxy_until_revoked(world: World) -> None:
    """docker-proxy's part: [::] (and 0.0.0.0) for "all addresses", to the container's own
    family, else its other one; stopped at Revoke, and never left behind by DeleteEndpoint."""
    world.create_network()
    world.create_endpoint()
    world.driver.program_external(EndpointRequest.from_json({
        "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "Port": 80, "HostPort": 8080},
            {"Proto": 17, "Port": 53, "HostIP": "::1", "HostPort": 5353}]}}))
    assert world.proxies.serving() == {EP: [
        "0.0.0.0:8080->10.200.9.7:80/tcp", "[::]:8080->10.200.9.7:80/tcp",
        "[::1]:5353->10.200.9.7:53/udp"]}
    world.driver.revoke_external(EndpointRequest.from_json({"NetworkID": NET, "EndpointID": EP}))
    assert world.proxies.serving() == {}
    publish(world)
    assert list(world.proxies.serving()) == [EP]
    world.delete_endpoint()
    assert world.proxies.serving() == {}


def test_a_proxy_that_cannot_listen_undoes_the_publishing(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    world.proxies.taken.add(8080)
    with pytest.raises(InvalidRequest, match="port 8080 on 0.0.0.0 is already in use"):
        world.driver.program_external(EndpointRequest.from_json({
            "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [
                {"Proto": 6, "Port": 80, "HostPort": 8080}]}}))
    assert world.rules.dnat == {} and world.exec.calls_for("DEL") == []  # nothing published
    assert world.driver.ports.held() == {} and "portMappings" not in \
        world.driver.endpoints[EP].capability_args
    world.proxies.taken.clear()
    world.driver.program_external(EndpointRequest.from_json({
        "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "Port": 80, "HostPort": 8080}]}}))  # Docker may try again
    assert list(world.proxies.serving()) == [EP]


def test_a_restarted_driver_proxies_the_published_ports_again(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    publish(world)
    before = world.proxies.serving()
    world.proxies.running.clear()  # the process that held them is gone
    world.restart()
    assert world.proxies.serving() == before


def test_ports_on_an_internal_network_are_refused(world: World) -> None:
    world.create_network(internal=True)
    world.create_endpoint()
    with pytest.raises(InvalidRequest, match="no plugin with the portMappings capability"):
        publish(world)


# --- the host's loopback ---------------------------------------------------------------------------


def test_a_chain_that_may_open_the_loopback_gets_the_guard_until_the_network_goes(
        world: World) -> None:
    masquerading_chain(world)  # portmap, snat by default
    assert world.rules.guards == {NET[:12]}
    world.delete_network()
    assert world.rules.guards == set()
    assert world.rules.closed == ["br-masq"]  # route_localnet put back, if it stays


def test_a_chain_that_cannot_open_the_loopback_gets_no_guard(world: World) -> None:
    world.conflist("nosnat", {"type": "bridge", "bridge": "br-nosnat", "ipam": host_local()},
                   {"type": "portmap", "capabilities": {"portMappings": True}, "snat": False})
    world.create_network(cni_network="nosnat", ipv4=NULL_IPAM)
    assert world.rules.guards == set()


def test_a_guard_that_cannot_be_put_in_leaves_no_network(world: World) -> None:
    world.rules.fail["add_guard"] = FirewallError("iptables: no chain")
    with pytest.raises(FirewallError):
        masquerading_chain(world)
    assert world.driver.networks == {} and world.rules.networks == {}
    assert world.rules.guards == set() and world.records() == ([], [])


def test_a_network_made_before_the_guard_gets_it_when_pycni_starts(world: World) -> None:
    masquerading_chain(world)
    world.rules.guards.clear()  # as a record from an older pycni would have it
    world.driver.restore()
    assert world.rules.guards == {NET[:12]}


def test_a_docker_network_made_later_inside_a_chains_range_is_logged_once(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    world.conflist("hl", {"type": "bridge", "bridge": "br-hl", "ipam": host_local()})
    world.create_network(cni_network="hl", ipv4=NULL_IPAM)
    late = [DockerNetwork("b" * 64, "late", "bridge", ("10.200.20.0/25",), "br-late")]
    world.driver.docker_networks = lambda: late
    world.driver.warn_range_clashes()
    world.driver.warn_range_clashes()  # told once
    told = [r.getMessage() for r in caplog.records if "handed out twice" in r.getMessage()]
    assert told == [(f"pycni network {NET[:12]!r}: its range 10.200.20.0/24 overlaps "
                    "10.200.20.0/25, the subnet of Docker network 'late'; their addresses are "
                    "handed out twice (pycni doctor)")]


# --- DeleteNetwork -------------------------------------------------------------------------------


def test_delete_network_removes_its_bridge_and_rules(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    bridge = f"pycni-{NET[:9]}"
    assert world.links.bridge_ports(bridge) != []
    world.delete_network()  # with an endpoint left: torn down first
    assert world.exec.commands()[-1] == ("bridge", "DEL")
    assert world.links.find(None, bridge) is None and world.rules.networks == {}
    assert world.driver.networks == {} and world.records() == ([], [])
    assert world.leftovers() == {}
    world.delete_network()  # twice is fine


def test_delete_network_keeps_a_bridge_still_in_use(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    world.delete_endpoint()
    bridge = f"pycni-{NET[:9]}"
    world.links.add_link("vethforeign", master=bridge)
    world.delete_network()
    assert world.links.find(None, bridge) is not None and world.driver.networks == {}


def test_delete_network_keeps_a_bridge_it_did_not_create(world: World) -> None:
    world.links.add_link("br-admin", kind="bridge")
    world.create_network(cni_bridge="br-admin")
    assert world.driver.networks[NET].owned_links == []
    world.create_endpoint()
    world.delete_endpoint()
    world.delete_network()
    assert world.links.find(None, "br-admin") is not None


# --- restarts and reconciliation -----------------------------------------------------------------


def test_a_new_driver_on_the_same_state_serves_everything(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    joined = world.join()
    before_net = world.driver.networks[NET]
    before_ep = world.driver.endpoints[EP]
    again: Driver = world.restart()
    assert again.networks == {NET: before_net} and again.endpoints == {EP: before_ep}
    assert world.join(move=False) == joined
    info = again.oper_info(EndpointRequest.from_json({"NetworkID": NET, "EndpointID": EP}))
    assert info["cni.ips"] == ["10.200.9.7/24"] and info["phase"] == "joined"
    world.leave()
    world.delete_endpoint()
    assert world.exec.calls_for("DEL")[0].stdin["prevResult"]["ips"][0]["address"] == \
        "10.200.9.7/24"
    world.delete_network()
    assert world.leftovers() == {} and world.records() == ([], [])


def test_crash_mid_create_is_reconciled(world: World) -> None:
    """A record left in phase "creating" (the process died) is torn down by gc."""
    world.create_network()
    world.create_endpoint()
    rec = world.driver.endpoints[EP]
    rec.phase = Phase.CREATING
    world.driver.store.save_endpoint(rec)
    actions = reconcile.gc(world.driver)
    assert any("half-made" in a for a in actions)
    assert world.leftovers() == {}


def test_crash_before_the_result_was_recorded_is_reconciled(world: World) -> None:
    """Died between ADD and saving the result: DEL gets the cached result."""
    world.create_network()
    world.create_endpoint()
    rec = world.driver.endpoints[EP]
    bare = EndpointRecord(id=rec.id, network_id=rec.network_id, netns=rec.netns,
                          host_ifname=rec.host_ifname, request=rec.request,
                          attachment=dataclasses.replace(rec.attachment, result=None))
    world.driver.store.save_endpoint(bare)
    reconcile.gc(world.restart())
    assert world.exec.calls_for("DEL")[0].stdin["prevResult"]["ips"][0]["address"] == \
        "10.200.9.7/24"
    assert world.leftovers() == {}


def test_gc_leaves_the_none_modes_attachments_alone(world: World) -> None:
    """A --network none attachment's cache entry names its pinned namespace, which starts like
    a staging namespace's path: the driver's sweep is not its owner."""
    from shim.cni import RuntimeConf
    from shim.cni.config import conflist_from_dict
    pin = world.links.netns_path(f"pycni-pin-{'ab' * 6}-4026532999")
    config = conflist_from_dict({"cniVersion": "1.0.0", "name": "none-net",
                                 "plugins": [{"type": "bridge"}]})
    world.driver.cni.remember(config, RuntimeConf("ab" * 32, pin, "eth0"), None)
    assert reconcile.gc(world.driver) == []
    assert len(world.driver.cni.cached_attachments()) == 1


def test_gc_dry_run_changes_nothing(world: World) -> None:
    world.links.create_netns("pycni-" + "12" * 6)
    assert reconcile.gc(world.driver, dry_run=True) == [f"netns pycni-{'12' * 6}: no endpoint; removed"]
    assert world.links.list_netns() == ["pycni-" + "12" * 6]
    reconcile.gc(world.driver)
    assert world.links.list_netns() == []


def test_gc_sends_cni_1_1_plugins_the_valid_attachments(world: World) -> None:
    world.conflist("new", {"type": "bridge", "ipam": host_local()}, version="1.1.0")
    world.create_network(cni_network="new", ipv4=NULL_IPAM)
    world.create_endpoint(address="")
    assert reconcile.gc(world.driver) == []  # nothing stale
    [gc] = world.exec.calls_for("GC", "bridge")
    assert gc.stdin["cni.dev/valid-attachments"] == [{"containerID": EP, "ifname": "eth0"}]
    assert gc.stdin["cni.dev/attachments"] == gc.stdin["cni.dev/valid-attachments"]
    assert gc.env["CNI_COMMAND"] == "GC" and gc.stdin["cniVersion"] == "1.1.0"


def test_two_networks_two_endpoints_are_independent(world: World) -> None:
    world.create_network(NET)
    world.create_network(NET2, ipv4=docker_pool("10.200.10.0/24", "10.200.10.1"))
    world.create_endpoint(EP, NET, address="10.200.9.7/24")
    world.create_endpoint(EP2, NET2, address="10.200.10.7/24")
    world.consistent()
    world.delete_network(NET)
    assert list(world.driver.endpoints) == [EP2]
    world.consistent()
    world.delete_network(NET2)
    assert world.leftovers() == {} and world.links.host_links("pycni-") == []


def test_a_sweep_of_an_undo_that_failed_makes_no_record_even_when_del_fails_again(
        world: World) -> None:
    """What an undo could not undo lives in libcni's cache alone: a sweep that DELs it again
    and fails leaves it there, as it was - no endpoint record, no staging namespace - and the
    next sweep, once the plugin works, takes it."""
    world.conflist("fd", {"type": "bridge", "bridge": "br-fd", "ipam": host_local()},
                   {"type": "faildel"})
    world.create_network(cni_network="fd", ipv4=NULL_IPAM)
    world.exec.on("faildel", "ADD", CNIError("no", code=11))
    world.exec.on("faildel", "DEL", CNIError("not now either", code=11))
    with pytest.raises(CNIError, match="undoing it failed too"):
        world.create_endpoint(address="")
    assert world.records() == ([NET], []) and len(world.cache_files()) == 1
    [failed] = reconcile.gc(world.driver)
    assert "failed" in failed and "not now either" in failed
    assert world.records() == ([NET], []) and len(world.cache_files()) == 1
    assert world.links.list_netns("pycni-") == []
    world.exec.on("faildel", "DEL", b"")
    assert [a for a in reconcile.gc(world.driver) if "DEL run" in a]
    assert world.cache_files() == [] and world.leftovers() == {}
