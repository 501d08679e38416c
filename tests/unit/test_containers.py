"""The ``--network none`` mode on fakes: records, undo on failure, the per-container lock, gc.

A fake Docker (:class:`FakeDocker`) stands for :mod:`shim.dockerview`, :class:`FakeExec` for the
plugins; the namespace paths live under a fake ``/proc`` in ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shim import netlink, none_io, ports, runner
from shim.cli import main
from shim.cni import CNI
from shim.containers import Containers
from shim.dockerview import Target
from shim.errors import CNIError, InvalidRequest, NotFound
from shim.none_io import Request
from shim.store import Store
from tests.fakelinks import FakeRules
from tests.fakes import FakeExec, add_interface, cni_args

pytestmark = pytest.mark.unit

CID = "a" * 64
OTHER = "b" * 64


class FakeDocker:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.targets: dict[str, Target] = {}
        self.known: dict[str, str] | None = {}
        #: the driver's endpoints → their containers' names
        self.endpoints: dict[str, str] = {}

    def add(self, cid: str, name: str, pid: int) -> Target:
        resolv = self.tmp / f"resolv-{name}"
        resolv.write_text("nameserver 10.201.200.99\n")
        t = Target(cid, name, True, pid, str(resolv), "none")
        self.targets[cid] = t
        assert self.known is not None
        self.known[cid] = name
        return t

    def forget(self, cid: str) -> None:
        self.targets.pop(cid)
        assert self.known is not None
        self.known.pop(cid)

    def target(self, ref: str) -> Target:
        for t in self.targets.values():
            if ref in (t.id, t.name):
                return t
        raise NotFound(f"Docker has no container {ref!r}")

    def container_ids(self) -> dict[str, str] | None:
        return self.known

    def endpoint_names(self) -> dict[str, str]:
        return dict(self.endpoints)


class FakeHost:
    """Pins, interface names and announcements, in memory (:class:`shim.containers.Host`)."""

    def __init__(self) -> None:
        self.pins: dict[str, str] = {}  # name → the source it holds
        self.links: dict[tuple[str, str], netlink.LinkInfo] = {}  # (ns, name) → link
        self.announced: list[tuple[str, str, list[str]]] = []
        #: (ns, ifname) → the MAC and addresses on it (what an unfinished ADD left)
        self.addrs: dict[tuple[str, str], tuple[str, list[str]]] = {}

    def pin_netns(self, source: str, name: str) -> str:
        self.pins.setdefault(name, source)
        return f"{netlink.NETNS_DIR}/{name}"

    def remove_netns(self, name: str) -> None:
        self.pins.pop(name, None)

    def is_netns(self, path: str) -> bool:
        return path.rsplit("/", 1)[-1] in self.pins

    def link_info(self, name: str, ns: str | None = None) -> netlink.LinkInfo | None:
        return self.links.get((ns or "", name))

    def announce(self, ns: str, ifname: str, addresses: Iterable[str]) -> None:
        self.announced.append((ns, ifname, list(addresses)))

    def addresses(self, ns: str, ifname: str) -> tuple[str, list[str]]:
        return self.addrs.get((ns, ifname), ("", []))


def conflist(name: str = "pcn", ips_cap: bool = False) -> dict[str, Any]:
    bridge: dict[str, Any] = {
        "type": "bridge", "bridge": "pcn0",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.200.0/24"}]]},
    }
    if ips_cap:
        bridge["capabilities"] = {"ips": True}
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        bridge,
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "tuning"},
    ]}


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.conf = tmp / "net.d"
        self.conf.mkdir()
        self.proc = tmp / "proc"
        self.write(conflist())
        self.docker = FakeDocker(tmp)
        self.fake = FakeExec().on("bridge", "ADD", add_interface("eth0", "10.201.200.5/24"))
        self.cache = tmp / "cache"
        self.store = Store(str(tmp / "state"))
        self.rules = FakeRules()
        self.host = FakeHost()
        self.mode = Containers(self.store, CNI(["/bin"], exec=self.fake, cache_dir=str(self.cache)),
                               str(self.conf), self.docker, proc=str(self.proc), rules=self.rules,
                               host=self.host)

    def write(self, conf: dict[str, Any]) -> None:
        (self.conf / f"{conf['name']}.conflist").write_text(json.dumps(conf))

    def live(self, cid: str = CID, name: str = "app", pid: int = 4242) -> Target:
        (self.proc / str(pid) / "ns").mkdir(parents=True, exist_ok=True)
        (self.proc / str(pid) / "ns" / "net").write_text("")
        return self.docker.add(cid, name, pid)

    def files(self) -> list[str]:
        root = self.tmp / "state" / "containers"
        return sorted(os.listdir(root)) if root.exists() else []

    def cached(self) -> list[str]:
        return [f for _, _, names in os.walk(self.cache) for f in names]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_attach_adds_into_the_containers_own_namespace_and_records_it(rig: Rig) -> None:
    rig.live()
    rec = rig.mode.attach("app", Request("pcn"))
    add = rig.fake.calls_for("ADD", "bridge")[0]
    assert add.env["CNI_CONTAINERID"] == CID
    # the container's namespace, held open for the attachment's life
    [(pin, source)] = rig.host.pins.items()
    assert source == str(rig.proc / "4242" / "ns" / "net") and pin.startswith(f"pycni-pin-{CID[:12]}-")
    assert add.env["CNI_NETNS"] == rec.attachment.netns == f"/run/netns/{pin}"
    assert add.env["CNI_IFNAME"] == "eth0"
    assert rig.host.announced == [(f"/run/netns/{pin}", "eth0", ["10.201.200.5/24"])]
    # portmap is idle without ports: not run
    assert rig.fake.commands() == [("bridge", "ADD"), ("tuning", "ADD")]
    assert [str(ip.address) for ip in rec.attachment.ips()] == ["10.201.200.5/24"]
    assert rig.files() == [f"{CID}.lock", f"{CID}.pcn.eth0.json"]
    [loaded] = rig.store.containers()
    assert loaded.to_json() == rec.to_json()
    assert loaded.attachment.result is not None
    assert rig.cached()  # libcni's cache has it too


def test_an_attachment_whose_chain_may_open_the_loopback_is_guarded_while_it_lasts(
        rig: Rig) -> None:
    rig.live()
    rig.mode.attach("app", Request("pcn"))
    rig.mode.attach("app", Request("pcn", ifname="eth1"))
    assert rig.rules.guards == {"none:pcn"}  # one guard for the network
    rig.mode.detach("app", "pcn", "eth0")
    assert rig.rules.guards == {"none:pcn"} and rig.rules.closed == []
    rig.mode.detach("app", "pcn")
    assert rig.rules.guards == set()
    assert rig.rules.closed == ["pcn0"]  # the network's last attachment: route_localnet closed


def test_a_failed_attach_takes_its_guard_with_it(rig: Rig) -> None:
    rig.live()
    rig.fake.on("tuning", "ADD", CNIError("no such sysctl", plugin="tuning", verb="ADD"))
    with pytest.raises(CNIError):
        rig.mode.attach("app", Request("pcn"))
    assert rig.rules.guards == set()


def test_attach_refuses_a_second_attachment_of_the_same_interface(rig: Rig) -> None:
    rig.live()
    rig.mode.attach("app", Request("pcn"))
    with pytest.raises(InvalidRequest, match="already attached to pcn as eth0"):
        rig.mode.attach("app", Request("pcn"))


def test_ip_goes_through_cni_args_or_the_ips_capability(rig: Rig) -> None:
    rig.live()
    rig.mode.attach("app", Request("pcn", ip="10.201.200.9", args=(("X", "1"),)))
    assert cni_args(rig.fake.calls_for("ADD", "bridge")[0].env) == {
        "IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "app",
        "K8S_POD_INFRA_CONTAINER_ID": CID, "X": "1", "IP": "10.201.200.9"}
    rig.write(conflist("caps", ips_cap=True))
    rig.mode.attach("app", Request("caps", ifname="eth1", ip="10.201.200.10/24"))
    add = rig.fake.calls_for("ADD", "bridge")[-1]
    assert add.stdin["runtimeConfig"] == {"ips": ["10.201.200.10/24"]}


def test_ports_are_published_through_portmap_and_a_taken_one_refused(rig: Rig) -> None:
    rig.live()
    rig.live(OTHER, "other", 4343)
    port = ports.allocate([ports.Binding("tcp", 80, "127.0.0.1", 0, 0)], set(),
                          ephemeral=(40000, 40999))[0].host_port
    rig.mode.attach("app", Request("pcn", ports=(none_io.parse_port(f"127.0.0.1:{port}:80"),)))
    pm = rig.fake.calls_for("ADD", "portmap")[0]
    assert pm.stdin["runtimeConfig"]["portMappings"] == [
        {"hostPort": port, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}]
    rig.fake.reset()
    with pytest.raises(ports.PortInUse, match=r"already in use: container app publishes it "
                                              r"\(pycni attach, on pcn\)"):
        rig.mode.attach("other", Request("pcn", ports=(none_io.parse_port(f"{port}:81"),)))
    assert rig.fake.calls == []
    assert rig.files() == [f"{CID}.lock", f"{CID}.pcn.eth0.json"]


def test_a_failing_plugin_is_undone_named_and_leaves_nothing(rig: Rig) -> None:
    rig.live()
    rig.fake.on("tuning", "ADD", CNIError("no such sysctl", plugin="tuning", verb="ADD"))
    with pytest.raises(CNIError, match='"tuning" failed'):
        rig.mode.attach("app", Request("pcn"))
    assert ("bridge", "DEL") in rig.fake.commands()
    assert rig.files() == []  # no record, no lock file
    assert rig.cached() == []


def test_detach_runs_del_with_the_recorded_config_and_args(rig: Rig) -> None:
    rig.live()
    rig.mode.attach("app", Request("pcn", ip="10.201.200.9"))
    rig.write({**conflist(), "plugins": [{"type": "ptp"}]})  # the conf dir changed since
    rig.fake.reset()
    [rec] = rig.mode.detach("app", "pcn")
    assert rig.fake.commands() == [("tuning", "DEL"), ("bridge", "DEL")]
    dele = rig.fake.calls_for("DEL", "bridge")[0]
    assert cni_args(dele.env)["IP"] == "10.201.200.9"
    assert dele.env["CNI_NETNS"] == rec.attachment.netns
    assert rig.files() == [] and rig.cached() == []
    with pytest.raises(NotFound):
        rig.mode.detach("app", "pcn")


def test_the_chain_learns_whom_it_serves_and_del_gets_what_add_got(rig: Rig) -> None:
    """Name, namespace (the compose project) and id at ADD, CHECK and DEL, with the user's
    pairs; DEL reads them from the record, even once the container is gone."""
    target = rig.live(name="shop-web-2")
    rig.docker.targets[CID] = dataclasses.replace(target, labels={"com.docker.compose.project": "shop"})
    rec = rig.mode.attach(CID, Request("pcn", args=(("TEAM", "blue"),), caps={"x": {"y": 1}}))
    assert rec.attachment.capability_args == {"x": {"y": 1}}  # for plugins declaring x
    want = {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "shop", "K8S_POD_NAME": "shop-web-2",
            "K8S_POD_INFRA_CONTAINER_ID": CID, "TEAM": "blue"}
    assert cni_args(rig.fake.calls_for("ADD", "bridge")[0].env) == want
    assert dict(rec.attachment.runtime().args) == want  # what pycni check runs CHECK with
    rig.docker.forget(CID)
    rig.mode.detach("shop-web-2", "pcn")
    assert cni_args(rig.fake.calls_for("DEL", "bridge")[0].env) == want


def test_the_namespace_outside_compose_is_a_setting(rig: Rig) -> None:
    rig.mode.namespace = "lab"
    rig.live()
    rig.mode.attach("app", Request("pcn"))
    assert cni_args(rig.fake.calls_for("ADD", "bridge")[0].env)["K8S_POD_NAMESPACE"] == "lab"


def test_detach_after_the_container_is_gone(rig: Rig) -> None:
    rig.live()
    rig.mode.attach("app", Request("pcn"))
    rig.docker.forget(CID)
    (rig.proc / "4242" / "ns" / "net").unlink()
    rig.fake.reset()
    rig.mode.detach("app", "pcn")  # by the name it had
    # the pinned namespace outlived the container: DEL finds the interface and its addresses
    [pin] = rig.host.announced
    assert rig.fake.calls_for("DEL", "bridge")[0].env["CNI_NETNS"] == pin[0]
    assert rig.files() == [] and rig.host.pins == {}  # the pin went with the attachment


def test_detach_never_touches_a_namespace_whose_pid_was_reused(rig: Rig) -> None:
    rig.live()
    rig.mode.attach("app", Request("pcn"))
    rig.docker.forget(CID)  # gone, but /proc/4242 now belongs to another process
    rig.fake.reset()
    rig.mode.detach(CID[:12], "pcn")
    netns = rig.fake.calls_for("DEL", "bridge")[0].env.get("CNI_NETNS", "")
    assert netns.startswith("/run/netns/pycni-pin-")  # the pin: the namespace ADD ran in


def test_a_lost_pin_means_del_in_no_namespace(rig: Rig) -> None:
    rig.live()
    rig.mode.attach("app", Request("pcn"))
    rig.host.pins.clear()  # a reboot
    rig.fake.reset()
    rig.mode.detach("app", "pcn")
    assert rig.fake.calls_for("DEL", "bridge")[0].env.get("CNI_NETNS", "") == ""


def test_a_second_network_shares_the_pin_which_goes_with_the_last(rig: Rig) -> None:
    rig.live()
    rig.write(conflist("caps", ips_cap=True))
    rig.mode.attach("app", Request("pcn"))
    rig.mode.attach("app", Request("caps", ifname="eth1"))
    assert len(rig.host.pins) == 1
    rig.mode.detach("app", "pcn")
    assert len(rig.host.pins) == 1
    rig.mode.detach("app", "caps")
    assert rig.host.pins == {}


def test_an_interface_that_is_not_pycnis_is_refused_saying_why(rig: Rig) -> None:
    rig.live()
    netns = str(rig.proc / "4242" / "ns" / "net")
    rig.host.links[(netns, "eth0")] = netlink.LinkInfo("eth0", "02:42:0a:00:00:02", 1500)
    rig.docker.targets[CID] = dataclasses.replace(rig.docker.targets[CID], network_mode="bridge")
    with pytest.raises(InvalidRequest, match="on Docker's network 'bridge' .* --network none "
                                             ".* --ifname eth1"):
        rig.mode.attach("app", Request("pcn"))
    assert rig.fake.calls == [] and rig.host.pins == {} and rig.files() == []
    rig.mode.attach("app", Request("pcn", ifname="eth1"))  # beside Docker's: fine


def test_gc_removes_attachments_of_gone_containers_only(rig: Rig) -> None:
    rig.live()
    rig.live(OTHER, "other", 4343)
    rig.mode.attach("app", Request("pcn"))
    rig.mode.attach("other", Request("pcn"))
    rig.docker.forget(CID)
    assert rig.mode.gc(dry_run=True) == ["attachment app/pcn/eth0: its container is gone; removed"]
    assert len(rig.store.containers()) == 2
    rig.docker.known = None  # Docker can't be asked: nothing is gone
    assert rig.mode.gc() == []
    rig.docker.known = {OTHER: "other"}
    assert rig.mode.gc() == ["attachment app/pcn/eth0: its container is gone; DEL run"]
    assert [r.container_id for r in rig.store.containers()] == [OTHER]


def test_the_chains_dns_goes_into_the_containers_resolv_conf(rig: Rig) -> None:
    t = rig.live()

    def with_dns(stdin: dict[str, Any], env: Mapping[str, str]) -> bytes:
        out = json.loads(add_interface("eth0", "10.201.200.5/24")(stdin, env))
        out["dns"] = {"nameservers": ["10.201.200.1"], "search": ["pcn.local"]}
        return json.dumps(out).encode()

    rig.fake.on("bridge", "ADD", with_dns)
    rig.mode.attach("app", Request("pcn"))
    assert Path(t.resolv_conf).read_text().splitlines()[1:] == [
        "nameserver 10.201.200.1", "search pcn.local"]


def test_no_dns_in_the_result_leaves_resolv_conf_alone(rig: Rig) -> None:
    t = rig.live()
    rig.mode.attach("app", Request("pcn"))
    assert Path(t.resolv_conf).read_text() == "nameserver 10.201.200.99\n"


def test_the_container_lock_excludes_and_survives_the_holder_removing_its_file(rig: Rig) -> None:
    order: list[str] = []
    path = os.path.join(rig.store.containers_dir(), "x.lock")
    entered = threading.Event()

    def other() -> None:
        entered.wait(5)
        with none_io.flock(path):
            order.append("second")

    thread = threading.Thread(target=other)
    with none_io.flock(path, remove_if=lambda: True):
        thread.start()
        entered.set()
        time.sleep(0.2)
        order.append("first")
    thread.join(5)
    assert order == ["first", "second"]


class FakeCLI:
    """docker create/start/rm on the fake Docker: the first container made is CID, the next
    OTHER (named after --name, or "holder" / "app")."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.calls: list[tuple[str, Sequence[str]]] = []
        self.made: dict[str, str] = {}

    def create(self, args: Sequence[str]) -> str:
        self.calls.append(("create", list(args)))
        cid = OTHER if self.made else CID
        name = none_io.name_in(args) or ("app" if self.made else "holder")
        self.made[cid] = name
        return cid

    def start(self, cid: str) -> None:
        self.calls.append(("start", [cid]))
        self.rig.live(cid, self.made[cid], 4242 if cid == CID else 4343)

    def remove(self, cid: str) -> bool:
        self.calls.append(("rm", [cid]))
        if cid in self.rig.docker.targets:
            self.rig.docker.forget(cid)
        return True


