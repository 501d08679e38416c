"""The attachment core and its owner: the lock rule, reconciliation's sweeps, host ports.

On the driver's World of fakes (:mod:`tests.world`); nothing touches the host.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shim import dockerview, plugins, ports, reconcile
from shim.attach import Attacher, Attachment
from shim.cni import AddFailed, DelFailed, RuntimeConf
from shim.cni.config import conflist_from_dict
from shim.dockerview import DockerView
from shim.errors import CNIError
from shim.protocol import EndpointRequest
from shim.settings import Settings
from shim.state import Phase
from tests.fakes import FakeExec
from tests.world import EP, NET, World

pytestmark = pytest.mark.unit

OTHER = "ab" * 32


def docker_knows(networks: tuple[str, ...] = (), endpoints: tuple[str, ...] = ()) -> DockerView:
    return DockerView(frozenset(networks), frozenset(endpoints))


# --- the attachment core -------------------------------------------------------------------------


def chain(*types: str, version: str = "1.0.0") -> Any:
    return conflist_from_dict({"cniVersion": version, "name": "core",
                               "plugins": [{"type": t} for t in types]})


def test_a_failed_add_is_undone_with_the_partial_result_and_names_the_plugin(
        tmp_path: Path) -> None:
    fake = FakeExec().on("tuning", "ADD", CNIError("no such sysctl", code=7))
    from shim.cni import CNI
    attacher = Attacher(CNI(["/fake"], exec=fake, cache_dir=str(tmp_path)))
    att = Attachment("c1", "/run/netns/x", "eth0", chain("bridge", "tuning", "firewall"))
    with contextlib.ExitStack() as undo, pytest.raises(CNIError, match='"tuning" failed'):
        attacher.add(att, undo)
    assert fake.commands() == [("bridge", "ADD"), ("tuning", "ADD"),
                               ("firewall", "DEL"), ("tuning", "DEL"), ("bridge", "DEL")]


def test_an_undo_goes_on_past_a_failing_del_and_leaves_it_for_gc(tmp_path: Path) -> None:
    """The last plugin fails ADD and DEL: the plugins before it are still torn down, and what
    could not be undone stays in libcni's cache, where gc runs DEL again."""
    fake = (FakeExec().on("firewall", "ADD", CNIError("bad rule", code=7))
            .on("firewall", "DEL", CNIError("still bad", code=7)))
    from shim.cni import CNI
    cni = CNI(["/fake"], exec=fake, cache_dir=str(tmp_path))
    attacher = Attacher(cni)
    att = Attachment("c1", "/run/netns/x", "eth0", chain("bridge", "tuning", "firewall"))
    with contextlib.ExitStack() as undo, pytest.raises(AddFailed) as info:
        attacher.add(att, undo)
    assert fake.commands() == [("bridge", "ADD"), ("tuning", "ADD"), ("firewall", "ADD"),
                               ("firewall", "DEL"), ("tuning", "DEL"), ("bridge", "DEL")]
    assert '"firewall" failed (ADD): [code 7] bad rule' in str(info.value)
    assert 'undoing it failed too: CNI plugin "firewall" failed (DEL): [code 7] still bad' in str(
        info.value) and "pycni gc" in str(info.value)
    [kept] = cni.cached_attachments()
    assert (kept.container_id, kept.netns) == ("c1", "/run/netns/x")
    assert kept.result is not None  # bridge's and tuning's part, for DEL's prevResult
    fake.reset()
    fake.on("firewall", "DEL", b"")
    cni.delete(att.config, att.runtime())  # gc's turn: it works now
    assert fake.commands() == [("firewall", "DEL"), ("tuning", "DEL"), ("bridge", "DEL")]
    assert cni.cached_attachments() == []


def test_every_del_runs_and_all_failures_are_named(tmp_path: Path) -> None:
    fake = (FakeExec().on("firewall", "DEL", CNIError("one", code=7))
            .on("bridge", "DEL", CNIError("two", code=7)))
    from shim.cni import CNI
    cni = CNI(["/fake"], exec=fake, cache_dir=str(tmp_path))
    with pytest.raises(DelFailed) as info:
        cni.delete(chain("bridge", "tuning", "firewall"), RuntimeConf("c1", "/run/netns/x"))
    assert fake.commands() == [("firewall", "DEL"), ("tuning", "DEL"), ("bridge", "DEL")]
    assert [e.plugin for e in info.value.failures] == ["firewall", "bridge"]
    assert 'and CNI plugin "bridge" failed (DEL): [code 7] two' in str(info.value)


