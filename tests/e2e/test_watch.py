"""``pycni watch`` against the real dockerd and the real plugins: labelled ``--network none``
containers attached on start, again after a restart, detached on destroy, and a resync after the
controller was killed; each test under the leak audit.

The controller runs as a user runs it, a ``pycni watch`` process with the session server's conf
and state dirs; each test stops it (SIGTERM) before its containers are removed for the audit.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CNI_PATH, REPO, TEST_IMAGE, docker, run
from tests.e2e.conftest import DRIVER, PLUGIN_MODE, PycniServer, Tracker
from tests.e2e.test_engine_restart import engine_back, restart_engine, wait_running
from tests.e2e.test_health import PYCNI, pycni_cli
from tests.e2e.test_none_mode import bridge_removed, chain, exec_out

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(PLUGIN_MODE, reason="plugin mode: pycni watch runs no driver: nothing in it differs with a managed plugin"),
]

Start = Callable[[], "subprocess.Popen[str]"]


@pytest.fixture
def watcher(e2e: Tracker, pycni: PycniServer, tmp_path: Path) -> Iterator[Start]:
    """Starts ``pycni watch`` processes; at the end stops them, removes the test's containers
    and lets ``pycni gc`` DEL what a failed test left, before the leak audit looks."""
    procs: list[subprocess.Popen[str]] = []
    log = tmp_path / "watch.log"

    def start() -> subprocess.Popen[str]:
        env = {**os.environ, "CNI_PATH": f"{pycni.plugin_dir}:{CNI_PATH}"}
        with log.open("a") as out:
            proc = subprocess.Popen(
                [PYCNI, "watch", "--conf-dir", str(pycni.conf_dir),
                 "--state-dir", str(pycni.state_dir), "--log-level", "debug"],
                env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    e2e.cleanup()
    pycni_cli(pycni, "gc", "--state-dir", str(pycni.state_dir))
    print(log.read_text() if log.exists() else "")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


def wait_for(what: str, cond: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting: {what}")


def cid(name: str) -> str:
    return docker("inspect", "-f", "{{.Id}}", name).stdout.strip()


def records(pycni: PycniServer, container_id: str) -> list[Path]:
    return sorted((pycni.state_dir / "containers").glob(f"{container_id}.*.json"))


def attached(pycni: PycniServer, container_id: str) -> bool:
    """Whether every record of the container holds its chain's result (ADD finished)."""
    found = records(pycni, container_id)
    return bool(found) and all(json.loads(p.read_text()).get("result") for p in found)


def ip_of(container: str, prefix: str) -> str:
    """The container's eth0 address in ``prefix`` ("" while it has none)."""
    out = docker("exec", container, "ip", "-o", "-4", "addr", "show", "eth0", check=False).stdout
    for word in out.split():
        if word.startswith(prefix):
            return word.split("/")[0]
    return ""


def labelled(e2e: Tracker, name: str, net: str, *labels: str) -> str:
    args = [a for label in (f"pycni.networks={net}", *labels) for a in ("--label", label)]
    return e2e.run(name, "--network", "none", *args, TEST_IMAGE, "sleep", "600")


def test_watch_attaches_reattaches_after_restart_and_detaches_on_destroy(
    e2e: Tracker, pycni: PycniServer, watcher: Start
) -> None:
    pycni.write_conflist("e2e-w", chain("e2e-w", "pycni-w0", "10.201.220.0/24"))
    prefix = "10.201.220."
    with bridge_removed("pycni-w0"):
        proc = watcher()
        a = labelled(e2e, "pycni-e2e-w-a", "e2e-w", "pycni.ip=10.201.220.50")
        b = labelled(e2e, "pycni-e2e-w-b", "e2e-w", "pycni.ports=28230:80")
        wait_for("both attached", lambda: bool(ip_of(a, prefix) and ip_of(b, prefix)))
        assert ip_of(a, prefix) == "10.201.220.50"
        exec_out(a, "ping", "-c", "1", "-W", "3", ip_of(b, prefix))
        exec_out(b, "ping", "-c", "1", "-W", "3", "10.201.220.50")
        checked = pycni_cli(pycni, "check", a)
        assert checked.returncode == 0 and "CNI CHECK passed" in checked.stdout, checked.stdout

        # a restart is a new namespace: DEL from the record, then ADD, the same address again
        old = records(pycni, cid(a))[0].read_text()
        docker("restart", "-t", "1", a)
        wait_for("a attached again", lambda: ip_of(a, prefix) == "10.201.220.50")
        assert records(pycni, cid(a))[0].read_text() != old  # a new pid, a new record
        # b still held a's old MAC: the announcement after ADD corrects it, so b reaches a at
        # once (not after its neighbour entry times out, 20-50 s). The address shows in a a
        # moment before the chain's ADD is done and the MAC announced: a few seconds' grace.
        wait_for("b reaches a", lambda: docker("exec", b, "ping", "-c", "1", "-W", "1",
                                               "10.201.220.50", check=False).returncode == 0,
                 timeout=3)
        exec_out(a, "ping", "-c", "1", "-W", "3", ip_of(b, prefix))

        # its main process killed: detached, in the pinned namespace (ipMasq's chain goes too)
        docker("kill", a)
        wait_for("a detached", lambda: not records(pycni, cid(a)))
        docker("start", a)
        wait_for("a attached again", lambda: ip_of(a, prefix) == "10.201.220.50")

        # stop and start: the same
        docker("stop", "-t", "1", b)
        docker("start", b)
        wait_for("b attached again", lambda: bool(ip_of(b, prefix)))
        exec_out(b, "ping", "-c", "1", "-W", "3", "10.201.220.50")

        ids = [cid(a), cid(b)]
        docker("rm", "-f", a, b)
        wait_for("both detached", lambda: not any(records(pycni, i) for i in ids))
        assert proc.poll() is None
        stop(proc)


