"""``shim.health``: the findings of ``pycni check`` and ``pycni doctor``, with fakes only.

CNI runs through :class:`tests.fakes.FakeExec`; the container's links, Docker, the plugin socket
and the host's forwarding set-up are plain functions handed in, or a socket path in ``tmp_path``
with nothing behind it. Nothing here needs root.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from shim import dockerstart, dockerview, health, plugins
from shim.cni import CNI
from shim.cni.cache import CachedAttachment, ResultCache
from shim.cni.types import Result
from shim.dockerview import ContainerView, DockerNetwork, Endpoint
from shim.errors import CNIError, PycniError
from shim.health import FAIL, OK, SKIP, WARN, Finding, cnicheck, container, host
from shim.health.probes import Post, Probes, parse_forward_policy
from shim.netlink import LiveLink
from shim.settings import Settings
from shim.state import EndpointRecord
from shim.store import Store
from tests.fakes import FakeExec

pytestmark = pytest.mark.unit

EID = "e" * 64
STAGING = "/run/netns/pycni-" + EID[:12]
SANDBOX = "/var/run/docker/netns/0123456789ab"
MAC = "0a:58:0a:cb:01:05"

CONFIG: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "pycni-abc",
    "plugins": [
        {"type": "bridge", "bridge": "pycni0", "ipam": {"type": "static"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
    ],
}

RESULT: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "pycni0", "mac": "0a:58:0a:cb:01:01"},
        {"name": "veth1234", "mac": "ee:ee:ee:ee:ee:01"},
        {"name": "eth0", "mac": "0a:58:0a:cb:01:99", "sandbox": STAGING},
    ],
    "ips": [{"interface": 2, "address": "10.203.1.5/24", "gateway": "10.203.1.1"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.203.1.1"}],
    "dns": {},
}


def record(**changes: Any) -> EndpointRecord:
    """An endpoint record as pycni's Store reads it back from its file (the file's layout is
    what stays put while the record's shape in memory changes)."""
    data = {
        "id": EID,
        "network_id": "n" * 64,
        "netns": "pycni-" + EID[:12],
        "ifname": "eth0",
        "host_ifname": "pcn" + EID[:12],
        "phase": "joined",
        "config": CONFIG,
        "cni_args": [["IP", "10.203.1.5"]],
        "capability_args": {},
        "result": RESULT,
        "mac": MAC,
        "addresses": ["10.203.1.5/24"],
        "sandbox_key": SANDBOX,
        **changes,
    }
    with tempfile.TemporaryDirectory() as root:
        [rec] = stored(Store(root), "endpoints", data).endpoints()
    return rec


def stored(store: Store, kind: str, data: dict[str, Any]) -> Store:
    """``store`` with ``data`` written as one of its records of ``kind``, as pycni writes them."""
    os.makedirs(os.path.join(store.root, kind), exist_ok=True)
    record = {"version": 1, "kind": kind[:-1], **data}
    Path(store.root, kind, f"{data['id']}.json").write_text(json.dumps(record))
    return store


def network(
    settings: Settings,
    network_id: str = "a" * 64,
    config: dict[str, Any] = CONFIG,
    firewall: dict[str, Any] | None = None,
) -> None:
    """A pycni network with ``config`` in the settings' state dir (``firewall``: the rules pycni
    puts in itself, as for a zero-config network)."""
    data = {
        "id": network_id,
        "request": {"NetworkID": network_id, "Options": {}, "IPv4Data": [], "IPv6Data": []},
        "config": config,
        "mode": "zero-config" if firewall else "conflist",
        "ipam": "docker",
        "firewall": firewall or {},
    }
    stored(Store(settings.state_dir), "networks", data)


CONTAINER = ContainerView(
    id="c" * 64,
    name="web",
    running=True,
    sandbox_key=SANDBOX,
    endpoints=(Endpoint("mynet", "n" * 64, EID),),
)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        state_dir=str(tmp_path / "state"),
        cache_dir=str(tmp_path / "cache"),
        conf_dir=str(tmp_path / "net.d"),
        cni_path=(str(tmp_path / "bin"),),
        socket_path=str(tmp_path / "pycni.sock"),
    )


def write_cache(settings: Settings) -> str:
    cache = ResultCache(settings.cache_dir)
    cache.write(
        CachedAttachment(
            network="pycni-abc", container_id=EID, ifname="eth0", netns=STAGING, result=RESULT
        )
    )
    return cache.path("pycni-abc", EID, "eth0")


def links(*addresses: str, name: str = "eth1", mac: str = MAC) -> Any:
    def read(sandbox: str) -> list[LiveLink]:
        assert sandbox == SANDBOX
        return [LiveLink("lo", "00:00:00:00:00:00"), LiveLink(name, mac, addresses)]

    return read


def run_endpoint(
    settings: Settings, fake: FakeExec, rec: EndpointRecord | None, **seams: Any
) -> list[Finding]:
    seams.setdefault("read_links", links("10.203.1.5/24"))
    seams.setdefault("netns_exists", lambda name: True)
    cni = CNI(list(settings.cni_path), exec=fake, cache_dir=settings.cache_dir)
    return container.check_endpoint(
        rec, CONTAINER.endpoints[0], CONTAINER, settings, cni=cni, **seams
    )


