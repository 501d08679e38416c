"""Docker's remote-driver messages: parsing requests, rendering answers, refusing what's malformed.

Pure functions on dicts and bytes: no app, no driver.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import pytest

from shim.errors import InvalidRequest
from shim.protocol import (
    CONNECTED,
    MAX_DEPTH,
    NEXTHOP,
    NOT_AN_OBJECT,
    CreateEndpointRequest,
    CreateNetworkRequest,
    EndpointInterface,
    EndpointRequest,
    IPAMData,
    JoinRequest,
    JoinResponse,
    NetworkRequest,
    StaticRoute,
    check_depth,
    decode,
)

pytestmark = pytest.mark.unit

NET = "cd" * 32
EP = "ef" * 32
V4 = {"AddressSpace": "LocalDefault", "Pool": "10.200.9.0/24", "Gateway": "10.200.9.1/24",
      "AuxAddresses": {"router": "10.200.9.254/24"}}
V6 = {"AddressSpace": "LocalDefault", "Pool": "fd00:200:9::/64", "Gateway": "fd00:200:9::1/64"}
NETWORK = {"NetworkID": NET,
           "Options": {"com.docker.network.generic": {"cni.mtu": "1400", "n": 7},
                       "com.docker.network.enable_ipv6": True,
                       "com.docker.network.internal": False},
           "IPv4Data": [V4], "IPv6Data": [V6]}


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` levels deep, counting itself: {"a": [[...]]}."""
    inner: Any = []
    for _ in range(depth - 2):
        inner = [inner]
    return {"a": inner} if depth > 1 else {}


# --- decode: the body of every request -----------------------------------------------------------


def test_decode_reads_a_json_object() -> None:
    assert decode(json.dumps(NETWORK).encode(), "NetworkDriver.CreateNetwork") == NETWORK
    assert decode(b' \n{"NetworkID": "x"}\n', "NetworkDriver.DeleteNetwork") == {"NetworkID": "x"}


