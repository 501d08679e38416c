"""shim.cni.cache: libcni's result cache, read and written byte-compatibly."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from shim.cni import CNI, RuntimeConf, parse
from shim.cni.cache import KIND, CachedAttachment, ResultCache
from shim.errors import StateError
from tests.fakes import FakeExec

pytestmark = pytest.mark.unit

CONFIG = b'{"cniVersion":"1.0.0","name":"mynet","plugins":[{"type":"bridge"}]}'
RESULT = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "sandbox": "/run/netns/c1"}],
    "ips": [{"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
    "dns": {},
}


def entry(
    network: str = "mynet", container_id: str = "c1", ifname: str = "eth0", **extra: Any
) -> CachedAttachment:
    return CachedAttachment(network=network, container_id=container_id, ifname=ifname, **extra)


def test_round_trip(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    written = entry(
        config=CONFIG,
        netns="/run/netns/c1",
        cni_args=[("IP", "10.1.0.5"), ("IgnoreUnknown", "1")],
        capability_args={
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
        },
        result=RESULT,
    )
    cache.write(written)
    assert cache.read("mynet", "c1", "eth0") == written


def test_file_layout_and_modes(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    cache.write(entry(config=CONFIG, result=RESULT))
    path = tmp_path / "results" / "mynet-c1-eth0"
    assert cache.path("mynet", "c1", "eth0") == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "results").stat().st_mode) == 0o700
    assert os.listdir(tmp_path / "results") == ["mynet-c1-eth0"]  # no temp file left behind
    data = json.loads(path.read_bytes())
    assert data == {
        "kind": "cniCacheV1",
        "containerId": "c1",
        "config": base64.b64encode(CONFIG).decode(),
        "ifName": "eth0",
        "networkName": "mynet",
        "result": RESULT,
    }


def test_empty_fields_are_omitted_like_go_omitempty() -> None:
    assert entry().to_json() == {
        "kind": KIND,
        "containerId": "c1",
        "config": "",
        "ifName": "eth0",
        "networkName": "mynet",
    }


def test_overwrite_replaces(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    cache.write(entry(netns="/a"))
    cache.write(entry(netns="/b"))
    got = cache.read("mynet", "c1", "eth0")
    assert got is not None and got.netns == "/b"


def test_read_missing_is_none(tmp_path: Path) -> None:
    assert ResultCache(str(tmp_path)).read("mynet", "c1", "eth0") is None


@pytest.mark.parametrize(
    "content",
    [
        b"{garbage",
        b"[]",
        b'{"kind": "somethingElse", "containerId": "c1"}',
        # what libcni's legacy cache held: a bare result, no kind
        json.dumps(RESULT).encode(),
        # well-formed JSON with fields of the wrong shape
        (
            b'{"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0", "networkName": "mynet",'
            b' "cniArgs": [["only-a-key"]]}'
        ),
        (
            b'{"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0", "networkName": "mynet",'
            b' "cniArgs": 5}'
        ),
        (
            b'{"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0", "networkName": "mynet",'
            b' "capabilityArgs": [1, 2, 3]}'
        ),
        (
            b'{"kind": "cniCacheV1", "containerId": "c1", "ifName": "eth0", "networkName": "mynet",'
            b' "config": 42}'
        ),
    ],
    ids=[
        "garbage",
        "array",
        "other-kind",
        "legacy-bare-result",
        "cniargs-pair",
        "cniargs-int",
        "capargs-list",
        "config-int",
    ],
)
def test_unreadable_records_read_as_none(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mynet-c1-eth0").write_bytes(content)
    cache = ResultCache(str(tmp_path))
    assert cache.read("mynet", "c1", "eth0") is None
    assert cache.attachments() == []


def test_bad_base64_config_reads_as_empty(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mynet-c1-eth0").write_text(
        json.dumps(
            {
                "kind": "cniCacheV1",
                "containerId": "c1",
                "ifName": "eth0",
                "networkName": "mynet",
                "config": "%%%not base64",
            }
        )
    )
    got = ResultCache(str(tmp_path)).read("mynet", "c1", "eth0")
    assert got is not None and got.config == b""


def test_delete_is_idempotent(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    cache.write(entry())
    cache.delete("mynet", "c1", "eth0")
    cache.delete("mynet", "c1", "eth0")
    assert cache.read("mynet", "c1", "eth0") is None
    ResultCache(str(tmp_path / "never-created")).delete("mynet", "c1", "eth0")


@pytest.mark.parametrize(("net", "cid", "ifname"), [("", "c", "i"), ("n", "", "i"), ("n", "c", "")])
def test_path_needs_every_part(tmp_path: Path, net: str, cid: str, ifname: str) -> None:
    with pytest.raises(StateError):
        ResultCache(str(tmp_path)).path(net, cid, ifname)


def test_write_failure_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "results").write_text("a file where the directory should be")
    with pytest.raises(StateError) as info:
        ResultCache(str(tmp_path)).write(entry())
    assert "mynet-c1-eth0" in str(info.value)
    assert info.value.exit_code == 6


def test_attachments_filters_by_container(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    cache.write(entry("mynet", "c1", "eth0"))
    cache.write(entry("mynet", "c1", "eth1"))
    cache.write(entry("other", "c1", "eth0"))
    cache.write(entry("mynet", "c10", "eth0"))
    # a network whose name contains "-c1-" must not be mistaken for container c1
    cache.write(entry("net-c1", "zz", "eth0"))
    everything = {(a.network, a.container_id, a.ifname) for a in cache.attachments()}
    assert everything == {
        ("mynet", "c1", "eth0"),
        ("mynet", "c1", "eth1"),
        ("other", "c1", "eth0"),
        ("mynet", "c10", "eth0"),
        ("net-c1", "zz", "eth0"),
    }
    mine = [(a.network, a.container_id, a.ifname) for a in cache.attachments("c1")]
    assert mine == [("mynet", "c1", "eth0"), ("mynet", "c1", "eth1"), ("other", "c1", "eth0")]
    assert cache.attachments("nobody") == []


def test_attachments_skips_what_is_not_a_record(tmp_path: Path) -> None:
    cache = ResultCache(str(tmp_path))
    cache.write(entry("mynet", "c1", "eth0"))
    results = tmp_path / "results"
    (results / ".tmp-abc123").write_text(json.dumps(entry("mynet", "c2", "eth0").to_json()))
    (results / "mynet-c3-eth0").write_text("{broken")
    (results / "mynet-c4-eth0").write_text(
        json.dumps({"kind": "cniCacheV1", "containerId": "c4", "networkName": "mynet"})
    )  # no ifName
    (results / "subdir").mkdir()
    assert [a.container_id for a in cache.attachments()] == ["c1"]


def test_attachments_of_a_missing_cache(tmp_path: Path) -> None:
    assert ResultCache(str(tmp_path / "nope")).attachments() == []


# A record exactly as libcni (cni v1.x, libcni/api.go cachedInfo) writes it: field names and
# omitempty as Go marshals them, config as the base64 of the conflist's bytes.
LIBCNI_CONFIG = (
    b'{"cniVersion":"0.4.0","name":"k8s-pod-network","plugins":[{"type":"bridge",'
    b'"bridge":"cni0","ipam":{"type":"host-local","subnet":"10.22.0.0/16"}},'
    b'{"type":"portmap","capabilities":{"portMappings":true}}]}'
)
LIBCNI_RECORD = {
    "kind": "cniCacheV1",
    "containerId": "7f3f2a1b9c",
    "config": base64.b64encode(LIBCNI_CONFIG).decode(),
    "ifName": "eth0",
    "networkName": "k8s-pod-network",
    "netns": "/var/run/netns/cni-1234",
    "cniArgs": [["IgnoreUnknown", "1"], ["K8S_POD_NAME", "web-0"]],
    "capabilityArgs": {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
    },
    "result": {
        "cniVersion": "0.4.0",
        "interfaces": [
            {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
            {"name": "eth0", "mac": "aa:bb:cc:00:00:05", "sandbox": "/var/run/netns/cni-1234"},
        ],
        "ips": [
            {"version": "4", "interface": 1, "address": "10.22.0.5/16", "gateway": "10.22.0.1"}
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    },
}


def write_libcni_record(cache_dir: Path) -> None:
    results = cache_dir / "results"
    results.mkdir(parents=True)
    path = results / "k8s-pod-network-7f3f2a1b9c-eth0"
    path.write_text(json.dumps(LIBCNI_RECORD))
    path.chmod(0o600)


def test_a_record_written_by_libcni_is_read_back(tmp_path: Path) -> None:
    write_libcni_record(tmp_path)
    cache = ResultCache(str(tmp_path))
    got = cache.read("k8s-pod-network", "7f3f2a1b9c", "eth0")
    assert got is not None
    assert got.network == "k8s-pod-network"
    assert got.container_id == "7f3f2a1b9c"
    assert got.ifname == "eth0"
    assert got.netns == "/var/run/netns/cni-1234"
    assert got.config == LIBCNI_CONFIG
    assert got.cni_args == [("IgnoreUnknown", "1"), ("K8S_POD_NAME", "web-0")]
    assert got.capability_args == LIBCNI_RECORD["capabilityArgs"]
    assert got.result == LIBCNI_RECORD["result"]
    # and written again, it is the same JSON document
    assert got.to_json() == LIBCNI_RECORD
    assert [a.container_id for a in cache.attachments("7f3f2a1b9c")] == ["7f3f2a1b9c"]


def test_del_of_an_attachment_libcni_made(tmp_path: Path) -> None:
    """pycni can DEL what containerd/cri-o added: cached prevResult, CNI_ARGS and capability args."""
    write_libcni_record(tmp_path)
    fake = FakeExec()
    cni = CNI(["/opt/cni/bin"], exec=fake, cache_dir=str(tmp_path))
    net = parse(LIBCNI_CONFIG)
    cni.delete(net, RuntimeConf(container_id="7f3f2a1b9c", netns="/var/run/netns/cni-1234"))
    assert fake.commands() == [("portmap", "DEL"), ("bridge", "DEL")]
    for call in fake.calls:
        assert call.stdin["prevResult"] == LIBCNI_RECORD["result"]
        assert call.env["CNI_ARGS"] == "IgnoreUnknown=1;K8S_POD_NAME=web-0"
    assert fake.calls[0].stdin["runtimeConfig"] == LIBCNI_RECORD["capabilityArgs"]
    assert "runtimeConfig" not in fake.calls[1].stdin
    assert ResultCache(str(tmp_path)).attachments() == []