def test_watch_resyncs_after_it_was_killed(
    e2e: Tracker, pycni: PycniServer, watcher: Start
) -> None:
    pycni.write_conflist("e2e-wk", chain("e2e-wk", "pycni-w1", "10.201.221.0/24"))
    prefix = "10.201.221."
    with bridge_removed("pycni-w1"):
        proc = watcher()
        a = labelled(e2e, "pycni-e2e-wk-a", "e2e-wk")
        a_id = cid(a)
        # attached means the whole chain's ADD done and recorded: eth0 has its address once
        # bridge's ADD is done, while firewall's may still run (a kill then is a crash mid-ADD)
        wait_for("a attached", lambda: bool(ip_of(a, prefix)) and attached(pycni, a_id))
        proc.kill()
        proc.wait(10)

        docker("rm", "-f", a)  # while the controller is away
        assert records(pycni, a_id)  # nobody has cleaned it yet
        b = labelled(e2e, "pycni-e2e-wk-b", "e2e-wk")
        time.sleep(1)
        assert not ip_of(b, prefix)

        proc = watcher()
        wait_for("a cleaned, b attached",
                 lambda: not records(pycni, a_id) and bool(ip_of(b, prefix)))
        b_id = cid(b)
        docker("rm", "-f", b)
        wait_for("b detached", lambda: not records(pycni, b_id))
        stop(proc)


def test_compose_network_mode_none_with_labels(
    e2e: Tracker, pycni: PycniServer, watcher: Start
) -> None:
    """examples/compose-none.yaml as it is, with the controller."""
    example = REPO / "examples"
    shutil.copy(example / "net.d" / "pycni-compose-none.conflist", pycni.conf_dir)
    compose = ["docker", "compose", "-f", str(example / "compose-none.yaml"), "-p", "pycni-e2e-wc"]
    prefix = "10.201.222."
    with bridge_removed("pycni-cmp-none"):
        proc = watcher()
        try:
            run(*compose, "up", "-d", timeout=300)
            web, client = "pycni-e2e-wc-web-1", "pycni-e2e-wc-client-1"
            ids = [cid(web), cid(client)]
            wait_for("both attached", lambda: ip_of(web, prefix) == "10.201.222.10"
                     and bool(ip_of(client, prefix)))
            # the tuning sysctl is the container's own; the port through portmap; by address
            assert exec_out(web, "cat", "/proc/sys/net/ipv4/conf/eth0/arp_ignore") == "1"
            wait_for("the published port", lambda: answer_root("10.201.222.1", 18280))
            wait_for("client reached web",
                     lambda: "hello from web" in docker("logs", client).stdout)
        finally:
            run(*compose, "down", "-t", "1", timeout=300, check=False)
            os.unlink(pycni.conf_dir / "pycni-compose-none.conflist")
        wait_for("both detached", lambda: not any(records(pycni, i) for i in ids))
        stop(proc)


