"""``pycni cni …``, cnitool's workalike, run with CliRunner against real tiny shell plugins.

Nothing here needs root: the plugins are ``#!/bin/sh`` scripts in tmp_path that log what they were
given and print a canned result; the "netns" is any path, since no plugin enters it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from shim.cli import main

pytestmark = pytest.mark.unit

RESULT_100 = {
    "cniVersion": "1.0.0",
    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:01:00:05", "sandbox": "SANDBOX"}],
    "ips": [{"interface": 0, "address": "10.1.0.5/24", "gateway": "10.1.0.1"}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
    "dns": {"nameservers": ["10.1.0.1"]},
}

# Logs each call as <seq>-<COMMAND>.stdin / .env in $FAKE_LOG, then answers. The ADD answer and the
# failure are baked in by write_plugin.
PLUGIN = """#!/bin/sh
seq=$(cat "$FAKE_LOG/seq" 2>/dev/null || echo 0)
seq=$((seq + 1))
echo "$seq" > "$FAKE_LOG/seq"
cat > "$FAKE_LOG/$seq-$CNI_COMMAND.stdin"
env | grep '^CNI_' | sort > "$FAKE_LOG/$seq-$CNI_COMMAND.env"
echo "$seq $CNI_COMMAND $(basename "$0")" >> "$FAKE_LOG/calls"
if [ "$CNI_COMMAND" = "@FAIL@" ]; then
  cat <<'EOF'
@ERROR@
EOF
  exit 1
fi
if [ "$CNI_COMMAND" = "ADD" ]; then
  cat <<'EOF'