def test_run_creates_with_network_none_and_attaches_each_network(rig: Rig) -> None:
    rig.write(conflist("second"))
    cli = FakeCLI(rig)
    cid, recs = runner.run(rig.mode, ["pcn", "second"], ["-d", "--name", "app", "img"],
                             docker_cli=cli)  # type: ignore[arg-type]
    assert cid == CID
    assert cli.calls[0] == ("create", ["--network", "none", "--name", "app", "img"])
    assert [(r.network, r.ifname) for r in recs] == [("pcn", "eth0"), ("second", "eth1")]


def test_run_removes_the_container_and_names_the_plugin_when_attaching_fails(rig: Rig) -> None:
    rig.write({**conflist("second"), "plugins": [{"type": "pycni-test-fail"}]})
    rig.fake.on("pycni-test-fail", "ADD", CNIError("told to", plugin="pycni-test-fail", verb="ADD"))
    cli = FakeCLI(rig)
    with pytest.raises(CNIError) as err:
        runner.run(rig.mode, ["pcn", "second"], ["img"], docker_cli=cli)  # type: ignore[arg-type]
    assert str(err.value).startswith(f"pycni run: removed the container {CID[:12]}")
    assert 'CNI plugin "pycni-test-fail" failed (ADD)' in str(err.value)
    assert cli.calls[-1] == ("rm", [CID])
    assert ("bridge", "DEL") in rig.fake.commands()  # the first network was detached
    assert rig.files() == [] and rig.cached() == []