@pytest.mark.parametrize("method", ["NetworkDriver.Join", "NetworkDriver.CreateEndpoint"])
def test_an_empty_body_is_named_for_what_it_is(method: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode(b"", method)
    message = str(caught.value)
    assert message.startswith(f"Docker sent {method} with an empty body: ")
    assert "while the request was in flight (pycni was restarted or killed)" in message
    assert message.endswith("run the command again")


@pytest.mark.parametrize("raw", [b" ", b"\n", b"{", b"null", b"[]", b'"x"', b"42", b"true",
                                 b"\xff\xfe{}", b"{'a': 1}", b'{"a": 1,}', b"{}{}", b"NaN"])
def test_a_malformed_body_keeps_the_plain_message(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decode(raw, "NetworkDriver.Join")
    assert str(caught.value) == NOT_AN_OBJECT


@pytest.mark.parametrize("raw", [
    b"[" * 5000 + b"]" * 5000,  # too deep for the JSON parser itself
    b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    json.dumps(nested(600)).encode(),  # parses, but nothing downstream could walk it
    json.dumps(nested(MAX_DEPTH + 1)).encode(),
])
def test_a_body_nested_too_deep_is_refused(raw: bytes) -> None:
    with pytest.raises(InvalidRequest, match=f"nests deeper than {MAX_DEPTH} levels"):
        decode(raw, "NetworkDriver.CreateNetwork")


def test_nesting_up_to_the_bound_is_fine() -> None:
    assert decode(json.dumps(nested(MAX_DEPTH)).encode(), "x") == nested(MAX_DEPTH)
    check_depth(nested(MAX_DEPTH))
    check_depth({"a": 1, "b": "x", "c": None})
    check_depth({"wide": [[] for _ in range(10_000)]}, limit=3)
    with pytest.raises(InvalidRequest):
        check_depth({"a": {"b": {}}}, limit=2)
    with pytest.raises(InvalidRequest):
        check_depth({"a": [1, 2, {"b": []}]}, limit=3)


# --- ids -----------------------------------------------------------------------------------------


def test_an_id_is_exactly_64_lowercase_hex_digits() -> None:
    assert NetworkRequest.from_json({"NetworkID": NET}).network_id == NET


@pytest.mark.parametrize("bad", [
    "ab" * 32 + "a", "ab" * 32 + "\n", "ab" * 32 + "/../x", "AB" * 32, "ab" * 31, " " + "ab" * 32,
    "g" * 64, "ab" * 64,
])
def test_anything_else_is_no_docker_id(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="is not a Docker id"):
        NetworkRequest.from_json({"NetworkID": bad})
    with pytest.raises(InvalidRequest, match="EndpointID"):
        EndpointRequest.from_json({"NetworkID": NET, "EndpointID": bad})


@pytest.mark.parametrize(("body", "message"), [
    ({}, "missing NetworkID"),
    ({"NetworkID": ""}, "missing NetworkID"),
    ({"NetworkID": None}, "missing NetworkID"),
    ({"NetworkID": NET}, "missing EndpointID"),
])
def test_missing_ids(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        JoinRequest.from_json(body)
    assert str(caught.value) == message


@pytest.mark.parametrize(("value", "kind"), [
    (5, "a number"), (5.5, "a number"), (True, "a boolean"), ([NET], "an array"),
    ({"Id": NET}, "an object"),
])
def test_an_id_of_the_wrong_type_is_named_so(value: Any, kind: str) -> None:
    """{"NetworkID": 5} is there, and of the wrong type: not "missing"."""
    with pytest.raises(InvalidRequest) as caught:
        NetworkRequest.from_json({"NetworkID": value})
    assert str(caught.value) == f"NetworkID must be a string (a Docker id), not {kind}"
    with pytest.raises(InvalidRequest) as caught:
        EndpointRequest.from_json({"NetworkID": NET, "EndpointID": value})
    assert str(caught.value) == f"EndpointID must be a string (a Docker id), not {kind}"


def test_a_long_bad_id_is_cut_short_in_the_message() -> None:
    with pytest.raises(InvalidRequest) as caught:
        NetworkRequest.from_json({"NetworkID": "x" * 10_000})
    assert len(str(caught.value)) < 200


@pytest.mark.parametrize("cls", [NetworkRequest, EndpointRequest, JoinRequest,
                                 CreateNetworkRequest, CreateEndpointRequest])
@pytest.mark.parametrize("body", [None, [], "x", 3])
def test_a_request_must_be_an_object(cls: Any, body: Any) -> None:
    with pytest.raises(InvalidRequest, match="request must be a JSON object"):
        cls.from_json(body)


# --- CreateNetwork -------------------------------------------------------------------------------


def test_create_network_parses_pools_and_options() -> None:
    req = CreateNetworkRequest.from_json(NETWORK)
    assert req.network_id == NET
    [v4], [v6] = req.ipv4_data, req.ipv6_data
    assert v4 == IPAMData("LocalDefault", ipaddress.ip_network("10.200.9.0/24"),
                          ipaddress.ip_interface("10.200.9.1/24"),
                          {"router": "10.200.9.254/24"})
    assert (v6.pool, v6.gateway) == (ipaddress.ip_network("fd00:200:9::/64"),
                                     ipaddress.ip_interface("fd00:200:9::1/64"))
    assert not v4.is_null and not v6.is_null
    assert req.driver_options == {"cni.mtu": "1400", "n": "7"}  # -o values are strings
    assert (req.ipv6, req.internal) == (True, False)


def test_create_network_defaults() -> None:
    req = CreateNetworkRequest.from_json({"NetworkID": NET})
    assert (req.options, req.ipv4_data, req.ipv6_data) == ({}, [], [])
    assert (req.driver_options, req.ipv6, req.internal) == ({}, False, False)
    pool = IPAMData.from_json({"Pool": "10.200.9.7/24"})  # host bits are forgiven
    assert (str(pool.pool), pool.gateway, pool.aux_addresses) == ("10.200.9.0/24", None, {})


@pytest.mark.parametrize("pool", [{"AddressSpace": "null", "Pool": "0.0.0.0/0"},
                                  {"AddressSpace": "LocalDefault", "Pool": "0.0.0.0/0"},
                                  {"AddressSpace": "null", "Pool": "10.200.9.0/24"}])
def test_docker_null_ipam_is_recognised(pool: dict[str, str]) -> None:
    assert IPAMData.from_json(pool).is_null


@pytest.mark.parametrize(("change", "message"), [
    ({"Options": []}, "Options must be a JSON object"),
    ({"IPv4Data": {}}, "IPv4Data must be a list"),
    ({"IPv6Data": "x"}, "IPv6Data must be a list"),
    ({"IPv4Data": [7]}, "IPAM data must be a JSON object"),
    ({"IPv4Data": [{"Pool": "10.0.0.0/33"}]}, "IPAM Pool '10.0.0.0/33' is not a subnet"),
    ({"IPv4Data": [{}]}, "IPAM Pool '' is not a subnet"),
    ({"IPv4Data": [{"Pool": 10}]}, "Pool must be a string"),
    ({"IPv4Data": [{"Pool": "10.0.0.0/8", "Gateway": "x"}]}, "Gateway 'x' is not an address"),
    ({"IPv4Data": [{"Pool": "10.0.0.0/8", "AuxAddresses": ["x"]}]},
     "AuxAddresses must be an object"),
])
def test_create_network_errors(change: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        CreateNetworkRequest.from_json({**NETWORK, **change})


def test_a_generic_option_that_is_no_object_is_refused_when_read() -> None:
    req = CreateNetworkRequest.from_json({"NetworkID": NET,
                                          "Options": {"com.docker.network.generic": "x"}})
    with pytest.raises(InvalidRequest, match="com.docker.network.generic must be an object"):
        _ = req.driver_options


# --- CreateEndpoint ------------------------------------------------------------------------------


@pytest.mark.parametrize("interface", [
    {},
    {"Address": "10.200.9.7/24"},
    {"AddressIPv6": "fd00:200:9::7/64"},
    {"MacAddress": "02:42:0a:c8:09:07"},
    {"Address": "10.200.9.7/24", "AddressIPv6": "fd00:200:9::7/64",
     "MacAddress": "02:42:0a:c8:09:07"},
])
def test_an_interface_round_trips(interface: dict[str, str]) -> None:
    parsed = EndpointInterface.from_json(interface)
    assert parsed.to_json() == interface
    assert EndpointInterface.from_json(parsed.to_json()) == parsed


def test_an_interface_normalises_what_docker_sent() -> None:
    parsed = EndpointInterface.from_json({"Address": "", "AddressIPv6": None,
                                          "MacAddress": "02:42:0A:C8:09:07"})
    assert parsed == EndpointInterface(mac_address="02:42:0a:c8:09:07")
    assert EndpointInterface.from_json(None) == EndpointInterface()
    assert EndpointInterface().to_json() == {}


@pytest.mark.parametrize(("interface", "message"), [
    ([], "Interface must be a JSON object"),
    ({"Address": "fd00::7/64"}, "Interface.Address must be an IPv4 address"),
    ({"AddressIPv6": "10.200.9.7/24"}, "Interface.AddressIPv6 must be an IPv6 address"),
    ({"Address": "10.200.9.300/24"}, "is not an address in CIDR form"),
    ({"Address": 7}, "Address must be a string"),
    ({"MacAddress": "02:42:0a:c8:09"}, "is not a MAC address"),
    ({"MacAddress": "02:42:0a:c8:09:07\n"}, "is not a MAC address"),
])
def test_interface_errors(interface: Any, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        CreateEndpointRequest.from_json({"NetworkID": NET, "EndpointID": EP,
                                         "Interface": interface})


def test_create_endpoint_and_join_parse() -> None:
    ports = {"com.docker.network.portmap": [{"Proto": 6, "Port": 80, "HostPort": 8080}]}
    req = CreateEndpointRequest.from_json({"NetworkID": NET, "EndpointID": EP,
                                           "Interface": {"Address": "10.200.9.7/24"},
                                           "Options": ports})
    assert (req.network_id, req.endpoint_id, req.options) == (NET, EP, ports)
    assert req.interface.address == ipaddress.IPv4Interface("10.200.9.7/24")
    join = JoinRequest.from_json({"NetworkID": NET, "EndpointID": EP,
                                  "SandboxKey": "/var/run/docker/netns/0123456789ab",
                                  "Options": None})
    assert (join.sandbox_key, join.options) == ("/var/run/docker/netns/0123456789ab", {})
    assert EndpointRequest.from_json({"NetworkID": NET, "EndpointID": EP}).options == {}
    with pytest.raises(InvalidRequest, match="SandboxKey must be a string"):
        JoinRequest.from_json({"NetworkID": NET, "EndpointID": EP, "SandboxKey": 1})


# --- answers -------------------------------------------------------------------------------------


def test_a_minimal_join_answer() -> None:
    assert JoinResponse(src_name="pcn0123456789ab").to_json() == {
        "InterfaceName": {"SrcName": "pcn0123456789ab", "DstPrefix": "eth"},
        "DisableGatewayService": False,
    }


def test_a_full_join_answer() -> None:
    answer = JoinResponse(
        src_name="pcn0123456789ab",
        gateway="10.200.9.1",
        gateway_ipv6="fd00:200:9::1",
        static_routes=(StaticRoute("10.200.10.0/24", NEXTHOP, "10.200.9.1"),
                       StaticRoute("10.200.9.1/32", CONNECTED)),
        disable_gateway_service=True,
    )
    assert answer.to_json() == {
        "InterfaceName": {"SrcName": "pcn0123456789ab", "DstPrefix": "eth"},
        "DisableGatewayService": True,
        "Gateway": "10.200.9.1",
        "GatewayIPv6": "fd00:200:9::1",
        "StaticRoutes": [
            {"Destination": "10.200.10.0/24", "RouteType": 0, "NextHop": "10.200.9.1"},
            {"Destination": "10.200.9.1/32", "RouteType": 1},
        ],
    }
    json.dumps(answer.to_json())  # plain JSON, nothing Python-only in it