def statuses(findings: list[Finding]) -> list[str]:
    return [f.status for f in findings]


# --- findings ------------------------------------------------------------------------------------


def test_finding_renders_status_subject_message_and_hint() -> None:
    f = Finding(FAIL, "endpoint 1234 on network mynet", "CNI CHECK failed: bridge: x", "do y")
    assert str(f) == "FAIL endpoint 1234 on network mynet: CNI CHECK failed: bridge: x — do y"
    assert str(Finding(OK, "dockerd", "reachable")) == "ok   dockerd: reachable"
    assert f.failed and not Finding(WARN, "a", "b").failed
    assert health.any_failed([Finding(OK, "a", "b"), f])


# --- rewriting the cached result -----------------------------------------------------------------


def test_live_result_moves_the_container_interface_into_the_sandbox() -> None:
    cached = Result.from_json(RESULT)
    live = container.live_result(cached, staging=STAGING, sandbox=SANDBOX, ifname="eth1", mac=MAC)
    assert [(i.name, i.sandbox, i.mac) for i in live.interfaces] == [
        ("pycni0", "", "0a:58:0a:cb:01:01"),
        ("veth1234", "", "ee:ee:ee:ee:ee:01"),
        ("eth1", SANDBOX, MAC),
    ]
    assert live.ips == cached.ips and live.routes == cached.routes
    assert cached.interfaces[2].name == "eth0"  # the cached result itself is untouched


def test_live_result_falls_back_to_the_one_sandboxed_interface() -> None:
    cached = Result.from_json({**RESULT, "interfaces": [{"name": "eth0", "sandbox": "/x"}]})
    live = container.live_result(cached, staging=STAGING, sandbox=SANDBOX, ifname="eth2", mac="")
    assert (live.interfaces[0].name, live.interfaces[0].sandbox) == ("eth2", SANDBOX)


def test_address_and_mac_helpers_compare_values_not_strings() -> None:
    assert cnicheck.missing_addresses(["10.203.1.5/24"], ["10.203.1.5/24"]) == []
    assert cnicheck.missing_addresses(["fd00::5/64"], ["fd00:0::5/64"]) == []
    assert cnicheck.missing_addresses(["10.203.1.5/24"], ["10.203.1.5/16"]) == ["10.203.1.5/24"]
    found = container.find_by_mac([LiveLink("eth0", MAC.upper())], MAC)
    assert found is not None and found.name == "eth0"
    assert container.find_by_mac([LiveLink("eth0", "")], "") is None


def test_known_limitations() -> None:
    def why(exc: CNIError, ifname: str = "eth0") -> str | None:
        return plugins.known_check_limitation(exc, add_ifname="eth0", ifname=ifname)

    bug = CNIError("could not check ipv6 dnat: running [...]", plugin="portmap", verb="CHECK")
    assert "known limitation of portmap" in (why(bug) or "")
    assert why(CNIError("could not check ipv4 dnat", plugin="portmap")) is None
    assert why(CNIError("could not check ipv6 dnat", plugin="bridge")) is None
    lookup = CNIError("host-local: Failed to find address added by container 1234", plugin="bridge")
    assert "(eth0), not the one Docker gave it (eth1)" in (why(lookup, "eth1") or "")
    assert why(lookup, "eth0") is None  # same name as ADD's: the reservation really is gone
    for words in ("Error: Tuning configured value of /proc/sys/net/ipv4/conf/eth0/arp_ignore is 2",
                  "tuning configured value of /proc/sys/x is 2, current value is 0"):
        sysctl = CNIError(words, plugin="tuning", verb="CHECK")
        # the driver's staging namespace: a known limit, with what helps instead of a restart
        moved = plugins.known_check_limitation(sysctl, add_ifname="eth0", ifname="eth0",
                                               moved=True)
        assert moved is not None and "--network none mode" in moved
        assert why(sysctl) is None  # where the chain ran in the container's namespace: a fault


# --- CNI CHECK -----------------------------------------------------------------------------------


def test_healthy_endpoint_checks_every_plugin_against_the_live_sandbox(settings: Settings) -> None:
    write_cache(settings)
    fake = FakeExec()
    findings = run_endpoint(settings, fake, record())
    assert statuses(findings) == [OK, OK, OK]
    assert "CNI CHECK passed (3 plugins checked)" in str(findings[-1])
    assert "eth1 (" in str(findings[1]) and "10.203.1.5/24" in str(findings[1])
    calls = fake.calls_for("CHECK")
    assert [c.plugin for c in calls] == ["bridge", "portmap", "firewall"]
    for call in calls:
        assert call.env["CNI_NETNS"] == SANDBOX
        assert call.env["CNI_IFNAME"] == "eth1"
        assert call.env["CNI_CONTAINERID"] == EID
        assert call.env["CNI_ARGS"] == "IP=10.203.1.5"
        container_iface = call.stdin["prevResult"]["interfaces"][2]
        assert container_iface == {"name": "eth1", "mac": MAC, "sandbox": SANDBOX}