def test_run_refuses_a_network_of_its_own_and_unknown_conflists(rig: Rig) -> None:
    cli = FakeCLI(rig)
    with pytest.raises(InvalidRequest, match="--network none itself"):
        runner.run(rig.mode, ["pcn"], ["--network", "host", "img"], docker_cli=cli)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        runner.run(rig.mode, ["nope"], ["img"], docker_cli=cli)  # type: ignore[arg-type]
    assert cli.calls == []


@pytest.mark.parametrize("spec, want", [
    ("8080:80", ports.Binding("tcp", 80, "", 8080, 8080)),
    ("127.0.0.1:8080:80/udp", ports.Binding("udp", 80, "127.0.0.1", 8080, 8080)),
    ("[::1]:8080:80", ports.Binding("tcp", 80, "::1", 8080, 8080)),
])
def test_parse_port(spec: str, want: ports.Binding) -> None:
    assert none_io.parse_port(spec) == want


@pytest.mark.parametrize("spec", ["80", "x:80:80", "0:80", "1:2:3:4"])
def test_parse_port_refuses(spec: str) -> None:
    with pytest.raises(InvalidRequest):
        none_io.parse_port(spec)


def test_ls_lists_these_attachments(rig: Rig) -> None:
    rig.live()
    rig.mode.attach("app", Request("pcn"))
    out = CliRunner().invoke(main, ["ls", "--state-dir", str(rig.tmp / "state")]).output
    assert "containers started with --network none" in out
    assert out.splitlines()[-1].split() == ["app", "pcn", "eth0", "10.201.200.5/24"]


