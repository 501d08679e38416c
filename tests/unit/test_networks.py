"""CreateNetwork against what is already there: Docker's bridge options, and the networks, bridges
and links a new network must not collide with (:func:`shim.collisions.refuse_collisions`), through
the driver on fakes. Docker's own networks are whatever the test says
(``world.driver.docker_networks``).
"""

from __future__ import annotations

from typing import Any

import pytest

from shim.dockerview import DockerNetwork
from shim.errors import ConfigError, InvalidRequest
from shim.protocol import CreateNetworkRequest, EndpointRequest
from tests.world import NET, NULL_IPAM, World, docker_pool

pytestmark = pytest.mark.unit

NET2 = "34" * 32
EP = "ef" * 32


def create(world: World, network_id: str = NET, *, options: dict[str, str] | None = None,
           **kwargs: Any) -> None:
    """CreateNetwork with ``options`` as Docker's ``-o`` options, by their own names."""
    body = world.network_request(network_id, **kwargs)
    body["Options"]["com.docker.network.generic"].update(options or {})
    world.driver.create_network(CreateNetworkRequest.from_json(body), body)


def host_local_conflist(world: World, name: str, subnet: str, bridge: str) -> None:
    world.conflist(name, {"type": "bridge", "bridge": bridge,
                          "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]]}})


def refused(world: World, *args: Any, **kwargs: Any) -> str:
    """The error of a CreateNetwork that must leave nothing behind."""
    before = (world.records(), dict(world.rules.networks), world.links.all_links())
    with pytest.raises(InvalidRequest) as caught:
        create(world, *args, **kwargs)
    assert (world.records(), world.rules.networks, world.links.all_links()) == before
    return str(caught.value)


# --- Docker's bridge options ---------------------------------------------------------------------


def test_dockers_bridge_options_reach_the_chain_and_the_rules(world: World) -> None:
    create(world, options={"com.docker.network.driver.mtu": "1400",
                           "com.docker.network.bridge.name": "mybr0",
                           "com.docker.network.bridge.enable_icc": "false",
                           "com.docker.network.bridge.enable_ip_masquerade": "false"})
    rec = world.driver.networks[NET]
    main = rec.config.raw["plugins"][0]
    assert (main["bridge"], main["mtu"]) == ("mybr0", 1400)
    assert rec.owned_links == ["mybr0"]
    assert rec.firewall is not None
    assert world.rules.networks[NET] == rec.firewall.to_json() == {
        "bridge": "mybr0", "subnets": ["10.200.9.0/24"], "internal": False,
        "icc": False, "masquerade": False}
    world.delete_network()
    assert world.rules.networks == {}


def test_ports_go_on_host_binding_ipv4_unless_docker_names_an_address(world: World) -> None:
    create(world, options={"com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"})
    world.create_endpoint(EP)
    world.driver.program_external(EndpointRequest.from_json({
        "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 18130,
             "HostPortEnd": 18130},
            {"Proto": 6, "IP": "", "Port": 81, "HostIP": "0.0.0.0", "HostPort": 18131,
             "HostPortEnd": 18131}]}}))
    published = world.driver.endpoints[EP].capability_args["portMappings"]
    assert [(m["containerPort"], m.get("hostIP")) for m in published] == [
        (80, "127.0.0.1"), (81, "0.0.0.0")]
    [rule] = world.rules.dnat[EP[:12]]  # 127.0.0.1 is the proxy's: no DNAT rule
    assert (rule.host_ip, rule.host_port) == ("", 18131)


def test_a_conflist_option_it_contradicts_is_refused_before_anything_is_made(
        world: World) -> None:
    host_local_conflist(world, "hl", "10.200.20.0/24", "br-hl")
    with pytest.raises(ConfigError, match="option com.docker.network.bridge.name=br0: the "
                                          "conflist uses bridge br-hl"):
        create(world, ipv4=NULL_IPAM, options={"cni.network": "hl",
                                                "com.docker.network.bridge.name": "br0"})
    assert world.records() == ([], []) and world.exec.calls_for("VERSION") == []


