"""``pycni watch`` on fakes: the convergence rule, restart as DEL then ADD, resync, the
per-container serialisation and reconnecting after the event stream was lost.

The rig of :mod:`tests.unit.test_containers` (a fake Docker, fake plugins, a fake ``/proc``)
stands under the controller; :class:`FakeSource` stands for Docker's container list and events.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shim.errors import CNIError, InvalidRequest, PycniError
from shim.none_io import Request
from shim.watch import Serial, Watch, requests
from tests.unit.test_containers import CID, OTHER, Rig, conflist

pytestmark = pytest.mark.unit

LABELS = {"pycni.networks": "pcn"}


class FakeSource:
    """Each ``events()`` opens the next stream: a list of events, or an error to raise."""

    def __init__(self, streams: list[list[tuple[str, str]] | PycniError]) -> None:
        self.streams = streams
        self.ids: set[str] = set()
        self.opened = 0
        self.listed = 0

    def labelled(self) -> set[str]:
        self.listed += 1
        return set(self.ids)

    @contextlib.contextmanager
    def events(self) -> Iterator[Iterator[tuple[str, str]]]:
        self.opened += 1
        if not self.streams:
            raise PycniError("dockerd is away")
        stream = self.streams.pop(0)
        if isinstance(stream, PycniError):
            raise stream
        yield iter(stream)


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def labelled(rig: Rig, cid: str = CID, name: str = "app", pid: int = 4242,
             labels: dict[str, str] | None = None) -> None:
    t = rig.live(cid, name, pid)
    rig.docker.targets[cid] = dataclasses.replace(t, labels=dict(labels or LABELS))


def stopped(rig: Rig, cid: str = CID) -> None:
    rig.docker.targets[cid] = dataclasses.replace(rig.docker.targets[cid], running=False, pid=0)


def watch(rig: Rig, source: FakeSource | None = None) -> Watch:
    return Watch(rig.mode, source or FakeSource([]), workers=4)


def test_requests_from_the_labels() -> None:
    [first, second] = requests({"pycni.networks": "a, b", "pycni.ports": "8080:80,53:53/udp",
                                "pycni.ip": "10.201.220.9", "pycni.args": "K=V;X=1"})
    assert (first.network, first.ifname, first.ip) == ("a", "eth0", "10.201.220.9")
    assert [(b.host_port, b.container_port, b.protocol) for b in first.ports] == [(8080, 80, "tcp"),
                                                                          (53, 53, "udp")]
    assert (second.network, second.ifname, second.ip, second.ports) == ("b", "eth1", "", ())
    assert first.args == second.args == (("K", "V"), ("X", "1"))
    assert requests({}) == []
    with pytest.raises(InvalidRequest):
        requests({"pycni.networks": "a", "pycni.ports": "eighty"})
    with pytest.raises(InvalidRequest, match="label pycni.args 'K8S_POD_NAME=x': pycni sets"):
        requests({"pycni.networks": "a", "pycni.args": "K8S_POD_NAME=x"})
    [capped] = requests({"pycni.networks": "a", "pycni.caps": '{"bandwidth": {"ingressRate": 1}}'})
    assert capped.caps == {"bandwidth": {"ingressRate": 1}}
    with pytest.raises(InvalidRequest, match="label pycni.caps 'x': not a JSON object"):
        requests({"pycni.networks": "a", "pycni.caps": "x"})


def test_start_attaches_each_labelled_network_once(rig: Rig) -> None:
    rig.write(conflist("pcn2"))
    labelled(rig, labels={"pycni.networks": "pcn,pcn2"})
    w = watch(rig)
    w.converge(CID)
    w.converge(CID)  # a second start event changes nothing
    assert sorted((r.network, r.ifname) for r in rig.mode.records(CID)) == [
        ("pcn", "eth0"), ("pcn2", "eth1")]
    assert rig.fake.commands().count(("bridge", "ADD")) == 2


def test_a_restart_is_del_from_the_record_then_add(rig: Rig) -> None:
    labelled(rig)
    w = watch(rig)
    w.converge(CID)
    rig.fake.reset()
    labelled(rig, pid=5252)  # the restart event came, the die event was missed
    w.converge(CID)
    assert rig.fake.commands() == [("tuning", "DEL"), ("bridge", "DEL"),
                                   ("bridge", "ADD"), ("tuning", "ADD")]
    assert rig.fake.calls_for("DEL", "bridge")[0].env["CNI_CONTAINERID"] == CID
    [rec] = rig.mode.records(CID)
    assert rec.pid == 5252


def test_die_and_destroy_detach(rig: Rig) -> None:
    labelled(rig)
    labelled(rig, OTHER, "other", 4343)
    w = watch(rig)
    w.converge(CID)
    w.converge(OTHER)
    stopped(rig)
    w.converge(CID)
    assert rig.mode.records(CID) == []
    rig.docker.forget(OTHER)
    w.converge(OTHER)
    assert rig.mode.records() == [] and rig.files() == [] and rig.cached() == []


def test_a_running_container_without_the_label_is_left_alone(rig: Rig) -> None:
    rig.live()
    rig.mode.attach(CID, Request("pcn"))  # pycni attach's, not the controller's
    rig.fake.reset()
    watch(rig).converge(CID)
    assert rig.fake.commands() == [] and len(rig.mode.records(CID)) == 1


def test_a_failing_network_leaves_no_half_attachment_and_is_logged(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.write({**conflist("bad"), "plugins": [{"type": "ptp"}]})
    rig.fake.on("ptp", "ADD", CNIError("no luck", plugin="ptp", verb="ADD"))
    labelled(rig, labels={"pycni.networks": "pcn,bad"})
    watch(rig).converge(CID)
    assert rig.mode.records() == [] and rig.files() == []
    assert ("bridge", "DEL") in rig.fake.commands()
    assert any('"ptp"' in r.getMessage() and "bad" in r.getMessage() for r in caplog.records)
    # shown where a user looks (pycni ls) until an attempt succeeds or the container goes
    [failure] = rig.mode.store.failures()
    assert (failure.container_id, failure.network, failure.name) == (CID, "bad", "app")
    assert "ptp" in failure.error and "no luck" in failure.error
    labelled(rig, labels={"pycni.networks": "pcn"})
    watch(rig).converge(CID)
    assert rig.mode.store.failures() == [] and len(rig.mode.records()) == 1


def test_a_failure_record_goes_with_its_container_and_is_resynced(rig: Rig) -> None:
    rig.write({**conflist("bad"), "plugins": [{"type": "ptp"}]})
    rig.fake.on("ptp", "ADD", CNIError("no luck", plugin="ptp", verb="ADD"))
    labelled(rig, labels={"pycni.networks": "bad"})
    watch(rig).converge(CID)
    assert len(rig.mode.store.failures()) == 1
    rig.docker.forget(CID)  # removed while the controller was away
    assert rig.mode.gc(dry_run=True) == [("failed attempt app/bad: its container is gone; "
                                         "forgotten")]
    w = watch(rig)
    w.resync()
    assert w.serial.wait_idle(5)
    assert rig.mode.store.failures() == []


def test_resync_attaches_the_unattached_and_detaches_the_gone(rig: Rig) -> None:
    labelled(rig)
    labelled(rig, OTHER, "other", 4343)
    w = watch(rig)
    w.converge(OTHER)
    rig.docker.forget(OTHER)  # removed while the controller was away
    source = FakeSource([])
    source.ids = {CID}
    w = watch(rig, source)
    w.resync()
    assert w.serial.wait_idle(5)
    assert [r.container_id for r in rig.mode.records()] == [CID]


def test_serial_never_runs_one_key_twice_at_once_and_runs_again_after() -> None:
    running: dict[str, int] = {}
    overlap: list[str] = []
    runs: list[str] = []
    both = threading.Barrier(2, timeout=5)
    gate = threading.Event()
    lock = threading.Lock()

    def work(key: str) -> None:
        with lock:
            running[key] = running.get(key, 0) + 1
            if running[key] > 1:
                overlap.append(key)
            runs.append(key)
        if len(runs) <= 2:
            both.wait()  # a and b run at the same time: different keys in parallel
            gate.wait(5)
        with lock:
            running[key] -= 1

    serial = Serial(work, workers=4)
    serial.submit("a")
    serial.submit("b")
    deadline = time.monotonic() + 5
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    serial.submit("a")  # while a runs: once more after, not now
    serial.submit("a")
    gate.set()
    assert serial.wait_idle(5)
    serial.close()
    assert overlap == []
    assert sorted(runs) == ["a", "a", "b"]


def test_follow_resyncs_on_start_and_after_the_stream_was_lost(rig: Rig) -> None:
    labelled(rig)
    source = FakeSource([[], PycniError("lost"), [(CID, "start")]])
    w = watch(rig, source)
    real_resync = w.resync

    def resync() -> None:
        real_resync()
        if source.listed == 2:
            w.stopping.set()

    w.resync = resync  # type: ignore[method-assign]
    t = threading.Thread(target=w.follow, kwargs={"max_backoff": 0.01}, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive()
    assert source.opened == 3 and source.listed == 2
    assert w.serial.wait_idle(5)
    assert [r.container_id for r in rig.mode.records()] == []  # no labelled ids listed


def test_follow_hands_each_event_on(rig: Rig) -> None:
    labelled(rig)
    source = FakeSource([[(CID, "start")]])
    w = watch(rig, source)
    t = threading.Thread(target=w.follow, kwargs={"max_backoff": 0.01}, daemon=True)
    t.start()
    deadline = time.monotonic() + 5
    while not rig.mode.records(CID) and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stopping.set()
    t.join(5)
    assert [r.network for r in rig.mode.records(CID)] == ["pcn"]


def test_attachments_of_pycni_attach_follow_their_container_too(rig: Rig) -> None:
    rig.live()  # no label: pycni attach's (or pycni run's)
    rig.mode.attach("app", Request("pcn"))
    w = watch(rig)
    w.converge(CID)  # running as attached: left alone
    assert len(rig.mode.records(CID)) == 1
    stopped(rig)
    rig.fake.reset()
    w.converge(CID)  # it died: DEL, in the pinned namespace
    assert rig.mode.records(CID) == [] and ("bridge", "DEL") in rig.fake.commands()
    rig.docker.targets[CID] = dataclasses.replace(rig.docker.targets[CID], running=True,
                                                  pid=5252)
    w.converge(CID)  # started again: not the labels' to wire
    assert rig.mode.records(CID) == [] and ("bridge", "ADD") not in rig.fake.commands()


def test_a_labelled_container_on_a_docker_network_is_ignored_saying_so_once(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    labelled(rig)
    rig.docker.targets[CID] = dataclasses.replace(rig.docker.targets[CID],
                                                  network_mode="bridge")
    w = watch(rig)
    w.converge(CID)
    w.converge(CID)
    assert rig.fake.calls == [] and rig.mode.records(CID) == []
    said = [r.getMessage() for r in caplog.records if "is on Docker's network" in r.getMessage()]
    assert said == [("pycni watch: container app has the label pycni.networks but is on Docker's "
                    "network 'bridge', not --network none: ignored (pycni wires only containers "
                    "started with --network none)")]