def test_check_failure_names_the_plugin_and_what_to_do(settings: Settings) -> None:
    write_cache(settings)
    fake = FakeExec().on("bridge", "CHECK", CNIError("Interface eth1 not found", code=4))
    findings = run_endpoint(settings, fake, record())
    assert findings[-1].failed
    assert "CNI CHECK failed: bridge: [code 4] Interface eth1 not found" in str(findings[-1])
    assert "docker restart web" in str(findings[-1])
    assert [c.plugin for c in fake.calls_for("CHECK")] == ["bridge"]


def test_portmap_ipv6_bug_is_a_warning_and_the_rest_is_still_checked(settings: Settings) -> None:
    write_cache(settings)
    bug = CNIError("could not check ipv6 dnat: exit status 1")
    fake = FakeExec().on("portmap", "CHECK", bug)
    findings = run_endpoint(settings, fake, record())
    assert not health.any_failed(findings)
    assert statuses(findings)[-2:] == [OK, WARN]
    assert "2 plugins checked" in str(findings[-2])
    assert "known limitation" in str(findings[-1])
    assert [c.plugin for c in fake.calls_for("CHECK")] == ["bridge", "portmap", "firewall"]


def test_a_real_failure_after_the_known_limitation_still_fails(settings: Settings) -> None:
    write_cache(settings)
    fake = (
        FakeExec()
        .on("portmap", "CHECK", CNIError("could not check ipv6 dnat"))
        .on("firewall", "CHECK", CNIError("could not find rule"))
    )
    findings = run_endpoint(settings, fake, record())
    assert statuses(findings)[-2:] == [WARN, FAIL]
    assert "firewall: could not find rule" in str(findings[-1])


def test_host_local_on_a_secondary_interface_is_a_warning(settings: Settings) -> None:
    write_cache(settings)
    lookup = CNIError(f"host-local: Failed to find address added by container {EID}", code=999)
    fake = FakeExec().on("bridge", "CHECK", lookup)
    findings = run_endpoint(settings, fake, record())  # Docker named it eth1; ADD saw eth0
    assert not health.any_failed(findings)
    assert statuses(findings)[-2:] == [OK, WARN]
    assert "CNI CHECK passed (2 plugins checked)" in str(findings[-2])
    assert [c.plugin for c in fake.calls_for("CHECK")] == ["bridge", "portmap", "firewall"]
    findings = run_endpoint(
        settings, fake, record(), read_links=links("10.203.1.5/24", name="eth0")
    )
    assert findings[-1].failed and "host-local: Failed to find address" in str(findings[-1])


PTP_CONFIG: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "pycni-abc",
    "plugins": [
        {"type": "ptp", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.203.1.0/24"}]]}},
        {"type": "firewall"},
    ],
}


def ptp_check(config: dict[str, Any], env: Mapping[str, str]) -> bytes:
    """ptp's CHECK as libcni's ValidateExpectedInterfaceIPs does it: every address of the
    result, with its prefix, on the interface (which carries the /32 pycni gave it)."""
    for ip in config["prevResult"].get("ips", []):
        if ip["address"] != "10.203.1.5/32":
            raise CNIError(f"Failed to match addr {ip['address']} on interface eth1", code=999)
    return b""


def test_a_host_address_pycni_gave_on_purpose_is_no_check_failure(settings: Settings) -> None:
    """ptp routes its subnet via the gateway; the container carries 10.203.1.5/32, not the /24
    of the result. ptp is checked again without that address, and the chain goes on."""
    write_cache(settings)
    fake = FakeExec().on("ptp", "CHECK", ptp_check)
    rec = record(config=PTP_CONFIG, addresses=["10.203.1.5/32"])
    findings = run_endpoint(settings, fake, rec, read_links=links("10.203.1.5/32"))
    assert statuses(findings) == [OK, OK, OK, OK], findings
    assert "eth1 (" in str(findings[1]) and "carries 10.203.1.5/32" in str(findings[1])
    assert "CNI CHECK passed (2 plugins checked)" in str(findings[2])
    assert "ptp checked without the address 10.203.1.5/24" in str(findings[3])
    assert "carries it as 10.203.1.5/32" in str(findings[3])
    calls = fake.calls_for("CHECK")
    assert [c.plugin for c in calls] == ["ptp", "ptp", "firewall"]
    assert "ips" not in calls[1].stdin["prevResult"]
    assert calls[1].stdin["prevResult"]["routes"] == RESULT["routes"]  # routes still compared
    assert [ip["address"] for ip in calls[2].stdin["prevResult"]["ips"]] == ["10.203.1.5/24"]