def test_ls_shows_what_the_controller_could_not_attach(rig: Rig) -> None:
    from shim.state import FailureRecord

    rig.store.save_failure(FailureRecord(CID, "bad", 'plugin "ptp" failed (ADD): no luck', "web"))
    out = CliRunner().invoke(main, ["ls", "--state-dir", str(rig.tmp / "state")]).output
    assert "could not attach" in out
    assert out.splitlines()[-1].split()[:3] == ["web", "bad", "plugin"]
    assert out.splitlines()[-1].endswith("no luck")


def test_run_with_a_holder_attaches_it_before_the_app_starts_in_its_namespace(rig: Rig) -> None:
    cli = FakeCLI(rig)
    rig.mode.cli = cli  # type: ignore[assignment]
    app, [_] = runner.run(rig.mode, ["pcn"], ["--name", "web", "img", "httpd"],
                            holder=["pause:3.9"])
    assert app == OTHER
    assert cli.calls == [
        ("create", ["--network", "none", "--label", "pycni.holder=1",
                    "--name", "web-pycni-holder", "pause:3.9"]),
        ("start", [CID]),
        ("create", ["--network", f"container:{CID}", "--name", "web", "img", "httpd"]),
        ("start", [OTHER]),
    ]
    # the address went into the holder's namespace before the app was even created
    assert rig.fake.calls_for("ADD", "bridge")[0].env["CNI_CONTAINERID"] == CID
    [loaded] = rig.store.containers()
    assert (loaded.container_id, loaded.app_id, loaded.app_name) == (CID, OTHER, "web")

    # detach by the app's name finds the holder's attachment; the app runs on: holder kept
    rig.mode.detach("web", "pcn")
    assert rig.store.containers() == [] and ("rm", [CID]) not in cli.calls


