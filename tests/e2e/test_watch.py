"""``pycni watch`` against the real dockerd and the real plugins: labelled ``--network none``
containers attached on start, again after a restart, detached on destroy, and a resync after the
controller was killed; each test under the leak audit.

The controller runs as a user runs it, a ``pycni watch`` process with the session server's conf
and state dirs; each test stops it (SIGTERM) before its containers are removed for the audit.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import CNI_PATH, REPO, TEST_IMAGE, docker, run
from tests.e2e.conftest import PLUGIN_MODE, PycniServer, Tracker
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
        b = labelled(e2e, "pycni-e2e-w-b", "e2e-w", "pycni.ports=48230:80")
        wait_for("both attached", lambda: bool(ip_of(a, prefix) and ip_of(b, prefix)))
        assert ip_of(a, prefix) == "10.201.220.50"
        exec_out(a, "ping", "-c", "1", "-W", "3", ip_of(b, prefix))
        exec_out(b, "ping", "-c", "1", "-W", "3", "10.201.220.50")

        # a restart is a new namespace: DEL from the record, then ADD, the same address again
        old = records(pycni, cid(a))[0].read_text()
        docker("restart", "-t", "1", a)
        wait_for("a attached again", lambda: ip_of(a, prefix) == "10.201.220.50")
        assert records(pycni, cid(a))[0].read_text() != old  # a new pid, a new record
        exec_out(a, "ping", "-c", "1", "-W", "3", ip_of(b, prefix))

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
        wait_for("a attached", lambda: bool(ip_of(a, prefix)))
        a_id = cid(a)
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