def test_a_host_address_does_not_excuse_other_failures(settings: Settings) -> None:
    write_cache(settings)
    rec = record(config=PTP_CONFIG, addresses=["10.203.1.5/32"])

    def ptp_bad_mac(config: dict[str, Any], env: Mapping[str, str]) -> bytes:
        if config["prevResult"].get("ips"):
            return ptp_check(config, env)
        raise CNIError("ptp: Interface eth1 Mac x doesn't match container Mac: y")

    for fake in (
        FakeExec().on("ptp", "CHECK", ptp_bad_mac),
        FakeExec().on("ptp", "CHECK", CNIError("Failed to match addr 10.203.1.6/24 on eth1")),
    ):
        findings = run_endpoint(settings, fake, rec, read_links=links("10.203.1.5/32"))
        assert findings[-1].failed, findings
        assert "CNI CHECK failed: ptp:" in str(findings[-1])
    # An address the record holds with its prefix is no host address: the mismatch fails.
    fake = FakeExec().on("ptp", "CHECK", ptp_check)
    findings = run_endpoint(settings, fake, record(config=PTP_CONFIG))
    assert findings[-1].failed and "Failed to match addr 10.203.1.5/24" in str(findings[-1])


def test_host_addresses_are_the_result_addresses_recorded_as_hosts() -> None:
    result = Result.from_json({**RESULT, "ips": [
        {"address": "10.203.1.5/24"}, {"address": "fd00::5/64"}, {"address": "10.9.0.1/32"},
    ]})
    assert container.host_addresses(result, ["10.203.1.5/32", "fd00::5/128", "10.9.0.1/32"]) \
        == ("10.203.1.5/24", "fd00::5/64")
    assert container.host_addresses(result, ["10.203.1.5/24", "fd00::5/64"]) == ()


def test_missing_plugin_says_to_install_it(settings: Settings) -> None:
    write_cache(settings)
    findings = run_endpoint(settings, FakeExec(missing=["firewall"]), record())
    assert findings[-1].failed
    assert "install the plugin into CNI_PATH" in findings[-1].hint


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1"])
def test_configs_before_0_4_0_have_no_check(settings: Settings, version: str) -> None:
    write_cache(settings)
    fake = FakeExec()
    rec = record(config={**CONFIG, "cniVersion": version}, result={**RESULT, "cniVersion": version})
    findings = run_endpoint(settings, fake, rec)
    assert findings[-1].status == SKIP
    assert f"skipped (CNI {version} has no CHECK)" in str(findings[-1])
    assert not fake.calls_for("CHECK")
    assert not health.any_failed(findings)


def test_disable_check_is_respected(settings: Settings) -> None:
    write_cache(settings)
    fake = FakeExec()
    findings = run_endpoint(settings, fake, record(config={**CONFIG, "disableCheck": True}))
    assert findings[-1].status == SKIP and "disableCheck" in findings[-1].message
    assert not fake.calls_for("CHECK")


# --- the host side and the container's link ------------------------------------------------------


def test_missing_cache_file_and_staging_netns_fail(settings: Settings) -> None:
    findings = run_endpoint(settings, FakeExec(), record(), netns_exists=lambda name: False)
    failed = [str(f) for f in findings if f.failed]
    assert any(f"staging netns {STAGING} is missing" in f for f in failed)
    path = ResultCache(settings.cache_dir).path("pycni-abc", EID, "eth0")
    assert any(f"libcni's cache file {path} is missing" in f for f in failed)
    # CHECK runs with the given result anyway: the cache is not what it checks against
    assert findings[-1].status == OK


def test_address_gone_from_the_container_fails(settings: Settings) -> None:
    write_cache(settings)
    findings = run_endpoint(settings, FakeExec(), record(), read_links=links())
    failed = [f for f in findings if f.failed]
    assert len(failed) == 1
    assert "eth1 (0a:58:0a:cb:01:05) lacks 10.203.1.5/24 (has no address)" in str(failed[0])


def test_no_link_with_the_mac_fails_without_running_check(settings: Settings) -> None:
    write_cache(settings)
    fake = FakeExec()
    findings = run_endpoint(settings, fake, record(), read_links=links(mac="02:00:00:00:00:01"))
    assert findings[-1].failed and f"no interface with MAC {MAC}" in str(findings[-1])
    assert not fake.calls_for("CHECK")


def test_unreadable_sandbox_fails(settings: Settings) -> None:
    from shim.errors import NetlinkFailure

    def broken(sandbox: str) -> list[LiveLink]:
        raise NetlinkFailure("cannot list links: No such file or directory")

    write_cache(settings)
    findings = run_endpoint(settings, FakeExec(), record(), read_links=broken)
    assert findings[-1].failed and "cannot look into the container" in str(findings[-1])


def test_unknown_endpoint_and_unusable_record(settings: Settings) -> None:
    findings = run_endpoint(settings, FakeExec(), None)
    assert statuses(findings) == [FAIL]
    assert settings.state_dir in str(findings[0])
    findings = run_endpoint(settings, FakeExec(), record(result=None, phase="creating"))
    assert statuses(findings) == [WARN, FAIL]
    assert "never recorded a CNI result" in str(findings[1])


def test_container_not_running_or_not_on_pycni() -> None:
    stopped = ContainerView(id="c", name="web", running=False, sandbox_key="")
    findings = container.check_container(stopped, [], Settings())
    assert statuses(findings) == [FAIL] and "docker start" in findings[0].hint
    elsewhere = ContainerView(id="c", name="web", running=True, sandbox_key=SANDBOX)
    assert statuses(container.check_container(elsewhere, [], Settings())) == [WARN]