@RESULT@
EOF
fi
exit 0
"""


def write_plugin(
    bin_dir: Path,
    name: str,
    result: dict[str, Any] | None = None,
    *,
    fail: str = "",
    error: dict[str, Any] | None = None,
) -> None:
    text = (
        PLUGIN.replace("@RESULT@", json.dumps(result or RESULT_100))
        .replace("@FAIL@", fail or "NEVER")
        .replace("@ERROR@", json.dumps(error or {}))
    )
    path = bin_dir / name
    path.write_text(text)
    path.chmod(0o755)


class Rig:
    """A conf dir, a plugin dir, a cache dir and a call log, and the env that points at them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "bin"
        self.conf = root / "net.d"
        self.cache = root / "cache"
        self.log = root / "log"
        for d in (self.bin, self.conf, self.log):
            d.mkdir()
        self.netns = str(root / "netns" / "ctr")
        self.env: dict[str, str | None] = {
            "CNI_PATH": f"{root / 'empty'}:{self.bin}",
            "NETCONFPATH": str(self.conf),
            "PYCNI_CACHE_DIR": str(self.cache),
            "CNI_CONTAINERID": "ctr1",
            "CNI_IFNAME": None,
            "CNI_ARGS": None,
            "CAP_ARGS": None,
            "FAKE_LOG": str(self.log),
        }

    def network(
        self,
        name: str = "mynet",
        version: str = "1.0.0",
        plugins: list[dict[str, Any]] | None = None,
    ) -> None:
        conf = {
            "cniVersion": version,
            "name": name,
            "plugins": plugins or [{"type": "plug"}],
        }
        (self.conf / f"10-{name}.conflist").write_text(json.dumps(conf))

    def run(self, *args: str, **env: str | None) -> Result:
        return CliRunner().invoke(main, ["cni", *args], env={**self.env, **env})

    def calls(self) -> list[tuple[str, str]]:
        path = self.log / "calls"
        if not path.exists():
            return []
        return [(line.split()[2], line.split()[1]) for line in path.read_text().splitlines()]

    def stdin(self, seq: int, command: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.log / f"{seq}-{command}.stdin").read_text())
        return data

    def cni_env(self, seq: int, command: str) -> dict[str, str]:
        lines = (self.log / f"{seq}-{command}.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    def cache_file(self, net: str = "mynet", cid: str = "ctr1", ifname: str = "eth0") -> Path:
        return self.cache / "results" / f"{net}-{cid}-{ifname}"


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    r = Rig(tmp_path)
    write_plugin(r.bin, "plug")
    r.network()
    return r


def test_add_prints_the_result_and_caches_it(rig: Rig) -> None:
    res = rig.run("add", "mynet", rig.netns)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == RESULT_100
    assert rig.calls() == [("plug", "ADD")]
    assert rig.stdin(1, "ADD") == {"type": "plug", "name": "mynet", "cniVersion": "1.0.0"}
    assert rig.cni_env(1, "ADD") == {
        "CNI_COMMAND": "ADD",
        "CNI_CONTAINERID": "ctr1",
        "CNI_NETNS": rig.netns,
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "",
        "CNI_PATH": f"{rig.root / 'empty'}:{rig.bin}",
    }
    cached = json.loads(rig.cache_file().read_text())
    assert cached["kind"] == "cniCacheV1"
    assert cached["result"] == RESULT_100


def test_add_passes_cni_args_ifname_and_capability_args(rig: Rig) -> None:
    rig.network(plugins=[{"type": "plug", "capabilities": {"portMappings": True}}])
    ports = [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]
    res = rig.run(
        "add",
        "mynet",
        rig.netns,
        CNI_ARGS="IP=10.1.0.9;IgnoreUnknown=1",
        CNI_IFNAME="net1",
        CAP_ARGS=json.dumps({"portMappings": ports, "bandwidth": {"ingressRate": 1}}),
    )
    assert res.exit_code == 0, res.output
    env = rig.cni_env(1, "ADD")
    assert env["CNI_ARGS"] == "IP=10.1.0.9;IgnoreUnknown=1"
    assert env["CNI_IFNAME"] == "net1"
    assert rig.stdin(1, "ADD")["runtimeConfig"] == {"portMappings": ports}
    assert rig.cache_file(ifname="net1").exists()


def test_plugin_inherits_the_callers_environment(rig: Rig) -> None:
    # FAKE_LOG reaches the plugin only through os.environ: the call log existing proves it
    res = rig.run("add", "mynet", rig.netns)
    assert res.exit_code == 0
    assert (rig.log / "calls").exists()


def test_default_container_id_is_derived_from_the_netns_path(rig: Rig) -> None:
    res = rig.run("add", "mynet", rig.netns, CNI_CONTAINERID=None)
    assert res.exit_code == 0, res.output
    expected = "cnitool-" + hashlib.sha512(rig.netns.encode()).hexdigest()[:20]
    assert len(expected) == len("cnitool-") + 20
    assert rig.cni_env(1, "ADD")["CNI_CONTAINERID"] == expected
    assert rig.cache_file(cid=expected).exists()


def test_netns_path_is_made_absolute(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(rig.root)
    res = rig.run("add", "mynet", "relative-ns", CNI_CONTAINERID=None)
    assert res.exit_code == 0, res.output
    absolute = str(rig.root / "relative-ns")
    env = rig.cni_env(1, "ADD")
    assert env["CNI_NETNS"] == absolute
    assert env["CNI_CONTAINERID"] == (
        "cnitool-" + hashlib.sha512(absolute.encode()).hexdigest()[:20]
    )


def test_chain_add_then_check_then_del(rig: Rig) -> None:
    write_plugin(rig.bin, "second")
    rig.network(plugins=[{"type": "plug"}, {"type": "second", "extra": {"keep": "me"}}])
    assert rig.run("add", "mynet", rig.netns, CNI_ARGS="IP=10.1.0.9").exit_code == 0
    assert rig.stdin(2, "ADD")["prevResult"] == RESULT_100
    assert rig.stdin(2, "ADD")["extra"] == {"keep": "me"}

    res = rig.run("check", "mynet", rig.netns)
    assert res.exit_code == 0, res.output
    assert rig.stdin(3, "CHECK")["prevResult"] == RESULT_100

    res = rig.run("del", "mynet", rig.netns)  # no CNI_ARGS this time: the cached ones are used
    assert res.exit_code == 0, res.output
    assert rig.calls() == [
        ("plug", "ADD"),
        ("second", "ADD"),
        ("plug", "CHECK"),
        ("second", "CHECK"),
        ("second", "DEL"),
        ("plug", "DEL"),
    ]
    assert rig.stdin(5, "DEL")["prevResult"] == RESULT_100
    assert rig.cni_env(5, "DEL")["CNI_ARGS"] == "IP=10.1.0.9"
    assert not rig.cache_file().exists()
    # and DEL again is fine
    assert rig.run("del", "mynet", rig.netns).exit_code == 0


def test_plugin_error_exits_4_with_the_plugins_message(rig: Rig) -> None:
    write_plugin(
        rig.bin,
        "plug",
        fail="ADD",
        error={
            "cniVersion": "1.0.0",
            "code": 7,
            "msg": "bad config",
            "details": "no bridge named cni9",
        },
    )
    res = rig.run("add", "mynet", rig.netns)
    assert res.exit_code == 4
    assert res.stdout == ""
    assert res.stderr == (
        'pycni: error: CNI plugin "plug" failed (ADD): [code 7] bad config: no bridge named cni9\n'
    )
    assert not rig.cache_file().exists()


def test_del_error_exits_4(rig: Rig) -> None:
    write_plugin(rig.bin, "plug", fail="DEL", error={"code": 11, "msg": "try later"})
    res = rig.run("del", "mynet", rig.netns)
    assert res.exit_code == 4
    assert res.stderr == 'pycni: error: CNI plugin "plug" failed (DEL): [code 11] try later\n'


def test_unknown_network_exits_3(rig: Rig) -> None:
    res = rig.run("add", "nosuchnet", rig.netns)
    assert res.exit_code == 3
    assert res.stderr.startswith("pycni: error: no CNI network named 'nosuchnet' in ")
    assert rig.calls() == []


def test_missing_plugin_exits_4(rig: Rig) -> None:
    rig.network(plugins=[{"type": "absent"}])
    res = rig.run("add", "mynet", rig.netns)
    assert res.exit_code == 4
    assert "pycni: error: " in res.stderr
    assert "failed to find plugin 'absent'" in res.stderr


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"CAP_ARGS": "{not json"}, "CAP_ARGS is not valid JSON"),
        ({"CAP_ARGS": "[1, 2]"}, "CAP_ARGS must be a JSON object"),
        ({"CNI_ARGS": "novalue"}, "invalid CNI_ARGS entry 'novalue'"),
        ({"CNI_IFNAME": "a-very-long-ifname"}, "longer than 15"),
        ({"CNI_CONTAINERID": "has space"}, "invalid container id"),
    ],
)
def test_bad_input_exits_2(rig: Rig, env: dict[str, str], fragment: str) -> None:
    res = rig.run("add", "mynet", rig.netns, **env)
    assert res.exit_code == 2
    assert res.stderr.startswith("pycni: error: ")
    assert fragment in res.stderr
    assert rig.calls() == []


