"""Docker's remote-driver API through Flask's test client, on a driver on fakes.

Every route answers JSON in Docker's media type; every error is ``{"Err": message}`` with the
error class's status, including Werkzeug's own (404, 405, 413) and anything unexpected (500,
without a traceback).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from shim.api import MEDIA_TYPE
from shim.errors import CNIError
from tests.world import EP, GATEWAY, NET, World

pytestmark = pytest.mark.unit

DOCKER_TYPE = "application/vnd.docker.plugins.v1.2+json"  # what dockerd sends
ADDRESS = "10.200.9.7/24"
NETWORK = {"NetworkID": NET, "Options": {"com.docker.network.generic": {}},
           "IPv4Data": [{"AddressSpace": "LocalDefault", "Pool": "10.200.9.0/24",
                         "Gateway": f"{GATEWAY}/24"}], "IPv6Data": []}
ENDPOINT = {"NetworkID": NET, "EndpointID": EP, "Interface": {"Address": ADDRESS}, "Options": {}}
IDS = {"NetworkID": NET, "EndpointID": EP}
PORTS = {"com.docker.network.portmap": [
    {"Proto": 6, "IP": "", "Port": 80, "HostIP": "127.0.0.1", "HostPort": 0, "HostPortEnd": 0}]}

#: routes whose body must name a network (and an endpoint)
NETWORK_ROUTES = ["CreateNetwork", "DeleteNetwork"]
ENDPOINT_ROUTES = ["CreateEndpoint", "EndpointOperInfo", "DeleteEndpoint", "Join", "Leave",
                   "ProgramExternalConnectivity", "RevokeExternalConnectivity"]
ID_ROUTES = NETWORK_ROUTES + ENDPOINT_ROUTES


def post(client: FlaskClient, route: str, body: Any = None, *, raw: bytes | None = None,
         content_type: str = DOCKER_TYPE) -> TestResponse:
    data = raw if raw is not None else json.dumps({} if body is None else body).encode()
    response = client.post(f"/{route}", data=data, content_type=content_type)
    assert response.mimetype == MEDIA_TYPE, (route, response.status_code, response.data[:200])
    return response


def ok(client: FlaskClient, route: str, body: Any = None) -> dict[str, Any]:
    response = post(client, f"NetworkDriver.{route}", body)
    assert response.status_code == 200, response.get_json()
    answer: dict[str, Any] = response.get_json()
    return answer


def err(response: TestResponse, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.data[:300])
    body = response.get_json()
    assert isinstance(body, dict) and set(body) == {"Err"} and isinstance(body["Err"], str)
    assert body["Err"] and "Traceback" not in body["Err"] and 'File "' not in body["Err"]
    message: str = body["Err"]
    return message


# --- every route, on the happy path --------------------------------------------------------------


def test_activate_and_capabilities(client: FlaskClient) -> None:
    assert post(client, "Plugin.Activate").get_json() == {"Implements": ["NetworkDriver"]}
    assert ok(client, "GetCapabilities") == {"Scope": "local", "ConnectivityScope": "local"}


def test_an_endpoints_whole_life_through_every_route(client: FlaskClient, world: World) -> None:
    assert ok(client, "CreateNetwork", NETWORK) == {}
    answer = ok(client, "CreateEndpoint", ENDPOINT)
    mac = world.driver.endpoints[EP].mac
    assert answer == {"Interface": {"MacAddress": mac}}
    info = ok(client, "EndpointOperInfo", IDS)["Value"]
    assert info["cni.network"] == f"pycni-{NET[:12]}"
    assert info["cni.plugins"] == ["bridge"]  # ports are pycni's own DNAT rules
    assert info["cni.netns"] == f"/run/netns/pycni-{EP[:12]}"
    assert info["cni.ips"] == [ADDRESS] and info["phase"] == "ready"
    joined = ok(client, "Join", {**IDS, "SandboxKey": "/var/run/docker/netns/c1", "Options": {}})
    assert joined == {"InterfaceName": {"SrcName": f"pcn{EP[:12]}", "DstPrefix": "eth"},
                      "Gateway": GATEWAY, "DisableGatewayService": True}
    assert ok(client, "ProgramExternalConnectivity", {**IDS, "Options": PORTS}) == {}
    [published] = ok(client, "EndpointOperInfo", IDS)["Value"]["ports"]
    assert published.startswith("127.0.0.1:") and published.endswith("->80/tcp")
    assert ok(client, "RevokeExternalConnectivity", IDS) == {}
    assert ok(client, "Leave", IDS) == {}
    assert ok(client, "DeleteEndpoint", IDS) == {}
    assert ok(client, "DeleteNetwork", {"NetworkID": NET}) == {}
    assert world.leftovers() == {} and world.driver.networks == {}


def test_discovery_is_accepted(client: FlaskClient) -> None:
    for route in ("DiscoverNew", "DiscoverDelete"):
        assert ok(client, route, {"DiscoveryType": 1, "DiscoveryData": {"Address": "x"}}) == {}


def test_pycni_gc(client: FlaskClient, world: World) -> None:
    world.links.create_netns("pycni-" + "12" * 6)
    assert post(client, "Pycni.GC", {"DryRun": True}).get_json() == {
        "Actions": [f"netns pycni-{'12' * 6}: no endpoint; removed"]}
    assert world.links.list_netns() != []
    assert post(client, "Pycni.GC", {}).status_code == 200
    assert world.links.list_netns() == []
    assert "DryRun must be true or false" in err(post(client, "Pycni.GC", {"DryRun": "yes"}), 400)


@pytest.mark.parametrize("route", ["AllocateNetwork", "FreeNetwork"])
def test_swarm_routes_are_refused(client: FlaskClient, route: str) -> None:
    message = err(post(client, f"NetworkDriver.{route}", {"NetworkID": NET}), 400)
    assert "swarm" in message


@pytest.mark.parametrize("content_type", [DOCKER_TYPE, "application/json", "text/plain", ""])
def test_any_content_type_is_read_as_json(client: FlaskClient, content_type: str) -> None:
    response = post(client, "NetworkDriver.CreateNetwork", NETWORK, content_type=content_type)
    assert response.status_code == 200


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ID_ROUTES)
@pytest.mark.parametrize("raw", [b" ", b"{", b"null", b"[]", b'"x"', b"42", b"\xff\xfe{}",
                                 b'{"NetworkID": "' + b"ab" * 32 + b'",}'])
def test_a_body_that_is_no_json_object_is_400(client: FlaskClient, route: str, raw: bytes) -> None:
    message = err(post(client, f"NetworkDriver.{route}", raw=raw), 400)
    assert message == "request body must be a JSON object"


@pytest.mark.parametrize("route", ID_ROUTES)
def test_an_empty_body_says_docker_resent_the_request(client: FlaskClient, route: str) -> None:
    """Docker's retry after the plugin went away mid-request carries no body (moby
    ``pkg/plugins/client.go``): the message says so, not that the request was malformed."""
    message = err(post(client, f"NetworkDriver.{route}", raw=b""), 400)
    assert message.startswith(f"Docker sent NetworkDriver.{route} with an empty body: ")
    assert "pycni was restarted or killed" in message and "run the command again" in message


@pytest.mark.parametrize("route", ID_ROUTES)
def test_missing_ids_are_400(client: FlaskClient, route: str) -> None:
    assert err(post(client, f"NetworkDriver.{route}", {}), 400) == "missing NetworkID"
    if route in ENDPOINT_ROUTES:
        message = err(post(client, f"NetworkDriver.{route}", {"NetworkID": NET}), 400)
        assert message == "missing EndpointID"


@pytest.mark.parametrize("route", ID_ROUTES)
@pytest.mark.parametrize("bad", ["AB" * 32, "ab" * 31, "g" * 64, " " + "ab" * 32, 42, ["x"], ""])
def test_ids_that_are_not_64_hex_digits_are_400(client: FlaskClient, route: str,
                                                 bad: Any) -> None:
    for key in ("NetworkID", "EndpointID") if route in ENDPOINT_ROUTES else ("NetworkID",):
        message = err(post(client, f"NetworkDriver.{route}", {**ENDPOINT, key: bad}), 400)
        assert key in message


@pytest.mark.parametrize(("route", "body", "match"), [
    ("CreateNetwork", {**NETWORK, "Options": []}, "Options must be a JSON object"),
    ("CreateNetwork", {**NETWORK, "IPv4Data": {}}, "IPv4Data must be a list"),
    ("CreateNetwork", {**NETWORK, "IPv4Data": [{"Pool": "10.0.0.0/33"}]}, "is not a subnet"),
    ("CreateNetwork", {**NETWORK, "IPv4Data": [{"Pool": "10.0.0.0/8", "Gateway": "x"}]},
     "Gateway 'x' is not an address"),
    ("CreateNetwork", {**NETWORK, "Options": {"com.docker.network.generic": "x"}},
     "com.docker.network.generic must be an object"),
    ("CreateEndpoint", {**ENDPOINT, "Interface": []}, "Interface must be a JSON object"),
    ("CreateEndpoint", {**ENDPOINT, "Interface": {"Address": "::1/64"}}, "IPv4 address"),
    ("CreateEndpoint", {**ENDPOINT, "Interface": {"Address": 7}}, "Address must be a string"),
    ("CreateEndpoint", {**ENDPOINT, "Interface": {"MacAddress": "zz"}}, "not a MAC address"),
    ("Join", {**IDS, "SandboxKey": 1}, "SandboxKey must be a string"),
    ("ProgramExternalConnectivity", {**IDS, "Options": {"com.docker.network.portmap": [{}]}},
     "protocol None"),
])
def test_wrong_types_are_400(client: FlaskClient, route: str, body: Any, match: str) -> None:
    assert ok(client, "CreateNetwork", NETWORK) == {}
    if route != "CreateEndpoint":
        ok(client, "CreateEndpoint", ENDPOINT)
    assert match in err(post(client, f"NetworkDriver.{route}", body), 400)


def test_unknown_network_or_endpoint_is_404(client: FlaskClient) -> None:
    assert "no network" in err(post(client, "NetworkDriver.CreateEndpoint", ENDPOINT), 404)
    for route in ("Join", "EndpointOperInfo", "ProgramExternalConnectivity"):
        assert "no endpoint" in err(post(client, f"NetworkDriver.{route}", IDS), 404)


def test_deleting_unknown_ids_is_200(client: FlaskClient) -> None:
    assert ok(client, "DeleteEndpoint", IDS) == {}
    assert ok(client, "DeleteNetwork", {"NetworkID": NET}) == {}
    assert ok(client, "Leave", IDS) == {}
    assert ok(client, "RevokeExternalConnectivity", IDS) == {}


def test_unknown_route_is_404_json(client: FlaskClient) -> None:
    assert err(post(client, "NetworkDriver.Frobnicate", {}), 404).startswith("Not Found")
    response = client.get("/nowhere")
    assert response.mimetype == MEDIA_TYPE and err(response, 404)


@pytest.mark.parametrize("route", ["Plugin.Activate", "NetworkDriver.CreateNetwork"])
def test_get_is_405_json(client: FlaskClient, route: str) -> None:
    response = client.get(f"/{route}")
    assert response.mimetype == MEDIA_TYPE
    assert err(response, 405).startswith("Method Not Allowed")


def test_a_body_over_the_limit_is_413_json(tmp_path: Path) -> None:
    client = World(tmp_path, max_body=1024).app().test_client()
    at_limit = post(client, "NetworkDriver.CreateNetwork", raw=b" " * 1024)
    assert at_limit.status_code == 400  # read, and refused as no JSON object
    over = post(client, "NetworkDriver.CreateNetwork", raw=b" " * 1025)
    assert err(over, 413).startswith("Request Entity Too Large")
    big = json.dumps({**NETWORK, "Options": {"x": "y" * 2000}}).encode()
    assert err(post(client, "NetworkDriver.CreateNetwork", raw=big), 413)
    assert post(client, "Plugin.Activate").status_code == 200  # and it keeps serving


def test_an_unexpected_exception_is_a_500_without_traceback(client: FlaskClient,
                                                            world: World) -> None:
    ok(client, "CreateNetwork", NETWORK)
    world.links.fail["create_netns"] = RuntimeError("kaboom")
    message = err(post(client, "NetworkDriver.CreateEndpoint", ENDPOINT), 500)
    assert message == "pycni internal error (RuntimeError: kaboom); see pycni's log"
    assert world.leftovers() == {}  # the record written first was undone
    del world.links.fail["create_netns"]
    assert "Interface" in ok(client, "CreateEndpoint", ENDPOINT)  # the app carries on


def test_a_plugin_failure_is_a_500_naming_the_plugin(client: FlaskClient, world: World) -> None:
    ok(client, "CreateNetwork", NETWORK)
    world.exec.on("bridge", "ADD", CNIError("failed to allocate", code=11))
    message = err(post(client, "NetworkDriver.CreateEndpoint", ENDPOINT), 500)
    assert message == 'CNI plugin "bridge" failed (ADD): [code 11] failed to allocate'


# --- bugs the fuzzing found, now fixed -----------------------------------------------------------


@pytest.mark.parametrize(("route", "body"), [
    ("DeleteNetwork", {"NetworkID": "ab" * 32 + "x"}),
    ("CreateNetwork", {**NETWORK, "NetworkID": "ab" * 32 + "/../../x"}),
    ("CreateNetwork", {**NETWORK, "NetworkID": "ab" * 32 + "a"}),
    ("DeleteEndpoint", {"NetworkID": NET, "EndpointID": "ef" * 32 + "\n"}),
])
def test_ids_with_a_hex_prefix_and_more_are_400(client: FlaskClient, route: str,
                                                body: dict[str, Any]) -> None:
    err(post(client, f"NetworkDriver.{route}", body), 400)


@pytest.mark.parametrize("route", ["NetworkDriver.CreateNetwork", "NetworkDriver.Join",
                                   "Pycni.GC"])
def test_deeply_nested_json_is_400(client: FlaskClient, route: str) -> None:
    err(post(client, route, raw=b"[" * 5000 + b"]" * 5000), 400)


def test_a_deep_but_parseable_request_is_no_500(client: FlaskClient, world: World) -> None:
    body = json.dumps(NETWORK)[:-1] + ', "Junk": ' + "[" * 600 + "]" * 600 + "}"
    response = post(client, "NetworkDriver.CreateNetwork", raw=body.encode())
    assert response.status_code in (200, 400), response.get_json()
    assert world.records() == (([NET], []) if response.status_code == 200 else ([], []))
