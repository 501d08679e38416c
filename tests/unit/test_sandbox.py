"""The chain straight in Docker's sandbox (``-o cni.place=sandbox``, engines ≥ 28), on fakes:
CreateEndpoint answers Docker's address and runs nothing; Join runs the chain in the namespace
Docker made and hands Docker the gateway, no link; Leave runs DEL against the live interface."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from typing import Any

import pytest

from shim import podargs, reconcile
from shim.errors import CNIError, InvalidRequest, Unsupported
from shim.state import Phase
from tests.fakelinks import FakeMainPlugin
from tests.fakes import cni_args
from tests.world import EP, NET, NULL_IPAM, SANDBOX, World, docker_pool

pytestmark = pytest.mark.unit

EP2 = "12" * 32
NET2 = "34" * 32
DOCKER_MAC = "02:42:0a:c8:09:07"


def sandboxed(world: World, network_id: str = NET, **kwargs: object) -> None:
    world.create_network(network_id, cni_place="sandbox", **kwargs)


def test_create_endpoint_answers_dockers_address_and_runs_nothing(world: World) -> None:
    sandboxed(world)
    assert world.create_endpoint() == {"Interface": {"MacAddress": DOCKER_MAC}}
    assert world.exec.calls_for("ADD") == [] and world.links.list_netns() == []
    assert world.driver.endpoints[EP].phase == Phase.CREATED and world.records()[1] == [EP]
    world.consistent()


def test_the_chain_runs_in_dockers_sandbox_at_join(world: World) -> None:
    """No staging namespace, no move; Docker is handed the gateway, not a link, and DEL runs
    at Leave against the live interface."""
    sandboxed(world)
    world.create_endpoint()
    world.links.spaces[SANDBOX] = {}  # the container's namespace exists at Join
    answer = world.join(move=False)
    assert answer == {"Gateway": "10.200.9.1", "DisableGatewayService": True}
    [add] = world.exec.calls_for("ADD")
    assert (add.env["CNI_NETNS"], add.env["CNI_IFNAME"]) == (SANDBOX, "eth0")
    link = world.links.find(SANDBOX, "eth0")
    assert link is not None and link.mac == DOCKER_MAC and "10.200.9.7/24" in link.addresses
    # the default route is Docker's to add back from the gateway; the chain's others stay
    assert not [r for r in link.routes if r["dst"] == "0.0.0.0/0"]
    assert world.links.list_netns("pycni-") == [] and world.links.host_links("pcn") == []
    rec = world.driver.endpoints[EP]
    assert (rec.place, rec.phase, rec.mac) == ("sandbox", Phase.JOINED, DOCKER_MAC)
    world.leave(move=False)
    [delete] = world.exec.calls_for("DEL")
    assert (delete.env["CNI_NETNS"], delete.env["CNI_IFNAME"]) == (SANDBOX, "eth0")
    assert world.links.find(SANDBOX, "eth0") is None
    assert world.driver.endpoints[EP].phase == Phase.CREATED  # a Join again runs the chain again
    world.delete_endpoint()
    assert world.leftovers() == {} and world.records() == ([NET], [])


def test_a_second_network_in_the_sandbox_gets_the_next_free_name(world: World) -> None:
    sandboxed(world)
    sandboxed(world, NET2, ipv4=docker_pool("10.200.10.0/24", "10.200.10.1"))
    world.links.spaces[SANDBOX] = {}
    world.create_endpoint(EP, NET)
    world.join(EP, NET, move=False)
    world.create_endpoint(EP2, NET2, address="10.200.10.8/24")
    world.join(EP2, NET2, move=False)
    assert sorted(world.links.spaces[SANDBOX]) == ["eth0", "eth1"]
    for endpoint_id, network_id in ((EP, NET), (EP2, NET2)):
        world.leave(endpoint_id, network_id, move=False)
        world.delete_endpoint(endpoint_id, network_id)
    assert world.leftovers() == {}


def test_a_chain_failing_in_the_sandbox_leaves_it_as_it_was(world: World) -> None:
    sandboxed(world)
    world.create_endpoint()
    world.links.spaces[SANDBOX] = {}
    world.exec.on("bridge", "ADD", CNIError("failed to allocate", code=11))
    with pytest.raises(CNIError, match='"bridge" failed'):
        world.join(move=False)
    assert world.links.spaces[SANDBOX] == {} and world.leftovers() == {}
    world.delete_endpoint()  # Docker's next step
    assert world.records() == ([NET], [])


def test_an_endpoint_never_joined_goes_without_a_plugin_run(world: World) -> None:
    sandboxed(world)
    world.create_endpoint()
    world.delete_endpoint()
    assert world.exec.commands() == [("bridge", "VERSION")] and world.leftovers() == {}
    assert world.records() == ([NET], [])


def test_an_engine_without_the_sandbox_at_join_is_told_what_to_do(world: World) -> None:
    """Docker ≤ 27 makes the container's namespace after Join: a clear error, nothing made."""
    sandboxed(world)
    world.create_endpoint()
    with pytest.raises(Unsupported, match=r"this takes Docker 28 or later \(.*\); on this "
                                          "engine create the network without cni.place"):
        world.join(move=False)
    assert world.exec.calls_for("ADD") == []
    world.delete_endpoint()  # Docker's next step
    assert world.leftovers() == {} and world.records() == ([NET], [])