def test_check_container_matches_records_by_endpoint_id(settings: Settings) -> None:
    write_cache(settings)
    cni = CNI(list(settings.cni_path), exec=FakeExec(), cache_dir=settings.cache_dir)
    other = record(id="f" * 64)
    findings = container.check_container(
        CONTAINER,
        [other, record()],
        settings,
        cni=cni,
        read_links=links("10.203.1.5/24"),
        netns_exists=lambda name: True,
    )
    assert not health.any_failed(findings)
    assert all(f.subject == f"endpoint {EID[:12]} on network mynet" for f in findings)


# --- doctor --------------------------------------------------------------------------------------


def plugin_dir(settings: Settings, *names: str) -> None:
    os.makedirs(settings.cni_path[0], exist_ok=True)
    for name in names:
        path = os.path.join(settings.cni_path[0], name)
        Path(path).write_text("#!/bin/sh\n")
        os.chmod(path, 0o755)


def conflist(settings: Settings, filename: str, body: object) -> None:
    os.makedirs(settings.conf_dir, exist_ok=True)
    text = body if isinstance(body, str) else json.dumps(body)
    Path(settings.conf_dir, filename).write_text(text)


def test_broken_conf_file_fails_naming_file_and_field(settings: Settings) -> None:
    conflist(settings, "10-good.conflist", {**CONFIG, "name": "good"})
    conflist(settings, "20-bad.conflist", {"cniVersion": "1.0.0", "name": "bad", "plugins": [{}]})
    conflist(settings, "30-notjson.conf", "{nope")
    chains, findings = host.conf_dir_chains(settings.conf_dir)
    assert [c.plugins for c in chains] == [("bridge", "portmap", "firewall")]
    assert statuses(findings) == [FAIL, FAIL]
    assert "20-bad.conflist: plugins[0].type: missing" in str(findings[0])
    assert "30-notjson.conf: invalid JSON" in str(findings[1])


def test_binaries_of_conf_files_and_networks_including_ipam(settings: Settings) -> None:
    plugin_dir(settings, "bridge", "portmap", "firewall")
    conflist(settings, "10-good.conflist", {**CONFIG, "name": "good"})
    chains, _ = host.conf_dir_chains(settings.conf_dir)
    assert chains[0].binaries == ("bridge", "static", "portmap", "firewall")
    findings = host.check_binaries(chains, settings.cni_path)
    assert statuses(findings) == [FAIL]
    assert "plugin(s) static not found in CNI_PATH" in str(findings[0])
    assert "10-good.conflist (network good)" in findings[0].subject
    plugin_dir(settings, "static")
    assert statuses(host.check_binaries(chains, settings.cni_path)) == [OK]


def test_network_records_are_chains_too(settings: Settings) -> None:
    network(settings)
    chains, findings = host.network_chains(Store(settings.state_dir))
    assert findings == []
    assert chains[0].label == "pycni network " + "a" * 12
    assert chains[0].plugins == ("bridge", "portmap", "firewall")


def test_an_unusable_network_record_fails_naming_it(settings: Settings) -> None:
    network(settings)
    network(settings, "b" * 64)
    path = Path(settings.state_dir, "networks", "b" * 64 + ".json")
    path.write_text(path.read_text().replace('"bridge"', '"a/b"'))
    chains, findings = host.network_chains(Store(settings.state_dir))
    assert chains == [] and statuses(findings) == [FAIL]
    assert findings[0].subject == "state" and "b" * 64 in findings[0].message


def test_forwarding_warns_about_bridges_without_firewall() -> None:
    with_fw = host.Chain("a", ("bridge", "firewall"), ())
    without = host.Chain("b.conflist (network b)", ("bridge", "portmap"), ())
    macvlan = host.Chain("c", ("macvlan",), ())
    findings = host.check_forwarding([with_fw, without, macvlan], True, "DROP")
    assert statuses(findings) == [WARN]
    assert findings[0].subject == "b.conflist (network b)"
    assert "won't reach each other" in findings[0].message and "firewall" in findings[0].hint
    assert statuses(host.check_forwarding([without], False, "DROP")) == [OK]
    assert statuses(host.check_forwarding([without], True, "ACCEPT")) == [OK]
    assert statuses(host.check_forwarding([with_fw], True, "DROP")) == [OK]
    assert statuses(host.check_forwarding([without], True, None)) == [WARN]


def test_ip_forward() -> None:
    assert host.check_ip_forward("1\n").status == OK
    off = host.check_ip_forward("0\n")
    assert off.status == WARN and "sysctl -w net.ipv4.ip_forward=1" in off.hint
    assert host.check_ip_forward(None).status == WARN


def fake_post(answers: dict[str, Any]) -> Post:
    def post(method: str, body: dict[str, Any], timeout: float) -> tuple[int, dict[str, Any]]:
        answer = answers[method]
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, tuple)
        return answer

    return post


