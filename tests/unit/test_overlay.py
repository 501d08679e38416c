"""The overlay's leases, definition and manager against an in-memory etcd and fake VTEPs."""

from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from shim.errors import InvalidRequest, OverlayError, StoreUnavailable, Unsupported
from shim.health.findings import Finding
from shim.health.overlays import check_overlays
from shim.overlay import chain, leases
from shim.overlay.leases import Asked, Holder
from shim.overlay.manager import Joined, Overlays, read_records
from shim.overlay.vtep import Entry, HostRoute, mac_for
from shim.protocol import ENABLE_IPV6, INTERNAL, CreateNetworkRequest
from shim.settings import Settings
from tests.fakeetcd import FakeEtcd, FakeVteps
from tests.world import NET as NET_ID
from tests.world import NULL_IPAM, World

pytestmark = pytest.mark.unit

NET = ipaddress.IPv4Network
RANGE = NET("10.202.0.0/16")


def asked(**kw: Any) -> Asked:
    return Asked(kw.pop("name", "ov"), kw.pop("subnet", RANGE), **kw)


def host(kv: FakeEtcd, tmp_path: Path, underlay: str, vteps: FakeVteps | None = None
         ) -> Overlays:
    state = tmp_path / underlay
    return Overlays(kv, str(state), underlay, vteps=vteps or FakeVteps(), ttl=60,
                    default_mtu=1450)


# --- definition ----------------------------------------------------------------------------------


def test_first_host_writes_the_definition_later_ones_read_it() -> None:
    kv = FakeEtcd()
    first = leases.define(kv, asked(prefix=26), default_mtu=1450)
    assert first.prefix == 26 and first.mtu == 1450 and first.vni == leases.default_vni("ov")
    assert json.loads(kv.data[leases.definition_key("ov")][0])["subnet"] == "10.202.0.0/16"
    # a later host with its own underlay MTU takes the overlay's
    assert leases.define(kv, asked(), default_mtu=9000) == first


def test_a_contradicting_create_is_refused_naming_each_difference() -> None:
    kv = FakeEtcd()
    leases.define(kv, asked(vni=42), default_mtu=1450)
    with pytest.raises(InvalidRequest) as err:
        leases.define(kv, asked(subnet=NET("10.203.0.0/16"), vni=43, mtu=1400),
                      default_mtu=1450)
    text = str(err.value)
    assert "overlay ov is defined in etcd at http://fake:2379" in text
    assert "subnet 10.202.0.0/16, not 10.203.0.0/16" in text
    assert "VNI 42, not 43" in text and "MTU 1450, not 1400" in text


@pytest.mark.parametrize("bad", [asked(prefix=16), asked(prefix=31), asked(vni=0),
                                 asked(vni=1 << 24)])
def test_impossible_definitions_are_refused_before_anything_is_written(bad: Asked) -> None:
    kv = FakeEtcd()
    with pytest.raises(InvalidRequest):
        leases.define(kv, bad, default_mtu=1450)
    assert kv.data == {}


# --- leases --------------------------------------------------------------------------------------


def test_hosts_get_different_subnets_the_first_one_too() -> None:
    kv = FakeEtcd()
    definition = leases.define(kv, asked(), 1450)
    got = set()
    for n in range(5):
        lease = kv.grant(60)
        got.add(leases.claim(kv, "ov", definition, Holder(f"10.203.254.{n}", "m"), lease))
    assert got == {NET(f"10.202.{n}.0/24") for n in range(5)}


def test_racing_hosts_get_different_subnets() -> None:
    kv = FakeEtcd()
    definition = leases.define(kv, asked(), 1450)
    got: list[NET] = []
    barrier = threading.Barrier(8)

    def race(n: int) -> None:
        lease = kv.grant(60)
        barrier.wait()
        got.append(leases.claim(kv, "ov", definition, Holder(f"10.203.254.{n}", "m"), lease))

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8


