"""The remote-driver API under hypothesis.

* Anything at all — arbitrary JSON values, random bytes, huge strings, plausible requests with
  wrong types and malformed ids — gets a JSON answer: 200, or a 4xx with an ``Err`` string.
  Malformed input is never a 500, and the app keeps answering afterwards.
* Random sequences of Docker's calls — replayed, out of order, across two networks and a
  restart, with containers dying — get the answers Docker needs (deletes of unknown ids
  succeed), and the bookkeeping stays exact after every call: one record, staging netns, cache
  file and link per endpoint, and nothing at all once everything is deleted.

The driver is real; plugins, links and iptables are fakes (:mod:`tests.world`), so a case takes
about a millisecond. ``PYCNI_FUZZ_EXAMPLES`` is the number of examples for the whole file, shared
evenly between its fuzz tests: 300 by default (a few seconds), ``make soak`` sets 10,000 or more.
Known bugs the fuzzing found are pinned as strict xfails in ``test_api.py``; the strategies here
leave out their triggers (ids with a 64-hex prefix and more, JSON nested ~1000 deep) so the
fuzzing keeps looking for new ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from shim.api import MEDIA_TYPE
from shim.state import Phase
from tests.world import NULL_IPAM, World, docker_pool

pytestmark = pytest.mark.unit

FUZZ_TESTS = 5  # the @given tests below share the budget
TOTAL = int(os.environ.get("PYCNI_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=max(1, TOTAL // FUZZ_TESTS),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_BODY = 64 * 1024

ROUTES = [
    "Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint",
    "NetworkDriver.EndpointOperInfo", "NetworkDriver.DeleteEndpoint", "NetworkDriver.Join",
    "NetworkDriver.Leave", "NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete",
    "NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.AllocateNetwork", "NetworkDriver.FreeNetwork", "Pycni.GC",
]
#: routes that answer without reading the body (so a body over the limit is no 413 there)
BODYLESS = {"Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.DiscoverNew",
            "NetworkDriver.DiscoverDelete", "NetworkDriver.AllocateNetwork",
            "NetworkDriver.FreeNetwork"}
CONTENT_TYPES = ["application/vnd.docker.plugins.v1.2+json", "application/json", "text/plain", ""]

NET_A = "aa" * 32  # zero config, Docker's IPAM
NET_B = "bb" * 32  # a conflist with host-local, --ipam-driver null
NET_UNKNOWN = "cc" * 32  # never created
ENDPOINTS = [f"{n:02x}" * 32 for n in range(1, 5)]


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def shared(fuzz_root: Path) -> World:
    """One world for the stateless tests: the same app must answer every case in turn."""
    return World(fuzz_root / "shared", max_body=MAX_BODY)


@pytest.fixture(scope="module")
def fresh(fuzz_root: Path) -> Any:
    """A factory of worlds, one per hypothesis example, removed when the example ends."""

    def make() -> Iterator[World]:
        with tempfile.TemporaryDirectory(dir=fuzz_root) as root:
            world = World(root, max_body=MAX_BODY)
            world.conflist(
                "hl",
                {"type": "bridge", "bridge": "br-hl", "ipMasq": True,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.200.20.0/24"}]]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
            )
            yield world

    return make


def post(client: FlaskClient, route: str, body: bytes | str,
         content_type: str = CONTENT_TYPES[0]) -> tuple[int, Any]:
    response = client.post("/" + route, data=body, content_type=content_type)
    assert response.mimetype == MEDIA_TYPE, (route, response.status_code, response.data[:200])
    return response.status_code, json.loads(response.data)


def assert_sane(status: int, body: Any) -> None:
    """200 with a JSON object, or a 4xx whose ``Err`` is a message (never a traceback)."""
    assert status == 200 or 400 <= status < 500, (status, body)
    assert isinstance(body, dict), body
    if status != 200:
        assert set(body) == {"Err"} and isinstance(body["Err"], str) and body["Err"], body
        assert "Traceback" not in body["Err"] and 'File "' not in body["Err"], body


def still_serving(client: FlaskClient) -> None:
    assert post(client, "Plugin.Activate", "{}") == (200, {"Implements": ["NetworkDriver"]})


# --- strategies ----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=16,
)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four, any JSON value (usually of the wrong type) otherwise: one
    wrong field at a time, so a case gets past the fields before it."""
    return st.integers(min_value=0, max_value=3).flatmap(
        lambda n: json_values if n == 3 else good)


