"""The one attachment lifecycle (:mod:`shim.lifecycle`) on fakes: its steps and their undo, and
each place (:class:`shim.staging.StagingPlace`, :class:`shim.pinned.PinnedPlace`)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from shim import netlink
from shim.attach import Attacher, Attachment
from shim.cni import CNI
from shim.cni.config import conflist_from_dict
from shim.cni.types import Result
from shim.endpoint_chain import EndpointChain
from shim.errors import CNIError, PycniError
from shim.lifecycle import Lifecycle
from shim.pinned import PinnedPlace, pin_path
from shim.staging import Staging, StagingPlace
from tests.fakelinks import FakeLinks
from tests.fakes import FakeExec, add_interface
from tests.unit.test_containers import FakeHost

CID = "c0ffee" * 10 + "abcd"
PIN = f"{netlink.NETNS_DIR}/pycni-pin-{CID[:12]}-4026532000"


def conflist(*plugins: dict[str, Any]) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "lc", "plugins": list(plugins) or [
        {"type": "bridge", "bridge": "lc0",
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.201.210.0/24"}]]}},
        {"type": "firewall"},
    ]}


def attachment(netns: str = PIN, **conf: Any) -> Attachment:
    return Attachment(container_id=CID, netns=netns, ifname="eth0",
                      config=conflist_from_dict(conf or conflist()))


class Journal:
    """A place and a ledger that write down what the lifecycle asks of them, in order."""

    def __init__(self, found: Result | None = None, fail: str = "") -> None:
        self.steps: list[str] = []
        self.found = found
        self.fail = fail

    def _step(self, name: str) -> None:
        self.steps.append(name)
        if name == self.fail:
            raise PycniError(f"{name} failed")

    # Ledger
    def claim(self) -> None:
        self._step("claim")

    def save(self) -> None:
        self._step("save")

    def drop(self) -> None:
        self._step("drop")

    # Place
    def open(self, att: Attachment) -> None:
        self._step("open")

    def settle(self, att: Attachment, undo: contextlib.ExitStack) -> None:
        self._step("settle")
        undo.callback(self.steps.append, "unsettle")

    def reopen(self, att: Attachment) -> Attachment:
        self._step("reopen")
        return att.elsewhere("/run/netns/elsewhere")

    def found_result(self, att: Attachment) -> Result | None:
        self._step("found_result")
        return self.found

    def close(self, att: Attachment) -> None:
        self._step("close")


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.fake = FakeExec().on("bridge", "ADD", add_interface("eth0", "10.201.210.2/24"))
        self.cache = tmp / "cache"
        self.attacher = Attacher(CNI(["/bin"], exec=self.fake, cache_dir=str(self.cache)))
        self.announced: list[tuple[str, str, list[str]]] = []
        self.lifecycle = Lifecycle(self.attacher, self.announce)

    def announce(self, ns: str, ifname: str, addresses: Iterable[str]) -> None:
        self.announced.append((ns, ifname, list(addresses)))

    def verbs(self) -> list[str]:
        return [f"{c.command} {c.plugin}" for c in self.fake.calls if c.command in ("ADD", "DEL")]

    def cached(self) -> list[str]:
        return sorted(p.name for p in self.cache.rglob("*") if p.is_file())


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


# --- the steps -----------------------------------------------------------------------------------

def test_attach_claims_before_add_and_settles_after_announcing(rig: Rig) -> None:
    journal, att = Journal(), attachment()
    with rig.lifecycle.attaching(att, journal, journal):
        journal.steps.append("body")
    assert journal.steps == ["claim", "open", "save", "settle", "body", "save"]
    assert rig.verbs() == ["ADD bridge", "ADD firewall"]
    assert rig.announced == [(PIN, "eth0", ["10.201.210.2/24"])]
    assert att.result is not None and [str(ip.address) for ip in att.ips()] == ["10.201.210.2/24"]


def test_a_failing_body_undoes_every_step_in_reverse(rig: Rig) -> None:
    journal, att = Journal(), attachment()
    with pytest.raises(PycniError, match="the answer"), \
            rig.lifecycle.attaching(att, journal, journal):
        raise PycniError("the answer could not be made")
    assert journal.steps == ["claim", "open", "save", "settle", "unsettle", "close", "drop"]
    assert rig.verbs() == ["ADD bridge", "ADD firewall", "DEL firewall", "DEL bridge"]
    assert rig.cached() == []


@pytest.mark.parametrize("fail", ["claim", "open", "settle"])
def test_a_failing_step_undoes_what_came_before_it(rig: Rig, fail: str) -> None:
    journal = Journal(fail=fail)
    with pytest.raises(PycniError, match=f"{fail} failed"), \
            rig.lifecycle.attaching(attachment(), journal, journal):
        pytest.fail("the body runs only when every step succeeded")
    assert journal.steps[-1] == "drop"  # even a claim that failed part-way is dropped
    if fail == "claim":
        assert rig.verbs() == []
    if fail == "settle":
        assert rig.verbs()[-2:] == ["DEL firewall", "DEL bridge"]
        assert journal.steps[-2:] == ["close", "drop"]


def test_a_failing_announcement_is_no_failure(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    def refuse(ns: str, ifname: str, addresses: Iterable[str]) -> None:
        raise PycniError("no packet sockets here")

    rig.lifecycle.announce = refuse
    journal = Journal()
    with rig.lifecycle.attaching(attachment(), journal, journal):
        pass
    assert journal.steps[-1] == "save"
    assert "neighbours not told the MAC of eth0: no packet sockets here" in caplog.text


def test_detach_runs_del_where_the_place_says_and_then_drops(rig: Rig) -> None:
    journal, att = Journal(), attachment()
    with rig.lifecycle.attaching(att, journal, journal):
        pass
    rig.fake.reset()
    journal.steps.clear()
    rig.lifecycle.detach(att, journal, journal)
    assert journal.steps == ["reopen", "close", "drop"]
    [del_bridge] = rig.fake.calls_for("DEL", "bridge")
    assert del_bridge.env["CNI_NETNS"] == "/run/netns/elsewhere"
    assert del_bridge.stdin["prevResult"]["ips"][0]["address"] == "10.201.210.2/24"
    assert rig.cached() == []


def test_detach_takes_a_result_the_record_never_got_from_libcnis_cache(rig: Rig) -> None:
    journal, att = Journal(), attachment()
    with rig.lifecycle.attaching(att, journal, journal):
        pass
    att.result = None  # a crash between ADD and the save that would have kept it
    journal.steps.clear()
    rig.lifecycle.detach(att, journal, journal)
    assert "found_result" not in journal.steps
    [del_fw] = rig.fake.calls_for("DEL", "firewall")
    assert del_fw.stdin["prevResult"]["ips"][0]["address"] == "10.201.210.2/24"


def test_detach_gives_del_what_an_unfinished_add_left_on_the_interface(rig: Rig) -> None:
    found = Result.from_json({"cniVersion": "1.0.0", "interfaces": [{"name": "eth0"}],
                              "ips": [{"address": "10.201.210.9/24", "interface": 0}]})
    journal = Journal(found=found)
    rig.lifecycle.detach(attachment(), journal, journal)  # no result, no cache entry
    assert journal.steps == ["reopen", "found_result", "close", "drop"]
    [del_fw] = rig.fake.calls_for("DEL", "firewall")
    assert del_fw.stdin["prevResult"]["ips"][0]["address"] == "10.201.210.9/24"


def test_a_failing_del_keeps_the_record_and_the_place(rig: Rig) -> None:
    journal, att = Journal(), attachment()
    with rig.lifecycle.attaching(att, journal, journal):
        pass
    rig.fake.on("bridge", "DEL", CNIError("try again later", code=11))
    journal.steps.clear()
    with pytest.raises(PycniError, match="bridge"):
        rig.lifecycle.detach(att, journal, journal)
    assert journal.steps == ["reopen"]
    assert rig.verbs()[-2:] == ["DEL firewall", "DEL bridge"]  # on past nothing: firewall went


# --- the staging place ---------------------------------------------------------------------------

def staging_place(links: FakeLinks) -> StagingPlace:
    staging = Staging(links)
    att = attachment(netns=links.netns_path("pycni-" + CID[:12]),
                     **conflist({"type": "bridge", "bridge": "lc0", "ipMasq": True}))
    rec = staging.new_record("n" * 64, CID, EndpointChain(att.config, (), {}), {})
    return StagingPlace(staging, rec)


def test_the_staging_place_moves_the_link_out_after_add_and_back_before_del() -> None:
    links = FakeLinks()
    place = staging_place(links)
    att = place.rec.attachment
    place.open(att)
    links.add_link("eth0", place.rec.netns, addresses=["10.201.210.3/24"])
    att.result = Result.from_json({"cniVersion": "1.0.0", "interfaces": [
        {"name": "eth0", "sandbox": att.netns}],
        "ips": [{"address": "10.201.210.3/24", "interface": 0}]})
    with contextlib.ExitStack() as undo:
        place.settle(att, undo)
        undo.pop_all()
    assert place.moved is not None and links.host_links("pcn") == [f"pcn{CID[:12]}"]
    place.rec.addresses = ["10.201.210.3/24"]
    place.rec.mac = place.moved.mac
    assert place.reopen(att) is att  # bridge's DEL needs the link back in the namespace
    link = links.find(place.rec.netns, "eth0")
    assert link is not None and link.addresses == ["10.201.210.3/24"]
    place.close(att)
    assert links.all_links() == {"": []}  # the namespace and the link are gone


def test_the_staging_place_finds_what_an_unfinished_add_left() -> None:
    links = FakeLinks()
    place = staging_place(links)
    place.open(place.rec.attachment)
    link = links.add_link("eth0", place.rec.netns, addresses=["10.201.210.4/24"])
    found = place.found_result(place.rec.attachment)
    assert found is not None and [str(ip.address) for ip in found.ips] == ["10.201.210.4/24"]
    assert found.interfaces[0].mac == link.mac


# --- the pinned place ----------------------------------------------------------------------------

def test_the_pin_is_named_after_the_container_and_its_namespace(tmp_path: Path) -> None:
    source = tmp_path / "ns"
    source.write_text("")
    assert pin_path(CID, str(source)) == \
        f"{netlink.NETNS_DIR}/pycni-pin-{CID[:12]}-{source.stat().st_ino}"


def test_the_pinned_place_holds_the_namespace_until_no_one_needs_it() -> None:
    host, users = FakeHost(), {PIN}
    place = PinnedPlace(host, lambda netns: netns in users, source="/proc/4242/ns/net")
    att = attachment()
    place.open(att)
    assert host.pins == {os.path.basename(PIN): "/proc/4242/ns/net"}
    assert place.reopen(att) is att  # DEL runs in the pin, the container's process gone or not
    place.close(att)
    assert host.is_netns(PIN)  # another attachment still uses it
    users.clear()
    place.close(att)
    assert host.pins == {}


def test_the_pinned_place_runs_del_in_no_namespace_once_the_pin_is_gone() -> None:
    place = PinnedPlace(FakeHost(), lambda netns: False)
    assert place.reopen(attachment()).netns == ""  # a reboot took the pin
    assert place.found_result(attachment(netns="")) is None


def test_an_older_record_without_a_pin_never_touches_a_reused_pid(tmp_path: Path) -> None:
    proc_ns = tmp_path / "proc" / "77" / "ns" / "net"
    proc_ns.parent.mkdir(parents=True)
    proc_ns.write_text("")
    att = attachment(netns=str(proc_ns))
    still = PinnedPlace(FakeHost(), lambda netns: False, source=str(proc_ns))
    assert still.reopen(att).netns == str(proc_ns)  # the container still runs as pid 77
    gone = PinnedPlace(FakeHost(), lambda netns: False)
    assert gone.reopen(att).netns == ""  # pid 77 is another process's now


def test_the_pinned_place_finds_what_an_unfinished_add_left() -> None:
    host = FakeHost()
    host.addrs[(PIN, "eth0")] = ("02:00:00:00:00:07", ["10.201.210.7/24"])
    found = PinnedPlace(host, lambda netns: False).found_result(attachment())
    assert found is not None
    assert json.loads(json.dumps(found.to_json()))["ips"][0]["address"] == "10.201.210.7/24"
    assert found.interfaces[0].sandbox == PIN


# --- STATUS before ADD ---------------------------------------------------------------------------

def v110(**conf: Any) -> Attachment:
    return attachment(**{**conflist(), "cniVersion": "1.1.0", **conf})


def test_a_1_1_0_chain_asks_status_before_add(rig: Rig) -> None:
    journal = Journal()
    with rig.lifecycle.attaching(v110(), journal, journal):
        pass
    assert [f"{c.command} {c.plugin}" for c in rig.fake.calls][:4] == [
        "STATUS bridge", "STATUS firewall", "ADD bridge", "ADD firewall"]


@pytest.mark.parametrize("code", [50, 51])
def test_a_plugin_that_is_not_ready_gets_no_add(rig: Rig, code: int) -> None:
    rig.fake.on("firewall", "STATUS", CNIError("no iptables backend yet", code=code))
    journal = Journal()
    with pytest.raises(CNIError) as info, rig.lifecycle.attaching(v110(), journal, journal):
        pytest.fail("no ADD")
    assert str(info.value).startswith(
        f'CNI plugin "firewall" failed (STATUS): [code {code}] no iptables backend yet; the '
        "plugin cannot serve ADD now")
    assert str(info.value).endswith("so ADD was not run")
    assert rig.verbs() == [] and rig.cached() == []
    assert journal.steps == ["claim", "open", "close", "drop"]


def test_a_plugin_that_does_not_speak_status_is_no_reason_to_refuse(rig: Rig) -> None:
    rig.fake.on("firewall", "STATUS", CNIError("unknown CNI_COMMAND: STATUS", code=4))
    journal = Journal()
    with rig.lifecycle.attaching(v110(), journal, journal):
        pass
    assert rig.verbs() == ["ADD bridge", "ADD firewall"]


def test_a_1_0_0_chain_is_not_asked_status(rig: Rig) -> None:
    journal = Journal()
    with rig.lifecycle.attaching(attachment(), journal, journal):
        pass
    assert "STATUS" not in {c.command for c in rig.fake.calls}
