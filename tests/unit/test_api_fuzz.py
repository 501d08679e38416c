"""The remote-driver API under hypothesis: malformed input is a JSON 4xx, replayed and out-of-order
calls get sensible answers, and the staging-namespace bookkeeping stays exact throughout.

The driver is real; its plugins (``FakeExec``) and links (``FakeLinks``) are fakes, so thousands of
cases run in seconds. ``PYCNI_FUZZ_EXAMPLES`` sets the number of examples per test (``make soak``
runs 10,000).
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shim.app import create_app
from shim.cni import CNI
from shim.driver import Driver
from shim.settings import Settings
from shim.state import Store
from tests.fakelinks import FakeLinks, FakeRules
from tests.fakes import FakeExec

pytestmark = pytest.mark.unit

EXAMPLES = int(os.environ.get("PYCNI_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

ROUTES = [
    "Plugin.Activate", "NetworkDriver.GetCapabilities", "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork", "NetworkDriver.CreateEndpoint",
    "NetworkDriver.EndpointOperInfo", "NetworkDriver.DeleteEndpoint", "NetworkDriver.Join",
    "NetworkDriver.Leave", "NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete",
    "NetworkDriver.ProgramExternalConnectivity", "NetworkDriver.RevokeExternalConnectivity",
    "NetworkDriver.AllocateNetwork", "NetworkDriver.FreeNetwork", "Pycni.GC",
]


class World:
    """A Driver on fakes, plus the fakes, for one hypothesis example."""

    def __init__(self, root: str) -> None:
        self.links = FakeLinks()
        self.exec = FakeExec()
        self.exec.on("bridge", "ADD", self._bridge_add)
        self.exec.on("bridge", "DEL", self._bridge_del)
        settings_ = Settings(state_dir=f"{root}/state", cache_dir=f"{root}/cache",
                             socket_path=f"{root}/pycni.sock")
        cni = CNI(["/fake"], exec=self.exec, cache_dir=settings_.cache_dir)
        # No Docker is asked in unit tests: gc works on local state only.
        self.rules = FakeRules()
        self.driver = Driver(settings_, cni=cni, store=Store(settings_.state_dir),
                             links=self.links, docker_view=lambda: None, rules=self.rules)
        app = create_app(settings_, self.driver)
        app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
        self.client: FlaskClient = app.test_client()

    def _bridge_add(self, stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
        addresses = [a["address"] for a in stdin["ipam"].get("addresses", [])] or ["10.200.9.9/24"]
        mac = self.links.plugin_adds(env["CNI_NETNS"], env["CNI_IFNAME"], addresses)
        result = {
            "cniVersion": stdin["cniVersion"],
            "interfaces": [{"name": env["CNI_IFNAME"], "mac": mac, "sandbox": env["CNI_NETNS"]}],
            "ips": [{"address": a, "interface": 0} for a in addresses],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.9.1"}],
        }
        return json.dumps(result).encode()

    def _bridge_del(self, stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
        self.links.delete_link(env["CNI_IFNAME"], env["CNI_NETNS"])
        return b""

    def post(self, route: str, body: bytes | str) -> tuple[int, Any]:
        response = self.client.post("/" + route, data=body,
                                    content_type="application/vnd.docker.plugins.v1.2+json")
        assert response.mimetype.endswith("json"), response.data[:200]
        return response.status_code, json.loads(response.data)


@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    def make() -> World:
        return World(str(tmp_path_factory.mktemp("fuzz")))
    yield make


def assert_sane(status: int, body: Any) -> None:
    assert status == 200 or 400 <= status < 500, (status, body)
    if status == 200:
        assert isinstance(body, dict)
    else:
        assert isinstance(body, dict) and isinstance(body.get("Err"), str) and body["Err"]
        assert "Traceback" not in body["Err"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=12,
)
ids = st.one_of(st.sampled_from(["a" * 64, "0" * 64, "", "x", "A" * 64, "../" * 20]),
                st.text(max_size=70), st.integers(), st.none())
plausible = st.fixed_dictionaries(
    {},
    optional={
        "NetworkID": ids,
        "EndpointID": ids,
        "Options": json_values,
        "Interface": st.one_of(json_values, st.fixed_dictionaries(
            {}, optional={"Address": st.text(max_size=20) | st.sampled_from(
                ["10.200.9.5/24", "10.200.9.5", "::1/64", "300.1.1.1/24"]),
                "AddressIPv6": st.text(max_size=20), "MacAddress": st.text(max_size=20)})),
        "IPv4Data": json_values,
        "IPv6Data": json_values,
        "SandboxKey": json_values,
        "DryRun": json_values,
    },
)


@FUZZ
@given(route=st.sampled_from(ROUTES), body=json_values)
def test_any_json_gets_a_json_answer(world: Any, route: str, body: Any) -> None:
    w = world()
    assert_sane(*w.post(route, json.dumps(body)))
    assert_sane(*w.post("Plugin.Activate", "{}"))  # and the app keeps serving


@FUZZ
@given(route=st.sampled_from(ROUTES), body=st.binary(max_size=300))
def test_any_bytes_get_a_json_answer(world: Any, route: str, body: bytes) -> None:
    assert_sane(*world().post(route, body))


@FUZZ
@given(route=st.sampled_from(ROUTES), body=plausible)
def test_wrong_types_and_bad_ids_are_4xx(world: Any, route: str, body: dict[str, Any]) -> None:
    assert_sane(*world().post(route, json.dumps(body)))


def test_huge_body_is_413_json(world: Any) -> None:
    status, body = world().post("NetworkDriver.CreateNetwork", "[" + "1," * 100_000 + "1]")
    assert status == 413 and "Err" in body


NET = "ab" * 32
POOL = [f"{n:02x}" * 32 for n in range(1, 5)]
VERBS = ["CreateEndpoint", "Join", "Leave", "DeleteEndpoint", "EndpointOperInfo",
         "ProgramExternalConnectivity", "RevokeExternalConnectivity"]


@FUZZ
@given(calls=st.lists(st.tuples(st.sampled_from(VERBS), st.sampled_from(POOL)), max_size=25))
def test_replayed_and_out_of_order_calls(world: Any, calls: list[tuple[str, str]]) -> None:
    w = world()
    create = {"NetworkID": NET, "Options": {},
              "IPv4Data": [{"AddressSpace": "x", "Pool": "10.200.9.0/24",
                            "Gateway": "10.200.9.1/24"}], "IPv6Data": []}
    assert w.post("NetworkDriver.CreateNetwork", json.dumps(create))[0] == 200
    for verb, eid in calls:
        body: dict[str, Any] = {"NetworkID": NET, "EndpointID": eid, "Options": {}}
        if verb == "CreateEndpoint":
            body["Interface"] = {"Address": f"10.200.9.{POOL.index(eid) + 10}/24"}
        if verb == "Join":
            body["SandboxKey"] = "/var/run/docker/netns/fuzz"
        status, answer = w.post("NetworkDriver." + verb, json.dumps(body))
        assert_sane(status, answer)
        known = eid in w.driver.endpoints
        if verb in ("CreateEndpoint", "DeleteEndpoint", "Leave", "RevokeExternalConnectivity"):
            assert status == 200, (verb, answer)  # always possible; deleting twice is fine
        elif not known:
            assert status == 404, (verb, answer)
        # The bookkeeping is exact after every call: one staging netns and one link per
        # endpoint, nothing for endpoints that are gone.
        staged = {f"pycni-{e[:12]}" for e in w.driver.endpoints}
        assert set(w.links.list_netns("pycni-")) == staged
        assert {n for n in w.links.spaces[""] if n.startswith("pcn")} == {
            f"pcn{e[:12]}" for e in w.driver.endpoints}
    for eid in POOL:
        w.post("NetworkDriver.DeleteEndpoint", json.dumps({"NetworkID": NET, "EndpointID": eid}))
    assert w.post("NetworkDriver.DeleteNetwork", json.dumps({"NetworkID": NET}))[0] == 200
    assert w.links.list_netns() == [] and w.driver.endpoints == {} and w.driver.networks == {}
    results = os.path.join(w.driver.settings.cache_dir, "results")
    assert not os.path.isdir(results) or not os.listdir(results)
    # Docker's address always reached the chain and came back unchanged.
    for call in w.exec.calls_for("ADD", "bridge"):
        for entry in call.stdin["ipam"]["addresses"]:
            assert ipaddress.ip_interface(entry["address"]) in ipaddress.ip_network(
                "10.200.9.0/24")