ACTIVATE = (200, {"Implements": ["NetworkDriver"]})


def test_socket_and_leftovers() -> None:
    assert host.check_socket("/s", fake_post({"Plugin.Activate": ACTIVATE})).status == OK
    nothing = PycniError("nothing is listening on /s")
    down = host.check_socket("/s", fake_post({"Plugin.Activate": nothing}))
    assert down.failed and "pycni serve" in down.hint
    assert str(down) == "FAIL pycni socket /s: nothing is listening on /s — start `pycni serve`"
    odd = host.check_socket("/s", fake_post({"Plugin.Activate": (200, {"Implements": []})}))
    assert odd.failed

    missing = host.check_leftovers(fake_post({"Pycni.GC": (404, {"Err": "not found"})}))
    assert statuses(missing) == [WARN] and "gc not available" in missing[0].message
    clean = host.check_leftovers(fake_post({"Pycni.GC": (200, {"Actions": []})}))
    assert statuses(clean) == [OK]
    actions = ["netns pycni-0123456789ab: no endpoint; removed", "link pcn0123: no endpoint"]
    dirty = host.check_leftovers(fake_post({"Pycni.GC": (200, {"Actions": actions})}))
    assert statuses(dirty) == [WARN, WARN]
    assert "netns pycni-0123456789ab" in str(dirty[0]) and "pycni gc" in dirty[0].hint


def probes(**changes: Any) -> Probes:
    base = Probes(
        docker_ping=lambda: None,
        post=fake_post({"Plugin.Activate": ACTIVATE, "Pycni.GC": (200, {"Actions": []})}),
        forward_policy=lambda: "DROP",
        bridge_netfilter=lambda: True,
        ip_forward=lambda: "1",
        network_names=lambda driver: {},
        euid=lambda: 0,
        stopped=lambda driver: [],
        docker_networks=list,
    )
    for key, value in changes.items():
        setattr(base, key, value)
    return base


def test_doctor_all_ok(settings: Settings) -> None:
    plugin_dir(settings, "bridge", "static", "portmap", "firewall")
    conflist(settings, "10-good.conflist", {**CONFIG, "name": "good"})
    findings = health.doctor(settings, probes())
    assert statuses(findings) == [OK] * len(findings), "\n".join(map(str, findings))
    subjects = [f.subject for f in findings]
    assert "dockerd" in subjects and "leftovers" in subjects and "forwarding" in subjects


def test_doctor_failures(settings: Settings) -> None:
    def unreachable() -> None:
        raise PycniError("Connection refused")

    conflist(settings, "20-bad.conflist", {"cniVersion": "1.0.0", "name": "bad", "plugins": [{}]})
    findings = health.doctor(
        settings,
        probes(
            docker_ping=unreachable,
            post=fake_post({"Plugin.Activate": PycniError("nothing is listening on /s")}),
        ),
    )
    failed = [str(f) for f in findings if f.failed]
    assert any("20-bad.conflist: plugins[0].type" in f for f in failed)
    assert any(f.startswith("FAIL dockerd: not reachable") for f in failed)
    assert any("pycni socket" in f for f in failed)
    assert findings[-1].status == SKIP and findings[-1].subject == "leftovers"


def test_doctor_asks_the_socket_of_its_settings(settings: Settings) -> None:
    findings = health.doctor(settings, probes(post=None))
    [socket] = [f for f in findings if f.subject.startswith("pycni socket")]
    assert socket.failed
    assert socket.message == f"nothing is listening on {settings.socket_path}"


def test_dockerd_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    assert dockerview.snapshot() is None
    assert dockerview.network_names() == {}
    assert dockerview.names() == dockerview.Names()
    with pytest.raises(PycniError, match="cannot list Docker's stopped containers: "):
        dockerstart.stopped_containers()
    with pytest.raises(PycniError, match="cannot inspect container 'web': "):
        dockerview.container("web")
    finding = host.check_dockerd(dockerview.ping)
    assert finding.failed and finding.message.startswith("not reachable: ")


def test_doctor_missing_plugin_of_a_network_record(settings: Settings) -> None:
    network(settings)
    plugin_dir(settings, "bridge", "static", "portmap")
    findings = health.doctor(settings, probes())
    failed = [f for f in findings if f.failed]
    assert len(failed) == 1 and failed[0].subject == "pycni network " + "a" * 12
    assert "firewall not found" in failed[0].message