def test_a_crash_inside_the_chain_at_join_is_undone_by_gc(world: World) -> None:
    sandboxed(world)
    world.create_endpoint()
    world.links.spaces[SANDBOX] = {}
    world.join(move=False)
    rec = world.driver.endpoints[EP]
    rec.phase = Phase.CREATING  # as the record stood when pycni died inside ADD
    world.driver.store.save_endpoint(rec)
    world.restart()
    assert reconcile.gc(world.driver) != []
    assert world.links.find(SANDBOX, "eth0") is None and world.leftovers() == {}


class FakeHostLocal:
    """host-local run on its own: the next free address of its range, held per (container,
    ifname) until DEL."""

    def __init__(self, world: World) -> None:
        self.held: dict[tuple[str, str], str] = {}
        world.exec.on("host-local", "ADD", self.add).on("host-local", "DEL", self.delete)

    def add(self, stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
        subnet = ipaddress.ip_network(stdin["ipam"]["ranges"][0][0]["subnet"])
        taken = set(self.held.values())
        hosts = list(subnet.hosts())
        address = next(f"{h}/{subnet.prefixlen}" for h in hosts[1:]
                       if f"{h}/{subnet.prefixlen}" not in taken)
        self.held[(env["CNI_CONTAINERID"], env["CNI_IFNAME"])] = address
        return json.dumps({"cniVersion": stdin["cniVersion"], "ips": [
            {"address": address, "gateway": str(hosts[0])}],
            "routes": [{"dst": "0.0.0.0/0"}]}).encode()

    def delete(self, stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
        self.held.pop((env["CNI_CONTAINERID"], env["CNI_IFNAME"]), None)
        return b""


def null_ipam_network(world: World) -> FakeHostLocal:
    ipam = FakeHostLocal(world)
    world.conflist("hl", {"type": "bridge", "bridge": "cni0", "ipam": {
        "type": "host-local", "ranges": [[{"subnet": "10.200.20.0/24"}]]}})
    sandboxed(world, cni_network="hl", ipv4=NULL_IPAM)
    return ipam


def test_a_chain_whose_ipam_picks_the_address_answers_it_at_create_endpoint(
        world: World) -> None:
    """--ipam-driver null: the IPAM alone at CreateEndpoint, so Docker is told the address;
    the chain at Join gets it as static IPAM; Leave leaves the reservation, DeleteEndpoint
    releases it with the IPAM's own DEL."""
    ipam = null_ipam_network(world)
    answer = world.create_endpoint(address="")
    assert answer == {"Interface": {"Address": "10.200.20.2/24"}}
    [reserve] = world.exec.calls_for("ADD")
    assert (reserve.plugin, reserve.env["CNI_IFNAME"]) == ("host-local", "ipam0")
    assert ipam.held == {(EP, "ipam0"): "10.200.20.2/24"}
    world.links.spaces[SANDBOX] = {}
    assert world.join(move=False) == {"Gateway": "10.200.20.1", "DisableGatewayService": True}
    add = world.exec.calls_for("ADD", "bridge")[0]
    assert add.stdin["ipam"] == {"type": "static", "addresses": [
        {"address": "10.200.20.2/24", "gateway": "10.200.20.1"}],
        "routes": [{"dst": "0.0.0.0/0"}]}
    link = world.links.find(SANDBOX, "eth0")
    assert link is not None and "10.200.20.2/24" in link.addresses
    # a gc between meanwhile keeps what the endpoint holds
    reconcile.gc(world.driver)
    assert ipam.held == {(EP, "ipam0"): "10.200.20.2/24"}
    world.leave(move=False)
    assert world.links.find(SANDBOX, "eth0") is None
    assert ipam.held == {(EP, "ipam0"): "10.200.20.2/24"}  # the endpoint still has it
    world.delete_endpoint()
    assert ipam.held == {} and world.leftovers() == {} and world.records() == ([NET], [])


def test_a_reservation_survives_a_restart_and_is_released(world: World) -> None:
    ipam = null_ipam_network(world)
    world.create_endpoint(address="")
    world.restart()
    assert world.driver.endpoints[EP].reserved is not None
    world.delete_endpoint()
    assert ipam.held == {} and world.leftovers() == {}


def test_an_ipam_that_fails_leaves_nothing(world: World) -> None:
    null_ipam_network(world)
    world.exec.on("host-local", "ADD", CNIError("no IP addresses available", code=11))
    with pytest.raises(CNIError, match='"host-local" failed'):
        world.create_endpoint(address="")
    assert world.leftovers() == {} and world.records() == ([NET], [])


def test_a_dhcp_chain_runs_whole_at_join_and_docker_is_told_no_address(world: World) -> None:
    """dhcp asks on the interface, which exists only at Join, and renews from where it asked:
    nothing runs at CreateEndpoint, the whole chain runs in the sandbox, DEL releases at Leave."""
    FakeMainPlugin(world.links, kind="macvlan").install(world.exec)
    # the routes stand in for the DHCP server's router option (the fake's IPAM reads them)
    dhcp = {"type": "dhcp", "routes": [{"dst": "0.0.0.0/0"}]}
    world.conflist("dh", {"type": "macvlan", "master": "eth0", "ipam": dhcp})
    sandboxed(world, cni_network="dh", ipv4=NULL_IPAM)
    assert world.create_endpoint(address="") == {}
    assert world.exec.calls_for("ADD") == [] and world.driver.endpoints[EP].reserved is None
    world.links.spaces[SANDBOX] = {}
    assert world.join(move=False) == {"Gateway": "10.200.99.1", "DisableGatewayService": True}
    [add] = world.exec.calls_for("ADD")
    assert add.stdin["ipam"] == dhcp and add.env["CNI_NETNS"] == SANDBOX
    link = world.links.find(SANDBOX, "eth0")
    assert link is not None and "10.200.99.2/24" in link.addresses
    world.leave(move=False)
    assert [d.env["CNI_NETNS"] for d in world.exec.calls_for("DEL")] == [SANDBOX]
    assert world.links.find(SANDBOX, "eth0") is None
    assert world.driver.endpoints[EP].addresses == []
    world.delete_endpoint()
    assert world.leftovers() == {} and world.records() == ([NET], [])


def test_the_chain_learns_whom_it_serves_at_join_and_del_gets_the_same(world: World) -> None:
    """The container is Docker's to say at Join (nothing names it at CreateEndpoint); a Join
    after a Leave serves whoever Docker says then."""
    asked: list[tuple[str, str]] = []

    def identify(network_id: str, endpoint_id: str) -> tuple[tuple[str, str], ...]:
        asked.append((network_id, endpoint_id))
        return podargs.identity("shop-web-1", "f" * 64, {"com.docker.compose.project": "shop"})

    world.driver.sandbox.identify = identify
    sandboxed(world)
    world.create_endpoint(options={"cni.args": "TEAM=blue"})
    world.links.spaces[SANDBOX] = {}
    world.join(move=False)
    world.leave(move=False)
    world.join(move=False)
    world.leave(move=False)
    want = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "shop", "K8S_POD_NAME": "shop-web-1",
            "K8S_POD_INFRA_CONTAINER_ID": "f" * 64, "TEAM": "blue"}
    calls = world.exec.calls_for("ADD", "bridge") + world.exec.calls_for("DEL", "bridge")
    assert len(calls) == 4
    assert all(cni_args(c.env) == {**want, "MAC": DOCKER_MAC} for c in calls)  # zero-config
    assert [c.env["CNI_ARGS"].count("K8S_POD_NAME=") for c in calls] == [1, 1, 1, 1]
    assert asked == [(NET, EP), (NET, EP)]
    world.delete_endpoint()


def test_unknown_places_are_refused(world: World) -> None:
    with pytest.raises(InvalidRequest, match="cni.place='inside': pycni knows staging and "
                                             "sandbox"):
        world.create_network(cni_place="inside")