def test_gc_removes_the_holder_of_an_app_that_is_gone(rig: Rig) -> None:
    cli = FakeCLI(rig)
    rig.mode.cli = cli  # type: ignore[assignment]
    runner.run(rig.mode, ["pcn"], ["--name", "web", "img"], holder=["pause:3.9"])
    assert rig.mode.gc() == []  # both alive
    rig.docker.forget(OTHER)  # docker rm -f web: the holder still runs
    assert rig.mode.gc() == ["attachment web/pcn/eth0: its container is gone; DEL run"]
    assert cli.calls[-1] == ("rm", [CID])
    assert rig.store.containers() == [] and rig.files() == []


def test_run_with_a_holder_removes_both_when_attaching_fails(rig: Rig) -> None:
    cli = FakeCLI(rig)
    rig.fake.on("tuning", "ADD", CNIError("no such sysctl", plugin="tuning", verb="ADD"))
    with pytest.raises(CNIError, match='removed the container .*"tuning" failed'):
        runner.run(rig.mode, ["pcn"], ["img"], holder=["pause:3.9"], docker_cli=cli)  # type: ignore[arg-type]
    assert [c for c in cli.calls if c[0] == "create"] == [
        ("create", ["--network", "none", "--label", "pycni.holder=1", "pause:3.9"])]
    assert cli.calls[-1] == ("rm", [CID])
    assert rig.files() == [] and rig.cached() == []


