"""dockerd restarts under running containers, with and without live-restore.

These restart the engine itself, so they run last in the e2e tier's own order (file name) and
put the engine back as ``scripts/engine.sh`` starts it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TEST_IMAGE, docker
from tests.e2e.conftest import DRIVER, Tracker

pytestmark = pytest.mark.e2e


def engine_pid() -> int:
    """The machine's dockerd (the one its pid file names; not a second "host"'s), or 0."""
    try:
        pid = int(Path("/var/run/docker.pid").read_text().strip() or 0)
        comm = Path(f"/proc/{pid}/comm").read_text().strip() if pid else ""
    except (OSError, ValueError):
        return 0
    return pid if comm == "dockerd" else 0


def stop_engine() -> None:
    pid = engine_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 90
    while pid and engine_pid() == pid:
        assert time.monotonic() < deadline, "dockerd did not stop within 90s"
        time.sleep(0.2)


def start_engine(*flags: str) -> None:
    env = {**os.environ, "PYCNI_DOCKERD_ARGS": " ".join(flags)}
    proc = subprocess.run(["bash", str(REPO / "scripts" / "engine.sh")], env=env,
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def restart_engine(*flags: str) -> None:
    stop_engine()
    start_engine(*flags)


def wait_running(name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        if state["Running"] and not state["Restarting"]:
            return
        assert time.monotonic() < deadline, f"{name} not running: {state}"
        time.sleep(0.5)


@pytest.fixture
def engine_back() -> object:
    """Whatever a test does to the engine, it is left running without extra flags."""
    yield None
    if "--live-restore" in subprocess.run(["ps", "-o", "args=", "-C", "dockerd"],
                                          capture_output=True, text=True, check=False).stdout:
        restart_engine()
    start_engine()


def test_restart_always_containers_come_back_networked(engine_back: object, e2e: Tracker) -> None:
    net = e2e.network("pycni-e2e-ra", "-d", DRIVER, "--subnet", "10.200.60.0/24")
    e2e.run("pycni-e2e-ra1", "--restart", "always", "--network", net, TEST_IMAGE, "sleep", "900")
    e2e.run("pycni-e2e-ra2", "--restart", "always", "--network", net, TEST_IMAGE, "sleep", "900")
    restart_engine()  # without live-restore: containers stop with the engine, then come back
    wait_running("pycni-e2e-ra1")
    wait_running("pycni-e2e-ra2")
    docker("exec", "pycni-e2e-ra1", "ping", "-c1", "-W2", "pycni-e2e-ra2")
    docker("exec", "pycni-e2e-ra2", "ping", "-c1", "-W2", "pycni-e2e-ra1")


def test_live_restore_keeps_containers_networked(engine_back: object, e2e: Tracker) -> None:
    restart_engine("--live-restore")
    net = e2e.network("pycni-e2e-lr", "-d", DRIVER, "--subnet", "10.200.61.0/24")
    e2e.run("pycni-e2e-lr1", "--network", net, TEST_IMAGE, "sleep", "900")
    e2e.run("pycni-e2e-lr2", "--network", net, TEST_IMAGE, "sleep", "900")
    pid = json.loads(docker("inspect", "pycni-e2e-lr1").stdout)[0]["State"]["Pid"]
    restart_engine("--live-restore")
    # Same process, never stopped, and its network still works both ways.
    assert json.loads(docker("inspect", "pycni-e2e-lr1").stdout)[0]["State"]["Pid"] == pid
    docker("exec", "pycni-e2e-lr1", "ping", "-c1", "-W2", "pycni-e2e-lr2")
    docker("exec", "pycni-e2e-lr2", "ping", "-c1", "-W2", "pycni-e2e-lr1")
    # and a later docker rm / network rm still cleans up fully (the leak audit checks)