network_ids = st.sampled_from([NET_A, NET_A, NET_B, NET_UNKNOWN])
endpoint_ids = st.sampled_from([*ENDPOINTS, NET_A])
bad_ids = st.one_of(
    st.sampled_from(["", "x", "A" * 64, "ab" * 31, "g" * 64, " " + "ab" * 32, "../" * 22,
                     "0x" + "a" * 62]),
    st.text(max_size=70).filter(lambda s: not s[:64].isalnum()),
    st.integers(), st.none(), st.booleans(), st.lists(st.text(max_size=3), max_size=2),
)


def valid_or_bad(valid: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    return st.integers(min_value=0, max_value=3).flatmap(lambda n: bad_ids if n == 3 else valid)


addresses = st.sampled_from(["10.200.9.5/24", "10.200.9.5", "::1/64", "fd00::5/64",
                             "300.1.1.1/24", "10.200.9.5/33", "", "0.0.0.0/0", "10.200.20.9/24",
                             "10.200.9.11/24"])
macs = st.sampled_from(["02:42:0a:c8:09:05", "02:42:0A:C8:09:05", "zz", "02:42:0a:c8:09", ""])
generic_options = st.dictionaries(
    st.sampled_from(["cni.network", "cni.bridge", "cni.mtu", "cni.nework", "other"]),
    mostly(st.sampled_from(["hl", "nope", "br-x", "1400", "9", "x" * 20, "a/b", ""])),
    max_size=3,
)
port_bindings = st.lists(
    st.fixed_dictionaries({}, optional={
        "Proto": st.sampled_from([6, 17, 132, 1, "tcp", None, 6.0, True]),
        "IP": mostly(st.just("")),
        "Port": st.sampled_from([80, 0, 65536, -1, "80", None, 8080]),
        "HostIP": st.sampled_from(["", "127.0.0.1", "::1", "1.2.3", "fe80::1%lo", 5]),
        "HostPort": st.sampled_from([0, 1, 65535, 70000, -5, "x", None]),
        "HostPortEnd": st.sampled_from([0, 2, 65535, 70000, None, "y"]),
    }),
    max_size=3,
)
options = mostly(st.fixed_dictionaries({}, optional={
    "com.docker.network.generic": mostly(generic_options),
    "com.docker.network.internal": mostly(st.booleans()),
    "com.docker.network.enable_ipv6": mostly(st.booleans()),
    "com.docker.network.portmap": mostly(port_bindings),
}))


def ipam_data(pools: list[str]) -> st.SearchStrategy[Any]:
    return mostly(st.lists(
        st.fixed_dictionaries({"Pool": mostly(st.sampled_from(pools))}, optional={
            "AddressSpace": mostly(st.sampled_from(["LocalDefault", "null", ""])),
            "Gateway": mostly(addresses),
            "AuxAddresses": mostly(st.dictionaries(st.text(max_size=5), st.text(max_size=9),
                                                   max_size=2)),
        }),
        max_size=2,
    ))


plausible = st.fixed_dictionaries({
    "NetworkID": valid_or_bad(network_ids),
    "EndpointID": valid_or_bad(endpoint_ids),
    "Interface": mostly(st.fixed_dictionaries({}, optional={
        "Address": mostly(addresses),
        "AddressIPv6": mostly(addresses),
        "MacAddress": mostly(macs),
    })),
}, optional={
    "Options": options,
    "IPv4Data": ipam_data(["10.200.9.0/24", "0.0.0.0/0", "10.200.20.0/24", "10.200.9.5/24",
                           "fd00::/64", "x", "10.0.0.0/33", ""]),
    "IPv6Data": ipam_data(["fd00::/64", "::/0", "10.200.9.0/24", "fd00::/129"]),
    "SandboxKey": mostly(st.sampled_from(["/var/run/docker/netns/x", ""])),
    "DryRun": mostly(st.booleans()),
})


# --- anything gets a JSON answer -----------------------------------------------------------------


@FUZZ
@given(route=st.sampled_from(ROUTES), body=json_values)
def test_any_json_value_gets_a_json_answer(shared: World, route: str, body: Any) -> None:
    client = shared.app().test_client()
    assert_sane(*post(client, route, json.dumps(body)))
    still_serving(client)
    assert shared.driver.networks == {} and shared.leftovers() == {}


@FUZZ
@given(route=st.sampled_from(ROUTES), body=st.binary(max_size=400),
       content_type=st.sampled_from(CONTENT_TYPES))
def test_any_bytes_get_a_json_answer(shared: World, route: str, body: bytes,
                                     content_type: str) -> None:
    client = shared.app().test_client()
    assert_sane(*post(client, route, body, content_type))
    still_serving(client)


@FUZZ
@given(route=st.sampled_from(ROUTES), key=st.sampled_from(
           ["NetworkID", "EndpointID", "SandboxKey", "Options", "Interface", "junk"]),
       size=st.integers(min_value=0, max_value=2 * MAX_BODY),
       char=st.sampled_from(["a", "\u00e9", "\"", "\\", "\u2603", "0"]))
def test_huge_strings_are_refused_cleanly(shared: World, route: str, key: str, size: int,
                                          char: str) -> None:
    client = shared.app().test_client()
    body = {"NetworkID": NET_UNKNOWN, "EndpointID": ENDPOINTS[0], key: char * size}
    status, answer = post(client, route, json.dumps(body))
    assert_sane(status, answer)
    if len(json.dumps(body).encode()) > MAX_BODY and route not in BODYLESS:
        assert status == 413, (status, answer)
    still_serving(client)


@FUZZ
@given(route=st.sampled_from(ROUTES), body=plausible)
def test_plausible_requests_with_wrong_types_are_4xx(fresh: Any, route: str,
                                                     body: dict[str, Any]) -> None:
    for world in fresh():
        client = world.app().test_client()
        create = world.network_request(NET_A)
        assert post(client, "NetworkDriver.CreateNetwork", json.dumps(create))[0] == 200
        endpoint = world.endpoint_request(ENDPOINTS[0], NET_A, address="10.200.9.10/24")
        assert post(client, "NetworkDriver.CreateEndpoint", json.dumps(endpoint))[0] == 200
        status, answer = post(client, route, json.dumps(body))
        event(f"{route}: {status}")  # --hypothesis-show-statistics shows how deep cases got
        assert_sane(status, answer)
        world.consistent()
        still_serving(client)
        for eid in list(world.driver.endpoints):
            world.delete_endpoint(eid)
        for nid in list(world.driver.networks):
            world.delete_network(nid)
        assert world.leftovers() == {} and world.rules.networks == {}


# --- Docker's calls in any order -----------------------------------------------------------------

#: Docker's verbs, and two of Docker's side's events; repeated ones are drawn more often, so
#: that most sequences get endpoints far into their lives
VERBS = ["CreateEndpoint"] * 3 + ["Join", "Leave", "DeleteEndpoint"] * 2 + [
    "CreateNetwork", "DeleteNetwork", "EndpointOperInfo", "ProgramExternalConnectivity",
    "RevokeExternalConnectivity", "Restart", "ContainerDies"]
calls = st.lists(
    st.tuples(st.sampled_from(VERBS), st.sampled_from([NET_A, NET_A, NET_B, NET_B, NET_UNKNOWN]),
              st.integers(min_value=0, max_value=len(ENDPOINTS) - 1)),
    max_size=30,
)


def sandbox(index: int) -> str:
    return f"/var/run/docker/netns/fuzz{index}"


@FUZZ
@given(calls=calls)
def test_replayed_and_out_of_order_calls(fresh: Any, calls: list[tuple[str, str, int]]) -> None:
    for world in fresh():
        run_sequence(world, calls)


def run_sequence(w: World, calls: list[tuple[str, str, int]]) -> None:
    client = w.app().test_client()
    requests = {NET_A: w.network_request(NET_A),
                NET_B: w.network_request(NET_B, ipv4=NULL_IPAM, cni_network="hl"),
                NET_UNKNOWN: w.network_request(NET_UNKNOWN, ipv4=docker_pool("10.200.30.0/24"))}
    for nid in (NET_A, NET_B):  # the sequence may delete and re-create them
        assert post(client, "NetworkDriver.CreateNetwork", json.dumps(requests[nid])) == (200, {})
    for verb, nid, index in calls:
        eid = ENDPOINTS[index]
        known_ep = eid in w.driver.endpoints
        known_net = nid in w.driver.networks
        if verb == "Restart":
            before = (dict(w.driver.networks), served(w))
            w.restart()
            client = w.app().test_client()
            assert (w.driver.networks, served(w)) == before
            continue
        if verb == "ContainerDies":
            w.links.destroy_namespace(sandbox(index))
            continue
        body: dict[str, Any] = {"NetworkID": nid, "EndpointID": eid, "Options": {}}
        if verb == "CreateNetwork":
            if nid == NET_UNKNOWN:
                continue
            body = requests[nid]
        elif verb == "DeleteNetwork":
            body = {"NetworkID": nid}
        elif verb == "CreateEndpoint" and nid == NET_A:
            body["Interface"] = {"Address": f"10.200.9.{index + 10}/24"}
        elif verb == "Join":
            body["SandboxKey"] = sandbox(index)
        elif verb == "ProgramExternalConnectivity":
            body["Options"] = {"com.docker.network.portmap": [
                {"Proto": 6, "IP": "", "Port": 80, "HostIP": "127.0.0.1", "HostPort": 0,
                 "HostPortEnd": 0}]}
        status, answer = post(client, "NetworkDriver." + verb, json.dumps(body))
        event(f"{verb}: {status}")
        assert_sane(status, answer)
        if verb in ("CreateNetwork", "DeleteNetwork", "DeleteEndpoint", "Leave",
                    "RevokeExternalConnectivity"):
            expected = 200  # always possible; deleting twice is fine
        elif verb == "CreateEndpoint":
            expected = 200 if known_net else 404
        else:
            expected = 200 if known_ep else 404
        assert status == expected, (verb, nid[:2], index, answer)
        docker_moves(w, verb, eid, index, answer if status == 200 else None)
        w.consistent()
        on_b = {e for e, rec in w.driver.endpoints.items() if rec.network_id == NET_B}
        assert set(w.bridge.leases) == on_b  # host-local released every address it gave
    for eid in ENDPOINTS:
        body = {"NetworkID": NET_A, "EndpointID": eid}
        assert post(client, "NetworkDriver.DeleteEndpoint", json.dumps(body)) == (200, {})
    for nid in (NET_A, NET_B, NET_UNKNOWN):
        body = {"NetworkID": nid}
        assert post(client, "NetworkDriver.DeleteNetwork", json.dumps(body)) == (200, {})
    assert w.leftovers() == {} and w.driver.networks == {} and w.rules.networks == {}
    assert w.records() == ([], []) and w.bridge.leases == {}
    # Every bridge went with its network; only containers' sandboxes are left.
    assert w.links.spaces[""] == {}
    assert all(not space for key, space in w.links.spaces.items() if key)
    # Docker's address reached the zero-config chain and came back unchanged.
    for call in w.exec.calls_for("ADD", "bridge"):
        for entry in call.stdin["ipam"].get("addresses", []):
            assert entry["address"].startswith("10.200.9.")


def served(w: World) -> dict[str, Any]:
    """The endpoints as a restarted driver must serve them. Leave is kept in memory only (the
    record keeps naming the sandbox, for reconciliation), so "ready" and "joined" are one."""
    return {eid: dataclasses.replace(
        rec, phase=Phase.READY if rec.phase == Phase.JOINED else rec.phase)
            for eid, rec in w.driver.endpoints.items()}


def docker_moves(w: World, verb: str, eid: str, index: int, answer: Any) -> None:
    """What Docker does with the link after a successful Join or Leave."""
    rec = w.driver.endpoints.get(eid)
    if rec is None or answer is None:
        return
    if verb == "Join" and w.links.find(None, rec.host_ifname) is not None:
        w.links.docker_join(rec.host_ifname, sandbox(index), addresses=rec.addresses,
                            mac=rec.mac)
    elif verb == "Leave":
        inside = [n for n, k in w.links.spaces.get(sandbox(index), {}).items() if k.mac == rec.mac]
        if inside and w.links.find(None, rec.host_ifname) is None:
            w.links.docker_leave(sandbox(index), inside[0], rec.host_ifname)