def test_a_full_overlay_says_so() -> None:
    kv = FakeEtcd()
    definition = leases.define(kv, asked(subnet=NET("10.202.0.0/23")), 1450)
    leases.claim(kv, "ov", definition, Holder("a", "m"), kv.grant(60))
    leases.claim(kv, "ov", definition, Holder("b", "m"), kv.grant(60))  # a /23 serves two hosts
    with pytest.raises(OverlayError, match=r"no /24 of 10.202.0.0/23 is free"):
        leases.claim(kv, "ov", definition, Holder("c", "m"), kv.grant(60))


def test_a_host_takes_its_own_subnet_back_never_another_hosts() -> None:
    kv = FakeEtcd()
    definition = leases.define(kv, asked(), 1450)
    me, other = Holder("10.203.254.1", "m1"), Holder("10.203.254.2", "m2")
    old = kv.grant(60)
    mine = leases.claim(kv, "ov", definition, me, old)
    # pycni restarted: the key is still there under the old lease — it is ours
    new = kv.grant(60)
    assert leases.claim(kv, "ov", definition, me, new, mine, only_prefer=True) == mine
    assert kv.data[leases.lease_key("ov", mine)][1] == new
    kv.expire(new)  # the key is gone: it is taken again
    again = kv.grant(60)
    assert leases.claim(kv, "ov", definition, me, again, mine, only_prefer=True) == mine
    with pytest.raises(OverlayError, match="is held by host 10.203.254.1"):
        leases.claim(kv, "ov", definition, other, kv.grant(60), mine, only_prefer=True)


def test_the_last_host_to_leave_removes_the_definition() -> None:
    kv = FakeEtcd()
    definition = leases.define(kv, asked(), 1450)
    a, b = Holder("a", "m"), Holder("b", "m")
    la, lb = kv.grant(60), kv.grant(60)
    sa = leases.claim(kv, "ov", definition, a, la)
    sb = leases.claim(kv, "ov", definition, b, lb)
    assert leases.peers(kv, "ov", sa) == [leases.Peer(sb, "b", "m")]
    leases.release(kv, "ov", sa, a, la)
    assert leases.definition_key("ov") in kv.data
    leases.release(kv, "ov", sb, b, lb)
    assert kv.data == {} and kv.leases == {}


# --- the manager ---------------------------------------------------------------------------------


def test_join_programs_peers_and_leave_removes_everything(tmp_path: Path) -> None:
    kv = FakeEtcd()
    va, vb = FakeVteps(), FakeVteps()
    a, b = host(kv, tmp_path, "10.203.254.1", va), host(kv, tmp_path, "10.203.254.2", vb)
    ja = a.join("neta", asked())
    jb = b.join("netb", asked())
    assert ja.subnet != jb.subnet and ja.vtep == jb.vtep
    _vni, underlay, address, mac, mtu = va.links[ja.vtep]
    assert (underlay, address, mac, mtu) == ("10.203.254.1", "10.202.0.0",
                                             mac_for("ov", "10.203.254.1"), 1450)
    a.tick()
    assert va.programmed[ja.vtep] == [Entry(jb.subnet, "10.203.254.2", jb.mac)]
    assert vb.programmed[jb.vtep] == [Entry(ja.subnet, "10.203.254.1", ja.mac)]
    assert read_records(a.state_dir)["neta"].peers[0].underlay == "10.203.254.2"
    b.leave("netb")
    a.tick()
    assert va.programmed[ja.vtep] == [] and vb.links == {}
    a.leave("neta")
    assert kv.data == {} and kv.leases == {} and va.links == {}
    assert not os.path.exists(os.path.join(a.state_dir, "overlays"))


def test_a_peer_whose_lease_expires_loses_its_routes(tmp_path: Path) -> None:
    kv = FakeEtcd()
    va = FakeVteps()
    a, b = host(kv, tmp_path, "10.203.254.1", va), host(kv, tmp_path, "10.203.254.2")
    ja = a.join("neta", asked())
    jb = b.join("netb", asked())
    a.tick()
    assert len(va.programmed[ja.vtep]) == 1
    kv.expire(jb.lease)  # host B vanished for good
    a.tick()
    assert va.programmed[ja.vtep] == []


