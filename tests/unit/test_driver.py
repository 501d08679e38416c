"""The CNM→CNI driver on fakes: the staging dance, every undo path, Join's answer, restarts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shim.driver import Driver
from shim.errors import CNIError, ConfigError, InvalidRequest, NetlinkFailure, Unsupported
from shim.protocol import (
    CreateEndpointRequest,
    CreateNetworkRequest,
    EndpointRequest,
    JoinRequest,
)
from shim.state import Store
from tests.unit.test_api_fuzz import World

pytestmark = pytest.mark.unit

NET = "cd" * 32
EP = "ef" * 32


@pytest.fixture
def w(tmp_path: Any) -> World:
    return World(str(tmp_path))


def create_network(d: Driver, **options: str) -> None:
    req = {"NetworkID": NET, "Options": {"com.docker.network.generic": options},
           "IPv4Data": [{"AddressSpace": "x", "Pool": "10.200.9.0/24",
                         "Gateway": "10.200.9.1/24"}], "IPv6Data": []}
    d.create_network(CreateNetworkRequest.from_json(req), req)


def create_endpoint(d: Driver, address: str = "10.200.9.7/24", eid: str = EP) -> dict[str, Any]:
    body = {"NetworkID": NET, "EndpointID": eid, "Interface": {"Address": address}}
    return d.create_endpoint(CreateEndpointRequest.from_json(body), body).to_json()


def nothing_left(w: World) -> None:
    assert w.links.list_netns() == []
    assert [n for n in w.links.spaces[""] if n.startswith("pcn")] == []
    assert w.driver.endpoints == {} and Store(w.driver.settings.state_dir).endpoints() == []


def test_zero_config_chain_gets_dockers_address(w: World) -> None:
    create_network(w.driver)
    answer = create_endpoint(w.driver)
    # Docker set the address: only the MAC comes back.
    assert set(answer["Interface"]) == {"MacAddress"}
    [add] = w.exec.calls_for("ADD", "bridge")
    assert add.stdin["ipam"]["addresses"] == [{"address": "10.200.9.7/24",
                                               "gateway": "10.200.9.1"}]
    assert add.stdin["ipMasq"] is False  # per-network rules, not per container
    assert w.rules.networks[NET] == {"bridge": f"pycni-{NET[:9]}", "subnets": ["10.200.9.0/24"],
                                     "internal": False}
    assert add.env["CNI_CONTAINERID"] == EP and add.env["CNI_IFNAME"] == "eth0"
    assert add.env["CNI_NETNS"] == f"/run/netns/pycni-{EP[:12]}"
    assert f"pcn{EP[:12]}" in w.links.spaces[""]


def test_join_answer(w: World) -> None:
    create_network(w.driver)
    create_endpoint(w.driver)
    join = w.driver.join(JoinRequest.from_json(
        {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/var/run/docker/netns/x"})).to_json()
    assert join["InterfaceName"] == {"SrcName": f"pcn{EP[:12]}", "DstPrefix": "eth"}
    assert join["Gateway"] == "10.200.9.1" and join["DisableGatewayService"] is True


def test_delete_endpoint_undoes_everything_and_twice_is_fine(w: World) -> None:
    create_network(w.driver)
    create_endpoint(w.driver)
    req = EndpointRequest.from_json({"NetworkID": NET, "EndpointID": EP})
    w.driver.delete_endpoint(req)
    w.driver.delete_endpoint(req)
    nothing_left(w)
    [delete] = w.exec.calls_for("DEL", "bridge")
    assert delete.stdin["prevResult"]["ips"][0]["address"] == "10.200.9.7/24"


def test_failing_plugin_mid_chain_is_undone(w: World, tmp_path: Any) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-fw.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "fw",
        "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}, {"type": "firewall"}]}))
    object.__setattr__(w.driver.settings, "conf_dir", str(conf))
    w.exec.on("firewall", "ADD", CNIError("no room", code=11))
    req = {"NetworkID": NET, "Options": {"com.docker.network.generic": {"cni.network": "fw"}},
           "IPv4Data": [{"AddressSpace": "null", "Pool": "0.0.0.0/0"}], "IPv6Data": []}
    w.driver.create_network(CreateNetworkRequest.from_json(req), req)
    body = {"NetworkID": NET, "EndpointID": EP, "Interface": {}}
    with pytest.raises(CNIError, match='CNI plugin "firewall" failed \\(ADD\\): \\[code 11\\] no room'):
        w.driver.create_endpoint(CreateEndpointRequest.from_json(body), body)
    # DEL ran for the whole chain in reverse, with what bridge had done as prevResult.
    assert [c for c in w.exec.commands() if c[1] == "DEL"] == [("firewall", "DEL"),
                                                             ("bridge", "DEL")]
    assert w.exec.calls_for("DEL", "bridge")[0].stdin["prevResult"]["ips"]
    nothing_left(w)


def test_portmap_runs_only_for_endpoints_with_ports(w: World) -> None:
    create_network(w.driver)
    create_endpoint(w.driver)
    assert ("portmap", "ADD") not in w.exec.commands()
    w.driver.program_external(EndpointRequest.from_json({
        "NetworkID": NET, "EndpointID": EP,
        "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "IP": "", "Port": 80, "HostIP": "127.0.0.1", "HostPort": 0,
             "HostPortEnd": 0}]}}))
    [add] = w.exec.calls_for("ADD", "portmap")
    [mapping] = add.stdin["runtimeConfig"]["portMappings"]
    assert mapping["containerPort"] == 80 and mapping["hostIP"] == "127.0.0.1"
    assert 32768 <= mapping["hostPort"] <= 60999
    w.driver.delete_endpoint(EndpointRequest.from_json({"NetworkID": NET, "EndpointID": EP}))
    [delete] = w.exec.calls_for("DEL", "portmap")  # with the same mappings as ADD
    assert delete.stdin["runtimeConfig"]["portMappings"] == [mapping]
    nothing_left(w)


def test_failing_move_is_undone(w: World) -> None:
    w.links.fail["move_to_host"] = NetlinkFailure("cannot move")
    create_network(w.driver)
    with pytest.raises(NetlinkFailure):
        create_endpoint(w.driver)
    assert ("bridge", "DEL") in w.exec.commands()
    nothing_left(w)


def test_chain_contradicting_dockers_address_is_refused_and_undone(w: World) -> None:
    def other_address(stdin: dict[str, Any], env: Any) -> bytes:
        stdin["ipam"]["addresses"] = [{"address": "10.200.9.99/24"}]
        return w._bridge_add(stdin, env)

    w.exec.on("bridge", "ADD", other_address)
    create_network(w.driver)
    with pytest.raises(CNIError, match="Docker's IPAM assigned 10.200.9.7/24"):
        create_endpoint(w.driver)
    nothing_left(w)


def test_retried_create_endpoint_recreates(w: World) -> None:
    create_network(w.driver)
    create_endpoint(w.driver)
    create_endpoint(w.driver)
    assert len(w.exec.calls_for("ADD", "bridge")) == 2
    assert len(w.exec.calls_for("DEL", "bridge")) == 1
    assert list(w.driver.endpoints) == [EP]


def test_restart_serves_the_same_state(w: World) -> None:
    create_network(w.driver)
    create_endpoint(w.driver)
    again = Driver(w.driver.settings, cni=w.driver.cni, store=Store(w.driver.settings.state_dir),
                   links=w.links, docker_view=lambda: None, rules=w.rules)
    assert set(again.networks) == {NET} and set(again.endpoints) == {EP}
    again.delete_endpoint(EndpointRequest.from_json({"NetworkID": NET, "EndpointID": EP}))
    again.delete_network(NET)
    assert again.networks == {} and again.endpoints == {}


def test_crash_mid_create_is_reconciled(w: World) -> None:
    """A record left in phase "creating" (the process died) is torn down by gc."""
    create_network(w.driver)
    create_endpoint(w.driver)
    rec = w.driver.endpoints[EP]
    rec.phase = "creating"
    w.driver.store.save_endpoint(rec)
    actions = w.driver.gc()
    assert any("half-made" in a for a in actions)
    nothing_left(w)


def test_gc_dry_run_changes_nothing(w: World) -> None:
    w.links.create_netns("pycni-" + "12" * 6)
    assert w.driver.gc(dry_run=True) == [f"netns pycni-{'12' * 6}: no endpoint; removed"]
    assert w.links.list_netns() == ["pycni-" + "12" * 6]
    w.driver.gc()
    assert w.links.list_netns() == []


def test_options_and_ipam_mismatches(w: World, tmp_path: Any) -> None:
    with pytest.raises(InvalidRequest, match="unknown option 'cni.nework'"):
        create_network(w.driver, **{"cni.nework": "x"})
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-dh.conflist").write_text(json.dumps({
        "cniVersion": "1.0.0", "name": "dh",
        "plugins": [{"type": "bridge", "ipam": {"type": "dhcp"}}]}))
    object.__setattr__(w.driver.settings, "conf_dir", str(conf))
    with pytest.raises(ConfigError, match="--ipam-driver null"):
        create_network(w.driver, **{"cni.network": "dh"})
    null = {"NetworkID": NET, "Options": {}, "IPv4Data": [{"AddressSpace": "null",
                                                           "Pool": "0.0.0.0/0"}]}
    with pytest.raises(InvalidRequest, match="Docker's IPAM"):
        w.driver.create_network(CreateNetworkRequest.from_json(null), null)
    with pytest.raises(Unsupported, match="swarm"):
        w.driver.allocate_network()


def test_gc_sends_cni_1_1_plugins_the_valid_attachments(w: World, tmp_path: Any) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-new.conflist").write_text(json.dumps({
        "cniVersion": "1.1.0", "name": "new",
        "plugins": [{"type": "bridge", "ipam": {"type": "host-local"}}]}))
    object.__setattr__(w.driver.settings, "conf_dir", str(conf))
    req = {"NetworkID": NET, "Options": {"com.docker.network.generic": {"cni.network": "new"}},
           "IPv4Data": [{"AddressSpace": "null", "Pool": "0.0.0.0/0"}], "IPv6Data": []}
    w.driver.create_network(CreateNetworkRequest.from_json(req), req)
    body = {"NetworkID": NET, "EndpointID": EP, "Interface": {}}
    w.driver.create_endpoint(CreateEndpointRequest.from_json(body), body)
    assert w.driver.gc() == []  # nothing stale
    [gc] = w.exec.calls_for("GC", "bridge")
    assert gc.stdin["cni.dev/valid-attachments"] == [{"containerID": EP, "ifname": "eth0"}]
    assert gc.stdin["cni.dev/attachments"] == gc.stdin["cni.dev/valid-attachments"]
    assert gc.env["CNI_COMMAND"] == "GC" and gc.stdin["cniVersion"] == "1.1.0"