def answer_root(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
    except OSError:
        return False
    return b"hello from web" in data


def test_a_failing_chain_leaves_no_half_attachment_and_shows_where_a_user_looks(
    e2e: Tracker, pycni: PycniServer, watcher: Start
) -> None:
    pycni.write_conflist("e2e-wf", chain("e2e-wf", "pycni-w2", "10.201.223.0/24"))
    pycni.write_conflist("e2e-wfail", {"cniVersion": "1.0.0",
                                       "plugins": [{"type": "pycni-test-fail"}]})
    with bridge_removed("pycni-w2"):
        proc = watcher()
        a = labelled(e2e, "pycni-e2e-wf-a", "e2e-wf,e2e-wfail")
        a_id = cid(a)
        failures = pycni.state_dir / "failures" / f"{a_id}.json"
        wait_for("the failure recorded", failures.exists)
        # eth0 was DELed again. (When the container starts between the watcher opening Docker's
        # stream and its first resync, both hand it on: one more attempt may still be running,
        # which undoes itself the same way — seen on Docker 20.10.)
        wait_for("no half attachment",
                 lambda: not records(pycni, a_id) and not ip_of(a, "10.201.223."))
        listed = pycni_cli(pycni, "ls").stdout
        assert "could not attach" in listed and "pycni-e2e-wf-a" in listed, listed
        assert "pycni-test-fail" in listed and "refuses on purpose" in listed, listed
        docker("rm", "-f", a)
        wait_for("the failure forgotten with its container", lambda: not failures.exists())
        stop(proc)


def test_fifty_labelled_containers_started_at_once(
    e2e: Tracker, pycni: PycniServer, watcher: Start
) -> None:
    """All attached, each its own address; all removed, nothing left (the leak audit)."""
    count = int(os.environ.get("PYCNI_WATCH_CONTAINERS", "50"))
    pycni.write_conflist("e2e-w50", chain("e2e-w50", "pycni-w3", "10.201.224.0/24"))
    prefix = "10.201.224."
    names = [f"pycni-e2e-w50-{n}" for n in range(count)]
    with bridge_removed("pycni-w3"):
        proc = watcher()
        start = time.monotonic()
        at_once(lambda name: labelled(e2e, name, "e2e-w50"), names)
        started = time.monotonic() - start
        wait_for(f"{count} attached", lambda: len(list(
            (pycni.state_dir / "containers").glob("*.json"))) == count, timeout=180)
        attached = time.monotonic() - start
        addresses = [ip_of(n, prefix) for n in names]
        assert all(addresses) and len(set(addresses)) == count, addresses
        ids = [cid(n) for n in names]
        start = time.monotonic()
        at_once(lambda name: docker("rm", "-f", name), names)
        wait_for(f"{count} detached", lambda: not any(records(pycni, i) for i in ids),
                 timeout=180)
        print(f"\n{count} labelled containers: docker run -d of all {started:.1f} s, all attached "
              f"{attached:.1f} s after the first run; all removed and detached "
              f"{time.monotonic() - start:.1f} s after the first rm")
        assert proc.poll() is None
        stop(proc)


def at_once(work: Callable[[str], object], names: list[str], clients: int = 10) -> None:
    """``work(name)`` for every name, ``clients`` at a time; the first error is raised."""
    errors: list[BaseException] = []
    queue = list(names)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not queue or errors:
                    return
                name = queue.pop()
            try:
                work(name)
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_serve_watch_is_the_controller_too(e2e: Tracker, pycni: PycniServer) -> None:
    pycni.write_conflist("e2e-ws", chain("e2e-ws", "pycni-w4", "10.201.225.0/24"))
    pycni.serve_args = ["--watch"]
    try:
        with bridge_removed("pycni-w4"):
            pycni.restart()
            a = labelled(e2e, "pycni-e2e-ws-a", "e2e-ws")
            wait_for("a attached by pycni serve --watch", lambda: bool(ip_of(a, "10.201.225.")))
            # and the driver serves beside it
            net = e2e.network("pycni-e2e-ws-net", "-d", DRIVER, "--subnet", "10.201.226.0/24")
            e2e.run("pycni-e2e-ws-b", "--network", net, TEST_IMAGE, "sleep", "600")
            a_id = cid(a)
            docker("rm", "-f", a)
            wait_for("a detached", lambda: not records(pycni, a_id))
    finally:
        pycni.serve_args = []
        e2e.cleanup()
        pycni.restart()
    assert "pycni watch: container pycni-e2e-ws-a: attached e2e-ws" in pycni.log()


@pytest.mark.usefixtures(engine_back.__name__)
def test_the_controller_follows_docker_through_an_engine_restart(
    e2e: Tracker, pycni: PycniServer, watcher: Start
) -> None:
    """dockerd restarted under the controller: the stream is lost, the controller reconnects and
    resyncs: a ``--restart always`` container comes back in a new namespace and is attached
    again; one without a restart policy stayed stopped and is detached."""
    pycni.write_conflist("e2e-we", chain("e2e-we", "pycni-w5", "10.201.227.0/24"))
    prefix = "10.201.227."
    with bridge_removed("pycni-w5"):
        proc = watcher()
        a = e2e.run("pycni-e2e-we-a", "--restart", "always", "--network", "none",
                    "--label", "pycni.networks=e2e-we", TEST_IMAGE, "sleep", "900")
        b = labelled(e2e, "pycni-e2e-we-b", "e2e-we")
        wait_for("both attached", lambda: bool(ip_of(a, prefix) and ip_of(b, prefix)))
        a_id, b_id = cid(a), cid(b)
        restart_engine()  # no live-restore: both stop; a comes back
        wait_running(a)
        wait_for("a attached again, b detached", lambda: bool(ip_of(a, prefix))
                 and not records(pycni, b_id), timeout=60)
        [rec] = records(pycni, a_id)
        pid = int(docker("inspect", "-f", "{{.State.Pid}}", a).stdout)
        assert json.loads(rec.read_text())["pid"] == pid
        assert proc.poll() is None, "the controller did not survive the engine's restart"
        stop(proc)