def test_store_down_keeps_routes_and_a_lost_lease_comes_back_with_the_same_subnet(
        tmp_path: Path) -> None:
    kv = FakeEtcd()
    va = FakeVteps()
    a, b = host(kv, tmp_path, "10.203.254.1", va), host(kv, tmp_path, "10.203.254.2")
    ja = a.join("neta", asked())
    b.join("netb", asked())
    a.tick()
    kv.down = True
    a.tick()  # nothing raised, nothing removed
    assert len(va.programmed[ja.vtep]) == 1
    kv.down = False
    kv.expire(ja.lease)  # etcd lost it meanwhile
    a.ttl = 0  # due for renewal now
    a.tick()
    renewed = a.get("neta")
    assert renewed is not None and renewed.subnet == ja.subnet and renewed.lease != ja.lease
    assert kv.data[leases.lease_key("ov", ja.subnet)][1] == renewed.lease
    assert read_records(a.state_dir)["neta"].lease == renewed.lease


def test_a_restarted_host_keeps_its_subnet(tmp_path: Path) -> None:
    kv = FakeEtcd()
    vteps = FakeVteps()
    first = host(kv, tmp_path, "10.203.254.1", vteps)
    joined = first.join("neta", asked())
    vteps.links.clear()  # a reboot: no VTEP
    again = host(kv, tmp_path, "10.203.254.1", vteps)
    again.load()
    assert joined.vtep in vteps.links
    assert again.get("neta") == joined
    again.tick()
    assert kv.data[leases.lease_key("ov", joined.subnet)][1] == joined.lease


def test_join_with_the_store_down_leaves_nothing(tmp_path: Path) -> None:
    kv = FakeEtcd(down=True)
    vteps = FakeVteps()
    a = host(kv, tmp_path, "10.203.254.1", vteps)
    with pytest.raises(StoreUnavailable, match="etcd at http://fake:2379 did not answer"):
        a.join("neta", asked())
    assert vteps.links == {} and read_records(a.state_dir) == {}


def test_join_failing_at_the_vtep_gives_the_subnet_back(tmp_path: Path) -> None:
    kv = FakeEtcd()

    class Refusing(FakeVteps):
        def ensure(self, *args: Any) -> None:
            raise OverlayError("kernel says no")

    a = Overlays(kv, str(tmp_path), "10.203.254.1", vteps=Refusing(), default_mtu=1450)
    with pytest.raises(OverlayError, match="kernel says no"):
        a.join("neta", asked())
    assert kv.data == {} and kv.leases == {}


def test_leave_with_the_store_down_removes_the_local_side(tmp_path: Path) -> None:
    kv = FakeEtcd()
    vteps = FakeVteps()
    a = host(kv, tmp_path, "10.203.254.1", vteps)
    a.join("neta", asked())
    kv.down = True
    a.leave("neta")
    assert vteps.links == {} and read_records(a.state_dir) == {}


def test_one_network_per_overlay_per_host(tmp_path: Path) -> None:
    a = host(FakeEtcd(), tmp_path, "10.203.254.1")
    a.join("neta", asked())
    with pytest.raises(OverlayError, match="already joined on this host"):
        a.join("netb", asked())


# --- options and chain ---------------------------------------------------------------------------


def request(options: dict[str, str], *, null_ipam: bool = True) -> CreateNetworkRequest:
    pool = {"AddressSpace": "null", "Pool": "0.0.0.0/0"} if null_ipam else {
        "AddressSpace": "LocalDefault", "Pool": "10.202.0.0/16", "Gateway": "10.202.0.1/16"}
    return CreateNetworkRequest.from_json({
        "NetworkID": "ab" * 32,
        "Options": {"com.docker.network.generic": options},
        "IPv4Data": [pool],
        "IPv6Data": [],
    })


def test_options_make_an_overlay_request() -> None:
    got = chain.asked(request({"cni.overlay": "ov", "cni.overlay.subnet": "10.202.0.0/16",
                               "cni.overlay.prefix": "25", "cni.mtu": "1400"}))
    assert got == Asked("ov", RANGE, 25, None, 1400)
    assert chain.asked(request({})) is None


