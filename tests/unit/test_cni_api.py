"""shim.cni.api: the CNI verbs run through a FakeExec, checked against libcni's behaviour."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from shim.cni import CNI, AddFailed, NetworkConfigList, Result, RuntimeConf
from shim.cni.cache import ResultCache
from shim.cni.config import conflist_from_dict
from shim.errors import CNIError, ConfigError, InvalidRequest, PluginNotFound
from tests.fakes import FakeExec, add_interface, version_answer

pytestmark = pytest.mark.unit

PATH = ["/opt/cni/bin", "/usr/lib/cni"]
PORTS = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
BANDWIDTH = {"ingressRate": 1000, "egressRate": 2000}


def make_net(
    version: str = "1.0.0",
    plugins: list[dict[str, Any]] | None = None,
    name: str = "mynet",
    **extra: Any,
) -> NetworkConfigList:
    if plugins is None:
        plugins = [
            {"type": "bridge", "bridge": "cni0", "ipam": {"type": "host-local"}},
            {"type": "tuning", "sysctl": {"net.ipv4.conf.IFNAME.arp_notify": "1"}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ]
    raw = {"cniVersion": version, "name": name, "plugins": plugins, **extra}
    return conflist_from_dict(raw, source=f"/etc/cni/net.d/{name}.conflist")


def rt(container_id: str = "c1", ifname: str = "eth0", **kw: Any) -> RuntimeConf:
    kw.setdefault("netns", f"/run/netns/{container_id}")
    return RuntimeConf(container_id=container_id, ifname=ifname, **kw)


@pytest.fixture
def fake() -> FakeExec:
    return FakeExec().on("bridge", "ADD", add_interface("eth0", "10.1.0.5/24", gateway="10.1.0.1"))


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def cni(fake: FakeExec, cache_dir: Path) -> CNI:
    return CNI(PATH, exec=fake, cache_dir=str(cache_dir), timeout=12.5)


def cache_file(cache_dir: Path, net: str = "mynet", cid: str = "c1", ifname: str = "eth0") -> Path:
    return cache_dir / "results" / f"{net}-{cid}-{ifname}"


# --- ADD -----------------------------------------------------------------------------------------


def test_add_runs_plugins_in_order_and_chains_prev_result(fake: FakeExec, cni: CNI) -> None:
    result = cni.add(make_net(), rt())
    assert fake.commands() == [("bridge", "ADD"), ("tuning", "ADD"), ("portmap", "ADD")]
    first, second, third = fake.calls
    assert "prevResult" not in first.stdin
    expected_prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/c1"}],
        "ips": [{"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
        "dns": {},
    }
    assert second.stdin["prevResult"] == expected_prev
    assert third.stdin["prevResult"] == expected_prev
    assert result.to_json() == expected_prev


def test_prev_result_is_converted_to_the_lists_version(cache_dir: Path) -> None:
    # bridge answers in 1.1.0 with 1.1.0-only fields though the list is 0.4.0
    fake = FakeExec().on(
        "bridge",
        "ADD",
        add_interface(
            "eth0",
            "10.1.0.5/24",
            version="1.1.0",
            routes=[{"dst": "0.0.0.0/0", "gw": "10.1.0.1", "table": 100}],
        ),
    )
    cni = CNI(PATH, exec=fake, cache_dir=str(cache_dir))
    result = cni.add(make_net("0.4.0"), rt())
    prev = fake.calls[1].stdin["prevResult"]
    assert prev == {
        "cniVersion": "0.4.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/c1"}],
        "ips": [{"version": "4", "interface": 0, "address": "10.1.0.5/24"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
        "dns": {},
    }
    assert fake.calls[1].stdin["cniVersion"] == "0.4.0"
    assert result.cni_version == "0.4.0"
    assert result.to_json() == prev


def test_add_injects_name_and_version_and_keeps_unknown_keys(fake: FakeExec, cni: CNI) -> None:
    net = make_net(
        "1.1.0",
        plugins=[
            {
                "type": "bridge",
                "name": "ignored",
                "cniVersion": "0.3.0",
                "vendor.example/x": {"deep": [1, None]},
            }
        ],
    )
    cni.add(net, rt())
    assert fake.calls[0].stdin == {
        "type": "bridge",
        "name": "mynet",
        "cniVersion": "1.1.0",
        "vendor.example/x": {"deep": [1, None]},
    }
    assert net.plugins[0].raw["name"] == "ignored"  # the loaded config is not modified


def test_add_environment(fake: FakeExec, cni: CNI) -> None:
    cni.add(make_net(), rt(ifname="net1", args=(("IP", "10.1.0.5"), ("K8S_POD_NAME", "web"))))
    for call in fake.calls:
        assert call.env == {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": "c1",
            "CNI_NETNS": "/run/netns/c1",
            "CNI_IFNAME": "net1",
            "CNI_ARGS": "IP=10.1.0.5;K8S_POD_NAME=web",
            "CNI_PATH": "/opt/cni/bin:/usr/lib/cni",
        }
        assert call.timeout == 12.5
        assert call.plugin_path == f"/opt/cni/bin/{call.plugin}"


def test_runtime_config_only_for_declared_capabilities(fake: FakeExec, cni: CNI) -> None:
    net = make_net(
        plugins=[
            {"type": "bridge"},
            {"type": "portmap", "capabilities": {"portMappings": True, "bandwidth": False}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True, "mac": True}},
            {"type": "tuning", "capabilities": {"portMappings": False}},
        ]
    )
    caps = {"portMappings": PORTS, "bandwidth": BANDWIDTH, "ips": ["10.1.0.9/24"]}
    cni.add(net, rt(capability_args=caps))
    stdins = {c.plugin: c.stdin for c in fake.calls}
    assert "runtimeConfig" not in stdins["bridge"]
    assert stdins["portmap"]["runtimeConfig"] == {"portMappings": PORTS}
    # "mac" is declared but the runtime has no value for it: not sent
    assert stdins["bandwidth"]["runtimeConfig"] == {"bandwidth": BANDWIDTH}
    assert "runtimeConfig" not in stdins["tuning"]


def test_add_writes_the_libcni_cache(fake: FakeExec, cni: CNI, cache_dir: Path) -> None:
    net = make_net()
    result = cni.add(net, rt(args=(("IP", "10.1.0.5"),), capability_args={"portMappings": PORTS}))
    path = cache_file(cache_dir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_bytes())
    assert data == {
        "kind": "cniCacheV1",
        "containerId": "c1",
        "config": base64.b64encode(net.bytes).decode(),
        "ifName": "eth0",
        "networkName": "mynet",
        "netns": "/run/netns/c1",
        "cniArgs": [["IP", "10.1.0.5"]],
        "capabilityArgs": {"portMappings": PORTS},
        "result": result.to_json(),
    }
    assert json.loads(base64.b64decode(data["config"])) == net.raw
    cached = cni.cached_result(net, rt())
    assert cached is not None and cached.to_json() == result.to_json()
    assert [(a.network, a.container_id) for a in cni.cached_attachments("c1")] == [("mynet", "c1")]


def test_result_without_cni_version_takes_the_lists(cache_dir: Path) -> None:
    fake = FakeExec().on("bridge", "ADD", b'{"ips": [{"address": "10.1.0.7/24"}]}')
    cni = CNI(PATH, exec=fake, cache_dir=str(cache_dir))
    result = cni.add(make_net("0.4.0", plugins=[{"type": "bridge"}]), rt())
    assert result.cni_version == "0.4.0"
    assert result.to_json()["ips"] == [{"version": "4", "address": "10.1.0.7/24"}]


@pytest.mark.parametrize(
    ("runtime", "fragment"),
    [
        (RuntimeConf(container_id="", netns="/n"), "missing container id"),
        (RuntimeConf(container_id="bad id", netns="/n"), "invalid container id"),
        (RuntimeConf(container_id="c1", netns="/n", ifname="x" * 16), "longer than 15"),
        (RuntimeConf(container_id="c1", netns="/n", ifname="a/b"), "invalid interface name"),
        (RuntimeConf(container_id="c1", netns=""), "network namespace"),
    ],
)
def test_add_validates_before_running_anything(
    fake: FakeExec, cni: CNI, cache_dir: Path, runtime: RuntimeConf, fragment: str
) -> None:
    with pytest.raises(InvalidRequest) as info:
        cni.add(make_net(), runtime)
    assert fragment in str(info.value)
    assert fake.calls == []
    assert not (cache_dir / "results").exists()


def test_failing_plugin_mid_add(fake: FakeExec, cni: CNI, cache_dir: Path) -> None:
    fake.on("tuning", "ADD", CNIError("sysctl not found", code=11, details="/proc/sys/x"))
    with pytest.raises(AddFailed) as info:
        cni.add(make_net(), rt())
    exc = info.value
    assert str(exc) == 'CNI plugin "tuning" failed (ADD): [code 11] sysctl not found: /proc/sys/x'
    assert (exc.plugin, exc.verb, exc.code) == ("tuning", "ADD", 11)
    assert exc.chain == 'type="tuning"'
    assert isinstance(exc.cause, CNIError)
    assert exc.partial is not None
    assert exc.partial.to_json() == {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/run/netns/c1"}],
        "ips": [{"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
        "dns": {},
    }
    assert fake.commands() == [("bridge", "ADD"), ("tuning", "ADD")]  # portmap never ran
    assert not cache_file(cache_dir).exists()


def test_first_plugin_failing_has_no_partial(fake: FakeExec, cni: CNI) -> None:
    fake.on("bridge", "ADD", CNIError("no bridge"))
    with pytest.raises(AddFailed) as info:
        cni.add(make_net(), rt())
    assert info.value.partial is None
    assert info.value.exit_code == 4


@pytest.mark.parametrize(
    ("stdout", "code"),
    [
        (b"not json at all", CNIError.DECODING_FAILURE),
        (b'{"cniVersion": "1.0.0", "ips": [{"address": "banana"}]}', CNIError.DECODING_FAILURE),
        (b'{"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}}', CNIError.INCOMPATIBLE_VERSION),
    ],
)
def test_bad_add_output_is_an_add_failure_naming_the_plugin(
    fake: FakeExec, cni: CNI, stdout: bytes, code: int
) -> None:
    fake.on("portmap", "ADD", stdout)
    with pytest.raises(AddFailed) as info:
        cni.add(make_net(), rt())
    assert (info.value.plugin, info.value.verb, info.value.code) == ("portmap", "ADD", code)
    assert str(info.value).startswith('CNI plugin "portmap" failed (ADD): ')
    assert info.value.partial is not None  # what tuning answered


def test_missing_plugin_during_add(cache_dir: Path) -> None:
    fake = FakeExec(missing={"portmap"})
    cni = CNI(PATH, exec=fake, cache_dir=str(cache_dir))
    with pytest.raises(AddFailed) as info:
        cni.add(make_net(), rt())
    assert isinstance(info.value.cause, PluginNotFound)
    assert (info.value.plugin, info.value.verb) == ("portmap", "ADD")
    assert fake.commands() == [("bridge", "ADD"), ("tuning", "ADD")]


def test_delete_with_the_partial_result_undoes_a_failed_add(
    fake: FakeExec, cni: CNI, cache_dir: Path
) -> None:
    fake.on("portmap", "ADD", CNIError("iptables failed"))
    net = make_net()
    with pytest.raises(AddFailed) as info:
        cni.add(net, rt(args=(("IP", "10.1.0.5"),)))
    fake.reset()
    cni.delete(net, rt(args=(("IP", "10.1.0.5"),)), result=info.value.partial)
    assert fake.commands() == [("portmap", "DEL"), ("tuning", "DEL"), ("bridge", "DEL")]
    assert info.value.partial is not None
    for call in fake.calls:
        assert call.stdin["prevResult"] == info.value.partial.to_json("1.0.0")
        assert call.env["CNI_ARGS"] == "IP=10.1.0.5"


# --- DEL -----------------------------------------------------------------------------------------


def test_delete_runs_in_reverse_with_the_cached_result(
    fake: FakeExec, cni: CNI, cache_dir: Path
) -> None:
    net = make_net()
    result = cni.add(net, rt(args=(("IP", "10.1.0.5"),), capability_args={"portMappings": PORTS}))
    fake.reset()
    # the caller knows neither the CNI_ARGS nor the capability args any more
    cni.delete(net, rt())
    assert fake.commands() == [("portmap", "DEL"), ("tuning", "DEL"), ("bridge", "DEL")]
    for call in fake.calls:
        assert call.stdin["prevResult"] == result.to_json()
        assert call.env["CNI_ARGS"] == "IP=10.1.0.5"
        assert call.env["CNI_COMMAND"] == "DEL"
        assert call.env["CNI_NETNS"] == "/run/netns/c1"
    assert fake.calls[0].stdin["runtimeConfig"] == {"portMappings": PORTS}
    assert not cache_file(cache_dir).exists()


def test_delete_prefers_the_callers_args(fake: FakeExec, cni: CNI) -> None:
    net = make_net()
    cni.add(net, rt(args=(("IP", "10.1.0.5"),), capability_args={"portMappings": PORTS}))
    fake.reset()
    other_ports = [{"hostPort": 9090, "containerPort": 90, "protocol": "udp"}]
    cni.delete(net, rt(args=(("X", "1"),), capability_args={"portMappings": other_ports}))
    assert fake.calls[0].env["CNI_ARGS"] == "X=1"
    assert fake.calls[0].stdin["runtimeConfig"] == {"portMappings": other_ports}


def test_delete_without_cache_has_no_prev_result(fake: FakeExec, cni: CNI) -> None:
    cni.delete(make_net(), rt(args=(("IP", "10.1.0.5"),)))
    assert fake.commands() == [("portmap", "DEL"), ("tuning", "DEL"), ("bridge", "DEL")]
    for call in fake.calls:
        assert "prevResult" not in call.stdin
        assert "runtimeConfig" not in call.stdin
        assert call.env["CNI_ARGS"] == "IP=10.1.0.5"


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1"])
def test_delete_before_040_sends_no_prev_result(
    fake: FakeExec, cni: CNI, cache_dir: Path, version: str
) -> None:
    net = make_net(version)
    cni.add(net, rt(capability_args={"portMappings": PORTS}))
    assert cache_file(cache_dir).exists()
    fake.reset()
    cni.delete(net, rt())
    assert len(fake.calls) == 3
    assert all("prevResult" not in c.stdin for c in fake.calls)
    # cached capability args are still used
    assert fake.calls[0].stdin["runtimeConfig"] == {"portMappings": PORTS}
    assert not cache_file(cache_dir).exists()


def test_delete_twice_succeeds(fake: FakeExec, cni: CNI, cache_dir: Path) -> None:
    net = make_net()
    cni.add(net, rt())
    cni.delete(net, rt())
    cni.delete(net, rt())
    assert [c for c in fake.commands() if c[1] == "DEL"] == [
        ("portmap", "DEL"),
        ("tuning", "DEL"),
        ("bridge", "DEL"),
    ] * 2
    second_round = fake.calls_for("DEL")[3:]
    assert all("prevResult" not in c.stdin for c in second_round)
    assert not cache_file(cache_dir).exists()


def test_failing_delete_keeps_the_cache_for_a_retry(
    fake: FakeExec, cni: CNI, cache_dir: Path
) -> None:
    net = make_net()
    cni.add(net, rt())
    fake.on("tuning", "DEL", CNIError("device busy"))
    with pytest.raises(CNIError) as info:
        cni.delete(net, rt())
    assert str(info.value) == 'CNI plugin "tuning" failed (DEL): device busy'
    assert cache_file(cache_dir).exists()
    fake.on("tuning", "DEL", b"")
    cni.delete(net, rt())
    assert not cache_file(cache_dir).exists()


def test_unreadable_cached_result_is_ignored_on_delete(
    fake: FakeExec, cni: CNI, cache_dir: Path
) -> None:
    net = make_net()
    cni.add(net, rt())
    path = cache_file(cache_dir)
    data = json.loads(path.read_bytes())
    data["result"] = {"cniVersion": "1.0.0", "ips": [{"address": "bogus"}]}
    path.write_text(json.dumps(data))
    fake.reset()
    cni.delete(net, rt())
    assert len(fake.calls) == 3
    assert all("prevResult" not in c.stdin for c in fake.calls)


def test_delete_validates(fake: FakeExec, cni: CNI) -> None:
    with pytest.raises(InvalidRequest):
        cni.delete(make_net(), RuntimeConf(container_id="c1", ifname="eth0:1"))
    assert fake.calls == []


# --- CHECK ---------------------------------------------------------------------------------------


def test_check_runs_in_order_with_the_cached_result(fake: FakeExec, cni: CNI) -> None:
    net = make_net("1.0.0")
    result = cni.add(net, rt(args=(("IP", "10.1.0.5"),), capability_args={"portMappings": PORTS}))
    fake.reset()
    cni.check(net, rt(netns=""))
    assert fake.commands() == [("bridge", "CHECK"), ("tuning", "CHECK"), ("portmap", "CHECK")]
    for call in fake.calls:
        assert call.stdin["prevResult"] == result.to_json()
        assert call.env["CNI_NETNS"] == "/run/netns/c1"  # from the cache
        assert call.env["CNI_ARGS"] == "IP=10.1.0.5"
    assert fake.calls[2].stdin["runtimeConfig"] == {"portMappings": PORTS}


def test_check_with_a_given_result(fake: FakeExec, cni: CNI) -> None:
    given = Result.from_json({"cniVersion": "1.0.0", "ips": [{"address": "10.9.9.9/24"}]})
    cni.check(make_net(), rt(), result=given)
    assert all(c.stdin["prevResult"] == given.to_json() for c in fake.calls)


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1"])
def test_check_needs_040(fake: FakeExec, cni: CNI, version: str) -> None:
    with pytest.raises(CNIError) as info:
        cni.check(make_net(version), rt())
    assert info.value.code == CNIError.INCOMPATIBLE_VERSION
    assert info.value.verb == "CHECK"
    assert "does not support the CHECK command" in str(info.value)
    assert fake.calls == []


def test_check_honours_disable_check(fake: FakeExec, cni: CNI) -> None:
    net = make_net(disableCheck=True)
    cni.check(net, rt())  # not even a cache is needed
    assert fake.calls == []


def test_check_without_cache_is_an_error(fake: FakeExec, cni: CNI) -> None:
    with pytest.raises(CNIError) as info:
        cni.check(make_net(), rt())
    assert "no cached result" in str(info.value)
    assert "was it added?" in str(info.value)
    assert fake.calls == []


def test_check_failure_names_the_plugin(fake: FakeExec, cni: CNI) -> None:
    net = make_net()
    cni.add(net, rt())
    fake.on("tuning", "CHECK", CNIError("sysctl mismatch", code=7))
    with pytest.raises(CNIError) as info:
        cni.check(net, rt())
    assert str(info.value) == 'CNI plugin "tuning" failed (CHECK): [code 7] sysctl mismatch'


# --- STATUS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
def test_status_before_110_is_not_asked(fake: FakeExec, cni: CNI, version: str) -> None:
    assert cni.status(make_net(version)) is False
    assert fake.calls == []


def test_status_asks_every_plugin(fake: FakeExec, cni: CNI) -> None:
    assert cni.status(make_net("1.1.0")) is True
    assert fake.commands() == [("bridge", "STATUS"), ("tuning", "STATUS"), ("portmap", "STATUS")]
    for call in fake.calls:
        assert call.stdin["name"] == "mynet"
        assert call.stdin["cniVersion"] == "1.1.0"
        assert "prevResult" not in call.stdin and "runtimeConfig" not in call.stdin
        assert call.env["CNI_CONTAINERID"] == ""
        assert call.env["CNI_PATH"] == "/opt/cni/bin:/usr/lib/cni"


def test_status_failure(fake: FakeExec, cni: CNI) -> None:
    fake.on("bridge", "STATUS", CNIError("no IPs left", code=51))
    with pytest.raises(CNIError) as info:
        cni.status(make_net("1.1.0"))
    assert str(info.value) == 'CNI plugin "bridge" failed (STATUS): [code 51] no IPs left'


# --- GC ------------------------------------------------------------------------------------------


def gc_setup(cni: CNI, version: str = "1.1.0", **extra: Any) -> NetworkConfigList:
    net = make_net(version, **extra)
    cni.add(net, rt("c1", args=(("IP", "10.1.0.5"),)))
    cni.add(net, rt("c2", args=(("IP", "10.1.0.6"),), capability_args={"portMappings": PORTS}))
    cni.add(net, rt("c2", ifname="net1"))
    cni.add(make_net(version, name="other"), rt("c3"))
    return net


def test_gc_deletes_stale_attachments_and_tells_plugins_what_is_valid(
    fake: FakeExec, cni: CNI, cache_dir: Path
) -> None:
    net = gc_setup(cni)
    fake.reset()
    removed = cni.gc(net, [("c1", "eth0"), ("c9", "eth0"), ("c2", "net1")])
    assert [(a.network, a.container_id, a.ifname) for a in removed] == [("mynet", "c2", "eth0")]
    assert fake.commands() == [
        ("portmap", "DEL"),
        ("tuning", "DEL"),
        ("bridge", "DEL"),
        ("bridge", "GC"),
        ("tuning", "GC"),
        ("portmap", "GC"),
    ]
    for call in fake.calls_for("DEL"):
        assert call.env["CNI_CONTAINERID"] == "c2"
        assert call.env["CNI_IFNAME"] == "eth0"
        assert call.env["CNI_NETNS"] == "/run/netns/c2"
        assert call.env["CNI_ARGS"] == "IP=10.1.0.6"
        assert "prevResult" in call.stdin
    assert fake.calls_for("DEL", "portmap")[0].stdin["runtimeConfig"] == {"portMappings": PORTS}
    valid = [
        {"containerID": "c1", "ifname": "eth0"},
        {"containerID": "c2", "ifname": "net1"},
        {"containerID": "c9", "ifname": "eth0"},
    ]
    for call in fake.calls_for("GC"):
        assert call.stdin["cni.dev/valid-attachments"] == valid
        assert call.stdin["cni.dev/attachments"] == valid
        assert call.stdin["name"] == "mynet" and call.stdin["cniVersion"] == "1.1.0"
        assert "runtimeConfig" not in call.stdin
        assert call.env["CNI_CONTAINERID"] == ""
    assert not cache_file(cache_dir, cid="c2").exists()
    assert cache_file(cache_dir, cid="c1").exists()
    assert cache_file(cache_dir, cid="c2", ifname="net1").exists()
    assert cache_file(cache_dir, net="other", cid="c3").exists()  # another network: untouched


def test_gc_with_nothing_valid_deletes_every_attachment_of_the_network(
    fake: FakeExec, cni: CNI
) -> None:
    net = gc_setup(cni)
    fake.reset()
    removed = cni.gc(net, [])
    assert sorted((a.container_id, a.ifname) for a in removed) == [
        ("c1", "eth0"),
        ("c2", "eth0"),
        ("c2", "net1"),
    ]
    assert all(c.stdin["cni.dev/valid-attachments"] == [] for c in fake.calls_for("GC"))
    assert [a.network for a in cni.cached_attachments()] == ["other"]


def test_gc_with_unknown_valid_set_deletes_nothing(fake: FakeExec, cni: CNI) -> None:
    """No valid set known: no DEL, and no plugin GC either — a plugin reading a missing list as
    "nothing is valid" would tear down every attachment."""
    net = gc_setup(cni)
    fake.reset()
    assert cni.gc(net, None) == []
    assert fake.commands() == []
    assert len(cni.cached_attachments()) == 4


def test_gc_honours_disable_gc(fake: FakeExec, cni: CNI) -> None:
    net = gc_setup(cni, disableGC=True)
    fake.reset()
    assert cni.gc(net, []) == []
    assert fake.calls == []
    assert len(cni.cached_attachments()) == 4


def test_gc_before_110_only_deletes(fake: FakeExec, cni: CNI) -> None:
    net = gc_setup(cni, "1.0.0")
    fake.reset()
    removed = cni.gc(net, [("c1", "eth0"), ("c2", "net1")])
    assert [a.container_id for a in removed] == ["c2"]
    assert {cmd for _, cmd in fake.commands()} == {"DEL"}


def test_gc_collects_errors_and_goes_on(fake: FakeExec, cni: CNI) -> None:
    net = gc_setup(cni)
    fake.reset()
    fake.on("tuning", "DEL", CNIError("stuck"))
    fake.on("portmap", "GC", CNIError("iptables locked", code=11))
    with pytest.raises(CNIError) as info:
        cni.gc(net, [("c1", "eth0")])
    text = str(info.value)
    assert info.value.verb == "GC"
    assert "stale attachment c2/eth0" in text
    assert "stale attachment c2/net1" in text
    assert 'CNI plugin "tuning" failed (DEL): stuck' in text
    assert 'CNI plugin "portmap" failed (GC): [code 11] iptables locked' in text
    # every plugin was still asked to GC
    assert [p for p, cmd in fake.commands() if cmd == "GC"] == ["bridge", "tuning", "portmap"]


# --- VERSION and negotiation ---------------------------------------------------------------------


def test_version_info(fake: FakeExec, cni: CNI) -> None:
    fake.on("bridge", "VERSION", version_answer("0.4.0", "1.0.0"))
    info = cni.version_info("bridge")
    assert info.supported_versions == ("0.4.0", "1.0.0")
    assert info.cni_version == "1.0.0"
    (call,) = fake.calls
    assert call.command == "VERSION"
    assert call.stdin == {"cniVersion": "1.1.0"}
    assert call.env["CNI_PATH"] == "/opt/cni/bin:/usr/lib/cni"
    assert call.plugin_path == "/opt/cni/bin/bridge"


def test_version_info_of_a_legacy_plugin(fake: FakeExec, cni: CNI) -> None:
    fake.on("old", "VERSION", b'{"cniVersion": "0.2.0"}')
    assert cni.version_info("old").supported_versions == ("0.1.0", "0.2.0")


def test_negotiate_picks_the_newest_common_version(fake: FakeExec, cni: CNI) -> None:
    net = make_net(cniVersions=["0.4.0", "1.0.0", "1.1.0"])
    assert net.cni_version == "1.1.0"
    fake.on("tuning", "VERSION", version_answer("0.3.1", "0.4.0", "1.0.0"))
    fake.on("portmap", "VERSION", version_answer("0.4.0", "1.0.0", "1.1.0"))
    chosen = cni.negotiate(net)
    assert chosen.cni_version == "1.0.0"
    assert chosen.raw["cniVersion"] == "1.0.0"
    assert net.cni_version == "1.1.0"  # the original is untouched
    assert fake.commands() == [("bridge", "VERSION"), ("tuning", "VERSION"), ("portmap", "VERSION")]
    fake.reset()
    cni.add(chosen, rt())
    assert {c.stdin["cniVersion"] for c in fake.calls} == {"1.0.0"}


def test_negotiate_keeps_the_list_when_everyone_agrees(fake: FakeExec, cni: CNI) -> None:
    net = make_net(cniVersions=["1.0.0", "1.1.0"])
    assert cni.negotiate(net) is net


def test_negotiate_names_the_plugin_that_lacks_the_version(fake: FakeExec, cni: CNI) -> None:
    fake.on("tuning", "VERSION", version_answer("0.3.0", "0.3.1"))
    net = make_net("1.0.0")
    with pytest.raises(ConfigError) as info:
        cni.negotiate(net)
    exc = info.value
    assert exc.source == "/etc/cni/net.d/mynet.conflist"
    assert exc.field == "cniVersion"
    assert "plugin 'tuning' does not speak CNI 1.0.0 (it speaks 0.3.0, 0.3.1)" in str(exc)
    with pytest.raises(ConfigError):
        cni.validate(net)


def test_negotiate_with_no_common_version_in_cni_versions(fake: FakeExec, cni: CNI) -> None:
    fake.on("portmap", "VERSION", version_answer("0.3.1"))
    with pytest.raises(ConfigError) as info:
        cni.negotiate(make_net(cniVersions=["0.4.0", "1.0.0"]))
    assert info.value.field == "cniVersions"
    assert "plugin 'portmap' does not speak CNI 1.0.0 or 0.4.0" in str(info.value)


def test_validate_returns_the_chains_capabilities(fake: FakeExec, cni: CNI) -> None:
    assert cni.validate(make_net()) == {"portMappings"}


def test_validate_reports_a_missing_plugin(cache_dir: Path) -> None:
    cni = CNI(PATH, exec=FakeExec(missing={"tuning"}), cache_dir=str(cache_dir))
    with pytest.raises(PluginNotFound) as info:
        cni.validate(make_net())
    assert info.value.plugin == "tuning"


# --- every error from the executor is labelled ---------------------------------------------------


def labelled(verb: str, cni: CNI, fake: FakeExec) -> CNIError:
    """Run ``verb`` with a bare, unlabelled error from the executor; return what comes out."""
    net = make_net("1.1.0")
    if verb in ("CHECK", "DEL"):
        cni.add(net, rt())
    fake.on("tuning", verb, CNIError("bare error", code=5))
    with pytest.raises(CNIError) as info:
        if verb == "ADD":
            cni.add(net, rt())
        elif verb == "DEL":
            cni.delete(net, rt())
        elif verb == "CHECK":
            cni.check(net, rt())
        elif verb == "STATUS":
            cni.status(net)
        elif verb == "GC":
            cni.gc(net, [])
        else:
            cni.version_info("tuning")
    return info.value


@pytest.mark.parametrize("verb", ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"])
def test_every_error_names_plugin_and_verb(fake: FakeExec, cni: CNI, verb: str) -> None:
    exc = labelled(verb, cni, fake)
    assert f'CNI plugin "tuning" failed ({verb}): [code 5] bare error' in str(exc)
    if verb != "GC":  # GC joins every failure into one error of its own
        assert (exc.plugin, exc.verb) == ("tuning", verb)


def test_undecodable_version_answer_names_the_plugin(fake: FakeExec, cni: CNI) -> None:
    fake.on("tuning", "VERSION", b'{"cniVersion": "1.0.0", "supportedVersions": "1.0.0"}')
    with pytest.raises(CNIError) as info:
        cni.version_info("tuning")
    assert (info.value.plugin, info.value.verb) == ("tuning", "VERSION")
    assert info.value.code == CNIError.DECODING_FAILURE


def test_missing_plugin_is_labelled_with_the_verb(cache_dir: Path) -> None:
    cni = CNI(PATH, exec=FakeExec(missing={"bridge"}), cache_dir=str(cache_dir))
    with pytest.raises(PluginNotFound) as info:
        cni.delete(make_net(), rt())
    assert (info.value.plugin, info.value.verb) == ("bridge", "DEL")


def test_default_executor_is_raw_exec(tmp_path: Path) -> None:
    from shim.cni.invoke import RawExec

    assert isinstance(CNI(PATH, cache_dir=str(tmp_path)).exec, RawExec)
    assert ResultCache(str(tmp_path)).results_dir == str(tmp_path / "results")