# --- collisions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["eth0", "lo"])
def test_a_link_that_is_no_bridge_is_refused(world: World, name: str) -> None:
    world.links.add_link(name, kind="")
    error = refused(world, options={"cni.bridge": name})
    assert error.startswith(f"option cni.bridge: {name!r} is an existing network device link, "
                            "not a bridge")


def test_another_pycni_networks_bridge_is_refused(world: World) -> None:
    create(world, options={"cni.bridge": "br-shared"})  # not made until its first container
    error = refused(world, NET2, options={"com.docker.network.bridge.name": "br-shared"},
                    ipv4=docker_pool("10.200.10.0/24", "10.200.10.1"))
    assert error == ("option com.docker.network.bridge.name: bridge 'br-shared' is the bridge of "
                     f"pycni network '{NET[:12]}'; each network needs a bridge of its own")
    world.delete_network()
    create(world, NET2, options={"cni.bridge": "br-shared"})  # free again


def test_dockers_bridges_are_refused(world: World) -> None:
    world.driver.docker_networks = lambda: [
        DockerNetwork("ab" * 32, "backend", "bridge", ("10.200.30.0/24",), "br-custom")]
    error = refused(world, options={"cni.bridge": "br-custom"})
    assert "bridge 'br-custom' is the bridge of Docker network 'backend'" in error


def test_a_conflist_overlapping_a_docker_network_is_refused(world: World) -> None:
    world.driver.docker_networks = lambda: [
        DockerNetwork("ab" * 32, "backend", "bridge", ("10.200.20.0/25",), "br-abababababab"),
        DockerNetwork("cd" * 31 + "ef", "nulled", "pycni", ()),
    ]
    host_local_conflist(world, "hl", "10.200.20.0/24", "br-hl")
    error = refused(world, ipv4=NULL_IPAM, options={"cni.network": "hl"})
    assert error.endswith("10-hl.conflist: the chain's range 10.200.20.0/24 overlaps "
                          "10.200.20.0/25, the subnet of Docker network 'backend': their addresses "
                          "would be handed out twice; choose a range no other network uses")


def test_a_conflist_overlapping_another_pycni_network_is_refused(world: World) -> None:
    create(world)  # zero config, 10.200.9.0/24
    world.driver.docker_networks = lambda: [DockerNetwork(NET, "front", "pycni", ("10.200.9.0/24",))]
    host_local_conflist(world, "hl", "10.200.8.0/23", "br-hl")
    error = refused(world, NET2, ipv4=NULL_IPAM, options={"cni.network": "hl"})
    assert "range 10.200.8.0/23 overlaps 10.200.9.0/24, the subnet of pycni network 'front'" in error


def test_docker_subnet_overlapping_a_conflists_range_is_refused(world: World) -> None:
    host_local_conflist(world, "hl", "10.200.0.0/16", "br-hl")
    create(world, ipv4=NULL_IPAM, options={"cni.network": "hl"})
    error = refused(world, NET2)  # Docker's IPAM knows nothing of host-local's range
    assert error.startswith(f"subnet 10.200.9.0/24 overlaps 10.200.0.0/16, the subnet of pycni "
                            f"network '{NET[:12]}'")


def test_networks_apart_from_each_other_are_made(world: World) -> None:
    world.driver.docker_networks = lambda: [
        DockerNetwork("ab" * 32, "bridge", "bridge", ("172.17.0.0/16",), "docker0")]
    world.links.add_link("docker0", kind="bridge")
    create(world)
    create(world, NET2, ipv4=docker_pool("10.200.10.0/24", "10.200.10.1"))
    host_local_conflist(world, "hl", "10.200.11.0/24", "br-hl")
    create(world, "56" * 32, ipv4=NULL_IPAM, options={"cni.network": "hl"})
    assert len(world.driver.networks) == 3


def test_docker_out_of_reach_checks_pycnis_own_networks_only(world: World) -> None:
    """Docker may be down (pycni starts before it): its networks can't be asked, pycni's can."""
    asked = []
    world.driver.docker_networks = lambda: asked.append(1)
    create(world)
    assert asked == [1]
    assert "pycni network" in refused(world, NET2, options={"cni.bridge": f"pycni-{NET[:9]}"})