def test_an_attach_whose_undo_failed_is_left_for_gc_which_finishes_it(rig: Rig) -> None:
    rig.live()
    rig.fake.on("tuning", "ADD", CNIError("no such sysctl", plugin="tuning", verb="ADD"))
    rig.fake.on("tuning", "DEL", CNIError("still no sysctl", plugin="tuning", verb="DEL"))
    with pytest.raises(CNIError, match="undoing it failed too: .*still no sysctl.*pycni gc"):
        rig.mode.attach("app", Request("pcn"))
    assert ("bridge", "DEL") in rig.fake.commands()  # past the failing DEL
    assert rig.files() == [] and len(rig.cached()) == 1  # no record; libcni's cache keeps it
    rig.fake.reset()
    rig.fake.on("tuning", "DEL", b"")
    what = (f'CNI attachment pcn/{CID[:12]}/eth0: its undo failed (CNI plugin "tuning" '
            'failed (DEL): still no sysctl)')
    assert rig.mode.gc(dry_run=True) == [f"{what}; removed"]  # names the plugin
    assert rig.mode.gc() == [f"{what}; DEL run"]
    assert rig.fake.commands() == [("tuning", "DEL"), ("bridge", "DEL")]
    # the pin was kept for it: DEL runs in the namespace ADD ran in, then the pin goes
    assert rig.fake.calls_for("DEL", "bridge")[0].env["CNI_NETNS"].startswith(
        "/run/netns/pycni-pin-")
    assert rig.cached() == [] and rig.host.pins == {} and rig.mode.gc() == []