def test_the_undo_of_a_good_add_is_a_del_with_the_same_arguments(tmp_path: Path) -> None:
    fake = FakeExec()
    from shim.cni import CNI
    attacher = Attacher(CNI(["/fake"], exec=fake, cache_dir=str(tmp_path)))
    att = Attachment("c1", "/run/netns/x", "eth0", chain("bridge"), cni_args=(("K", "V"),))
    with contextlib.ExitStack() as undo:
        attacher.add(att, undo)
    [add] = fake.calls_for("ADD")
    [delete] = fake.calls_for("DEL")
    assert delete.env["CNI_ARGS"] == add.env["CNI_ARGS"] == "K=V"
    assert delete.env["CNI_NETNS"] == add.env["CNI_NETNS"] == "/run/netns/x"


def test_idle_plugins_are_skipped_until_their_capability_is_used() -> None:
    config = conflist_from_dict({"cniVersion": "1.0.0", "name": "n", "plugins": [
        {"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": True}}]})
    assert plugins.effective(config, {}).plugin_types() == ["bridge"]
    assert plugins.effective(config, {"portMappings": []}).plugin_types() == ["bridge", "portmap"]


@pytest.mark.parametrize(("plugin", "conf", "needs"), [
    ("bridge", {}, False), ("bridge", {"ipMasq": True}, True), ("ptp", {}, True),
    ("macvlan", {}, False), ("portmap", {}, False), ("some-third-party", {}, True),
])
def test_which_del_needs_the_link_back(plugin: str, conf: dict[str, Any], needs: bool) -> None:
    config = conflist_from_dict({"cniVersion": "1.0.0", "name": "n",
                                 "plugins": [{"type": plugin, **conf}]})
    assert plugins.del_needs_link(config) is needs


# --- the lock rule -------------------------------------------------------------------------------


