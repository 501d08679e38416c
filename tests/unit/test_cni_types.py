"""shim.cni.types: results of every supported version, converted both ways; VERSION answers."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from shim.cni.types import (
    CURRENT_VERSION,
    SUPPORTED_VERSIONS,
    IPConfig,
    Result,
    Route,
    VersionInfo,
    parse_version,
    version_at_least,
)
from shim.errors import CNIError

pytestmark = pytest.mark.unit

RESULT_030: dict[str, Any] = {
    "cniVersion": "0.3.0",
    "interfaces": [
        {"name": "cni0", "mac": "0a:58:0a:01:00:01"},
        {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/run/netns/c1"},
    ],
    "ips": [
        {"version": "4", "interface": 1, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
        {"version": "6", "interface": 1, "address": "fd00::5/64", "gateway": "fd00::1"},
    ],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}, {"dst": "::/0"}],
    "dns": {
        "nameservers": ["10.1.0.1"],
        "domain": "example",
        "search": ["a", "b"],
        "options": ["ndots:2"],
    },
}

RESULT_110: dict[str, Any] = {
    "cniVersion": "1.1.0",
    "interfaces": [
        {
            "name": "eth0",
            "mac": "0a:58:0a:01:00:05",
            "mtu": 9000,
            "sandbox": "/run/netns/c1",
            "socketPath": "/run/vhost.sock",
            "pciID": "0000:00:1f.6",
        }
    ],
    "ips": [{"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
    "routes": [
        {
            "dst": "0.0.0.0/0",
            "gw": "10.1.0.1",
            "mtu": 1400,
            "advmss": 1360,
            "priority": 100,
            "table": 200,
            "scope": 0,
        },
    ],
    "dns": {},
}


# --- versions ------------------------------------------------------------------------------------


def test_supported_versions() -> None:
    assert SUPPORTED_VERSIONS == ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
    assert CURRENT_VERSION == "1.1.0"


def test_parse_version() -> None:
    assert parse_version("0.3.1") == (0, 3, 1)
    assert parse_version("10.20.30") == (10, 20, 30)
    for bad in ("1.0", "1.0.0.0", "v1.0.0", "1.x.0", "", "1..0"):
        with pytest.raises(ValueError):
            parse_version(bad)


def test_version_at_least_compares_numerically() -> None:
    assert version_at_least("0.10.0", "0.4.0")
    assert version_at_least("1.0.0", "1.0.0")
    assert not version_at_least("0.3.1", "0.4.0")


# --- parsing every version --------------------------------------------------------------------


def test_parse_030_result() -> None:
    r = Result.from_json(RESULT_030)
    assert r.cni_version == "0.3.0"
    assert [i.name for i in r.interfaces] == ["cni0", "eth0"]
    assert r.interfaces[1].sandbox == "/run/netns/c1"
    assert r.interfaces[1].mac == "0a:58:0a:01:00:05"
    assert r.ips[0].address == ipaddress.ip_interface("10.1.0.5/24")
    assert r.ips[0].gateway == ipaddress.ip_address("10.1.0.1")
    assert r.ips[0].interface == 1
    assert [ip.family for ip in r.ips] == [4, 6]
    assert r.routes[0].dst == ipaddress.ip_network("0.0.0.0/0")
    assert r.routes[0].gw == ipaddress.ip_address("10.1.0.1")
    assert r.routes[0].is_default and r.routes[1].is_default
    assert r.routes[1].gw is None
    assert r.dns.nameservers == ["10.1.0.1"]
    assert r.dns.domain == "example"
    assert r.dns.search == ["a", "b"]
    assert r.dns.options == ["ndots:2"]
    assert r.container_interfaces() == [(1, r.interfaces[1])]
    assert r.ips_for(1) == r.ips
    assert r.ips_for(0) == []
    assert r.ips_for(None) == r.ips


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_pre_100_results_round_trip_exactly(version: str) -> None:
    data = dict(RESULT_030, cniVersion=version)
    assert Result.from_json(data).to_json() == data


def test_100_result_round_trips_exactly() -> None:
    data = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "aa:bb:cc:dd:ee:ff", "sandbox": "/run/netns/x"}],
        "ips": [{"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
        "routes": [{"dst": "10.2.0.0/16", "gw": "10.1.0.254"}],
        "dns": {"nameservers": ["1.1.1.1"]},
    }
    assert Result.from_json(data).to_json() == data


def test_110_result_round_trips_exactly() -> None:
    r = Result.from_json(RESULT_110)
    assert r.interfaces[0].mtu == 9000
    assert r.interfaces[0].socket_path == "/run/vhost.sock"
    assert r.interfaces[0].pci_id == "0000:00:1f.6"
    route = r.routes[0]
    assert (route.mtu, route.advmss, route.priority, route.table, route.scope) == (
        1400,
        1360,
        100,
        200,
        0,
    )
    assert r.to_json() == RESULT_110


def test_minimal_result() -> None:
    r = Result.from_json({"cniVersion": "1.0.0"})
    assert (r.interfaces, r.ips, r.routes, bool(r.dns)) == ([], [], [], False)
    assert r.to_json() == {"cniVersion": "1.0.0", "dns": {}}


def test_nulls_are_empty() -> None:
    r = Result.from_json({"cniVersion": "1.0.0", "interfaces": None, "ips": None, "dns": None})
    assert (r.interfaces, r.ips, r.routes) == ([], [], [])


def test_missing_cni_version_uses_the_default() -> None:
    data = {k: v for k, v in RESULT_110.items() if k != "cniVersion"}
    r = Result.from_json(data, default_version="1.1.0")
    assert r.cni_version == "1.1.0"
    assert Result.from_json({"ips": []}, default_version="0.4.0").cni_version == "0.4.0"


def test_missing_cni_version_without_default_is_an_error() -> None:
    with pytest.raises(CNIError) as info:
        Result.from_json({"ips": []})
    assert info.value.code == CNIError.INCOMPATIBLE_VERSION


@pytest.mark.parametrize("version", ["0.2.0", "0.1.0", "2.0.0", "1.0", 1, None])
def test_unsupported_result_versions(version: Any) -> None:
    with pytest.raises(CNIError) as info:
        Result.from_json({"cniVersion": version, "ips": []}, default_version="")
    assert info.value.code == CNIError.INCOMPATIBLE_VERSION
    assert "unsupported result version" in info.value.msg


# --- conversion ----------------------------------------------------------------------------------


def test_up_conversion_drops_the_ip_version_key() -> None:
    r = Result.from_json(RESULT_030)
    for target in ("1.0.0", "1.1.0"):
        out = r.to_json(target)
        assert out["cniVersion"] == target
        assert out["ips"] == [
            {"interface": 1, "address": "10.1.0.5/24", "gateway": "10.1.0.1"},
            {"interface": 1, "address": "fd00::5/64", "gateway": "fd00::1"},
        ]
        assert out["interfaces"] == RESULT_030["interfaces"]
        assert out["routes"] == RESULT_030["routes"]
        assert out["dns"] == RESULT_030["dns"]


def test_down_conversion_adds_the_ip_version_key() -> None:
    r = Result.from_json(
        {
            "cniVersion": "1.0.0",
            "ips": [{"address": "10.1.0.5/24"}, {"address": "fd00::5/64", "interface": 0}],
        }
    )
    for target in ("0.3.0", "0.3.1", "0.4.0"):
        assert r.to_json(target)["ips"] == [
            {"version": "4", "address": "10.1.0.5/24"},
            {"version": "6", "interface": 0, "address": "fd00::5/64"},
        ]


def test_down_conversion_from_110_drops_the_new_fields() -> None:
    r = Result.from_json(RESULT_110)
    for target in ("1.0.0", "0.4.0", "0.3.1", "0.3.0"):
        out = r.to_json(target)
        assert out["interfaces"] == [
            {"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/run/netns/c1"}
        ]
        assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}]
    assert r.to_json("0.4.0")["ips"] == [
        {"version": "4", "interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}
    ]


def test_convert_returns_a_result_of_the_target_version() -> None:
    r = Result.from_json(RESULT_110)
    down = r.convert("0.4.0")
    assert down.cni_version == "0.4.0"
    assert down.interfaces[0].mtu is None
    assert down.routes[0].table is None
    # ...and the lost fields stay lost on the way back up
    assert down.convert("1.1.0").to_json() == {
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "/run/netns/c1"}],
        "ips": [{"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
        "dns": {},
    }
    assert r.cni_version == "1.1.0"  # convert does not modify


@pytest.mark.parametrize("target", ["0.2.0", "9.9.9", "bogus"])
def test_cannot_convert_to_unsupported_versions(target: str) -> None:
    with pytest.raises(CNIError) as info:
        Result.from_json(RESULT_030).to_json(target)
    assert info.value.code == CNIError.INCOMPATIBLE_VERSION


def test_route_network_is_normalised() -> None:
    route = Route.from_json({"dst": "10.1.2.3/16"})
    assert str(route.dst) == "10.1.0.0/16"
    assert route.to_json("1.0.0") == {"dst": "10.1.0.0/16"}


def test_ipconfig_gateway_empty_string_is_none() -> None:
    ip = IPConfig.from_json({"address": "10.0.0.2/8", "gateway": ""})
    assert ip.gateway is None
    assert ip.to_json("1.0.0") == {"address": "10.0.0.2/8"}


# --- malformed results ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param([], id="not-an-object"),
        pytest.param("x", id="string"),
        pytest.param({"cniVersion": "1.0.0", "interfaces": {"name": "eth0"}}, id="ifaces-obj"),
        pytest.param({"cniVersion": "1.0.0", "ips": "10.0.0.1/24"}, id="ips-str"),
        pytest.param({"cniVersion": "1.0.0", "routes": {}}, id="routes-obj"),
        pytest.param({"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]}, id="iface-no-name"),
        pytest.param({"cniVersion": "1.0.0", "interfaces": ["eth0"]}, id="iface-str"),
        pytest.param(
            {"cniVersion": "1.0.0", "interfaces": [{"name": "e", "mtu": "big"}]}, id="iface-mtu-str"
        ),
        pytest.param(
            {"cniVersion": "1.1.0", "interfaces": [{"name": "e", "mtu": [1]}]}, id="iface-mtu-list"
        ),
        pytest.param({"cniVersion": "1.0.0", "ips": [{"gateway": "10.0.0.1"}]}, id="ip-no-addr"),
        pytest.param({"cniVersion": "1.0.0", "ips": [{"address": 167772161}]}, id="ip-int"),
        pytest.param({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.300/24"}]}, id="ip-bad"),
        pytest.param(
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/33"}]}, id="ip-bad-prefix"
        ),
        pytest.param(
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/24", "gateway": "x"}]},
            id="ip-bad-gw",
        ),
        pytest.param(
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/24", "interface": "0"}]},
            id="ip-iface-str",
        ),
        pytest.param(
            {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.3/24", "interface": True}]},
            id="ip-iface-bool",
        ),
        pytest.param({"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]}, id="route-no-dst"),
        pytest.param({"cniVersion": "1.0.0", "routes": [{"dst": "nowhere"}]}, id="route-bad-dst"),
        pytest.param(
            {"cniVersion": "1.0.0", "routes": [{"dst": "0.0.0.0/0", "gw": "gw"}]}, id="route-bad-gw"
        ),
        pytest.param(
            {"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "table": "main"}]},
            id="route-table-str",
        ),
        pytest.param(
            {"cniVersion": "1.1.0", "routes": [{"dst": "0.0.0.0/0", "mtu": {}}]}, id="route-mtu-obj"
        ),
        pytest.param({"cniVersion": "1.0.0", "dns": ["1.1.1.1"]}, id="dns-list"),
        pytest.param({"cniVersion": "1.0.0", "dns": {"nameservers": "1.1.1.1"}}, id="dns-ns-str"),
        pytest.param(
            {"cniVersion": "1.0.0", "dns": {"search": "example.com"}}, id="dns-search-str"
        ),
    ],
)
def test_malformed_results_are_decoding_errors(data: Any) -> None:
    with pytest.raises(CNIError) as info:
        Result.from_json(data)
    assert info.value.code == CNIError.DECODING_FAILURE
    assert info.value.exit_code == 4


# --- VERSION answers -----------------------------------------------------------------------------


def test_version_info() -> None:
    info = VersionInfo.from_json(
        {"cniVersion": "1.1.0", "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]}
    )
    assert info.cni_version == "1.1.0"
    assert info.supported_versions == ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
    assert info.supports("1.0.0")
    assert not info.supports("0.3.0")


def test_legacy_020_version_answer() -> None:
    """Plugins before 0.3.0 answered without supportedVersions; 0.2.0 ones spoke 0.1.0 too."""
    info = VersionInfo.from_json({"cniVersion": "0.2.0"})
    assert info.supported_versions == ("0.1.0", "0.2.0")
    assert not info.supports("0.3.1")


def test_legacy_010_version_answer() -> None:
    assert VersionInfo.from_json({"cniVersion": "0.1.0"}).supported_versions == ("0.1.0",)
    assert VersionInfo.from_json({}).supported_versions == ("0.1.0",)


@pytest.mark.parametrize(
    "data",
    [
        [],
        "1.0.0",
        {"cniVersion": "1.0.0", "supportedVersions": "1.0.0"},
        {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", 1]},
    ],
)
def test_bad_version_answers(data: Any) -> None:
    with pytest.raises(CNIError) as info:
        VersionInfo.from_json(data)
    assert info.value.code == CNIError.DECODING_FAILURE