@pytest.mark.parametrize(("options", "null_ipam", "error", "match"), [
    ({"cni.overlay": "ov"}, True, InvalidRequest, "needs -o cni.overlay.subnet"),
    ({"cni.overlay": "ov", "cni.overlay.subnet": "10.202.0.0/16"}, False, InvalidRequest,
     "--ipam-driver null"),
    ({"cni.overlay.subnet": "10.202.0.0/16"}, True, InvalidRequest, "needs -o cni.overlay=NAME"),
    ({"cni.overlay": "ov", "cni.overlay.subnet": "fd00::/64"}, True, InvalidRequest, "IPv4"),
    ({"cni.overlay": "o/v", "cni.overlay.subnet": "10.202.0.0/16"}, True, InvalidRequest,
     "letters"),
    ({"cni.overlay": "ov", "cni.overlay.subnet": "10.202.0.0/16", "cni.network": "x"}, True,
     InvalidRequest, "exclude each other"),
])
def test_bad_overlay_options_are_refused(options: dict[str, str], null_ipam: bool,
                                         error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        chain.asked(request(options, null_ipam=null_ipam))


@pytest.mark.parametrize(("flag", "named"), [(INTERNAL, "--internal"),
                                             (ENABLE_IPV6, "IPv4 only.*without --ipv6")])
def test_internal_and_ipv6_overlays_are_refused(flag: str, named: str) -> None:
    req = CreateNetworkRequest.from_json({
        "NetworkID": "ab" * 32,
        "Options": {"com.docker.network.generic": {"cni.overlay": "ov",
                                                   "cni.overlay.subnet": "10.202.0.0/16"},
                    flag: True},
        "IPv4Data": [{"AddressSpace": "null", "Pool": "0.0.0.0/0"}],
        "IPv6Data": [],
    })
    with pytest.raises(Unsupported, match=named):
        chain.asked(req)


def test_the_chain_is_a_bridge_with_host_local_on_the_lease(tmp_path: Path) -> None:
    a = host(FakeEtcd(), tmp_path, "10.203.254.1")
    req = request({"cni.overlay": "ov", "cni.overlay.subnet": "10.202.0.0/16"})
    joined = a.join(req.network_id, asked())
    resolved = chain.resolve(req, joined, "/var/lib/cni")
    bridge = resolved.config.raw["plugins"][0]
    assert bridge["mtu"] == 1450 and bridge["isGateway"] is True
    assert bridge["ipam"] == {
        "type": "host-local", "dataDir": "/var/lib/cni/networks",
        "ranges": [[{"subnet": "10.202.0.0/24", "gateway": "10.202.0.1"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
    }
    assert resolved.config.plugin_types() == ["bridge", "portmap"]
    assert (resolved.ipam, resolved.address_via) == ("cni", "")
    assert resolved.firewall is not None
    assert (resolved.firewall.peers, resolved.firewall.peer_subnet) == (joined.vtep,
                                                                         "10.202.0.0/16")


# --- through the driver --------------------------------------------------------------------------


def overlay_world(tmp_path: Path, kv: FakeEtcd) -> tuple[World, FakeVteps]:
    world = World(tmp_path / "world")
    vteps = FakeVteps()
    world.driver.overlays = Overlays(kv, world.settings.state_dir, "10.203.254.1", vteps=vteps,
                                     default_mtu=1450)
    return world, vteps


OVERLAY = {"cni_overlay": "ov", "cni_overlay.subnet": "10.202.0.0/16"}


def test_the_driver_creates_and_removes_an_overlay_network(tmp_path: Path) -> None:
    kv = FakeEtcd()
    world, vteps = overlay_world(tmp_path, kv)
    world.create_network(NET_ID, ipv4=NULL_IPAM, **OVERLAY)
    record = world.driver.networks[NET_ID]
    assert record.config.raw["plugins"][0]["ipam"]["ranges"] == [
        [{"subnet": "10.202.0.0/24", "gateway": "10.202.0.1"}]]
    assert record.firewall is not None
    assert world.rules.networks[NET_ID]["bridge"] == record.firewall.bridge
    assert list(vteps.links) == [f"pycni.{leases.default_vni('ov')}"]
    world.driver.delete_network(NET_ID)
    assert kv.data == {} and vteps.links == {} and world.rules.networks == {}
    assert read_records(world.settings.state_dir) == {}


def test_a_new_container_on_a_network_whose_subnet_was_taken_is_refused_naming_why(
        tmp_path: Path) -> None:
    kv = FakeEtcd()
    world, _vteps = overlay_world(tmp_path, kv)
    world.create_network(NET_ID, ipv4=NULL_IPAM, **OVERLAY)
    overlays = world.driver.overlays
    assert overlays is not None
    joined = overlays.get(NET_ID)
    assert joined is not None
    kv.expire(joined.lease)
    host(kv, tmp_path, "10.203.254.3").join("netc", asked())
    overlays.ttl = 0
    overlays.tick()
    before = len(world.exec.calls)
    with pytest.raises(OverlayError, match=r"10.202.0.0/24 is held by host 10.203.254.3"):
        world.create_endpoint(address="")
    assert world.driver.endpoints == {} and world.exec.calls[before:] == []


def test_etcd_unreachable_at_create_is_a_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    kv = FakeEtcd(down=True)
    world, vteps = overlay_world(tmp_path, kv)
    with pytest.raises(StoreUnavailable, match=r"etcd at http://fake:2379 did not answer"):
        world.create_network(NET_ID, ipv4=NULL_IPAM, **OVERLAY)
    assert world.driver.networks == {} and vteps.links == {} and world.rules.networks == {}


def test_a_failure_after_the_lease_gives_it_back(tmp_path: Path) -> None:
    kv = FakeEtcd()
    world, vteps = overlay_world(tmp_path, kv)
    world.rules.fail["add_network"] = OverlayError("iptables says no")
    with pytest.raises(OverlayError):
        world.create_network(NET_ID, ipv4=NULL_IPAM, **OVERLAY)
    assert kv.data == {} and vteps.links == {} and world.driver.networks == {}


def test_without_etcd_an_overlay_network_is_refused(tmp_path: Path) -> None:
    world = World(tmp_path / "world")
    with pytest.raises(InvalidRequest, match="start it with --etcd URL"):
        world.create_network(NET_ID, ipv4=NULL_IPAM, **OVERLAY)


def test_a_pycni_without_etcd_still_removes_an_overlay_networks_local_side(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kv = FakeEtcd()
    world, _vteps = overlay_world(tmp_path, kv)
    world.create_network(NET_ID, ipv4=NULL_IPAM, **OVERLAY)
    driver = world.restart()  # now without --etcd
    assert driver.overlays is None
    deleted: list[str] = []
    monkeypatch.setattr("shim.overlay.vtep.delete", deleted.append)
    driver.delete_network(NET_ID)
    assert deleted == [f"pycni.{leases.default_vni('ov')}"]
    assert read_records(world.settings.state_dir) == {}
    assert leases.definition_key("ov") in kv.data  # the lease expires by itself


@pytest.mark.parametrize("vni", [1, 4242, 0xFFFFFF])
def test_reconciliation_never_takes_a_vtep_for_a_stray_link(vni: int) -> None:
    from shim import staging
    from shim.overlay.vtep import name_for

    name = name_for(vni)
    assert len(name.encode()) <= 15  # the kernel's limit
    assert not staging.HOST_LINK_NAME.fullmatch(name)
    assert not staging.NETNS_NAME.fullmatch(name)


def test_settings_take_etcd_and_the_underlay_from_the_environment() -> None:
    from shim.settings import Settings

    settings = Settings.from_env({
        "PYCNI_ETCD": "https://10.203.253.1:2379", "PYCNI_ETCD_CA": "/ca.pem",
        "PYCNI_ETCD_CERT": "/c.pem", "PYCNI_ETCD_KEY": "/k.pem",
        "PYCNI_UNDERLAY_ADDRESS": "10.203.253.2", "PYCNI_OVERLAY_TTL": "30"},
        underlay_address="10.203.253.9")
    assert (settings.etcd, settings.etcd_ca, settings.etcd_cert, settings.etcd_key) == (
        "https://10.203.253.1:2379", "/ca.pem", "/c.pem", "/k.pem")
    assert settings.underlay_address == "10.203.253.9"  # the flag wins
    assert settings.overlay_ttl == 30
    assert Settings.from_env({}).etcd == ""


@pytest.mark.parametrize("url", ["10.0.0.1:2379", "ftp://x:1", "http://"])
def test_a_bad_etcd_url_is_named(url: str) -> None:
    from shim.overlay.store import Endpoint

    with pytest.raises(InvalidRequest, match="expected http"):
        Endpoint(url).parts()


def test_a_leave_during_a_tick_is_not_undone_by_it(tmp_path: Path) -> None:
    """The loop works on a snapshot; a leave that lands in the middle of a round must not be
    undone by the rest of it: no VTEP made again, no subnet claimed again under a new lease,
    no definition key written back without one."""
    kv = FakeEtcd()
    in_tick, go_on = threading.Event(), threading.Event()

    class Pausing(FakeVteps):
        pause = False

        def ensure(self, *args: Any) -> None:
            if self.pause:
                in_tick.set()
                go_on.wait(5)
            super().ensure(*args)

    vteps = Pausing()
    a = host(kv, tmp_path, "10.203.254.1", vteps)
    a.join("neta", asked())
    a.ttl = 0  # every round renews, and the leave's revoke makes the lease look expired
    vteps.pause = True
    ticking = threading.Thread(target=a.tick)
    ticking.start()
    assert in_tick.wait(5)
    leaving = threading.Thread(target=a.leave, args=("neta",))
    leaving.start()
    leaving.join(0.5)  # it waits for the round (fixed) or runs right through (the race)
    vteps.pause = False
    go_on.set()
    ticking.join(5)
    leaving.join(5)
    assert not ticking.is_alive() and not leaving.is_alive()
    assert vteps.links == {}, "the round made the VTEP again"
    assert kv.data == {}, "the round claimed the subnet (or the definition) again"
    assert kv.leases == {}
    assert a.get("neta") is None and read_records(a.state_dir) == {}


def test_an_mtu_the_underlay_cannot_carry_is_refused_on_every_host(tmp_path: Path) -> None:
    """-o cni.mtu=9000 on a 1500-byte underlay: refused before anything is written; and a
    host whose underlay is smaller than the one the overlay was defined on refuses to join."""
    kv = FakeEtcd()
    small = host(kv, tmp_path, "10.203.254.1")  # 1450 bytes of room (a 1500-byte underlay)
    with pytest.raises(OverlayError, match=r"MTU 9000 does not fit this host's underlay.*"
                                           r"leaves 1450 bytes.*-o cni.mtu=1450 or less"):
        small.join("neta", asked(mtu=9000))
    assert kv.get_prefix("/pycni/") == {}
    big = Overlays(kv, str(tmp_path / "big"), "10.203.254.2", vteps=FakeVteps(), ttl=60,
                   default_mtu=8950)
    big.join("netb", asked(mtu=8950))
    with pytest.raises(OverlayError, match="MTU 8950 does not fit"):
        small.join("neta", asked())
    assert len(kv.get_prefix(leases.leases_prefix("ov"))) == 1  # big's lease only


# --- routes pycni doesn't own ----------------------------------------------------------------------


def test_a_claim_skips_subnets_that_collide_with_this_hosts_routes(tmp_path: Path) -> None:
    kv = FakeEtcd()
    va = FakeVteps(routes=[HostRoute(NET("10.202.0.0/23"), "br-docker1")])
    ja = host(kv, tmp_path, "10.203.254.1", va).join("neta", asked())
    assert ja.subnet == NET("10.202.2.0/24")  # 0 and 1 are the Docker network's
    definition = leases.define(kv, asked(name="ov2", subnet=NET("10.212.0.0/23")), 1450)
    with pytest.raises(OverlayError, match=r"2 collide with this host's routes "
                                           r"\(10.212.0.0/22 dev br-docker2\)"):
        leases.claim(kv, "ov2", definition, Holder("a", "m"), kv.grant(60),
                     avoid=[HostRoute(NET("10.212.0.0/22"), "br-docker2")])


def doctor_fails(record: Joined, kv: FakeEtcd) -> list[Finding]:
    """What ``pycni doctor`` FAILs for one overlay record."""
    return [f for f in check_overlays({record.network_id: record}, Settings(etcd="http://e"),
                                      lambda s: kv) if f.status == "FAIL"]


def test_a_peer_subnet_that_collides_is_not_routed_logged_once_and_told_by_doctor(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A Docker network made on host A inside host B's subnet, after both joined: A stops
    routing B's subnet (it removes only its own route), says so once, and doctor FAILs naming
    both; once the Docker network goes, the route comes back."""
    kv = FakeEtcd()
    va, vb = FakeVteps(), FakeVteps()
    a, b = host(kv, tmp_path, "10.203.254.1", va), host(kv, tmp_path, "10.203.254.2", vb)
    ja, jb = a.join("neta", asked()), b.join("netb", asked())
    a.tick()
    assert va.programmed[ja.vtep] == [Entry(jb.subnet, "10.203.254.2", jb.mac)]
    va.routes.append(HostRoute(NET(f"{jb.subnet.network_address}/25"), "br-late"))
    for _ in range(3):
        a.tick()
    assert va.programmed[ja.vtep] == []
    said = [r.message for r in caplog.records if "not routing" in r.message]
    assert said == [(f"overlay ov: not routing {jb.subnet} (host 10.203.254.2): it collides "
                     f"with {jb.subnet.network_address}/25 dev br-late on this host")]
    record = read_records(a.state_dir)["neta"]
    [finding] = doctor_fails(record, kv)
    assert f"subnet {jb.subnet} collides with {jb.subnet.network_address}/25 dev br-late" \
        in finding.message
    va.routes.clear()
    a.tick()
    assert va.programmed[ja.vtep] == [Entry(jb.subnet, "10.203.254.2", jb.mac)]
    assert read_records(a.state_dir)["neta"].clashes == []


def test_a_network_made_inside_this_hosts_own_subnet_is_logged_once_and_told_by_doctor(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The overlay network's own bridge routes the subnet; any other route inside it (a Docker
    network made later) cuts the overlay's containers with addresses there off."""
    kv = FakeEtcd()
    va = FakeVteps()
    a = host(kv, tmp_path, "10.203.254.1", va)
    ja = a.join("neta", asked(), bridge="pycni-ov")
    va.routes.append(HostRoute(ja.subnet, "pycni-ov"))  # the overlay network's own
    a.tick()
    assert read_records(a.state_dir)["neta"].intruders == []
    late = NET(f"{ja.subnet.network_address + 128}/25")
    va.routes.append(HostRoute(late, "br-late"))
    for _ in range(3):
        a.tick()
    said = [r.message for r in caplog.records if "lies inside" in r.message]
    assert said == [(f"overlay ov: {late} dev br-late lies inside this host's subnet "
                    f"{ja.subnet}: the overlay's containers here with addresses in it can't be "
                    "reached")]
    record = read_records(a.state_dir)["neta"]
    assert record.bridge == "pycni-ov" and record.intruders == [f"{late} dev br-late"]
    [finding] = doctor_fails(record, kv)
    assert f"{late} dev br-late lies inside this host's overlay subnet {ja.subnet}" \
        in finding.message
    va.routes.pop()
    a.tick()
    assert read_records(a.state_dir)["neta"].intruders == []


def test_overlapping_overlays_are_refused_as_etcd_holds_them() -> None:
    kv = FakeEtcd()
    leases.define(kv, asked(name="ov", subnet=NET("10.202.0.0/16")), 1450)
    with pytest.raises(InvalidRequest, match=r"overlay ov2: 10.202.128.0/17 overlaps overlay "
                                             r"ov's 10.202.0.0/16"):
        leases.define(kv, asked(name="ov2", subnet=NET("10.202.128.0/17")), 1450)
    assert leases.define(kv, asked(name="ov3", subnet=NET("10.203.0.0/16")), 1450)
    assert leases.define(kv, asked(name="ov", subnet=NET("10.202.0.0/16")), 1450)  # itself


# --- the watch -----------------------------------------------------------------------------------


def until(check: Any, timeout: float = 2.0) -> float:
    """Seconds until ``check()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "never happened"
        time.sleep(0.005)
    return time.monotonic() - start


def test_peers_come_from_the_watch_not_a_poll(tmp_path: Path) -> None:
    kv = FakeEtcd()
    va = FakeVteps()
    a, b = host(kv, tmp_path, "10.203.254.1", va), host(kv, tmp_path, "10.203.254.2")
    a.poll = 3600  # no round but those the watch asks for
    ja = a.join("neta", asked())
    a.start()
    try:
        until(lambda: kv.watches)
        jb = b.join("netb", asked())
        took = until(lambda: va.entries(ja.vtep) == [Entry(jb.subnet, "10.203.254.2", jb.mac)])
        assert took < 0.5
        kv.expire(jb.lease)  # host B gone for good: its routes go as soon as etcd drops it
        until(lambda: va.entries(ja.vtep) == [])
        # another overlay's changes wake no round of A's
        rounds: list[float] = []
        real_tick = a.tick

        def counted() -> None:
            rounds.append(time.monotonic())
            real_tick()

        a.tick = counted  # type: ignore[method-assign]
        other = host(kv, tmp_path, "10.203.254.3")
        other.join("netc", asked(name="other", subnet=NET("10.201.0.0/16")))
        time.sleep(0.2)
        assert rounds == []
        host(kv, tmp_path, "10.203.254.4").join("netd", asked())
        until(lambda: rounds)
    finally:
        a.stop()


def test_a_broken_watch_is_opened_again_and_resyncs(tmp_path: Path) -> None:
    kv = FakeEtcd()
    va = FakeVteps()
    a = host(kv, tmp_path, "10.203.254.1", va)
    a.poll = 3600
    ja = a.join("neta", asked())
    a.start()
    try:
        until(lambda: kv.watches)
        kv.down = True  # etcd restarts: the watch ends and can't be opened for a while
        kv.break_watches()
        time.sleep(0.2)
        # what etcd got from host B meanwhile, unheard by any watch of A's
        jb_subnet = NET("10.202.7.0/24")
        holder = Holder("10.203.254.2", mac_for("ov", "10.203.254.2"))
        kv.data[leases.lease_key("ov", jb_subnet)] = (holder.to_json(), 0)
        assert va.entries(ja.vtep) == []
        kv.down = False
        until(lambda: va.entries(ja.vtep) == [Entry(jb_subnet, holder.underlay, holder.mac)],
              timeout=3)
    finally:
        a.stop()


def test_a_host_back_after_its_subnet_was_taken_says_so_and_refuses_new_containers(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    kv = FakeEtcd()
    a, b = host(kv, tmp_path, "10.203.254.1"), host(kv, tmp_path, "10.203.254.2")
    ja = a.join("neta", asked())
    kv.expire(ja.lease)  # A's pycni away longer than its TTL …
    jc = host(kv, tmp_path, "10.203.254.3").join("netc", asked())
    assert jc.subnet == ja.subnet  # … and a new host claimed the subnet meanwhile
    a.ttl = 0
    for _ in range(3):
        a.tick()
    lost = a.get("neta")
    assert lost is not None and "held by host 10.203.254.3" in lost.lost
    assert read_records(a.state_dir)["neta"].lost == lost.lost
    assert [r.levelname for r in caplog.records if "is held by" in r.getMessage()] == ["ERROR"]
    with pytest.raises(OverlayError, match=r"subnet 10.202.0.0/24 is held by host 10.203.254.3 "
                                           r".*docker network rm"):
        a.refuse_if_lost("neta")
    b.refuse_if_lost("netb")  # another network, or one still held: nothing to refuse
    assert kv.leases.keys() == {jc.lease}  # the leases A tried with were given back
    # the other host leaves: A takes its subnet again, and says nothing more
    c = host(kv, tmp_path, "10.203.254.3")
    c.load()
    c.leave("netc")
    a.tick()
    back = a.get("neta")
    assert back is not None and back.lost == "" and read_records(a.state_dir)["neta"].lost == ""
    a.refuse_if_lost("neta")
