"""CNI 1.1.0: STATUS, GC and ``cniVersions`` negotiation, against a real plugin process.

The reference plugins 1.1.1 speak up to 1.0.0 (their VERSION answer is checked below), so the 1.1.0
verbs run against ``fake_cni110.py``, a plugin the tests install in their own CNI_PATH dir. It
logs every invocation, which is how these tests see what pycni sent.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shim.cni import CNI, RuntimeConf
from shim.cni.config import conflist_from_dict
from shim.errors import CNIError, ConfigError
from tests.conftest import PLUGINS_SPEAK_1_1

from .helpers import FakePlugin, RecordingExec, assert_private_dirs_clean, cache_files, links_in

pytestmark = pytest.mark.integration

SUBNET = ipaddress.ip_network("10.201.4.0/24")
REFERENCE_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"]


def fake_net(fake: FakePlugin, name: str = "", **plugin: Any) -> Any:
    return conflist_from_dict(
        {
            "cniVersion": "1.1.0",
            "name": name or f"pycni-it-{secrets.token_hex(3)}",
            "plugins": [{"type": fake.name, **plugin}],
        }
    )


def test_status_succeeds_when_the_plugin_is_ready(fake_cni: CNI, fake_plugin: FakePlugin) -> None:
    net = fake_net(fake_plugin)

    assert fake_cni.status(net) is True

    (call,) = fake_plugin.calls("STATUS")
    assert call["stdin"] == {"type": fake_plugin.name, "name": net.name, "cniVersion": "1.1.0"}
    assert call["containerID"] == "" and call["netns"] == "" and call["ifname"] == ""


def test_status_failure_carries_the_plugins_code_and_message(
    fake_cni: CNI, fake_plugin: FakePlugin
) -> None:
    fake_plugin.status_flag.write_text("upstream daemon is not running\n")

    with pytest.raises(CNIError) as excinfo:
        fake_cni.status(fake_net(fake_plugin))

    err = excinfo.value
    assert err.code == 50  # the spec's "plugin not available"
    assert err.msg == "upstream daemon is not running"
    assert err.plugin == fake_plugin.name and err.verb == "STATUS"
    assert fake_plugin.name in str(err) and "upstream daemon is not running" in str(err)


def test_status_is_not_sent_below_1_1_0(fake_cni: CNI, fake_plugin: FakePlugin) -> None:
    net = conflist_from_dict(
        {"cniVersion": "1.0.0", "name": "pycni-it-old", "plugins": [{"type": fake_plugin.name}]}
    )
    assert fake_cni.status(net) is False
    assert fake_plugin.calls("STATUS") == []


def test_a_1_1_0_result_keeps_its_new_fields(
    fake_cni: CNI, fake_plugin: FakePlugin, cni_root: Path, ns: Callable[[], str]
) -> None:
    net = fake_net(fake_plugin)
    rt = RuntimeConf(container_id="pycni-it-new", netns=ns())

    result = fake_cni.add(net, rt)

    assert result.cni_version == "1.1.0"
    assert result.interfaces[0].mtu == 1400
    assert result.routes[0].mtu == 1300
    assert fake_cni.cached_result(net, rt) == result
    fake_cni.delete(net, rt)
    (delete,) = fake_plugin.calls("DEL")
    assert delete["stdin"]["prevResult"]["interfaces"][0]["mtu"] == 1400
    assert_private_dirs_clean(cni_root)


def test_gc_deletes_stale_attachments_first_then_tells_plugins_what_is_valid(
    fake_cni: CNI, fake_plugin: FakePlugin, cni_root: Path, ns: Callable[[], str]
) -> None:
    net = fake_net(fake_plugin, capabilities={"portMappings": True})
    other = fake_net(fake_plugin)  # another network's records: not GC's business
    path = ns()
    ports = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    keep_a = RuntimeConf(container_id="pycni-it-a", netns=path, ifname="eth0")
    stale = RuntimeConf(
        container_id="pycni-it-b",
        netns=path,
        ifname="eth0",
        args=(("K8S_POD_NAME", "b"),),
        capability_args=ports,
    )
    keep_c = RuntimeConf(container_id="pycni-it-c", netns=path, ifname="net1")
    for rt in (keep_a, stale, keep_c):
        fake_cni.add(net, rt)
    stale_result = fake_cni.cached_result(net, stale)
    assert stale_result is not None
    fake_cni.add(other, stale)
    assert len(cache_files(cni_root)) == 4
    already_logged = len(fake_plugin.calls())

    removed = fake_cni.gc(net, valid={("pycni-it-a", "eth0"), ("pycni-it-c", "net1")})

    assert [(r.container_id, r.ifname) for r in removed] == [("pycni-it-b", "eth0")]
    calls = fake_plugin.calls()[already_logged:]
    assert [c["command"] for c in calls] == ["DEL", "GC"]
    delete, gc = calls
    # the stale attachment was DELeted exactly as ADD was run: same args, capabilities, result
    assert (delete["containerID"], delete["ifname"], delete["netns"]) == (
        "pycni-it-b",
        "eth0",
        path,
    )
    assert delete["args"] == "K8S_POD_NAME=b"
    assert delete["stdin"]["runtimeConfig"] == ports
    assert delete["stdin"]["prevResult"] == stale_result.to_json()
    # then GC, with no container parameters and both spellings of the valid set
    valid = [
        {"containerID": "pycni-it-a", "ifname": "eth0"},
        {"containerID": "pycni-it-c", "ifname": "net1"},
    ]
    assert gc["stdin"]["cni.dev/valid-attachments"] == valid
    assert gc["stdin"]["cni.dev/attachments"] == valid
    assert gc["stdin"]["name"] == net.name and gc["stdin"]["cniVersion"] == "1.1.0"
    assert "prevResult" not in gc["stdin"] and "runtimeConfig" not in gc["stdin"]
    assert (gc["containerID"], gc["netns"], gc["ifname"]) == ("", "", "")
    assert sorted(cache_files(cni_root)) == sorted(
        [
            f"{net.name}-pycni-it-a-eth0",
            f"{net.name}-pycni-it-c-net1",
            f"{other.name}-pycni-it-b-eth0",
        ]
    )

    # GC again: nothing stale any more, the plugins are still told the valid set
    assert fake_cni.gc(net, valid={("pycni-it-a", "eth0"), ("pycni-it-c", "net1")}) == []
    assert [c["command"] for c in fake_plugin.calls()[already_logged + 2 :]] == ["GC"]

    for rt in (keep_a, keep_c):
        fake_cni.delete(net, rt)
    fake_cni.delete(other, stale)
    assert_private_dirs_clean(cni_root)


def test_reference_plugins_answer_the_versions_they_speak(cni: CNI,
                                                         recorder: RecordingExec) -> None:
    newer = ["1.1.0"] if PLUGINS_SPEAK_1_1 else []  # 1.6 and later (sid's 1.9.1)
    for plugin in ("bridge", "host-local", "macvlan", "portmap", "tuning"):
        info = cni.version_info(plugin)
        assert list(info.supported_versions) == REFERENCE_VERSIONS + newer, plugin
    # firewall never spoke the pre-0.4.0 versions
    assert list(cni.version_info("firewall").supported_versions) == ["0.4.0", "1.0.0", *newer]
    # pycni asks in the newest version it speaks
    assert {c.stdin["cniVersion"] for c in recorder.calls} == {"1.1.0"}


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (["0.4.0", "1.1.0"], "0.4.0"),
        (["0.4.0", "1.0.0", "1.1.0"], "1.0.0"),
    ],
)
def test_cni_versions_negotiate_down_to_the_newest_every_plugin_speaks(
    declared: list[str],
    expected: str,
    fake_cni: CNI,
    fake_plugin: FakePlugin,
    recorder: RecordingExec,
    cni_root: Path,
    ns: Callable[[], str],
    links: Callable[[str], str],
) -> None:
    raw = {
        "cniVersions": declared,
        "name": f"pycni-it-{secrets.token_hex(3)}",
        "plugins": [
            {
                "type": "bridge",
                "bridge": links("br"),
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(cni_root / "networks"),
                    "ranges": [[{"subnet": str(SUBNET)}]],
                },
            },
            {"type": fake_plugin.name},
        ],
    }
    parsed = conflist_from_dict(raw)
    assert parsed.cni_version == "1.1.0"  # the newest pycni itself speaks
    if PLUGINS_SPEAK_1_1:
        expected = "1.1.0"  # bridge and host-local follow all the way (1.6 and later)

    net = fake_cni.negotiate(parsed)

    assert net.cni_version == expected
    assert [c["stdin"] for c in fake_plugin.calls("VERSION")] == [{"cniVersion": "1.1.0"}]
    rt = RuntimeConf(container_id=f"pycni-it-{secrets.token_hex(4)}", netns=ns())
    result = fake_cni.add(net, rt)
    assert result.cni_version == expected
    (bridge_add,) = recorder.sent("bridge", "ADD")
    assert bridge_add["cniVersion"] == expected
    (fake_add,) = fake_plugin.calls("ADD")
    assert fake_add["stdin"]["cniVersion"] == expected
    prev_ips = fake_add["stdin"]["prevResult"]["ips"]
    assert ("version" in prev_ips[0]) == (expected == "0.4.0")  # 0.4.0 still had it
    fake_cni.check(net, rt)
    fake_cni.delete(net, rt)
    assert "eth0" not in links_in(rt.netns)
    assert_private_dirs_clean(cni_root)


@pytest.mark.parametrize(
    ("declared", "plugin"),
    [(["1.1.0"], "bridge"), (["0.3.1"], "firewall")],
)
def test_negotiation_fails_naming_the_plugin_that_cannot_follow(
    declared: list[str], plugin: str, fake_cni: CNI, fake_plugin: FakePlugin
) -> None:
    if PLUGINS_SPEAK_1_1 and declared == ["1.1.0"]:
        pytest.skip("bridge speaks 1.1.0 from plugins 1.6 on: it can follow")
    net = conflist_from_dict(
        {
            "cniVersions": declared,
            "name": "pycni-it-neg",
            "plugins": [{"type": fake_plugin.name}, {"type": plugin}],
        }
    )
    with pytest.raises(ConfigError) as excinfo:
        fake_cni.negotiate(net)
    assert repr(plugin) in str(excinfo.value)
    assert excinfo.value.field == "cniVersions"