def test_doctor_fails_where_docker_handed_out_a_pycni_networks_range(settings: Settings) -> None:
    """A null-IPAM chain's range is the chain's IPAM's alone: Docker may give it to a network
    created later. Doctor names both."""
    data = {
        "id": "a" * 64,
        "request": {"NetworkID": "a" * 64, "Options": {},
                    "IPv4Data": [{"AddressSpace": "null", "Pool": "0.0.0.0/0"}], "IPv6Data": []},
        "config": {**CONFIG, "plugins": [{"type": "bridge", "ipam": {
            "type": "host-local", "ranges": [[{"subnet": "10.200.50.0/24"}]]}}]},
        "mode": "conflist", "ipam": "cni", "firewall": {},
    }
    stored(Store(settings.state_dir), "networks", data)
    plugin_dir(settings, "bridge", "host-local", "static", "portmap", "firewall")
    docker = [DockerNetwork("b" * 64, "late", "bridge", ("10.200.50.128/25",), "br-bbb"),
              DockerNetwork("a" * 64, "mine", "pycni", ("0.0.0.0/0",)),
              DockerNetwork("c" * 64, "apart", "bridge", ("10.200.51.0/24",), "br-ccc")]
    findings = health.doctor(settings, probes(docker_networks=lambda: docker,
                                              network_names=lambda driver: {"a" * 64: "mine"}))
    [failed] = [f for f in findings if f.failed]
    assert failed.subject == "pycni network 'mine'"
    assert failed.message == ("its range 10.200.50.0/24 overlaps 10.200.50.128/25, the subnet of "
                              "Docker network 'late'")
    assert "remove the newer network" in failed.hint
    unknown = health.doctor(settings, probes(docker_networks=lambda: None))
    assert "address ranges" in [f.subject for f in unknown if f.status == SKIP]


def test_iptables_policy_parsing() -> None:
    rules = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j CNI-FORWARD\n"
    assert parse_forward_policy(rules) == "DROP"
    assert parse_forward_policy("-P FORWARD ACCEPT\n") == "ACCEPT"
    assert parse_forward_policy("") is None


# --- doctor: what it says, and about what -------------------------------------------------------

ZERO_CONFIG_CHAIN: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "pycni-aaaaaaaaaaaa",
    "plugins": [
        {"type": "bridge", "bridge": "pycni-aaaaaaaaa", "ipam": {"type": "static"}},
        {"type": "portmap", "capabilities": {"portMappings": True}},
    ],
}


def test_a_zero_config_network_needs_no_firewall_plugin(settings: Settings) -> None:
    """pycni lets a zero-config network's bridge forward with rules of its own (shim.firewall):
    no warning. A conflist's bridge without the firewall plugin still gets one."""
    plugin_dir(settings, "bridge", "static", "portmap")
    network(settings, config=ZERO_CONFIG_CHAIN,
            firewall={"bridge": "pycni-aaaaaaaaa", "subnets": ["10.203.1.0/24"]})
    findings = health.doctor(settings, probes())
    assert statuses(findings) == [OK] * len(findings), "\n".join(map(str, findings))
    [forwarding] = [f for f in findings if f.subject == "forwarding"]
    assert "pycni's own rules on a zero-config network" in forwarding.message

    network(settings, "b" * 64, config=ZERO_CONFIG_CHAIN)  # the same chain, from a conflist
    findings = health.doctor(settings, probes())
    warned = [f for f in findings if f.status == WARN]
    assert [f.subject for f in warned] == ["pycni network " + "b" * 12]
    assert "no firewall plugin" in warned[0].message


def test_an_ipam_type_with_a_slash_names_file_and_field_and_the_report_goes_on(
    settings: Settings,
) -> None:
    plugin_dir(settings, "bridge", "firewall")
    conflist(settings, "10-good.conflist", {
        "cniVersion": "1.0.0", "name": "good", "plugins": [{"type": "firewall"}]})
    conflist(settings, "20-slash.conflist", {
        "cniVersion": "1.0.0", "name": "slash",
        "plugins": [{"type": "bridge", "ipam": {"type": "../host-local"}}, {"type": "firewall"}]})
    findings = health.doctor(settings, probes())
    [failed] = [f for f in findings if f.failed]
    path = os.path.join(settings.conf_dir, "20-slash.conflist")
    assert str(failed) == (
        f"FAIL {path} (network slash): plugins[0].ipam.type: invalid plugin type "
        "'../host-local': must be a bare executable name (no '/') — fix the config"
    )
    subjects = [f.subject for f in findings]
    assert "dockerd" in subjects and "leftovers" in subjects and "forwarding" in subjects
    assert any("10-good.conflist" in f.subject and f.status == OK for f in findings)


def test_as_a_user_doctor_says_run_as_root_and_blames_nothing_else(settings: Settings) -> None:
    def denied(*args: Any) -> Any:
        raise PycniError("/Plugin.Activate on /s failed: [Errno 13] Permission denied")

    network(settings)
    findings = health.doctor(
        settings,
        probes(euid=lambda: 1000, post=denied, forward_policy=lambda: None,
               network_names=denied),
    )
    assert str(findings[0]) == (
        "FAIL user: pycni doctor runs as uid 1000: pycni's records, the plugin socket (mode "
        "0600) and iptables are root's — run it as root (sudo pycni doctor)"
    )
    assert [f.subject for f in findings if f.failed] == ["user"]
    skipped = {f.subject for f in findings if f.status == SKIP}
    assert skipped == {
        "pycni networks", f"pycni socket {settings.socket_path}", "forwarding", "leftovers"
    }
    text = "\n".join(map(str, findings))
    assert "start `pycni serve`" not in text and "iptables installed" not in text


