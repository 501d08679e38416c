"""Per-container CNI_ARGS (:mod:`shim.podargs`): whom the chain serves, and the user's pairs."""

from __future__ import annotations

import pytest

from shim import podargs
from shim.errors import InvalidRequest

pytestmark = pytest.mark.unit

CID = "c" * 64


def test_identity_names_the_container_and_its_compose_project() -> None:
    assert podargs.identity("/web-1", CID, {}) == (
        ("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web-1"),
        ("K8S_POD_INFRA_CONTAINER_ID", CID))
    compose = {"com.docker.compose.project": "shop"}
    assert podargs.identity("shop-web-2", CID, compose, "ops")[0] == ("K8S_POD_NAMESPACE", "shop")
    assert podargs.identity("solo", CID, {}, "ops")[0] == ("K8S_POD_NAMESPACE", "ops")


def test_join_puts_ignore_unknown_first_once() -> None:
    assert podargs.join((("A", "1"),), (("IgnoreUnknown", "1"), ("B", "2"))) == (
        ("IgnoreUnknown", "1"), ("A", "1"), ("B", "2"))
    assert podargs.join() == (("IgnoreUnknown", "1"),)


def test_parse_reads_pairs_separated_by_semicolons() -> None:
    assert podargs.parse(" A=1; B_2=x ;", "--arg") == (("A", "1"), ("B_2", "x"))
    assert podargs.parse("", "label pycni.args") == ()
    assert podargs.parse("EMPTY=", "--arg") == (("EMPTY", ""),)


@pytest.mark.parametrize(("text", "says"), [
    ("A", "'A' is not KEY=VALUE"),
    ("=1", "'=1' is not KEY=VALUE"),
    ("A=1=2", "'A=1=2' is not KEY=VALUE"),
    ("A B=1", "'A B=1' is not KEY=VALUE"),
    ("K8S_POD_NAME=x", "pycni sets K8S_POD_NAME itself"),
    ("IgnoreUnknown=0", "pycni sets IgnoreUnknown itself"),
    ("A=1;A=2", "A is given twice"),
])
def test_parse_refuses_what_cni_args_cannot_carry_in_one_wording(text: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        podargs.parse(text, "driver-opt cni.args")
    assert str(caught.value).startswith(f"driver-opt cni.args {text!r}: ")
    assert says in str(caught.value)


def test_parse_caps_reads_a_json_object_keyed_by_capability() -> None:
    assert podargs.parse_caps('{"bandwidth": {"ingressRate": 8000}}', "--cap") == {
        "bandwidth": {"ingressRate": 8000}}
    assert podargs.parse_caps("  ", "label pycni.caps") == {}


@pytest.mark.parametrize(("text", "says"), [
    ("{bandwidth", "not a JSON object"),
    ('["bandwidth"]', "not a JSON object"),
    ('{"portmappings": []}', "pycni fills portMappings itself (from -p)"),
    ('{"ips": ["10.201.0.2"]}', "pycni fills ips itself (from --ip)"),
])
def test_parse_caps_refuses_in_one_wording(text: str, says: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        podargs.parse_caps(text, "--cap")
    assert str(caught.value).startswith(f"--cap {text!r}: ") and says in str(caught.value)


def test_endpoint_options_are_cni_args_and_cni_caps_only() -> None:
    assert podargs.endpoint_options({"cni.args": "A=1", "cni.caps": '{"x": 1}',
                                     "com.docker.network.portmap": []}) == (
        (("A", "1"),), {"x": 1})
    with pytest.raises(InvalidRequest, match="driver-opt cni.ags: pycni knows cni.args and"):
        podargs.endpoint_options({"cni.ags": "A=1"})