def test_check_on_old_version_exits_4(rig: Rig) -> None:
    rig.network(version="0.3.1")
    res = rig.run("check", "mynet", rig.netns)
    assert res.exit_code == 4
    assert "does not support the CHECK command" in res.stderr


def test_check_without_add_exits_4(rig: Rig) -> None:
    res = rig.run("check", "mynet", rig.netns)
    assert res.exit_code == 4
    assert "no cached result" in res.stderr


def test_status(rig: Rig) -> None:
    res = rig.run("status", "mynet")
    assert res.exit_code == 0
    assert res.stdout == "mynet: CNI 1.0.0 has no STATUS verb; assuming ready\n"
    assert rig.calls() == []
    rig.network(version="1.1.0")
    res = rig.run("status", "mynet")
    assert res.exit_code == 0
    assert res.stdout == "mynet: ready\n"
    assert rig.calls() == [("plug", "STATUS")]


def test_gc_with_keep(rig: Rig) -> None:
    rig.network(version="1.1.0")
    for cid in ("keep1", "stale1"):
        assert rig.run("add", "mynet", rig.netns, CNI_CONTAINERID=cid).exit_code == 0
    res = rig.run("gc", "mynet", "--keep", "keep1")
    assert res.exit_code == 0, res.output
    assert res.stdout == "removed stale attachment stale1/eth0\n"
    assert rig.calls()[2:] == [("plug", "DEL"), ("plug", "GC")]
    gc_conf = rig.stdin(4, "GC")
    assert gc_conf["cni.dev/valid-attachments"] == [{"containerID": "keep1", "ifname": "eth0"}]
    assert rig.cache_file(cid="keep1").exists()
    assert not rig.cache_file(cid="stale1").exists()


def test_gc_default_keeps_attachments_whose_netns_exists(rig: Rig) -> None:
    alive = rig.root / "ns-alive"
    alive.write_text("")
    assert rig.run("add", "mynet", str(alive), CNI_CONTAINERID="alive").exit_code == 0
    assert rig.run("add", "mynet", str(rig.root / "ns-gone"), CNI_CONTAINERID="gone").exit_code == 0
    res = rig.run("gc", "mynet")
    assert res.exit_code == 0, res.output
    assert res.stdout == "removed stale attachment gone/eth0\n"
    assert rig.cache_file(cid="alive").exists()
    assert not rig.cache_file(cid="gone").exists()
    assert os.path.exists(alive)