def test_as_a_user_an_unreachable_dockerd_says_run_as_root() -> None:
    def denied() -> None:
        raise PycniError("Permission denied")

    assert "start dockerd" in host.check_dockerd(denied).hint
    assert host.check_dockerd(denied, as_root=False).hint == (
        "run it as root (or as a member of the docker group)"
    )


def test_doctor_names_networks_as_docker_does(settings: Settings) -> None:
    network(settings)
    network(settings, "b" * 64)
    plugin_dir(settings, "bridge", "static", "portmap", "firewall")
    asked = []

    def names(driver: str) -> dict[str, str]:
        asked.append(driver)
        return {"a" * 64: "web"}

    findings = health.doctor(Settings(**{**settings.__dict__, "driver_name": "pycni:latest"}),
                             probes(network_names=names))
    subjects = [f.subject for f in findings]
    assert f"pycni network web ({'a' * 12})" in subjects
    assert f"pycni network {'b' * 12}" in subjects  # Docker has no name for it
    assert asked == ["pycni:latest"]


def test_check_as_a_user_says_run_as_root(settings: Settings) -> None:
    findings = health.check("web", settings, euid=lambda: 1000)
    [finding] = findings
    assert str(finding) == (
        "FAIL user: pycni check runs as uid 1000: pycni's records, the container's namespace "
        "and the plugins' CHECK are root's — run it as root (sudo pycni check)"
    )


# --- doctor: containers Docker could not start while pycni was not serving ---------------------


def test_doctor_names_containers_docker_and_pycni_could_not_start(settings: Settings) -> None:
    error = 'failed to add endpoint: CNI plugin "gate" failed (ADD): [code 11] closed'
    blocked = stopped_container("web", error=error)
    by_user = stopped_container("db", policy="unless-stopped", error="")
    asked = []

    def stopped(driver: str) -> list[dockerstart.Stopped]:
        asked.append(driver)
        return [blocked, by_user]

    findings = health.doctor(settings, probes(stopped=stopped))
    [failed] = [f for f in findings if f.failed]
    assert str(failed) == (
        "FAIL container web: not running, though its restart policy always says Docker should "
        f"have started it; its last start failed: {error} — fix that, then `docker start web` "
        "(pycni serve starts such containers itself when it starts)"
    )
    assert "db" not in "\n".join(map(str, findings))
    assert asked == [settings.driver_name]


def test_doctor_restart_policies_ok_or_unknown(settings: Settings) -> None:
    [ok] = host.check_stranded(list)
    assert str(ok) == "ok   restart policies: no container on a pycni network waits for a start"

    def down() -> list[dockerstart.Stopped]:
        raise PycniError("cannot list Docker's stopped containers: connection refused")

    assert statuses(host.check_stranded(down)) == [WARN]

    def unreachable() -> None:
        raise PycniError("connection refused")

    def never(driver: str) -> list[dockerstart.Stopped]:
        raise AssertionError("asked with dockerd down")

    findings = health.doctor(settings, probes(docker_ping=unreachable, stopped=never))
    assert "restart policies" not in [f.subject for f in findings]


def stopped_container(name: str, **changes: Any) -> dockerstart.Stopped:
    base = dockerstart.Stopped(
        id=name * 8, name=name, status="exited", error='plugin "pycni" not found',
        exit_code=255, started_before=True, policy="always", max_retries=0, restart_count=0,
        networks=("mynet",),
    )
    return dataclasses.replace(base, **changes)


def test_stopped_reads_what_dockers_restart_logic_reads() -> None:
    data = {
        "Id": "c" * 64,
        "Name": "/web",
        "RestartCount": 2,
        "State": {"Status": "exited", "Running": False, "ExitCode": 255,
                  "Error": 'failed to add endpoint: plugin "pycni" not found',
                  "StartedAt": "2026-12-03T08:12:07.649212683Z"},
        "HostConfig": {"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 5}},
    }
    got = dockerstart._stopped(data, ("mynet",))
    assert got == dockerstart.Stopped(
        id="c" * 64, name="web", status="exited",
        error='failed to add endpoint: plugin "pycni" not found', exit_code=255,
        started_before=True, policy="on-failure", max_retries=5, restart_count=2,
        networks=("mynet",),
    )
    never = dockerstart._stopped(
        {"Id": "d" * 64, "State": {"Status": "created", "StartedAt": dockerstart.ZERO_TIME}}, ()
    )
    assert not never.started_before and never.policy == "" and never.error == ""


def test_doctor_shows_the_none_modes_leftovers_naming_the_plugin(settings: Settings) -> None:
    plugin_dir(settings, "bridge", "static", "portmap", "firewall")
    left = [('CNI attachment pcn/aaaaaaaaaaaa/eth0: its undo failed (CNI plugin "tuning" failed '
            "(DEL): no such sysctl); removed")]
    findings = health.doctor(settings, probes(none_mode_gc=lambda: left))
    [warned] = [f for f in findings if f.subject == "--network none leftovers"]
    assert warned.status == WARN and '"tuning" failed (DEL)' in warned.message
    assert warned.hint == "run `pycni gc`"