def test_a_sweep_leaves_alone_what_an_endpoint_being_created_holds(world: World) -> None:
    """gc runs while CreateEndpoint is inside ADD: its namespace, record and link survive."""
    world.create_network()
    inside, go_on = threading.Event(), threading.Event()
    add = world.bridge.add

    def slow_add(stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
        inside.set()
        assert go_on.wait(10)
        return add(stdin, env)

    world.exec.on("bridge", "ADD", slow_add)
    creating = threading.Thread(target=world.create_endpoint)
    creating.start()
    try:
        assert inside.wait(10)
        actions: list[str] = []
        sweeping = threading.Thread(target=lambda: actions.extend(reconcile.gc(world.driver)))
        sweeping.start()
        time.sleep(0.2)  # let the sweep reach the endpoint's lock, and wait there
    finally:
        go_on.set()
        creating.join(10)
    sweeping.join(10)
    assert actions == []  # once CreateEndpoint was done, nothing of it was stale
    assert world.driver.endpoints[EP].phase == Phase.READY
    world.consistent()


def test_a_sweep_does_not_remove_a_namespace_whose_id_is_claimed(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    # The endpoint's namespace and link are named after its id: never strays.
    assert reconcile.gc(world.driver) == []
    with world.driver.registry.sweeping(EP[:12]) as claimed:
        assert not claimed
    world.consistent()


def test_verbs_on_two_networks_and_sweeps_run_side_by_side(world: World) -> None:
    """Endpoints come and go on two networks while gc sweeps; the books stay exact."""
    world.create_network(NET)
    world.create_network(OTHER, ipv4=[{"AddressSpace": "LocalDefault",
                                       "Pool": "10.200.10.0/24",
                                       "Gateway": "10.200.10.1/24"}])
    errors: list[BaseException] = []
    lock = threading.Lock()  # the fakes themselves are not thread-safe: one plugin at a time
    for plugin in ("bridge",):
        for verb in ("ADD", "DEL"):
            handler = world.bridge.add if verb == "ADD" else world.bridge.delete

            def serialized(stdin: dict[str, Any], env: Mapping[str, str],
                           handler: Any = handler) -> bytes:
                with lock:
                    out: bytes = handler(stdin, env)
                    return out

            world.exec.on(plugin, verb, serialized)

    def churn(network: str, prefix: str, subnet: str) -> None:
        try:
            for n in range(15):
                eid = f"{prefix}{n:02x}" * 22
                world.create_endpoint(eid[:64], network, address=f"{subnet}.{n + 10}/24")
                world.delete_endpoint(eid[:64], network)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def sweep() -> None:
        try:
            for _ in range(15):
                reconcile.gc(world.driver)
                assert isinstance(world.driver.endpoints, dict)  # a snapshot, mid-change
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=churn, args=(NET, "1", "10.200.9")),
               threading.Thread(target=churn, args=(OTHER, "2", "10.200.10")),
               threading.Thread(target=sweep)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert world.driver.endpoints == {}
    world.consistent()


# --- reconciliation ------------------------------------------------------------------------------


def test_gc_never_removes_a_network_docker_was_not_asked_about(world: World) -> None:
    """A network made under the driver name "pycni" is not "unknown to Docker" because Docker
    has no network of driver "cni" (the name once guessed from a socket called cni.sock)."""
    world.create_network()
    renamed = Settings(**{**world.settings.__dict__, "driver_name": "cni"})
    world.settings = renamed
    driver = world.restart()
    assert reconcile.gc(driver, view=docker_knows()) == []
    assert NET in driver.networks and world.rules.networks


def test_gc_removes_a_network_docker_positively_forgot(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    # Docker asks the driver before it stores a network: a young one may not be listed yet.
    report = reconcile.run(world.driver, view=docker_knows())
    assert report.actions == [] and NET in report.pending
    world.driver.networks[NET].created -= 2 * reconcile.STALE_AFTER
    assert reconcile.gc(world.driver, view=docker_knows()) == [
        f"network {NET[:12]}: unknown to Docker; removed"]
    assert world.driver.networks == {} and world.leftovers() == {}


def test_the_driver_name_is_a_setting_never_the_sockets_name() -> None:
    settings = Settings.from_env({}, socket_path="/tmp/x/cni.sock")
    assert settings.driver_name == "pycni"
    assert Settings.from_env({"PYCNI_DRIVER_NAME": "pycni:latest"}).driver_name == "pycni:latest"


def forgotten_endpoint(world: World, sandbox: Path) -> None:
    """An endpoint publishing a port whose container Docker no longer lists."""
    world.create_network()
    world.create_endpoint()
    world.join(sandbox=str(sandbox), move=False)
    world.driver.program_external(EndpointRequest.from_json({
        "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.portmap": [
            {"Proto": 6, "Port": 80, "HostIP": "127.0.0.1", "HostPort": 48080}]}}))
    rec = world.driver.endpoints[EP]
    rec.created -= 2 * reconcile.STALE_AFTER
    world.driver.store.save_endpoint(rec)
    world.restart()


def test_an_endpoint_whose_sandbox_lives_is_pending_then_reaped(
        world: World, tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.touch()
    forgotten_endpoint(world, sandbox)
    report = reconcile.run(world.driver, view=docker_knows(networks=(NET,)))
    assert report.actions == [] and report.pending == [EP]
    sandbox.unlink()  # Docker dropped the sandbox
    report = reconcile.run(world.driver, view=docker_knows(networks=(NET,)))
    assert [str(a) for a in report.actions] == [
        f"endpoint {EP[:12]}: Docker no longer knows it; torn down"]
    assert report.pending == [] and world.driver.ports.held() == {}


def test_the_reconciler_keeps_looking_while_something_is_pending(
        world: World, tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.touch()
    forgotten_endpoint(world, sandbox)
    world.driver.docker_view = lambda: docker_knows(networks=(NET,))
    reconciler = reconcile.Reconciler(world.driver, interval=0.05, patience=5)
    reconciler.start()
    try:
        time.sleep(0.3)
        assert EP in world.driver.endpoints  # spared while its sandbox lives
        sandbox.unlink()
        deadline = time.monotonic() + 5
        while EP in world.driver.endpoints and time.monotonic() < deadline:
            time.sleep(0.05)
        assert EP not in world.driver.endpoints
    finally:
        reconciler.stop()


def test_dry_run_only_reports(world: World) -> None:
    world.links.create_netns("pycni-" + "12" * 6)
    world.links.create_netns("pycni-" + "34" * 6)
    before = world.links.list_netns()
    lines = reconcile.gc(world.driver, dry_run=True)
    assert sorted(lines) == [f"netns pycni-{'12' * 6}: no endpoint; removed",
                             f"netns pycni-{'34' * 6}: no endpoint; removed"]
    assert world.links.list_netns() == before


# --- host ports ----------------------------------------------------------------------------------


def test_a_port_held_by_another_endpoint_names_its_holder() -> None:
    publisher = ports.Publisher()
    publisher.load([("e" * 64, [ports.Mapping.from_cni(
        {"hostPort": 48081, "containerPort": 80, "protocol": "tcp"})])])
    binding = ports.Binding("tcp", 80, "", 48081, 48081)
    with pytest.raises(ports.PortInUse, match="already in use") as exc, \
            publisher.reserve("f" * 64, [binding]):
        pass
    assert exc.value.holder == "e" * 64 and exc.value.key == ("tcp", "", 48081)


def test_a_port_conflict_names_the_container_docker_lists_or_points_at_gc(world: World) -> None:
    world.create_network()
    world.create_endpoint()
    world.create_endpoint("f" * 64, address="10.200.9.8/24")
    world.driver.ports.load([(EP, [ports.Mapping.from_cni(
        {"hostPort": 48081, "containerPort": 80, "protocol": "tcp"})])])
    req = EndpointRequest(NET, "f" * 64, {"com.docker.network.portmap": [
        {"Proto": 6, "Port": 80, "HostPort": 48081, "HostPortEnd": 48081}]})
    world.driver.docker_names = lambda: dockerview.Names(
        endpoints={EP: dockerview.Container("c" * 64, "/web-1")})
    with pytest.raises(ports.PortInUse, match=r"port 48081 .* in use: container web-1 publishes it$"):
        world.driver.program_external(req)
    world.driver.docker_names = dockerview.Names
    with pytest.raises(ports.PortInUse, match=rf"endpoint {EP[:12]} on network {NET[:12]}, whose "
                       "container Docker doesn't list; .*`pycni gc`"):
        world.driver.program_external(req)


def test_ports_are_released_when_the_plugins_refuse_them() -> None:
    publisher = ports.Publisher()
    binding = ports.Binding("tcp", 80, "127.0.0.1", 48082, 48082)
    with pytest.raises(RuntimeError), publisher.reserve("a" * 64, [binding]):
        raise RuntimeError("portmap failed")
    assert publisher.held() == {}
    with publisher.reserve("b" * 64, [binding]) as chosen:
        assert [m.host_port for m in chosen] == [48082]


def test_a_restart_puts_back_the_rules_a_reboot_lost(world: World) -> None:
    world.create_network()
    rules = dict(world.rules.networks)
    world.rules.networks.clear()  # a reboot, or an admin's iptables -F
    world.restart()
    assert world.rules.networks == rules


def test_networks_are_created_one_at_a_time(world: World) -> None:
    """Each new network is checked against the others: two are never made at once."""
    registry = world.driver.registry
    inside = threading.Event()
    order: list[str] = []

    def first() -> None:
        with registry.creating("a" * 64):
            inside.set()
            time.sleep(0.2)
            order.append("first done")

    def second() -> None:
        assert inside.wait(5)
        with registry.creating("b" * 64):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["first done", "second in"]


def test_a_port_the_none_mode_holds_is_refused_by_the_driver_naming_its_holder(
        world: World) -> None:
    """pycni attach -p holds its port with DNAT alone (no socket): the driver's Publisher reads
    the other mode's records, as that mode reads the driver's."""
    from shim.attach import Attachment
    from shim.state import ContainerRecord
    world.create_network()
    world.create_endpoint()
    chain_ = conflist_from_dict({"cniVersion": "1.0.0", "name": "nm", "plugins": [
        {"type": "portmap", "capabilities": {"portMappings": True}}]})
    world.driver.store.save_container(ContainerRecord(
        network="nm", attachment=Attachment("c" * 64, "/run/netns/x", "eth0", chain_,
                                            capability_args={"portMappings": [
                                                {"hostPort": 48083, "containerPort": 80,
                                                 "protocol": "tcp"}]}),
        name="db", pid=1))
    req = EndpointRequest(NET, EP, {"com.docker.network.portmap": [
        {"Proto": 6, "Port": 80, "HostPort": 48083, "HostPortEnd": 48083}]})
    with pytest.raises(ports.PortInUse, match=r"port 48083 .* in use: container db publishes it "
                                              r"\(pycni attach, on nm\)"):
        world.driver.program_external(req)
    assert world.driver.ports.held() == {}