def test_a_port_the_driver_publishes_is_refused_naming_its_container(rig: Rig) -> None:
    rig.live()
    from shim.attach import Attachment
    from shim.cni.config import conflist_from_dict
    from shim.state import EndpointRecord
    rig.store.save_endpoint(EndpointRecord(
        id="e" * 64, network_id="n" * 64, netns="pycni-eeeeeeeeeeee",
        host_ifname="pcneeeeeeeeeeee", request={},
        attachment=Attachment("e" * 64, "/run/netns/pycni-eeeeeeeeeeee", "eth0",
                              conflist_from_dict(conflist()), capability_args={"portMappings": [
                                  {"hostPort": 48299, "containerPort": 80, "protocol": "tcp"}]})))
    rig.docker.endpoints["e" * 64] = "web-1"
    with pytest.raises(ports.PortInUse, match="port 48299 .* in use: container web-1 publishes it"):
        rig.mode.attach("app", Request("pcn", ports=(none_io.parse_port("48299:80"),)))
    assert rig.fake.calls == []


def test_one_containers_records_are_read_by_their_file_names(rig: Rig) -> None:
    rig.live()
    rig.live(OTHER, "other", 4343)
    rig.mode.attach("app", Request("pcn"))
    rig.mode.attach("other", Request("pcn"))
    assert [r.container_id for r in rig.store.containers(CID)] == [CID]
    assert sorted(r.container_id for r in rig.store.containers()) == sorted([CID, OTHER])
